//! `tables = [...]` and `on_panic` on `[[hooks]]` entries, for built-ins and
//! plugins, through the real server: a scoped hook runs only for its
//! tables (and for requests that name none), a failing hook follows its
//! entry's policy, both are checked at start, and both survive a reload,
//! where a change to either replaces the entry.

mod support;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use hookv::config::{Config, ServerConfig};
use hookv::hooks::auth::hash_token;
use hookv::hooks::{Events, Flow, Hook, HookChain, HookCtx, OnPanic, Placement};
use hookv::pb::{CommandRequest, CommandResponse};
use hookv::{MemTable, Service, ServiceInner};
use support::plugins::plugin;
use support::{bounded, Running, TestServer};

async fn server_with(hooks_toml: &str) -> TestServer {
    let config = Config::parse(hooks_toml, Path::new("test.toml")).expect("config");
    TestServer::from_config(&config).await
}

fn plugin_entry(package: &str, options: &str) -> String {
    format!(
        "[[hooks]]\nplugin = {:?}\n{options}\n",
        plugin(package).display().to_string()
    )
}

#[tokio::test]
async fn a_scoped_plugin_runs_only_for_its_tables() {
    let options = "max_key_len = 4\ntables = [\"orders*\", \"users\"]";
    let server = server_with(&plugin_entry("key-guard", options)).await;
    let mut c = server.client().await;
    for table in ["orders", "orders-2026", "users"] {
        let r = bounded(c.hset(table, "long-key", "v")).await.unwrap();
        assert_eq!(r.status, 400, "{table}: {r:?}");
    }
    for table in ["bench", "users2", "xorders"] {
        let r = bounded(c.hset(table, "long-key", "v")).await.unwrap();
        assert_eq!(r.status, 200, "{table}: {r:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_scoped_auth_hook_guards_its_tables_and_still_sees_logins() {
    let hooks = format!(
        "[[hooks]]\nkind = \"auth\"\ntables = [\"secret*\"]\n\
         users = [{{ name = \"admin\", token_sha256 = \"{}\", read = [\"*\"], write = [\"*\"] }}]\n",
        hash_token("scoped-token-0123456789")
    );
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    // Other tables are open.
    assert_eq!(
        bounded(c.hset("public", "k", "v")).await.unwrap().status,
        200
    );
    // Its tables need a login...
    let r = bounded(c.hset("secret-plans", "k", "v")).await.unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    // ...which reaches the scoped hook, since `auth` names no table.
    let r = bounded(c.auth("scoped-token-0123456789")).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        bounded(c.hset("secret-plans", "k", "v"))
            .await
            .unwrap()
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn a_scoped_rewrite_touches_only_its_tables() {
    let hooks = "[[hooks]]\nkind = \"rewrite\"\ntables = [\"loud\"]\n\
                 rules = [{ prefix_message = \"R;\" }]\n";
    let server = server_with(hooks).await;
    let mut c = server.client().await;
    let loud = bounded(c.hget("loud", "k")).await.unwrap();
    assert!(loud.message.starts_with("R;"), "{loud:?}");
    let quiet = bounded(c.hget("quiet", "k")).await.unwrap();
    assert!(!quiet.message.starts_with("R;"), "{quiet:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_failing_open_lets_the_request_through() {
    let hooks = plugin_entry("panic-test", "on_panic = \"fail_open\"")
        + &plugin_entry(
            "v1-guard",
            "on_panic = \"fail_open\"\nmax_key_len = 4\npanic_table = \"boom\"",
        );
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    // Both plugins panic on table boom (v1-guard is a version 1 plugin);
    // the write goes through and is executed.
    let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(bounded(c.hget("boom", "k")).await.unwrap().status, 200);
    // An answer that does not decode is a failure too.
    let r = bounded(c.hget("garbage", "k")).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    // What the plugins decide still counts.
    let r = bounded(c.hset("t", "long-key", "v")).await.unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_failing_closed_answers_500() {
    let hooks = plugin_entry(
        "v1-guard",
        "on_panic = \"fail_closed\"\npanic_table = \"boom\"",
    );
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.message.contains("v1-guard"), "{r:?}");
    assert_eq!(bounded(c.hget("boom", "k")).await.unwrap().status, 500);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    server.stop().await;
}

/// A hook that panics on every request to table "boom".
struct Boom(Events);

impl Hook for Boom {
    fn name(&self) -> &str {
        "boom"
    }
    fn events(&self) -> Events {
        self.0
    }
    fn on_received(&self, _ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        assert_ne!(req.table(), Some("boom"), "boom on_received");
        ControlFlow::Continue(())
    }
    fn on_before_send(
        &self,
        _ctx: &HookCtx,
        req: &CommandRequest,
        _res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        assert_ne!(req.table(), Some("boom"), "boom on_before_send");
        ControlFlow::Continue(())
    }
}

async fn boom_server(events: Events, on_panic: OnPanic) -> TestServer {
    let mut chain = HookChain::new();
    let placement = Placement {
        on_panic,
        ..Placement::default()
    };
    chain.push_placed(Arc::new(Boom(events)), placement);
    let service: Service = ServiceInner::new(MemTable::new()).hooks(&chain).into();
    TestServer::start(service, ServerConfig::default()).await
}

#[tokio::test]
async fn a_panicking_hook_fails_its_request_closed_and_the_connection_lives() {
    let received = Events {
        received: true,
        ..Events::NONE
    };
    let server = boom_server(received, OnPanic::FailClosed).await;
    let mut c = server.client().await;
    for _ in 0..3 {
        let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
        assert_eq!(r.status, 500, "{r:?}");
        assert!(r.message.contains("\"boom\""), "{r:?}");
        // Not executed, and the same connection goes on.
        assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    }
    assert_eq!(bounded(c.hgetall("boom")).await.unwrap().pairs, vec![]);
    server.stop().await;

    // In on_before_send the answer becomes the 500 (the write was done).
    let before_send = Events {
        before_send: true,
        ..Events::NONE
    };
    let server = boom_server(before_send, OnPanic::FailClosed).await;
    let mut c = server.client().await;
    assert_eq!(bounded(c.hset("boom", "k", "v")).await.unwrap().status, 500);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_hook_failing_open_is_passed_over() {
    let both = Events {
        received: true,
        before_send: true,
        ..Events::NONE
    };
    let server = boom_server(both, OnPanic::FailOpen).await;
    let mut c = server.client().await;
    let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = bounded(c.hget("boom", "k")).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    server.stop().await;
}

/// Starts the real server with `hooks`: it must refuse, with one line
/// naming the file, the entry's line and label, and `key`.
fn refused(hooks: &str, key: &str) -> String {
    let line = support::start_fails(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{hooks}"));
    assert!(line.contains("config.toml:3: hooks[1]"), "{line}");
    assert!(line.contains(key), "{line}");
    line
}

#[test]
fn tables_and_on_panic_are_checked_at_start() {
    let rewrite = "[[hooks]]\nkind = \"rewrite\"\nrules = []\n";
    for (bad, says) in [
        ("tables = []", "lists no table"),
        ("tables = \"orders\"", "must be a list"),
        ("tables = [1]", "in quotes"),
        ("tables = [\"\"]", "empty pattern"),
    ] {
        let line = refused(&format!("{rewrite}{bad}\n"), "tables = ");
        assert!(line.contains(says), "{bad}: {line}");
    }
    let line = refused(&format!("{rewrite}on_panic = \"maybe\"\n"), "on_panic = ");
    assert!(line.contains("fail_open"), "{line}");
    let line = refused(
        &plugin_entry("key-guard", "on_panic = true"),
        "on_panic = true",
    );
    assert!(line.contains("fail_closed"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    let wal = format!(
        "[[hooks]]\nkind = \"wal\"\npath = {:?}\ntables = [\"t\"]\n",
        dir.path().join("wal").display().to_string()
    );
    let line = refused(&wal, "tables");
    assert!(line.contains("every write"), "{line}");
}

#[test]
fn a_plugin_never_sees_the_placement_keys() {
    // key-guard refuses options it does not know: it starts, so neither key
    // reached its init.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let hooks = plugin_entry(
        "key-guard",
        "tables = [\"t\"]\non_panic = \"fail_open\"\nmax_key_len = 4",
    );
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{hooks}"),
    )
    .unwrap();
    let server = Running::start(&path);
    server.stop_cleanly();
}

/// Replaces the config atomically, as an editor or deploy tool would.
fn write_config(path: &Path, hooks: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("[server]\nlisten = \"127.0.0.1:0\"\n{hooks}")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn tables_and_on_panic_survive_reloads_and_changing_them_replaces_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let guard = |tables: &str| plugin_entry("key-guard", &format!("max_key_len = 4\n{tables}"));
    let panics = |policy: &str| plugin_entry("panic-test", policy);
    write_config(
        &config,
        &(guard("tables = [\"orders*\"]") + &panics("on_panic = \"fail_closed\"")),
    );
    let server = Running::start(&config);
    let mut c = server.client().await;
    assert_eq!(
        bounded(c.hset("orders", "long-key", "v"))
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        bounded(c.hset("users", "long-key", "v"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(bounded(c.hset("boom", "k", "v")).await.unwrap().status, 500);

    // The same file again: both entries kept, scope and policy with them.
    server.signal("HUP");
    let line = server.wait_for_nth_log("hook chain reloaded", 1);
    assert!(line.contains("replaced=[]"), "{line}");
    assert_eq!(
        bounded(c.hset("orders", "long-key", "v"))
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        bounded(c.hset("users", "long-key", "v"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(bounded(c.hset("boom", "k", "v")).await.unwrap().status, 500);

    // Other tables, another policy: both entries are replaced.
    write_config(
        &config,
        &(guard("tables = [\"users\"]") + &panics("on_panic = \"fail_open\"")),
    );
    server.signal("HUP");
    let line = server.wait_for_nth_log("hook chain reloaded", 2);
    assert!(line.contains("replaced=[\"hooks[1]"), "{line}");
    assert!(line.contains("\"hooks[2]"), "{line}");
    assert!(line.contains("kept=[]"), "{line}");
    let mut c = server.client().await;
    assert_eq!(
        bounded(c.hset("orders", "long-key", "v"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        bounded(c.hset("users", "long-key", "v"))
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(bounded(c.hset("boom", "k", "v")).await.unwrap().status, 200);
    server.stop_cleanly();
}
