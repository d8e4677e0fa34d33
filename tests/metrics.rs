//! The figures, seen from outside: `/metrics` (read by a real Prometheus
//! text parser) and `stats` (the request and `hookv-cli stats`) move by
//! exactly what the test sends. Each test runs the server binary, so the
//! figures (per process) are its own.

mod support;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::Command;

use hookv::hooks::auth::hash_token;
use hookv::pb::{value, CommandRequest, CommandResponse};
use support::scrape::{http_get, sample, scrape, start, value};
use support::{bounded, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

/// The `stats` answer's pairs as a map of integers (and floats as such).
fn stats_map(res: &CommandResponse) -> HashMap<String, f64> {
    assert_eq!(res.status, 200, "{}", res.message);
    res.pairs
        .iter()
        .filter_map(|p| {
            let v = match p.value.as_ref()?.value.as_ref()? {
                value::Value::Integer(n) => *n as f64,
                value::Value::Float(x) => *x,
                _ => return None,
            };
            Some((p.key.clone(), v))
        })
        .collect()
}

/// A frame whose bytes are not a protobuf request (a field claiming five
/// bytes with two left).
fn malformed_frame() -> Vec<u8> {
    let payload = b"\x0a\x05ab";
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_clients_send_in_metrics_and_in_stats() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, viewer) = ("admin-token", "viewer-token");
    // One worker thread, so the 1-in-16 duration sample is exact too.
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
worker_threads = 1
[metrics]
listen = "127.0.0.1:0"
[[hooks]]
kind = "auth"
users = [
  {{ name = "admin", token_sha256 = "{}", read = ["*"], write = ["*"] }},
  {{ name = "viewer", token_sha256 = "{}", read = ["public*"], write = [] }},
]
"#,
        hash_token(admin),
        hash_token(viewer)
    );
    let (server, metrics) = start(dir.path(), &config);

    let mut refused = server.client().await;
    assert_eq!(bounded(refused.auth(viewer)).await.unwrap().status, 200);
    for i in 0..7 {
        let res = bounded(refused.hset("orders", &format!("k{i}"), "v"))
            .await
            .unwrap();
        assert_eq!(res.status, 403, "{}", res.message);
    }
    // The viewer may not read the figures either: hookv:stats is not public*.
    let res = bounded(refused.stats()).await.unwrap();
    assert_eq!(res.status, 403);
    assert_eq!(
        res.message,
        "stats: user viewer may not read table \"hookv:stats\""
    );

    let mut client = server.client().await;
    assert_eq!(bounded(client.auth(admin)).await.unwrap().status, 200);
    for i in 0..5 {
        let res = bounded(client.hset("orders", &format!("k{i}"), "v"))
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{}", res.message);
    }
    for _ in 0..3 {
        let res = bounded(client.hget("orders", "missing")).await.unwrap();
        assert_eq!(res.status, 404);
    }
    // 32 in one pipeline: two duration samples, whatever the batching.
    let reqs = vec![CommandRequest::new_hexist("orders", "k1"); 32];
    let answers = bounded(client.pipeline(&reqs)).await.unwrap();
    assert!(answers.iter().all(|r| r.status == 200));
    bounded(client.send_raw(&malformed_frame())).await.unwrap();
    let res = bounded(client.read_response()).await.unwrap();
    assert_eq!(res.status, 400, "{}", res.message);

    // stats: the same figures, without itself (it is counted once answered).
    let stats = stats_map(&bounded(client.stats()).await.unwrap());
    let expected_stats = [
        ("commandstats.hset.calls", 12.0),
        ("commandstats.hset.status_403", 7.0),
        ("commandstats.hset.status_200", 5.0),
        ("commandstats.hget.status_404", 3.0),
        ("commandstats.hexist.calls", 32.0),
        ("commandstats.auth.status_200", 2.0),
        ("commandstats.stats.status_403", 1.0),
        ("commandstats.unknown.status_400", 1.0),
        ("errorstats.status_403", 8.0),
        ("errorstats.status_404", 3.0),
        ("errorstats.status_400", 1.0),
        ("stats.requests", 2.0 + 7.0 + 1.0 + 5.0 + 3.0 + 32.0 + 1.0),
        ("stats.frame_errors_malformed", 1.0),
        ("stats.frame_errors_too_large", 0.0),
        ("clients.connected", 2.0),
        ("clients.accepted", 2.0),
        ("clients.unauthenticated", 0.0),
    ];
    for (key, want) in expected_stats {
        assert_eq!(stats.get(key), Some(&want), "{key} in {stats:?}");
    }
    assert!(stats["commandstats.hset.usec_per_call"] > 0.0);

    let scrape = scrape(metrics).await;
    let requests = |command, status| {
        sample(
            &scrape,
            "hookv_requests_total",
            &[("command", command), ("status", status)],
        )
    };
    assert_eq!(requests("hset", "403"), Some(7.0));
    assert_eq!(requests("hset", "200"), Some(5.0));
    assert_eq!(requests("hget", "404"), Some(3.0));
    assert_eq!(requests("hexist", "200"), Some(32.0));
    assert_eq!(requests("auth", "200"), Some(2.0));
    assert_eq!(requests("stats", "403"), Some(1.0));
    assert_eq!(requests("stats", "200"), Some(1.0));
    assert_eq!(requests("unknown", "400"), Some(1.0));
    assert_eq!(
        requests("hget", "200"),
        None,
        "no series for what never happened"
    );
    let connections = |state| value(&scrape, "hookv_connections", &[("state", state)]);
    assert_eq!(connections("open"), 2.0);
    assert_eq!(connections("unauthenticated"), 0.0);
    assert_eq!(value(&scrape, "hookv_connections_accepted_total", &[]), 2.0);
    let frame_errors = |reason| value(&scrape, "hookv_frame_errors_total", &[("reason", reason)]);
    assert_eq!(frame_errors("malformed"), 1.0);
    assert_eq!(frame_errors("too_large"), 0.0);
    // 32 hexists on the one worker thread: samples 16 and 32.
    let hexist = [("command", "hexist")];
    assert_eq!(
        value(&scrape, "hookv_request_duration_seconds_count", &hexist),
        2.0
    );
    assert!(value(&scrape, "hookv_request_duration_seconds_sum", &hexist) > 0.0);
    assert_eq!(
        sample(
            &scrape,
            "hookv_request_duration_seconds_count",
            &[("command", "hset")]
        ),
        None,
        "12 hsets: no sample yet"
    );
    assert_eq!(
        value(&scrape, "hookv_reloads_total", &[("result", "ok")]),
        0.0
    );
    assert!(scrape.docs.contains_key("hookv_requests_total"));

    // hookv-cli stats shows them, for a person.
    let out = Command::new(CLI)
        .args(["--addr", &server.addr.to_string(), "--token", admin])
        .args(["--no-raw", "stats"])
        .env_remove("HOOKV_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("# Server\nversion: "), "{text}");
    for line in [
        "# Commandstats",
        "auth: calls=3 ",
        "connected: 3",
        "403=7",
        "200=5",
        "# Errorstats",
        "status_403: 8",
        "# Persistence",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let hset_line = text.lines().find(|l| l.starts_with("hset: ")).unwrap();
    assert!(hset_line.starts_with("hset: calls=12 time="), "{hset_line}");
    assert!(hset_line.ends_with(" 200=5 403=7"), "{hset_line}");
    // Raw: section.name=value lines, as answered.
    let out = Command::new(CLI)
        .args(["--addr", &server.addr.to_string(), "--token", admin])
        .args(["--raw", "stats"])
        .env_remove("HOOKV_TOKEN")
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        raw.lines().any(|l| l == "commandstats.hset.status_403=7"),
        "{raw}"
    );
    drop((refused, client));
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_audit_reload_and_frame_figures_match_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[server]
listen = "127.0.0.1:0"
max_frame_bytes = 4096
[metrics]
listen = "127.0.0.1:0"
[[hooks]]
kind = "audit"
path = "audit.jsonl"
queue = 1
[[hooks]]
kind = "wal"
path = "wal"
fsync = "always"
"#;
    let (server, metrics) = start(dir.path(), config);
    let mut client = server.client().await;
    // 200 audit records offered at once to a queue of one: most are dropped.
    let reqs: Vec<_> = (0..200)
        .map(|i| CommandRequest::new_hset("t", format!("k{i}"), "v".into()))
        .collect();
    let answers = bounded(client.pipeline(&reqs)).await.unwrap();
    assert!(answers.iter().all(|r| r.status == 200));
    // A frame over max_frame_bytes: 413, closed.
    let mut big = server.client().await;
    bounded(big.send_raw(&100_000u32.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(bounded(big.read_response()).await.unwrap().status, 413);

    // A reload that works, then one that does not parse.
    let path = dir.path().join("config.toml");
    server.signal("HUP");
    server.wait_for_log("hook chain reloaded");
    std::fs::write(&path, format!("{config}\n[[hooks]]\nkind = \"nope\"\n")).unwrap();
    server.signal("HUP");
    server.wait_for_log("reload failed");

    let scrape = scrape(metrics).await;
    // Every byte the log holds went through the writer, and it fsync'd.
    let segments: u64 = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(segments > 0);
    assert_eq!(
        value(&scrape, "hookv_wal_bytes_total", &[]),
        segments as f64
    );
    let fsyncs = value(&scrape, "hookv_wal_fsyncs_total", &[]);
    assert!(fsyncs >= 1.0);
    let fsync_count = value(&scrape, "hookv_wal_fsync_duration_seconds_count", &[]);
    assert_eq!(fsync_count, fsyncs);
    assert_eq!(value(&scrape, "hookv_wal_compactions_total", &[]), 0.0);
    assert_eq!(
        value(&scrape, "hookv_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        value(&scrape, "hookv_reloads_total", &[("result", "failed")]),
        1.0
    );
    let too_large = [("reason", "too_large")];
    assert_eq!(value(&scrape, "hookv_frame_errors_total", &too_large), 1.0);
    let unknown_413 = [("command", "unknown"), ("status", "413")];
    assert_eq!(value(&scrape, "hookv_requests_total", &unknown_413), 1.0);
    let dropped = value(&scrape, "hookv_audit_dropped_total", &[]);
    assert!(dropped > 0.0);
    assert_eq!(value(&scrape, "hookv_audit_lost_total", &[]), 0.0);

    // The file says the same: its "dropped" lines add up to the figure.
    drop((client, big));
    server.stop_cleanly();
    let file = std::fs::File::open(dir.path().join("audit.jsonl")).unwrap();
    let mut in_file = 0.0;
    for line in std::io::BufReader::new(file).lines() {
        let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if line["event"] == "dropped" {
            in_file += line["count"].as_f64().unwrap();
        }
    }
    assert_eq!(in_file, dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_works_without_the_endpoint_and_the_endpoint_answers_only_get_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let server = Running::start(&path);
    let mut client = server.client().await;
    bounded(client.hset("t", "k", "v")).await.unwrap();
    let stats = stats_map(&bounded(client.stats()).await.unwrap());
    assert_eq!(stats.get("commandstats.hset.status_200"), Some(&1.0));
    assert!(!server.log_text().contains("serving /metrics"));
    drop(client);
    server.stop_cleanly();

    let (server, metrics) = start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (status, _) = http_get(metrics, "/").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let mut stream = bounded(TcpStream::connect(metrics)).await.unwrap();
    bounded(stream.write_all(b"POST /metrics HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    let mut response = String::new();
    bounded(stream.read_to_string(&mut response)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 405 "), "{response}");
    // Before any request: the series that are always there, at zero.
    let scrape = scrape(metrics).await;
    assert_eq!(
        value(&scrape, "hookv_connections", &[("state", "open")]),
        0.0
    );
    assert_eq!(value(&scrape, "hookv_audit_dropped_total", &[]), 0.0);
    server.stop_cleanly();
}
