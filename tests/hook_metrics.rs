//! Per-hook and plugin metrics, read through a real Prometheus recorder
//! (`metrics-exporter-prometheus`, installed once for this test binary
//! before any chain is built, as the server installs it before building
//! its chain): each counter moves by exactly what the test sends.
//!
//! The tests run side by side in one process and share the recorder, so
//! each one owns its hooks' names (no two tests here use the same hook).

mod support;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hookv::config::Config;
use hookv::hooks::auth::hash_token;
use hookv::hooks::{Events, Flow, Hook, HookChain, HookCtx, Placement, SAMPLE_EVERY};
use hookv::pb::CommandRequest;
use hookv::{MemTable, Service, ServiceInner};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use support::plugins::plugin;
use support::{bounded, TestServer};

/// The recorder, installed on first use.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder")
    })
}

/// The value of the series `name{labels}` in the recorder's text, if any.
fn metric(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let text = recorder().render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let found: BTreeMap<&str, &str> = rest
                .strip_suffix('}')?
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            (n == name && found == want).then(|| value.parse().ok())?
        })
}

/// Waits (bounded) until `name{labels}` reads `want`, then checks it: a
/// connection adds its batch's calls once the batch is answered, which may
/// be a moment after the client read the answer.
async fn settles_at(name: &str, labels: &[(&str, &str)], want: f64) {
    let start = Instant::now();
    while metric(name, labels) != Some(want) && start.elapsed() < support::LIMIT {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(metric(name, labels), Some(want), "{name}{labels:?}");
}

async fn server_with(hooks_toml: &str) -> TestServer {
    recorder();
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
async fn seven_refused_writes_are_seven_breaks_of_the_auth_hook() {
    let hooks = format!(
        "[[hooks]]\nkind = \"auth\"\n\
         users = [{{ name = \"viewer\", token_sha256 = \"{}\", read = [\"*\"], write = [] }}]\n",
        hash_token("viewer-token-0123456789")
    );
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    assert_eq!(
        bounded(c.auth("viewer-token-0123456789"))
            .await
            .unwrap()
            .status,
        200
    );
    for i in 0..7 {
        let r = bounded(c.hset("t", &format!("k{i}"), "v")).await.unwrap();
        assert_eq!(r.status, 403, "{r:?}");
    }
    let auth = [("hook", "auth"), ("event", "on_received")];
    settles_at(
        "hookv_hook_breaks_total",
        &[auth[0], auth[1], ("status", "403")],
        7.0,
    )
    .await;
    // The login is a break too (auth answers it), with 200.
    settles_at(
        "hookv_hook_breaks_total",
        &[auth[0], auth[1], ("status", "200")],
        1.0,
    )
    .await;
    // Every request met the hook on both of its events.
    settles_at("hookv_hook_calls_total", &auth, 8.0).await;
    let before_send = [("hook", "auth"), ("event", "on_before_send")];
    settles_at("hookv_hook_calls_total", &before_send, 8.0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_hook_scoped_away_from_a_table_is_never_called_for_it() {
    let options = "max_key_len = 64\ntables = [\"orders*\"]";
    let server = server_with(&plugin_entry("key-guard", options)).await;
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
    let calls = [("hook", "key-guard"), ("event", "on_received")];
    settles_at("hookv_hook_calls_total", &calls, 3.0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_v2_plugin_counts_through_the_server() {
    let options = "per_second = 0.001\nburst = 2";
    let server = server_with(&plugin_entry("rate-limit", options)).await;
    let mut c = server.client().await;
    let mut refused = 0;
    for i in 0..5 {
        if bounded(c.hset("t", &format!("k{i}"), "v"))
            .await
            .unwrap()
            .status
            == 429
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    let plugin = [("plugin", "rate-limit")];
    settles_at("hookv_plugin_refused_total", &plugin, 3.0).await;
    let breaks = [
        ("hook", "rate-limit"),
        ("event", "on_received"),
        ("status", "429"),
    ];
    settles_at("hookv_hook_breaks_total", &breaks, 3.0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_c_plugin_at_version_2_counts_through_the_header_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libc_count.so");
    support::plugins::build_c("count.c", &lib);
    let hooks = format!("[[hooks]]\nplugin = {:?}\n", lib.display().to_string());
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    for i in 0..4 {
        let r = bounded(c.hget("t", &format!("k{i}"))).await.unwrap();
        assert_eq!(r.status, 404, "{r:?}");
    }
    settles_at(
        "hookv_plugin_c_requests_total",
        &[("plugin", "c-count")],
        4.0,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn plugin_panics_and_errors_are_counted_for_v1_and_v2_plugins() {
    let hooks = plugin_entry("panic-test", "on_panic = \"fail_open\"")
        + &plugin_entry(
            "v1-guard",
            "on_panic = \"fail_open\"\npanic_table = \"boom\"",
        );
    let server = server_with(&hooks).await;
    let mut c = server.client().await;
    for _ in 0..2 {
        let r = bounded(c.hset("boom", "k", "v")).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = bounded(c.hget("garbage", "k")).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    // panic-test is built with this SDK (version 2: a panic verdict);
    // v1-guard reports panics as version 1 did, as errors saying so.
    settles_at(
        "hookv_plugin_panics_total",
        &[("plugin", "panic-test")],
        2.0,
    )
    .await;
    settles_at("hookv_plugin_panics_total", &[("plugin", "v1-guard")], 2.0).await;
    settles_at(
        "hookv_plugin_errors_total",
        &[("plugin", "panic-test")],
        1.0,
    )
    .await;
    settles_at("hookv_plugin_errors_total", &[("plugin", "v1-guard")], 0.0).await;
    server.stop().await;
}

/// A hook that continues, except that, if `panics`, it panics on table
/// "boom".
struct Named {
    name: &'static str,
    panics: bool,
}

impl Hook for Named {
    fn name(&self) -> &str {
        self.name
    }
    fn events(&self) -> Events {
        Events::RECEIVED
    }
    fn on_received(&self, _ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        assert!(
            !(self.panics && req.table() == Some("boom")),
            "asked to panic"
        );
        ControlFlow::Continue(())
    }
}

#[test]
fn durations_are_sampled_and_hook_panics_counted() {
    recorder();
    let mut chain = HookChain::new();
    let (sampled, panicky) = ("sampled", "panicky");
    chain.push(Arc::new(Named {
        name: sampled,
        panics: false,
    }));
    chain.push_placed(
        Arc::new(Named {
            name: panicky,
            panics: true,
        }),
        Placement::default(),
    );
    let service: Service = ServiceInner::new(MemTable::new()).hooks(&chain).into();
    let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().unwrap());
    let calls = 20 * SAMPLE_EVERY;
    for _ in 0..calls {
        service.execute(&mut ctx, &CommandRequest::new_hget("t", "k"));
    }
    for _ in 0..3 {
        let res = service.execute(&mut ctx, &CommandRequest::new_hget("boom", "k"));
        assert_eq!(res.status, 500);
    }
    let sampled = [("hook", "sampled")];
    assert_eq!(
        metric(
            "hookv_hook_calls_total",
            &[sampled[0], ("event", "on_received")]
        ),
        Some(f64::from(calls + 3))
    );
    // About one call in SAMPLE_EVERY is timed, chosen at random: 20 on
    // average here; none or all would mean no sampling.
    let timed = metric("hookv_hook_duration_seconds_count", &sampled).unwrap_or(0.0);
    assert!(timed >= 1.0 && timed < f64::from(calls / 4), "{timed}");
    assert_eq!(
        metric("hookv_hook_panics_total", &[("hook", "panicky")]),
        Some(3.0)
    );
    let breaks = [
        ("hook", "panicky"),
        ("event", "on_received"),
        ("status", "500"),
    ];
    assert_eq!(metric("hookv_hook_breaks_total", &breaks), Some(3.0));
}
