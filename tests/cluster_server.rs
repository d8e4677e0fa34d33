//! hookv serving the Redis Cluster backend, through its TCP interface, on a
//! real cluster (Debian's redis-server on loopback: see
//! `support/cluster.rs`): every command answers as on memory; a batch costs
//! what it must on the Redis side (counted there); a master stopped and
//! killed under load; hooks; two servers over one cluster; start-up errors.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::Cluster;
use hookv::client::Client;
use hookv::config::{Config, ServerConfig};
use hookv::hooks::auth::hash_token;
use hookv::pb::{CommandRequest, CommandResponse, Kvpair, Value};
use hookv::storage::redis_cluster::ClusterOptions;
use hookv::storage::RedisCluster;
use hookv::{Service, ServiceInner};
use support::{bounded, Running, TestServer};

/// A key prefix no other test uses.
fn unique_prefix() -> String {
    cluster::unique_prefix("hookv-srv")
}

/// `[storage]` for `cluster`, in a key space of its own, with `extra`
/// storage keys.
fn storage_toml(cluster: &Cluster, prefix: &str, extra: &str) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[storage]\nbackend = \"redis-cluster\"\nnodes = [{}]\nkey_prefix = {prefix:?}\n{extra}\n",
        seeds.join(", ")
    )
}

/// Writes `toml` as `dir/config.toml` and loads it, as the binary does.
fn config(dir: &Path, toml: &str) -> Config {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&path).unwrap()
}

async fn shared() -> &'static Cluster {
    tokio::task::spawn_blocking(Cluster::shared).await.unwrap()
}

async fn own_cluster(masters: usize, replicas: usize, node_timeout_ms: u64) -> Arc<Cluster> {
    Arc::new(
        tokio::task::spawn_blocking(move || Cluster::start(masters, replicas, node_timeout_ms))
            .await
            .unwrap(),
    )
}

/// A table name under `prefix` whose hash the master on `port` serves.
fn table_on(cluster: &Cluster, prefix: &str, port: u16) -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| cluster.master_of(cluster.slot_of(&format!("{prefix}{t}"))) == Some(port))
        .unwrap()
}

fn bin(bytes: &[u8]) -> Value {
    Value::from(bytes::Bytes::copy_from_slice(bytes))
}

/// Each batch is sent pipelined (one write) to both servers; every answer
/// must be the same, field for field: status, message, values, pairs,
/// cursor. The servers send answers of at most 2048 bytes, so hscan pages
/// are cut to fit and the 413 paths are reached.
#[tokio::test]
async fn every_command_answers_as_on_memory() {
    let cluster = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let limits = "[server]\nmax_frame_bytes = 2048\nmax_unsent_bytes = 8388608\n";
    let memory = TestServer::from_config(&config(dir.path(), limits)).await;
    let text = format!("{limits}{}", storage_toml(cluster, &unique_prefix(), ""));
    let served = TestServer::from_config(&config(dir.path(), &text)).await;
    let mut on_memory = memory.client().await;
    let mut on_cluster = served.client().await;

    let pair = |k: &str, v: Value| Kvpair::new(k, v);
    let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let unset_hset = CommandRequest::new_hset("t", "k", "v".into());
    let unset_hset = {
        let mut req = unset_hset;
        if let Some(hookv::pb::command_request::RequestData::Hset(h)) = &mut req.request_data {
            h.pair = None;
        }
        req
    };
    let long_key = "k".repeat(200);
    let batches: Vec<Vec<CommandRequest>> = vec![
        vec![
            CommandRequest::new_hget("t", "k"),
            CommandRequest::new_hset("t", "k", "v1".into()),
            CommandRequest::new_hset("t", "k", "v2".into()),
            CommandRequest::new_hget("t", "k"),
            CommandRequest::new_hget("t", "missing"),
            CommandRequest::new_hmset(
                "t",
                vec![
                    pair("a", 1i64.into()),
                    pair("b", 2.5f64.into()),
                    pair("c", true.into()),
                    pair("d", bin(b"\x00\xff")),
                    pair("a", 3i64.into()),
                ],
            ),
            // An unset value anywhere: refused before anything is written.
            CommandRequest::new_hmset("t", vec![pair("e", 1i64.into()), Kvpair::default()]),
            CommandRequest::new_hset("t", "e", Value::default()),
            unset_hset,
            CommandRequest::new_hmget("t", keys(&["a", "zz", "b", "e"])),
            CommandRequest::new_hexist("t", "a"),
            CommandRequest::new_hmexist("t", keys(&["a", "zz", "e"])),
            CommandRequest::new_hexist("nope", "k"),
            CommandRequest::new_hdel("t", "c"),
            CommandRequest::new_hdel("t", "c"),
            CommandRequest::new_hmdel("t", keys(&["d", "zz", "d"])),
            CommandRequest::new_hgetall("t"),
            CommandRequest::new_hgetall("nope"),
            CommandRequest::new_hmget("nope", keys(&["a"])),
            CommandRequest::new_hmdel("nope", keys(&["a"])),
            CommandRequest::default(),
            CommandRequest::new_auth("token"),
            // A miss says whether the table exists as of the hget, even
            // when a later write of the batch changes that.
            CommandRequest::new_hset("gone", "only", "v".into()),
            CommandRequest::new_hget("gone", "x"),
            CommandRequest::new_hdel("gone", "only"),
            CommandRequest::new_hget("gone", "x"),
        ],
        // Paging: a table of 30 pairs of about 300 bytes, so a page of
        // 100 is cut to fit 2048 bytes.
        (0..30)
            .map(|i| CommandRequest::new_hset("big", format!("k{i:02}"), "x".repeat(300).into()))
            .collect(),
        vec![
            CommandRequest::new_hscan("big", None, 0),
            CommandRequest::new_hscan("big", None, 2),
            CommandRequest::new_hscan("big", Some("k01".into()), 3),
            CommandRequest::new_hscan("big", Some("k28".into()), 100),
            CommandRequest::new_hscan("big", Some("zzz".into()), 100),
            CommandRequest::new_hscan("nope", None, 10),
            // Too large for one answer: 413.
            CommandRequest::new_hgetall("big"),
            CommandRequest::new_hmget("big", (0..10).map(|i| format!("k{i:02}")).collect()),
            // A pair that fits in a request but in no answer with its key
            // as the cursor: 413 naming it, with that cursor.
            CommandRequest::new_hset("huge", long_key.clone(), "v".repeat(1800).into()),
            CommandRequest::new_hset("huge", "z", "small".into()),
            CommandRequest::new_hscan("huge", None, 10),
            CommandRequest::new_hscan("huge", Some(long_key.clone()), 10),
            CommandRequest::new_hget("huge", long_key.clone()),
        ],
    ];
    let mut pages = Vec::new();
    for batch in &batches {
        let expected = bounded(on_memory.pipeline(batch)).await.unwrap();
        let got = bounded(on_cluster.pipeline(batch)).await.unwrap();
        for ((req, want), got) in batch.iter().zip(&expected).zip(&got) {
            assert_eq!(got, want, "{req:?}");
        }
        pages.extend(got);
    }
    // Walk the whole big table in pages: the same pages, every key once.
    let mut cursor = None;
    let mut walked = Vec::new();
    loop {
        let req = CommandRequest::new_hscan("big", cursor.clone(), 100);
        let want = bounded(on_memory.send(&req)).await.unwrap();
        let got = bounded(on_cluster.send(&req)).await.unwrap();
        assert_eq!(got, want, "{req:?}");
        walked.extend(got.pairs.iter().map(|p| p.key.clone()));
        match got.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        walked,
        (0..30).map(|i| format!("k{i:02}")).collect::<Vec<_>>()
    );

    // The answers are the interesting ones, not equal nonsense.
    let statuses: Vec<u32> = pages.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..5], [404, 200, 200, 200, 404]);
    assert!(
        pages[0].message.contains("does not exist"),
        "{:?}",
        pages[0]
    );
    assert!(
        !pages[4].message.contains("does not exist"),
        "{:?}",
        pages[4]
    );
    assert_eq!(statuses[6..9], [400, 400, 400]);
    let gone = batches[0].len() - 4;
    assert!(!pages[gone + 1].message.contains("does not exist"));
    assert!(pages[gone + 3].message.contains("does not exist"));
    let n = batches[0].len() + batches[1].len();
    assert_eq!(pages[n + 1].pairs.len(), 2);
    assert!(pages[n].pairs.len() < 30 && pages[n].cursor.is_some());
    assert_eq!(statuses[n + 6..n + 8], [413, 413]);
    assert_eq!(pages[n + 10].status, 413);
    assert_eq!(pages[n + 10].cursor.as_deref(), Some(long_key.as_str()));
    assert_eq!(pages[n + 11].pairs, vec![Kvpair::new("z", "small".into())]);
    served.stop().await;
    memory.stop().await;
}

/// `INFO commandstats` of the node on `port`: calls per command.
fn command_calls(cluster: &Cluster, port: u16) -> HashMap<String, u64> {
    cluster
        .cli(port, &["info", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// What each master did between two readings, by command (`info`, our
/// own reading, left out), and the connections it accepted.
fn work_since(
    cluster: &Cluster,
    before: &HashMap<u16, (HashMap<String, u64>, u64)>,
) -> HashMap<u16, (HashMap<String, u64>, u64)> {
    before
        .iter()
        .map(|(&port, (calls, conns))| {
            let (now, now_conns) = reading(cluster, port);
            let delta = now
                .into_iter()
                .filter(|(name, _)| name != "info")
                .map(|(name, n)| {
                    let was = calls.get(&name).copied().unwrap_or(0);
                    (name, n - was)
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            // Less the two connections of this reading's own redis-cli.
            (port, (delta, now_conns - conns - 2))
        })
        .collect()
}

fn reading(cluster: &Cluster, port: u16) -> (HashMap<String, u64>, u64) {
    let conns = cluster
        .cli(port, &["info", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    (command_calls(cluster, port), conns)
}

fn readings(cluster: &Cluster, ports: &[u16]) -> HashMap<u16, (HashMap<String, u64>, u64)> {
    ports.iter().map(|&p| (p, reading(cluster, p))).collect()
}

fn calls(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|&(k, n)| (k.to_owned(), n)).collect()
}

/// A pipelined batch costs one round trip per master it touches: counted
/// on the Redis side, each master runs exactly the commands its share of
/// the batch needs, N writes to one table are one MULTI/EXEC, and no
/// connection is opened per request. (A cluster of its own: nothing else
/// runs commands on it.)
#[tokio::test]
async fn a_batch_costs_one_transaction_per_table_and_nothing_more() {
    let cluster = own_cluster(3, 0, 2000).await;
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::from_config(&config(dir.path(), &storage_toml(&cluster, &prefix, ""))).await;
    let mut c = server.client().await;
    let masters: Vec<u16> = cluster.masters().into_iter().map(|(p, _)| p).collect();
    assert_eq!(masters.len(), 3);
    let tables: Vec<String> = masters
        .iter()
        .map(|&m| table_on(&cluster, &prefix, m))
        .collect();
    // Warm up: one connection to each master.
    let warm: Vec<CommandRequest> = tables
        .iter()
        .map(|t| CommandRequest::new_hget(t, "none"))
        .collect();
    bounded(c.pipeline(&warm)).await.unwrap();

    // 30 hsets on one table: one transaction on its master, nothing elsewhere.
    let before = readings(&cluster, &masters);
    let hsets: Vec<CommandRequest> = (0..30)
        .map(|i| CommandRequest::new_hset(&tables[0], format!("k{i}"), (i as i64).into()))
        .collect();
    let answers = bounded(c.pipeline(&hsets)).await.unwrap();
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.values == [Value::default()]));
    let work = work_since(&cluster, &before);
    let one_table = calls(&[("multi", 1), ("hmget", 30), ("hset", 30), ("exec", 1)]);
    assert_eq!(work[&masters[0]], (one_table, 0));
    assert_eq!(work[&masters[1]], (HashMap::new(), 0));
    assert_eq!(work[&masters[2]], (HashMap::new(), 0));

    // 30 hsets over tables of all three masters, interleaved, then 30
    // hgets: per master, one transaction for its 10 writes (each answering
    // the value it replaced), and its 10 reads.
    let before = readings(&cluster, &masters);
    let mixed: Vec<CommandRequest> = (0..30)
        .map(|i| CommandRequest::new_hset(&tables[i % 3], format!("k{i}"), "new".into()))
        .chain((0..30).map(|i| CommandRequest::new_hget(&tables[i % 3], format!("k{i}"))))
        .collect();
    let answers = bounded(c.pipeline(&mixed)).await.unwrap();
    for (i, a) in answers[..30].iter().enumerate() {
        let old = if i % 3 == 0 {
            Value::from(i as i64)
        } else {
            Value::default()
        };
        assert_eq!((a.status, &a.values), (200, &vec![old]), "hset {i}");
    }
    assert!(answers[30..]
        .iter()
        .all(|a| a.values == [Value::from("new")]));
    let work = work_since(&cluster, &before);
    let share = calls(&[
        ("multi", 1),
        ("hmget", 10),
        ("hset", 10),
        ("exec", 1),
        ("hget", 10),
    ]);
    for m in &masters {
        assert_eq!(work[m], (share.clone(), 0), "master {m}");
    }
    server.stop().await;
}

/// A master stopped, then killed, under load, through the server: requests
/// in flight are answered 503 naming the storage error, never later than
/// timeout_ms (plus slack for a busy machine); the server with
/// `wait_replicas = 0` serves the moved slots again by itself once a
/// replica is promoted; every write the `wait_replicas = 1` server
/// acknowledged is read back through the other server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_requests_503_and_loses_no_acknowledged_write() {
    let cluster = own_cluster(3, 1, 1000).await;
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    let (fast_dir, safe_dir) = (dir.path().join("fast"), dir.path().join("safe"));
    std::fs::create_dir_all(&fast_dir).unwrap();
    std::fs::create_dir_all(&safe_dir).unwrap();
    let fast = TestServer::from_config(&config(
        &fast_dir,
        &storage_toml(&cluster, &prefix, "timeout_ms = 500"),
    ))
    .await;
    let safe = TestServer::from_config(&config(
        &safe_dir,
        &storage_toml(&cluster, &prefix, "timeout_ms = 500\nwait_replicas = 1"),
    ))
    .await;
    let timeout = Duration::from_millis(500);
    let victim = cluster
        .master_of(cluster.slot_of(&format!("{prefix}t0")))
        .unwrap();
    let mut c = safe.client().await;
    // The first write waits for its replica; on a busy machine a replica
    // may answer WAIT late at first (503, "replica(s)": a refusal, not the
    // point here): ask again, for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = bounded(c.hset("t0", "before", "x")).await.unwrap();
        if res.status == 200 {
            break;
        }
        assert!(
            res.status == 503 && res.message.contains("replica") && Instant::now() < deadline,
            "{res:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stopped: 503 naming the node once timeout_ms has passed, not a hang.
    cluster.signal(victim, "STOP");
    let mut f = fast.client().await;
    let started = Instant::now();
    let stalled = tokio::time::timeout(timeout * 4, f.hget("t0", "before")).await;
    let waited = started.elapsed();
    cluster.signal(victim, "CONT");
    let res = stalled
        .expect("a stopped master must not hang a request")
        .unwrap();
    assert_eq!(res.status, 503, "{res:?}");
    assert!(
        res.message
            .starts_with("storage: redis cluster: no answer from ")
            && res
                .message
                .contains(&format!(":{victim} within timeout_ms (500 ms)")),
        "{}",
        res.message
    );
    assert!(waited >= timeout, "{waited:?}");
    assert_eq!(
        bounded(f.hget("t0", "before")).await.unwrap().values,
        [Value::from("x")]
    );

    // Killed under load: writers through both servers, until the fast one
    // has written t0 again 20 times after the kill.
    let ledger = Ledger::default();
    let killed = Arc::new(Mutex::new(None::<Instant>));
    let mut writers = Vec::new();
    for w in 0..8usize {
        let (server, safe_writer) = match w % 2 {
            0 => (fast.addr, false),
            _ => (safe.addr, true),
        };
        let (ledger, killed) = (ledger.clone(), killed.clone());
        writers.push(tokio::spawn(async move {
            let mut c = bounded(Client::connect(server)).await.unwrap();
            let table = format!("t{}", w % 4);
            for i in 0i64.. {
                // Two writes pipelined: a batch.
                let keys = [format!("w{w}-{i}a"), format!("w{w}-{i}b")];
                let batch: Vec<CommandRequest> = keys
                    .iter()
                    .map(|k| CommandRequest::new_hset(&table, k, i.into()))
                    .collect();
                let after_kill = killed.lock().unwrap().is_some();
                let started = Instant::now();
                let answers = c.pipeline(&batch).await.unwrap();
                // Never much past timeout_ms (a second of slack for a busy
                // machine: this catches hangs, it times nothing).
                assert!(
                    started.elapsed() < timeout + Duration::from_secs(1),
                    "a batch took {:?}",
                    started.elapsed()
                );
                for (key, res) in keys.iter().zip(answers) {
                    match res.status {
                        200 if safe_writer => {
                            ledger
                                .acked
                                .lock()
                                .unwrap()
                                .push((table.clone(), key.clone(), i))
                        }
                        200 if table == "t0" && after_kill => {
                            ledger.recovered.fetch_add(1, Ordering::Relaxed);
                        }
                        200 => {}
                        503 => ledger.failed.lock().unwrap().push(res.message),
                        other => panic!("status {other}: {}", res.message),
                    }
                }
                if ledger.recovered.load(Ordering::Relaxed) >= 20 {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ledger.acked.lock().unwrap().is_empty(),
        "no write succeeded before the kill"
    );
    cluster.kill(victim);
    *killed.lock().unwrap() = Some(Instant::now());
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the wait_replicas = 0 server did not write t0 again within 30 s of the kill")
            .unwrap();
    }
    let failed = ledger.failed.lock().unwrap().clone();
    assert!(!failed.is_empty(), "the kill failed no request");
    for message in &failed {
        assert!(message.starts_with("storage: redis cluster: "), "{message}");
    }
    // Every write the wait_replicas = 1 server acknowledged, read through
    // the other server.
    let acked = ledger.acked.lock().unwrap().clone();
    let mut f = fast.client().await;
    for chunk in acked.chunks(100) {
        let reads: Vec<CommandRequest> = chunk
            .iter()
            .map(|(t, k, _)| CommandRequest::new_hget(t, k))
            .collect();
        // A node that has not yet seen the failover end may still answer
        // CLUSTERDOWN (each node updates its view of the cluster on its
        // own): that is a refusal, not a loss, so the read is asked again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let answers = loop {
            let answers = bounded(f.pipeline(&reads)).await.unwrap();
            let down = answers.iter().any(|res| res.status == 503);
            if !down || Instant::now() > deadline {
                break answers;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for ((table, key, i), res) in chunk.iter().zip(answers) {
            assert_eq!(
                res.values,
                [Value::from(*i)],
                "acknowledged write {table}/{key} lost: {res:?}"
            );
        }
    }
    // The promoted master has no replica: the wait_replicas = 1 server's
    // writes there are refused, unconfirmed, with 503 saying so.
    let started = Instant::now();
    let res = loop {
        let res = bounded(c.hset("t0", "after", "y")).await.unwrap();
        if res.message.contains("only 0 of the 1 replica(s)")
            || started.elapsed() > Duration::from_secs(10)
        {
            break res;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(res.status, 503, "{res:?}");
    assert!(
        res.message.contains("only 0 of the 1 replica(s)"),
        "{}",
        res.message
    );
    eprintln!("{} writes acknowledged with wait_replicas = 1, {} requests failed (503) during the failover", acked.len(), failed.len());
    fast.stop().await;
    safe.stop().await;
}

/// What the writers of the kill test saw.
#[derive(Clone, Default)]
struct Ledger {
    /// Every write the wait_replicas = 1 server acknowledged: table, key, value.
    acked: Arc<Mutex<Vec<(String, String, i64)>>>,
    /// The message of every 503.
    failed: Arc<Mutex<Vec<String>>>,
    /// Writes of t0 through the wait_replicas = 0 server that began after
    /// the kill and succeeded.
    recovered: Arc<AtomicUsize>,
}

const WRITER: &str = "writer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// auth, audit, rewrite and a plugin, in that order, on the cluster.
fn hooks_toml(dir: &Path) -> String {
    format!(
        r#"
[[hooks]]
kind = "auth"
users = [
  {{ name = "admin", token_sha256 = "{}", read = ["*"], write = ["*"] }},
  {{ name = "writer", token_sha256 = "{}", read = [], write = ["*"] }},
]
[[hooks]]
kind = "audit"
path = "{}"
[[hooks]]
kind = "rewrite"
rules = [{{ status = 401, command = "hget", set_message = "log in first" }}, {{ table = "secret", redact = "***" }}]
[[hooks]]
plugin = "{}"
max_key_len = 8
"#,
        hash_token(ADMIN),
        hash_token(WRITER),
        dir.join("audit.jsonl").display(),
        support::plugins::plugin("key-guard").display(),
    )
}

/// Every kind of hook works on the cluster as on memory: auth refuses and
/// grants (an `auth` pipelined with the write after it in one batch), a
/// writer who may not read gets no previous values, even when the batch
/// logs it out after its write; rewrite edits answers; a plugin refuses;
/// audit records every request with its status.
#[tokio::test]
async fn hooks_work_on_the_cluster_as_on_memory() {
    let cluster = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().to_owned();
    let hooks = tokio::task::spawn_blocking(move || hooks_toml(&plugin_dir))
        .await
        .unwrap();
    let text = format!("{}{hooks}", storage_toml(cluster, &unique_prefix(), ""));
    let server = TestServer::from_config(&config(dir.path(), &text)).await;
    let mut c = server.client().await;

    let res = bounded(c.hget("t", "k")).await.unwrap();
    assert_eq!((res.status, res.message.as_str()), (401, "log in first"));
    // Logged in and writing in one batch.
    let batch = [
        CommandRequest::new_auth(ADMIN),
        CommandRequest::new_hset("secret", "k", "v1".into()),
        CommandRequest::new_hget("secret", "k"),
        CommandRequest::new_hset("t", "far-too-long", "v".into()),
    ];
    let answers = bounded(c.pipeline(&batch)).await.unwrap();
    assert_eq!(answers[0].status, 200, "{:?}", answers[0]);
    assert_eq!(
        (answers[1].status, &answers[1].values),
        (200, &vec![Value::default()])
    );
    assert_eq!(answers[2].values, [Value::from("***")]);
    assert_eq!(answers[3].status, 400, "{:?}", answers[3]);
    assert!(
        answers[3].message.contains("key-guard"),
        "{}",
        answers[3].message
    );

    // A writer who may not read: its write answers no previous value, and
    // an auth that fails later in the same batch (logging the connection
    // out) does not change that.
    let mut w = server.client().await;
    let batch = [
        CommandRequest::new_auth(WRITER),
        CommandRequest::new_hset("secret", "k", "v2".into()),
        CommandRequest::new_auth("wrong"),
        CommandRequest::new_hset("secret", "k", "v3".into()),
    ];
    let answers = bounded(w.pipeline(&batch)).await.unwrap();
    let statuses: Vec<u32> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 401, 401]);
    assert!(answers[1].values.is_empty(), "{:?}", answers[1]);
    assert!(
        answers[1].message.contains("withheld"),
        "{}",
        answers[1].message
    );
    assert_eq!(
        bounded(c.hget("secret", "k")).await.unwrap().values,
        [Value::from("***")]
    );
    drop((c, w));
    server.stop().await;

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let statuses: Vec<u64> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses, [401, 200, 200, 200, 400, 200, 200, 401, 401, 200]);
}

/// On the cluster, a batch's `on_received` hooks all run before its
/// `on_executed` and `on_before_send` hooks, which run request by request,
/// in order (the one difference from memory, documented in the README).
#[tokio::test]
async fn a_batch_runs_every_on_received_before_the_first_on_executed() {
    let cluster = shared().await;
    let options = ClusterOptions {
        nodes: cluster.seeds(),
        key_prefix: unique_prefix(),
        username: None,
        password: None,
        timeout: Duration::from_secs(2),
        wait_replicas: 0,
    };
    let backend = bounded(RedisCluster::connect(options)).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (r, e, b) = (seen.clone(), seen.clone(), seen.clone());
    let key = |req: &CommandRequest| req.keys().next().unwrap_or_default().to_owned();
    let service: Service<RedisCluster> = ServiceInner::new(backend)
        .on_received(move |_, req| {
            r.lock().unwrap().push(format!("received {}", key(req)));
            std::ops::ControlFlow::Continue(())
        })
        .on_executed(move |_, req, _| {
            e.lock().unwrap().push(format!("executed {}", key(req)));
            std::ops::ControlFlow::Continue(())
        })
        .on_before_send(move |_, req, _| {
            b.lock().unwrap().push(format!("before_send {}", key(req)));
            std::ops::ControlFlow::Continue(())
        })
        .into();
    let server = TestServer::start(service, ServerConfig::default()).await;
    let mut c = server.client().await;
    let batch: Vec<CommandRequest> = ["a", "b", "c"]
        .iter()
        .map(|k| CommandRequest::new_hset("t", *k, "v".into()))
        .collect();
    let answers: Vec<CommandResponse> = bounded(c.pipeline(&batch)).await.unwrap();
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "received a",
            "received b",
            "received c",
            "executed a",
            "before_send a",
            "executed b",
            "before_send b",
            "executed c",
            "before_send c",
        ]
    );
    server.stop().await;
}

/// A wal hook with the cluster stops the start (one line naming the file,
/// the line and the entry, with the reason), and a reload cannot add one
/// to a server on the cluster.
#[tokio::test]
async fn a_wal_hook_with_the_cluster_is_refused_at_start_and_on_reload() {
    let cluster = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_toml(cluster, &unique_prefix(), "");
    let wal = "\n[[hooks]]\nkind = \"wal\"\npath = \"wal\"\n";
    let line = support::start_fails(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{storage}{wal}"
    ));
    assert!(
        line.contains("config.toml:9: hooks[1] (kind = \"wal\")"),
        "{line}"
    );
    assert!(
        line.contains("redis-cluster") && line.contains("diverge"),
        "{line}"
    );

    let path = dir.path().join("config.toml");
    let base = format!("[server]\nlisten = \"127.0.0.1:0\"\n{storage}");
    std::fs::write(&path, &base).unwrap();
    let server = Running::start(&path);
    std::fs::write(&path, format!("{base}{wal}")).unwrap();
    server.signal("HUP");
    let log = server.wait_for_log("reload failed");
    assert!(log.contains("diverge"), "{log}");
    let mut c = server.client().await;
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    drop(c);
    server.stop_cleanly();
}

/// Start-up mistakes are one line and exit status 1: an unknown key in
/// `[storage]` (file, line, key), and a cluster that does not answer
/// (file, key, every node tried).
#[test]
fn start_up_mistakes_are_one_line_naming_the_file_and_the_key_or_the_nodes() {
    let line = support::start_fails(
        "[storage]\nbackend = \"redis-cluster\"\nnodes = [\"127.0.0.1:7000\"]\nnode_timeout = 5\n",
    );
    assert!(
        line.contains("config.toml:4:") && line.contains("unknown field `node_timeout`"),
        "{line}"
    );

    // Ports nothing listens on (bound, then released).
    let closed: Vec<String> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string()
        })
        .collect();
    let line = support::start_fails(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"redis-cluster\"\nnodes = [{:?}, {:?}]\ntimeout_ms = 500\n",
        closed[0], closed[1]
    ));
    assert!(
        line.contains("config.toml: storage.nodes: redis cluster: cannot connect"),
        "{line}"
    );
    for node in &closed {
        assert!(line.contains(node.as_str()), "{line}");
    }
}

/// Two hookv servers (the real binary) over one cluster serve one data
/// set: what one writes, the other reads, deletes, and the first sees gone.
#[tokio::test]
async fn two_servers_over_one_cluster_share_their_tables() {
    let cluster = shared().await;
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for name in ["one", "two"] {
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}",
            storage_toml(cluster, &prefix, "")
        );
        std::fs::write(&path, text).unwrap();
        servers.push(Running::start(&path));
    }
    let mut one = servers[0].client().await;
    let mut two = servers[1].client().await;
    let res = bounded(one.hmset(
        "users",
        vec![
            Kvpair::new("alice", "admin".into()),
            Kvpair::new("bob", 7i64.into()),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(res.status, 200);
    let res = bounded(two.hgetall("users")).await.unwrap();
    assert_eq!(
        res.pairs,
        vec![
            Kvpair::new("alice", "admin".into()),
            Kvpair::new("bob", 7i64.into())
        ]
    );
    let res = bounded(two.hdel("users", "alice")).await.unwrap();
    assert_eq!(res.values, [Value::from("admin")]);
    let res = bounded(one.hget("users", "alice")).await.unwrap();
    assert_eq!(res.status, 404, "{res:?}");
    // stats touches no storage, in a batch with ops that do: the figures
    // are this server's own (its requests so far: hmset, hgetall, hdel).
    let batch = [
        CommandRequest::new_hset("users", "carol", 3i64.into()),
        CommandRequest::new_stats(),
        CommandRequest::new_hget("users", "carol"),
    ];
    let answers = bounded(two.pipeline(&batch)).await.unwrap();
    assert_eq!(answers[0].status, 200, "{:?}", answers[0]);
    assert_eq!(answers[2].values, [Value::from(3i64)], "{:?}", answers[2]);
    let stats = &answers[1];
    assert_eq!(stats.status, 200, "{stats:?}");
    let calls = |command: &str| {
        stats
            .pairs
            .iter()
            .find(|p| p.key == format!("commandstats.{command}.calls"))
            .and_then(|p| p.value.clone())
    };
    assert_eq!(calls("hgetall"), Some(1i64.into()), "{stats:?}");
    assert_eq!(calls("hdel"), Some(1i64.into()), "{stats:?}");
    drop((one, two));
    for server in servers {
        server.stop_cleanly();
    }
}
