//! Plugins through the real server: the example plugins' behaviour, a
//! misbehaving plugin, and libraries the loader must refuse.
//!
//! The plugins are built on first use (see `support::plugins`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use hookv::config::Config;
use hookv::hooks::{Hook, HookCtx};
use hookv::pb::{CommandRequest, Kvpair, Value};
use hookv::plugin::PluginHook;
use support::plugins::{example, mapped_copies, plugin};
use support::{bounded, TestServer};

/// A memory server whose hooks are the `[[hooks]]` of `hooks_toml`,
/// started as the binary starts one.
async fn server_with(hooks_toml: &str) -> TestServer {
    let config = Config::parse(hooks_toml, Path::new("test.toml")).expect("config");
    TestServer::from_config(&config).await
}

fn hooks_entry(library: &Path, options: &str) -> String {
    format!(
        "[[hooks]]\nplugin = {:?}\n{options}\n",
        library.display().to_string()
    )
}

#[tokio::test]
async fn key_guard_refuses_long_writes_with_400_and_storage_is_untouched() {
    let server = server_with(&hooks_entry(&plugin("key-guard"), "max_key_len = 8")).await;
    let mut c = server.client().await;
    let long = "k".repeat(9);

    assert_eq!(
        bounded(c.hset("t", "short", "v")).await.unwrap().status,
        200
    );
    let r = bounded(c.hset("t", &long, "v")).await.unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message.contains("max_key_len"), "{r:?}");
    // Nothing reached storage: the key is absent, and a batch with one long
    // key stores none of its pairs.
    assert_eq!(bounded(c.hget("t", &long)).await.unwrap().status, 404);
    let batch = vec![
        Kvpair::new("ok", "v".into()),
        Kvpair::new(long.as_str(), "v".into()),
    ];
    let r = bounded(c.send(&CommandRequest::new_hmset("t", batch)))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(bounded(c.hget("t", "ok")).await.unwrap().status, 404);
    assert_eq!(bounded(c.hdel("t", &long)).await.unwrap().status, 400);
    let r = bounded(c.send(&CommandRequest::new_hmdel(
        "t",
        vec!["short".into(), long.clone()],
    )))
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    let r = bounded(c.hget("t", "short")).await.unwrap();
    assert_eq!(r.values, vec![Value::from("v")], "hmdel must not have run");
    // Reads are not writes: a long key is just missing.
    assert_eq!(bounded(c.hexist("t", &long)).await.unwrap().status, 200);
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_past_the_burst_per_ip() {
    let options = "per_second = 0.001\nburst = 3";
    let server = server_with(&hooks_entry(&plugin("rate-limit"), options)).await;
    let mut c = server.client().await;
    for i in 0..3 {
        let r = bounded(c.hset("t", &format!("k{i}"), "v")).await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    let r = bounded(c.hset("t", "k3", "v")).await.unwrap();
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.message.contains("127.0.0.1"), "{r:?}");
    // The refused write was not executed.
    assert_eq!(bounded(c.hget("t", "k3")).await.unwrap().status, 429);
    // Another connection from the same address shares the bucket.
    let mut other = server.client().await;
    assert_eq!(bounded(other.hget("t", "k0")).await.unwrap().status, 429);
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_recovers_as_the_bucket_refills() {
    let options = "per_second = 20.0\nburst = 2";
    let server = server_with(&hooks_entry(&plugin("rate-limit"), options)).await;
    let mut c = server.client().await;
    // Far more requests than the bucket holds: some must be refused.
    let mut refused = false;
    for _ in 0..200 {
        if bounded(c.hget("t", "k")).await.unwrap().status == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "200 requests in a row passed a limit of 20/s");
    // One token comes back every 50 ms.
    let start = Instant::now();
    loop {
        let status = bounded(c.hget("t", "k")).await.unwrap().status;
        if status == 404 {
            break;
        }
        assert_eq!(status, 429);
        assert!(start.elapsed() < support::LIMIT, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// An hget or hset that only plugins see is answered from its bytes (the
/// plugin is handed them raw); one whose answer is not a 200 then goes the
/// usual way. Either way the plugin is called once per request: the
/// bucket of 5 lasts exactly 5 requests, misses included.
#[tokio::test]
async fn a_plugin_sees_each_request_once_whichever_way_it_is_answered() {
    let options = "per_second = 0.001\nburst = 5";
    let server = server_with(&hooks_entry(&plugin("rate-limit"), options)).await;
    let mut c = server.client().await;
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    let r = bounded(c.hget("t", "k")).await.unwrap();
    assert_eq!((r.status, r.values), (200, vec![Value::from("v")]));
    // A missing key and a missing table: 404s, worded by the usual path.
    let r = bounded(c.hget("t", "nope")).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.message.contains("nope"), "{r:?}");
    assert_eq!(bounded(c.hget("none", "k")).await.unwrap().status, 404);
    // A command that is always decoded spends the last token.
    assert_eq!(bounded(c.hgetall("t")).await.unwrap().status, 200);
    let r = bounded(c.hget("t", "k")).await.unwrap();
    assert_eq!(r.status, 429, "{r:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_plugin_costs_one_500_and_the_server_lives_on() {
    let server = server_with(&hooks_entry(&plugin("panic-test"), "")).await;
    let mut c = server.client().await;
    for _ in 0..3 {
        let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
        assert_eq!(r.status, 500, "{r:?}");
        assert!(r.message.contains("panic-test"), "{r:?}");
        // The same connection goes on working.
        assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    }
    // The refused request was never executed.
    assert_eq!(bounded(c.hgetall("boom")).await.unwrap().pairs, vec![]);
    let mut fresh = server.client().await;
    assert_eq!(bounded(fresh.hget("t", "k")).await.unwrap().status, 200);
    server.stop().await;
}

#[tokio::test]
async fn garbage_bytes_or_an_unknown_verdict_from_a_plugin_give_500() {
    let server = server_with(&hooks_entry(&plugin("panic-test"), "")).await;
    let mut c = server.client().await;
    for table in ["garbage", "unknown"] {
        let r = bounded(c.hget(table, "k")).await.unwrap();
        assert_eq!(r.status, 500, "{table}: {r:?}");
        assert!(r.message.contains("panic-test"), "{r:?}");
    }
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    server.stop().await;
}

#[tokio::test]
async fn plugins_run_in_config_order_next_to_each_other() {
    let hooks = hooks_entry(&plugin("key-guard"), "max_key_len = 4")
        + &hooks_entry(&plugin("rate-limit"), "per_second = 0.001\nburst = 2");
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    // key-guard refuses first, so these do not spend rate-limit tokens.
    for _ in 0..3 {
        assert_eq!(
            bounded(c.hset("t", "toolong", "v")).await.unwrap().status,
            400
        );
    }
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 429);
    server.stop().await;
}

/// Runs the real server on a config made of `hooks`; it must refuse to
/// start with one line on stderr, naming the hook, which is returned.
fn start_refused(hooks: &str) -> String {
    let stderr = support::start_fails(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{hooks}"));
    assert!(stderr.contains("config.toml:3: hooks[1]"), "{stderr}");
    stderr
}

#[test]
fn a_plugin_refusing_its_options_stops_the_start_with_its_message() {
    let lib = plugin("key-guard");
    let err = start_refused(&hooks_entry(&lib, "max_key_len = \"ten\""));
    assert!(err.contains("\"key-guard\""), "{err}");
    assert!(err.contains("max_key_len") && err.contains("ten"), "{err}");

    let lib = plugin("panic-test");
    let err = start_refused(&hooks_entry(&lib, "fail_init = \"no thanks\""));
    assert!(err.contains("no thanks"), "{err}");
    let err = start_refused(&hooks_entry(&lib, "panic_init = true"));
    assert!(err.contains("asked to panic in init"), "{err}");
}

#[test]
fn a_missing_library_stops_the_start_naming_the_file() {
    let err = start_refused("[[hooks]]\nplugin = \"plugins/libnothing.so\"\n");
    assert!(err.contains("plugins/libnothing.so"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn a_file_that_is_no_library_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "not a library").unwrap();
    let err = start_refused(&hooks_entry(&fake, ""));
    assert!(err.contains(&fake.display().to_string()), "{err}");
    assert!(err.contains("cannot load"), "{err}");
}

#[test]
fn a_library_without_the_descriptor_stops_the_start() {
    let lib = example("no-symbol");
    let err = start_refused(&hooks_entry(&lib, ""));
    assert!(err.contains(&lib.display().to_string()), "{err}");
    assert!(err.contains("hookv_plugin_descriptor"), "{err}");
}

#[test]
fn a_library_of_another_abi_version_stops_the_start() {
    let lib = example("other-abi");
    let err = start_refused(&hooks_entry(&lib, ""));
    assert!(err.contains(&lib.display().to_string()), "{err}");
    assert!(err.contains("ABI version 999"), "{err}");
}

#[test]
fn loading_a_path_again_after_it_was_replaced_runs_the_new_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libmine.so");
    let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().unwrap());
    let write = CommandRequest::new_hset("t", "a-long-key", "v".into());

    // Builds of this test's own (the tag), so no other test shares them.
    support::plugins::rebuilt(&plugin("key-guard"), &path, "replaced-1");
    let first = PluginHook::load(&path, r#"{"max_key_len": 4}"#).unwrap();
    assert_eq!(first.name(), "key-guard");

    // "Rebuild": another library at the same path.
    support::plugins::rebuilt(&plugin("rate-limit"), &path, "replaced-2");
    let second = PluginHook::load(&path, r#"{"per_second": 0.001, "burst": 1}"#).unwrap();
    assert_eq!(second.name(), "rate-limit");

    // Both run, each its own code.
    assert_eq!(
        first
            .on_received(&mut ctx, &write)
            .break_value()
            .unwrap()
            .status,
        400
    );
    assert!(second.on_received(&mut ctx, &write).is_continue());
    assert_eq!(
        second
            .on_received(&mut ctx, &write)
            .break_value()
            .unwrap()
            .status,
        429
    );
    drop(first);
    // Each build was mapped from its own private copy, removed from disk
    // once loaded.
    assert_eq!(mapped_copies(std::process::id(), "libmine.so"), 2);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let lines: Vec<_> = maps.lines().filter(|l| l.contains("libmine.so")).collect();
    assert!(lines.iter().all(|l| l.ends_with("(deleted)")), "{lines:#?}");
}

#[test]
fn loading_one_build_again_reuses_its_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libonce.so");
    support::plugins::rebuilt(&plugin("key-guard"), &path, "loaded-again");
    // The same bytes in another file, as a copy of an identical build is.
    let twin = dir.path().join("libtwin.so");
    std::fs::copy(&path, &twin).unwrap();
    let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().unwrap());
    let write = CommandRequest::new_hset("t", "sixsix", "v".into());

    // What a reload that changes only the options does, 300 times over;
    // every instance stays alive, each with its own options.
    let mut hooks = Vec::new();
    for n in 0..300 {
        let file = if n % 2 == 0 { &path } else { &twin };
        let limit = 1 + n % 10;
        let options = format!(r#"{{"max_key_len": {limit}}}"#);
        hooks.push((limit, PluginHook::load(file, &options).unwrap()));
    }
    for (limit, hook) in &hooks {
        let refused = hook.on_received(&mut ctx, &write).is_break();
        assert_eq!(refused, *limit < 6, "max_key_len = {limit}");
    }
    let pid = std::process::id();
    assert_eq!(
        mapped_copies(pid, "libonce.so") + mapped_copies(pid, "libtwin.so"),
        1,
        "one build, one mapping"
    );
}

#[test]
fn a_plugin_written_in_c_against_the_header_works() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libc_deny.so");
    support::plugins::build_c_plugin(&lib);
    let hook = PluginHook::load(&lib, "{}").unwrap();
    assert_eq!(hook.name(), "c-deny");
    let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().unwrap());
    let refusal = hook
        .on_received(&mut ctx, &CommandRequest::new_hget("t", "k"))
        .break_value()
        .unwrap();
    assert_eq!(
        (refusal.status, refusal.message.as_str()),
        (403, "c says no")
    );
}

#[tokio::test]
async fn a_v1_plugin_and_a_v2_plugin_load_in_one_server() {
    // v1-guard is exported as the version 1 SDK exported plugins; the
    // example plugins are built with this SDK, at version 2.
    let v1 = PluginHook::load(&plugin("v1-guard"), "{}").unwrap();
    let v2 = PluginHook::load(&plugin("rate-limit"), r#"{"per_second": 1.0}"#).unwrap();
    assert_eq!((v1.abi_version(), v2.abi_version()), (1, 2));

    let hooks = hooks_entry(&plugin("v1-guard"), "max_key_len = 4")
        + &hooks_entry(&plugin("rate-limit"), "per_second = 0.001\nburst = 2");
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    // v1-guard refuses first, so these do not spend rate-limit tokens.
    for _ in 0..3 {
        let r = bounded(c.hset("t", "toolong", "v")).await.unwrap();
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.message.contains("v1-guard"), "{r:?}");
    }
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 429);
    server.stop().await;
}

#[tokio::test]
async fn v2_plugins_log_through_the_server_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let c_lib = dir.path().join("libc_count.so");
    support::plugins::build_c("count.c", &c_lib);
    let config = dir.path().join("config.toml");
    let hooks = hooks_entry(&plugin("rate-limit"), "per_second = 0.5\nburst = 3")
        + &hooks_entry(&c_lib, "");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{hooks}"),
    )
    .unwrap();
    let server = support::Running::start(&config);
    // At init, without a request: the plugin's name, its words.
    let line = server.wait_for_log("limits per_second=0.5 burst=3");
    assert!(line.contains("hookv::plugin"), "{line}");
    assert!(line.contains("plugin=\"rate-limit\""), "{line}");
    let line = server.wait_for_log("c-count ready");
    assert!(line.contains("plugin=\"c-count\""), "{line}");
    // From an event, with its context: the connection too.
    let mut c = server.client().await;
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 404);
    let line = server.wait_for_log("c-count saw a request");
    assert!(
        line.contains("conn=") && line.contains("peer=\"127.0.0.1:"),
        "{line}"
    );
    server.stop_cleanly();
}
