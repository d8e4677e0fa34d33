//! Reloading the hook chain on SIGHUP under load: no request fails, each sees
//! the old or the new chain in full, the change takes effect, and a stateful
//! hook (audit) hands over without losing or doubling a record.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookv::pb::CommandRequest;
use support::plugins::{mapped_copies, plugin};
use support::{bounded, Running};

const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\n";

/// Chain A: a key-guard plugin (no key over 8 bytes may be written) and
/// two rewrite hooks; every answer's message starts with "A2;A1;".
fn chain_a() -> String {
    format!(
        "[[hooks]]\nplugin = {:?}\nmax_key_len = 8\n{CHAIN_A_NO_PLUGIN}",
        plugin("key-guard").display().to_string()
    )
}

/// Chain A without the plugin.
const CHAIN_A_NO_PLUGIN: &str = r#"
[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "A1;" }]

[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "A2;" }]
"#;

/// Chain B: rewrite, audit, rewrite; messages "B2;B1;", every request audited.
const CHAIN_B: &str = r#"
[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "B1;" }]

[[hooks]]
kind = "audit"
path = "audit.jsonl"

[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "B2;" }]
"#;

/// Replaces the config atomically, as an editor or deploy tool would.
fn write_config(path: &Path, hooks: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{SERVER}{hooks}")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[derive(Default, Debug)]
struct Seen {
    a: u64,
    b: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_load_fails_nothing_and_hands_over_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let chain_a = chain_a();
    write_config(&config, &chain_a);
    let server = Running::start(&config);
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for conn in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut c = bounded(hookv::client::Client::connect(addr)).await.unwrap();
            let mut seen = Seen::default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Keys of 4 bytes pass key-guard; the last, of 20, does not.
                let batch: Vec<_> = (0..8)
                    .map(|j| {
                        let key = if j == 7 {
                            format!("c{conn}-long-key-{j:08}")
                        } else {
                            format!("c{conn}k{j}")
                        };
                        CommandRequest::new_hset("t", key, ((i + j) as i64).into())
                    })
                    .collect();
                let answers = bounded(c.pipeline(&batch))
                    .await
                    .expect("request failed during reload");
                for (j, res) in answers.iter().enumerate() {
                    let refused_in_a = if j == 7 { 400 } else { 200 };
                    // Chain A in full: its marks, and key-guard refuses the long key.
                    // Chain B in full: its marks, and every write succeeds.
                    if res.message.starts_with("A2;A1;") && res.status == refused_in_a {
                        seen.a += 1;
                    } else if res.message == "B2;B1;" && res.status == 200 {
                        seen.b += 1;
                    } else {
                        panic!("a request saw a mixed or partial chain: {res:?}");
                    }
                }
                i += 8;
            }
            seen
        }));
    }

    // Twenty reloads, alternating, while the clients run.
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        write_config(&config, if round % 2 == 0 { CHAIN_B } else { &chain_a });
        server.signal("HUP");
    }
    // End on chain B, and let it serve a while.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Seen::default();
    for c in clients {
        let seen = bounded(c).await.unwrap();
        total.a += seen.a;
        total.b += seen.b;
    }
    server.wait_for_log("hook chain reloaded");
    assert!(
        total.a > 0 && total.b > 0,
        "both chains must have served: {total:?}"
    );

    let log = server.log.clone();
    assert!(server.terminate().success());
    let log = log.lock().unwrap();
    assert!(
        !log.iter().any(|l| l.contains("reload failed")),
        "{}",
        log.join("\n")
    );
    // Every request answered on chain B is in the audit log exactly once,
    // across ten audit hooks that came and went on the same file.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(
        audit.lines().count() as u64,
        total.b,
        "audit lines vs chain-B answers"
    );
}

#[tokio::test]
async fn a_bad_config_on_reload_keeps_the_running_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_config(&config, CHAIN_A_NO_PLUGIN);
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();

    for (n, (bad, reason)) in [
        (
            "[[hooks]]\nkind = \"rewrite\"\nrules = [{ status = 401 }]\n",
            "no action",
        ),
        ("[[hooks]]\nkind = \"nope\"\n", "unknown kind"),
        ("[[hooks]\n", "config.toml:"),
    ]
    .into_iter()
    .enumerate()
    {
        write_config(&config, bad);
        server.signal("HUP");
        // This reload's line: an earlier one may contain `reason` too.
        let line = server.wait_for_nth_log("reload failed", n + 1);
        assert!(line.contains(reason), "{line}");
        let res = bounded(c.hset("t", "k", "v")).await.unwrap();
        assert_eq!(res.message, "A2;A1;", "the running chain must stay");
    }

    // A change to [server] is reported as needing a restart; hooks still reload.
    // (Written atomically: a reload must not read a half-written file.)
    let tmp = config.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("[server]\nlisten = \"127.0.0.1:1\"\n{CHAIN_B}"),
    )
    .unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    server.signal("HUP");
    let line = server.wait_for_log("take effect only on restart");
    assert!(line.contains("server"), "{line}");
    let res = bounded(c.hset("t", "k", "v")).await.unwrap();
    assert_eq!(res.message, "B2;B1;");
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn the_write_ahead_log_carries_on_unchanged_across_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let wal = |fsync: &str, mark: &str| {
        format!(
            "[[hooks]]\nkind = \"wal\"\npath = \"wal\"\nfsync = \"{fsync}\"\n\
             [[hooks]]\nkind = \"rewrite\"\nrules = [{{ prefix_message = \"{mark}\" }}]\n"
        )
    };
    write_config(&config, &wal("always", "one"));
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(
        bounded(c.hset("t", "before", 1i64)).await.unwrap().message,
        "one"
    );

    // Changing the wal's options: the hooks around it reload, the log stays.
    write_config(&config, &wal("no", "two"));
    server.signal("HUP");
    let line = server.wait_for_log("take effect only on restart");
    assert!(line.contains("wal hook"), "{line}");
    assert_eq!(
        bounded(c.hset("t", "after", 2i64)).await.unwrap().message,
        "two"
    );

    // Removing it: still logging (it wraps the storage) until a restart.
    write_config(
        &config,
        "[[hooks]]\nkind = \"rewrite\"\nrules = [{ prefix_message = \"three\" }]\n",
    );
    server.signal("HUP");
    let line = server.wait_for_nth_log("take effect only on restart", 2);
    assert!(line.contains("wal hook"), "{line}");
    assert_eq!(
        bounded(c.hset("t", "removed", 3i64)).await.unwrap().message,
        "three"
    );

    // A crash now: every acknowledged write, before and after the reloads, is in the log.
    server.signal("KILL");
    drop(c);
    write_config(&config, &wal("always", "four"));
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    let res = bounded(c.hgetall("t")).await.unwrap();
    let keys: Vec<_> = res.pairs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["after", "before", "removed"]);
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_wal_cannot_be_added_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_config(&config, CHAIN_A_NO_PLUGIN);
    let server = Running::start(&config);
    write_config(&config, "[[hooks]]\nkind = \"wal\"\npath = \"wal\"\n");
    server.signal("HUP");
    let line = server.wait_for_log("reload failed");
    assert!(line.contains("restart the server"), "{line}");
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(
        bounded(c.hset("t", "k", "v")).await.unwrap().message,
        "A2;A1;"
    );
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_plugin_rebuilt_at_the_same_path_is_loaded_again_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libguard.so");
    std::fs::copy(plugin("key-guard"), &lib).unwrap();
    let config = dir.path().join("config.toml");
    write_config(
        &config,
        "[[hooks]]\nplugin = \"libguard.so\"\nmax_key_len = 8\n",
    );
    let server = Running::start(&config);
    let pid = server.child.id();

    // Unchanged file and entry: the running hook is kept.
    server.signal("HUP");
    let line = server.wait_for_nth_log("hook chain reloaded", 1);
    assert!(
        line.contains("added=[]") && line.contains("kept=[\"hooks[1]"),
        "{line}"
    );

    // The same bytes in a new file (new mtime, new inode), as an identical
    // rebuild or a redeploy makes: still the same build, kept.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::remove_file(&lib).unwrap();
    std::fs::copy(plugin("key-guard"), &lib).unwrap();
    server.signal("HUP");
    let line = server.wait_for_nth_log("hook chain reloaded", 2);
    assert!(
        line.contains("replaced=[]") && line.contains("kept=[\"hooks[1]"),
        "{line}"
    );
    assert_eq!(mapped_copies(pid, "libguard.so"), 1);

    // A new build (other bytes) at the same path: loaded anew.
    support::plugins::rebuilt(&plugin("key-guard"), &lib, "a new build");
    server.signal("HUP");
    let line = server.wait_for_nth_log("hook chain reloaded", 3);
    assert!(
        line.contains("replaced=[\"hooks[1]") && line.contains("kept=[]"),
        "{line}"
    );
    assert_eq!(mapped_copies(pid, "libguard.so"), 2);

    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(
        bounded(c.hset("t", "much-too-long", "v"))
            .await
            .unwrap()
            .status,
        400
    );
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn replacing_a_token_by_reload_logs_its_connections_out() {
    use hookv::hooks::auth::hash_token;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let auth = |token: &str| {
        format!(
            "[[hooks]]\nkind = \"auth\"\nusers = [{{ name = \"app\", token_sha256 = \"{}\", read = [\"*\"], write = [\"*\"] }}]\n",
            hash_token(token)
        )
    };
    write_config(&config, &auth("leaked"));
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(bounded(c.auth("leaked")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);

    write_config(&config, &auth("fresh"));
    server.signal("HUP");
    server.wait_for_log("hook chain reloaded");
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 401);
    assert_eq!(bounded(c.auth("leaked")).await.unwrap().status, 401);
    assert_eq!(bounded(c.auth("fresh")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 200);
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn reloading_the_start_config_brings_a_removed_wal_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let started = "[[hooks]]\nkind = \"wal\"\npath = \"wal\"\nfsync = \"always\"\n\
                   [[hooks]]\nkind = \"rewrite\"\nrules = [{ prefix_message = \"one\" }]\n";
    write_config(&config, started);
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    bounded(c.hset("t", "a", 1i64)).await.unwrap();

    // Without the wal: the log keeps running until a restart.
    write_config(
        &config,
        "[[hooks]]\nkind = \"rewrite\"\nrules = [{ prefix_message = \"two\" }]\n",
    );
    server.signal("HUP");
    let line = server.wait_for_log("take effect only on restart");
    assert!(line.contains("wal hook"), "{line}");
    assert_eq!(
        bounded(c.hset("t", "b", 2i64)).await.unwrap().message,
        "two"
    );

    // The config it started with: its wal entry is the open log's hook again.
    write_config(&config, started);
    server.signal("HUP");
    server.wait_for_nth_log("hook chain reloaded", 2);
    assert_eq!(
        bounded(c.hset("t", "c", 3i64)).await.unwrap().message,
        "one"
    );
    // Nothing differs from what runs, so no restart is asked for: a third
    // reload, logged after anything the second logged, shows it.
    server.signal("HUP");
    server.wait_for_nth_log("hook chain reloaded", 3);
    let log = server.log_text();
    assert_eq!(
        log.matches("take effect only on restart").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("reload failed"), "{log}");

    // Every acknowledged write is in the log.
    drop(c);
    server.kill_hard();
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    let res = bounded(c.hgetall("t")).await.unwrap();
    let keys: Vec<_> = res.pairs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_reload_reports_replaced_entries_apart_from_added_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("key-guard"), dir.path().join("libguard.so")).unwrap();
    let config = dir.path().join("config.toml");
    let rewrite = |mark: &str| {
        format!("[[hooks]]\nkind = \"rewrite\"\nrules = [{{ prefix_message = \"{mark}\" }}]\n")
    };
    let guard = |max: usize| format!("[[hooks]]\nplugin = \"libguard.so\"\nmax_key_len = {max}\n");
    let audit = "[[hooks]]\nkind = \"audit\"\npath = \"audit.jsonl\"\n";
    write_config(
        &config,
        &[rewrite("A1;"), rewrite("A2;"), guard(8), rewrite("A3;")].concat(),
    );
    let server = Running::start(&config);

    // hooks[1]: same kind at the same place, new options: replaced.
    // hooks[2]: unchanged: kept. hooks[3]: a new hook: added. The plugin
    // moves to hooks[4] with new options: replaced. The old hooks[4]: removed.
    write_config(
        &config,
        &[rewrite("X1;"), rewrite("A2;"), audit.into(), guard(9)].concat(),
    );
    server.signal("HUP");
    let line = server.wait_for_log("hook chain reloaded");
    for part in [
        r#"added=["hooks[3] (kind = \"audit\")"]"#,
        r#"removed=["hooks[4] (kind = \"rewrite\")"]"#,
        r#"replaced=["hooks[1] (kind = \"rewrite\")", "hooks[3] (plugin = \"libguard.so\") -> hooks[4] (plugin = \"libguard.so\")"]"#,
        r#"kept=["hooks[2] (kind = \"rewrite\")"]"#,
    ] {
        assert!(line.contains(part), "want {part} in {line}");
    }

    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    let res = bounded(c.hset("t", "ninebytes", "v")).await.unwrap();
    assert_eq!((res.status, res.message.as_str()), (200, "A2;X1;"));
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn reloads_that_change_only_plugin_options_map_the_library_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("key-guard"), dir.path().join("libguard.so")).unwrap();
    let config = dir.path().join("config.toml");
    let guard = |max: usize| format!("[[hooks]]\nplugin = \"libguard.so\"\nmax_key_len = {max}\n");
    write_config(&config, &guard(1));
    let server = Running::start(&config);
    let pid = server.child.id();
    assert_eq!(mapped_copies(pid, "libguard.so"), 1);

    // Each reload makes a new instance with new options, of the same build.
    for n in 1..=200 {
        write_config(&config, &guard(1 + n % 10));
        server.signal("HUP");
        server.wait_for_nth_log("hook chain reloaded", n);
    }
    assert_eq!(
        mapped_copies(pid, "libguard.so"),
        1,
        "one build, one mapping"
    );

    // The last options rule: max_key_len = 1 + 200 % 10 = 1.
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hset("t", "kk", "v")).await.unwrap().status, 400);
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn past_the_build_limit_a_reload_is_refused_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.so");
    support::plugins::build_c_plugin(&base);
    let lib = dir.path().join("libdeny.so");
    let build = |n: usize| support::plugins::rebuilt(&base, &lib, &format!("build {n}"));
    build(1);
    let config = dir.path().join("config.toml");
    write_config(&config, "[[hooks]]\nplugin = \"libdeny.so\"\n");
    let server = Running::start(&config);
    let pid = server.child.id();

    // Every reload that meets a new build maps it, up to the limit.
    let limit = hookv::plugin::MAX_BUILDS;
    for n in 2..=limit {
        build(n);
        server.signal("HUP");
        server.wait_for_nth_log("hook chain reloaded", n - 1);
    }
    assert_eq!(mapped_copies(pid, "libdeny.so"), limit);

    // One more is refused, in one line that says what to do.
    build(limit + 1);
    server.signal("HUP");
    let line = server.wait_for_log("reload failed");
    assert!(
        line.contains("libdeny.so") && line.contains("restart the server"),
        "{line}"
    );
    assert_eq!(mapped_copies(pid, "libdeny.so"), limit);

    // A build already loaded costs nothing: the one the server started with
    // reloads.
    build(1);
    server.signal("HUP");
    server.wait_for_nth_log("hook chain reloaded", limit);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 403);
    drop(c);
    assert!(server.terminate().success());
}
