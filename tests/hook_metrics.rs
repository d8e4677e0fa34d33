//! Per-hook and plugin metrics, read where an operator reads them: the
//! server binary's `/metrics` (through a real Prometheus text parser) and
//! its `stats` answer; each counter moves by exactly what the test sends.
//!
//! Each test but the last runs its own server process (the figures are per
//! process), with one worker thread: a connection adds its batch's counts
//! before it waits for its next request, so by the time a client has read
//! an answer, the batches before it are counted and no other task (a
//! scrape, say) can run in between.

mod support;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use hookv::config::ServerConfig;
use hookv::hooks::auth::hash_token;
use hookv::hooks::{Events, Flow, Hook, HookChain, HookCtx};
use hookv::metrics::HOOK_SAMPLE;
use hookv::pb::{value, CommandRequest, CommandResponse};
use hookv::{MemTable, Service, ServiceInner};
use support::plugins::plugin;
use support::scrape::{sample, scrape, start, value};
use support::{bounded, TestServer};

/// A config for the server binary: one worker thread, `/metrics` on a
/// free port, and `hooks`.
fn config(hooks: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworker_threads = 1\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n{hooks}"
    )
}

fn plugin_entry(package: &str, options: &str) -> String {
    plugin_path_entry(&plugin(package), options)
}

fn plugin_path_entry(path: &Path, options: &str) -> String {
    format!(
        "[[hooks]]\nplugin = {:?}\n{options}\n",
        path.display().to_string()
    )
}

/// The `stats` answer's integer pairs.
fn stats_map(res: &CommandResponse) -> HashMap<String, i64> {
    assert_eq!(res.status, 200, "{}", res.message);
    res.pairs
        .iter()
        .filter_map(|p| match p.value.as_ref()?.value.as_ref()? {
            value::Value::Integer(n) => Some((p.key.clone(), *n)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_refused_writes_are_seven_breaks_of_the_auth_hook() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "[[hooks]]\nkind = \"auth\"\n\
         users = [{{ name = \"viewer\", token_sha256 = \"{}\", read = [\"*\"], write = [] }}]\n",
        hash_token("viewer-token-0123456789")
    );
    let (server, metrics) = start(dir.path(), &config(&hooks));
    let mut c = server.client().await;
    let login = bounded(c.auth("viewer-token-0123456789")).await.unwrap();
    assert_eq!(login.status, 200);
    for i in 0..7 {
        let r = bounded(c.hset("t", &format!("k{i}"), "v")).await.unwrap();
        assert_eq!(r.status, 403, "{r:?}");
    }

    let scrape = scrape(metrics).await;
    let received = [("hook", "auth"), ("event", "on_received")];
    let breaks = |status| {
        sample(
            &scrape,
            "hookv_hook_breaks_total",
            &[received[0], received[1], ("status", status)],
        )
    };
    assert_eq!(breaks("403"), Some(7.0));
    // The login is a break too (auth answers it), with 200.
    assert_eq!(breaks("200"), Some(1.0));
    assert_eq!(breaks("401"), None, "no series for what never happened");
    // Every request met the hook on both of its events.
    assert_eq!(value(&scrape, "hookv_hook_calls_total", &received), 8.0);
    let before_send = [("hook", "auth"), ("event", "on_before_send")];
    assert_eq!(value(&scrape, "hookv_hook_calls_total", &before_send), 8.0);
    assert_eq!(
        value(&scrape, "hookv_hook_panics_total", &[("hook", "auth")]),
        0.0
    );
    assert!(scrape.docs.contains_key("hookv_hook_breaks_total"));

    // stats: the same figures (its own call is counted once it is answered).
    let stats = stats_map(&bounded(c.stats()).await.unwrap());
    for (key, want) in [
        ("hookstats.auth:on_received.calls", 8),
        ("hookstats.auth:on_received.status_403", 7),
        ("hookstats.auth:on_received.status_200", 1),
        ("hookstats.auth:on_received.panics", 0),
        ("hookstats.auth:on_before_send.calls", 8),
    ] {
        assert_eq!(stats.get(key), Some(&want), "{key} in {stats:?}");
    }
    // hookv-cli stats shows them to a person, one line per hook and event.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookv-cli"))
        .args(["--addr", &server.addr.to_string()])
        .args(["--token", "viewer-token-0123456789", "--no-raw", "stats"])
        .env_remove("HOOKV_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("auth:on_received: "))
        .unwrap_or_else(|| panic!("no auth line in:\n{text}"));
    assert!(
        line.contains(" panics=0 ") && line.ends_with(" 403=7"),
        "{line}"
    );
    assert!(text.contains("# Hookstats\n"), "{text}");
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_scoped_away_from_a_table_is_never_called_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = plugin_entry("key-guard", "max_key_len = 64\ntables = [\"orders*\"]");
    let (server, metrics) = start(dir.path(), &config(&hooks));
    let mut c = server.client().await;
    for i in 0..10 {
        let r = bounded(c.hset("bench", &format!("k{i}"), "v"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    for i in 0..3 {
        let r = bounded(c.hset("orders", &format!("k{i}"), "v"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let scrape = scrape(metrics).await;
    let calls = [("hook", "key-guard"), ("event", "on_received")];
    assert_eq!(value(&scrape, "hookv_hook_calls_total", &calls), 3.0);
    let requests = [("command", "hset"), ("status", "200")];
    assert_eq!(value(&scrape, "hookv_requests_total", &requests), 13.0);
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_plugin_counts_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = plugin_entry("rate-limit", "per_second = 0.001\nburst = 2");
    let (server, metrics) = start(dir.path(), &config(&hooks));
    let mut c = server.client().await;
    let mut refused = 0;
    for i in 0..5 {
        let r = bounded(c.hset("t", &format!("k{i}"), "v")).await.unwrap();
        if r.status == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    let scrape = scrape(metrics).await;
    let plugin = [("plugin", "rate-limit")];
    assert_eq!(value(&scrape, "hookv_plugin_refused_total", &plugin), 3.0);
    let breaks = [
        ("hook", "rate-limit"),
        ("event", "on_received"),
        ("status", "429"),
    ];
    assert_eq!(value(&scrape, "hookv_hook_breaks_total", &breaks), 3.0);
    assert_eq!(value(&scrape, "hookv_plugin_panics_total", &plugin), 0.0);
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_plugin_at_version_2_counts_through_the_header_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libc_count.so");
    support::plugins::build_c("count.c", &lib);
    let (server, metrics) = start(dir.path(), &config(&plugin_path_entry(&lib, "")));
    let mut c = server.client().await;
    for i in 0..4 {
        let r = bounded(c.hget("t", &format!("k{i}"))).await.unwrap();
        assert_eq!(r.status, 404, "{r:?}");
    }
    let scrape = scrape(metrics).await;
    let plugin = [("plugin", "c-count")];
    assert_eq!(
        value(&scrape, "hookv_plugin_c_requests_total", &plugin),
        4.0
    );
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_panics_and_errors_are_counted_for_v1_and_v2_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = plugin_entry("panic-test", "on_panic = \"fail_open\"")
        + &plugin_entry(
            "v1-guard",
            "on_panic = \"fail_open\"\npanic_table = \"boom\"",
        );
    let (server, metrics) = start(dir.path(), &config(&hooks));
    let mut c = server.client().await;
    for _ in 0..2 {
        let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = bounded(c.hget("garbage", "k")).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    // panic-test is built with this SDK (version 2: a panic verdict);
    // v1-guard reports panics as version 1 did, as errors saying so.
    let scrape = scrape(metrics).await;
    let figure = |metric, plugin| value(&scrape, metric, &[("plugin", plugin)]);
    assert_eq!(figure("hookv_plugin_panics_total", "panic-test"), 2.0);
    assert_eq!(figure("hookv_plugin_panics_total", "v1-guard"), 2.0);
    assert_eq!(figure("hookv_plugin_errors_total", "panic-test"), 1.0);
    assert_eq!(figure("hookv_plugin_errors_total", "v1-guard"), 0.0);
    let stats = stats_map(&bounded(c.stats()).await.unwrap());
    for (key, want) in [
        ("pluginstats.panic-test.panics", 2),
        ("pluginstats.panic-test.errors", 1),
        ("pluginstats.v1-guard.panics", 2),
        ("pluginstats.v1-guard.errors", 0),
    ] {
        assert_eq!(stats.get(key), Some(&want), "{key} in {stats:?}");
    }
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_durations_are_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start(
        dir.path(),
        &config(&plugin_entry("key-guard", "max_key_len = 64")),
    );
    let mut c = server.client().await;
    let calls = 20 * HOOK_SAMPLE;
    let reqs = vec![CommandRequest::new_hget("t", "k"); 64];
    for _ in 0..calls / 64 {
        let answers = bounded(c.pipeline(&reqs)).await.unwrap();
        assert!(answers.iter().all(|r| r.status == 404));
    }
    let scrape = scrape(metrics).await;
    let guard = [("hook", "key-guard")];
    let received = [guard[0], ("event", "on_received")];
    assert_eq!(
        value(&scrape, "hookv_hook_calls_total", &received),
        f64::from(calls)
    );
    // About one call in HOOK_SAMPLE is timed, chosen at random: 20 on
    // average here; none or all would mean no sampling.
    let timed = value(&scrape, "hookv_hook_duration_seconds_count", &guard);
    assert!(timed >= 1.0 && timed < f64::from(calls / 4), "{timed}");
    drop(c);
    server.stop_cleanly();
}

/// A hook that continues, but panics on table "boom" (in `on_received`)
/// and on table "late" (in `on_before_send`).
struct Panicky;

impl Hook for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn events(&self) -> Events {
        Events {
            before_send: true,
            ..Events::RECEIVED
        }
    }
    fn on_received(&self, _ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        assert!(req.table() != Some("boom"), "asked to panic");
        ControlFlow::Continue(())
    }
    fn on_before_send(
        &self,
        _ctx: &HookCtx,
        req: &CommandRequest,
        _res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        assert!(req.table() != Some("late"), "asked to panic late");
        ControlFlow::Continue(())
    }
}

/// A hook panic can only come from a hook compiled into the server (a
/// plugin's is caught at its edge), so this one runs in this process,
/// behind the same `/metrics` endpoint the binary serves. One thread, as
/// the binary's one worker: the batch is counted before the scrape runs.
#[tokio::test]
async fn a_panicking_hook_is_counted_and_its_requests_fail_closed() {
    hookv::metrics::install().unwrap();
    let listener = hookv::metrics::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let metrics = listener.local_addr().unwrap();
    let endpoint = tokio::spawn(hookv::metrics::serve(listener, std::future::pending()));
    let mut chain = HookChain::new();
    chain.push(Arc::new(Panicky));
    let service: Service = ServiceInner::new(MemTable::new()).hooks(&chain).into();
    let server = TestServer::start(service, ServerConfig::default()).await;
    let mut c = server.client().await;
    for _ in 0..3 {
        let r = bounded(c.hget("boom", "k")).await.unwrap();
        assert_eq!(r.status, 500, "{r:?}");
    }
    let r = bounded(c.hget("calm", "k")).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    // In on_before_send the 500 replaces the answer: a break too.
    for _ in 0..2 {
        let r = bounded(c.hget("late", "k")).await.unwrap();
        assert_eq!(r.status, 500, "{r:?}");
    }
    let scrape = scrape(metrics).await;
    let hook = [("hook", "panicky")];
    assert_eq!(value(&scrape, "hookv_hook_panics_total", &hook), 5.0);
    let breaks = [hook[0], ("event", "on_received"), ("status", "500")];
    assert_eq!(value(&scrape, "hookv_hook_breaks_total", &breaks), 3.0);
    let late = [hook[0], ("event", "on_before_send"), ("status", "500")];
    assert_eq!(value(&scrape, "hookv_hook_breaks_total", &late), 2.0);
    let calls = [hook[0], ("event", "on_received")];
    assert_eq!(value(&scrape, "hookv_hook_calls_total", &calls), 6.0);
    drop(c);
    server.stop().await;
    endpoint.abort();
}
