//! The Redis Cluster backend against a real cluster (Debian's redis-server
//! on loopback: see `support/cluster.rs`): the storage behaviours every
//! backend shows, batches, atomic writes from two hookv servers at once,
//! `wait_replicas`, timeouts, and a master killed under load.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::Cluster;
use hookv::pb::Value;
use hookv::storage::redis_cluster::{Answer, ClusterError, ClusterOptions, Op};
use hookv::storage::RedisCluster;
use hookv::StorageError;
use support::bounded;

/// A key prefix no other test uses.
fn unique_prefix() -> String {
    cluster::unique_prefix("hookv-test")
}

fn options(cluster: &Cluster, prefix: &str) -> ClusterOptions {
    ClusterOptions {
        nodes: cluster.seeds(),
        key_prefix: prefix.to_owned(),
        username: None,
        password: None,
        timeout: Duration::from_millis(2000),
        wait_replicas: 0,
    }
}

/// A backend on the shared cluster, in a key space of its own.
async fn shared_backend() -> RedisCluster {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let options = options(cluster, &unique_prefix());
    bounded(RedisCluster::connect(options)).await.unwrap()
}

mod conformance {
    hookv::storage_conformance!(super::shared_backend());
}

/// Tables spread over every master of the shared cluster.
fn tables_on_every_master(cluster: &Cluster, prefix: &str, per_master: usize) -> Vec<String> {
    let masters: Vec<u16> = cluster.masters().into_iter().map(|(p, _)| p).collect();
    let mut found: HashMap<u16, Vec<String>> = HashMap::new();
    for i in 0.. {
        let table = format!("t{i}");
        let port = cluster
            .master_of(cluster.slot_of(&format!("{prefix}{table}")))
            .unwrap();
        let list = found.entry(port).or_default();
        if list.len() < per_master {
            list.push(table);
        }
        if masters
            .iter()
            .all(|m| found.get(m).is_some_and(|l| l.len() == per_master))
        {
            break;
        }
    }
    found.into_values().flatten().collect()
}

/// A batch over tables on every master answers exactly what the same ops
/// answer one by one on the memory backend, in order: writes then reads of
/// one table, whole-table reads between writes, multi-key ops.
#[tokio::test]
async fn a_batch_across_masters_answers_as_the_ops_one_by_one() {
    let prefix = unique_prefix();
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let tables = {
        let prefix = prefix.clone();
        tokio::task::spawn_blocking(move || tables_on_every_master(cluster, &prefix, 3))
            .await
            .unwrap()
    };
    let backend = bounded(RedisCluster::connect(options(cluster, &prefix)))
        .await
        .unwrap();
    assert_eq!(backend.masters().len(), 3);

    let values: Vec<Value> = (0..8i64).map(Value::from).collect();
    let keys: Vec<String> = (0..4).map(|k| format!("k{k}")).collect();
    let missing: Vec<String> = (0..tables.len()).map(|n| format!("none{n}")).collect();
    let mut ops = Vec::new();
    for (n, table) in tables.iter().enumerate() {
        let v = |i: usize| &values[(n + i) % values.len()];
        ops.extend([
            Op::Set {
                table,
                pairs: vec![(&keys[0], v(0)), (&keys[1], v(1))],
            },
            Op::Get {
                table,
                keys: vec![&keys[0]],
            },
            Op::GetAll { table },
            Op::Set {
                table,
                pairs: vec![(&keys[0], v(2)), (&keys[2], v(3)), (&keys[0], v(4))],
            },
            Op::Scan {
                table,
                after: Some(&keys[0]),
                limit: 1,
            },
            Op::Contains {
                table,
                keys: vec![&keys[2], &keys[3]],
            },
            Op::Del {
                table,
                keys: vec![&keys[1], &keys[3], &keys[1]],
            },
            Op::Get {
                table,
                keys: vec![&keys[0], &keys[1], &keys[2]],
            },
            Op::GetAll { table },
            // Writes next to each other on one table share a transaction;
            // each still answers what it replaced or removed.
            Op::Set {
                table,
                pairs: vec![(&keys[3], v(5))],
            },
            Op::Set {
                table,
                pairs: vec![(&keys[3], v(6)), (&keys[1], v(7))],
            },
            Op::Del {
                table,
                keys: vec![&keys[3], &keys[2]],
            },
            Op::Del {
                table,
                keys: vec![&keys[3]],
            },
            Op::Set {
                table,
                pairs: vec![(&keys[3], v(0))],
            },
            Op::Exists { table },
            Op::Exists { table: &missing[n] },
        ]);
    }
    // A table too big for one HSCAN reply, read whole between writes: the
    // writes after the read must not show in it.
    let big_keys: Vec<String> = (0..3000).map(|k| format!("b{k:04}")).collect();
    let later_keys: Vec<String> = (0..200).map(|k| format!("late{k:03}")).collect();
    let big = &tables[0];
    ops.push(Op::Set {
        table: big,
        pairs: big_keys.iter().map(|k| (k.as_str(), &values[1])).collect(),
    });
    ops.push(Op::GetAll { table: big });
    ops.push(Op::Set {
        table: big,
        pairs: later_keys
            .iter()
            .map(|k| (k.as_str(), &values[2]))
            .collect(),
    });
    ops.push(Op::Scan {
        table: big,
        after: Some("b2990"),
        limit: 100,
    });
    ops.push(Op::Del {
        table: big,
        keys: later_keys.iter().map(String::as_str).collect(),
    });
    ops.push(Op::GetAll { table: big });
    let answers = bounded(backend.execute(&ops)).await;
    let reference = hookv::MemTable::new();
    for (op, answer) in ops.iter().zip(answers) {
        let expected = run_on(&reference, op);
        assert_eq!(answer.unwrap(), expected, "{op:?}");
    }
}

/// What `op` answers on a synchronous store, one key at a time.
fn run_on(store: &dyn hookv::Storage, op: &Op<'_>) -> Answer {
    match op {
        Op::Get { table, keys } => {
            Answer::Values(keys.iter().map(|k| store.get(table, k).unwrap()).collect())
        }
        Op::Contains { table, keys } => Answer::Bools(
            keys.iter()
                .map(|k| store.contains(table, k).unwrap())
                .collect(),
        ),
        Op::Set { table, pairs } => Answer::Values(
            pairs
                .iter()
                .map(|(k, v)| store.put(table, k, (*v).clone()).unwrap())
                .collect(),
        ),
        Op::Del { table, keys } => {
            Answer::Values(keys.iter().map(|k| store.del(table, k).unwrap()).collect())
        }
        Op::Exists { table } => Answer::Bools(vec![store.table_exists(table).unwrap().unwrap()]),
        Op::GetAll { table } => Answer::Pairs(store.get_all(table).unwrap()),
        Op::Scan {
            table,
            after,
            limit,
        } => Answer::Pairs(store.scan(table, *after, *limit).unwrap()),
    }
}

/// Two hookv servers (two backends) setting the same key at once: each set
/// answers the value it replaced, so every value written is answered as
/// replaced exactly once: no write slips between another's read of the
/// previous value and its write.
#[tokio::test]
async fn concurrent_writers_each_replace_a_different_value() {
    let prefix = unique_prefix();
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let a = bounded(RedisCluster::connect(options(cluster, &prefix)))
        .await
        .unwrap();
    let b = bounded(RedisCluster::connect(options(cluster, &prefix)))
        .await
        .unwrap();
    let writers = 16;
    let per_writer = 50;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let backend = if w % 2 == 0 { a.clone() } else { b.clone() };
        let filler = Value::from(bytes::Bytes::from(vec![w as u8; 128 << 10]));
        tasks.push(tokio::spawn(async move {
            let mut replaced = Vec::new();
            for i in 0..per_writer {
                let value = Value::from(format!("{w}-{i}"));
                // hmset too, with a value big enough (128 KiB) that Redis
                // reads its command in several reads, serving other clients
                // in between: only MULTI/EXEC keeps them out.
                let old = if i % 2 == 0 {
                    backend.set("t", "k", &value).await.unwrap()
                } else {
                    let own = format!("own{w}");
                    backend
                        .set_many("t", &[(own.as_str(), &filler), ("k", &value)])
                        .await
                        .unwrap()
                        .swap_remove(1)
                };
                replaced.push(old);
            }
            replaced
        }));
    }
    let mut replaced: Vec<Option<Value>> = Vec::new();
    for task in tasks {
        replaced.extend(bounded(task).await.unwrap());
    }
    let last = a.get("t", "k").await.unwrap();
    // Every value written but the last is replaced once; None once (the
    // first write).
    let name = |v: &Option<Value>| v.as_ref().map(|v| format!("{v:?}"));
    let mut seen: HashMap<Option<String>, usize> = HashMap::new();
    for old in &replaced {
        *seen.entry(name(old)).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        writers * per_writer,
        "a value was replaced twice: {seen:?}"
    );
    assert!(seen.values().all(|&n| n == 1));
    assert!(seen.contains_key(&None));
    assert!(!seen.contains_key(&name(&last)));
}

/// `wait_replicas` asks Redis for confirmations (`WAIT`): one replica per
/// master confirms, two cannot, and then the write fails with a 503-class
/// error naming the shortfall, while reads go on.
#[tokio::test]
async fn writes_wait_for_replicas_and_fail_when_too_few_confirm() {
    let prefix = unique_prefix();
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let one = ClusterOptions {
        wait_replicas: 1,
        ..options(cluster, &prefix)
    };
    let backend = bounded(RedisCluster::connect(one)).await.unwrap();
    assert_eq!(
        bounded(backend.set("t", "k", &"v1".into())).await.unwrap(),
        None
    );

    let two = ClusterOptions {
        wait_replicas: 2,
        timeout: Duration::from_millis(600),
        ..options(cluster, &prefix)
    };
    let backend = bounded(RedisCluster::connect(two)).await.unwrap();
    let err = bounded(backend.set("t", "k", &"v2".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Cluster(ClusterError::NotReplicated {
                wanted: 2,
                acked: 1,
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("only 1 of the 2 replica(s)"),
        "{err}"
    );
    // The write is on the master (unconfirmed); reads do not wait.
    assert_eq!(
        bounded(backend.get("t", "k")).await.unwrap(),
        Some("v2".into())
    );
}

/// Keys under the prefix that are not hookv's data are a storage error
/// naming the table (500), never a default value or a 503.
#[tokio::test]
async fn data_that_is_not_hookvs_is_corrupt_not_missing() {
    let prefix = unique_prefix();
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let backend = bounded(RedisCluster::connect(options(cluster, &prefix)))
        .await
        .unwrap();
    let port = cluster.nodes[0].port;
    let string_key = format!("{prefix}plain");
    let hash_key = format!("{prefix}garbled");
    let c = cluster;
    tokio::task::spawn_blocking(move || {
        c.cli(port, &["-c", "set", &string_key, "x"]);
        c.cli(port, &["-c", "hset", &hash_key, "k", "\u{1}\u{2}\u{3}"]);
    })
    .await
    .unwrap();
    for result in [
        backend.get("plain", "k").await,
        backend.set("plain", "k", &"v".into()).await,
        backend.get("garbled", "k").await,
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }
    let err = backend.get_all("garbled").await.unwrap_err();
    assert!(err.to_string().contains("garbled"), "{err}");
}

/// No cluster at the seeds: connecting fails within timeout_ms, naming
/// every node tried.
#[tokio::test]
async fn connect_names_the_nodes_tried() {
    // Ports nothing listens on (bound, then released).
    let closed: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let options = ClusterOptions {
        nodes: closed.clone(),
        key_prefix: "hookv:".into(),
        username: None,
        password: None,
        timeout: Duration::from_millis(500),
        wait_replicas: 0,
    };
    let err = bounded(RedisCluster::connect(options)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Connect { .. }), "{err}");
    let msg = err.to_string();
    for node in &closed {
        assert!(msg.contains(node.as_str()), "{msg}");
    }
}

/// A master stopped (`SIGSTOP`) does not answer: requests to its slots
/// fail with a timeout naming it once timeout_ms has passed, never hang,
/// and the same backend serves them again when it resumes. Then the
/// master is killed under load, with two hookv servers writing: requests
/// in flight fail with 503-class errors naming the storage error, never
/// past timeout_ms; the one with `wait_replicas = 0` writes again by itself
/// once the replica is promoted; the one with `wait_replicas = 1` lost no
/// write it acknowledged, and (the promoted master having no replica left)
/// its writes to that shard are refused as unconfirmed until the killed
/// node comes back as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopped_then_killed_under_load() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| Cluster::start(3, 1, 1000))
            .await
            .unwrap(),
    );
    let prefix = unique_prefix();
    let timeout = Duration::from_millis(500);
    let fast = ClusterOptions {
        timeout,
        ..options(&cluster, &prefix)
    };
    let safe = ClusterOptions {
        wait_replicas: 1,
        ..fast.clone()
    };
    let fast = bounded(RedisCluster::connect(fast)).await.unwrap();
    let safe = bounded(RedisCluster::connect(safe)).await.unwrap();
    // The victim: the master of table "t0".
    let victim = {
        let c = Arc::clone(&cluster);
        let key = format!("{prefix}t0");
        tokio::task::spawn_blocking(move || c.master_of(c.slot_of(&key)).unwrap())
            .await
            .unwrap()
    };
    // The first write waits for its replica; on a busy machine a replica
    // may answer WAIT late at first (a refusal, not the point here): ask
    // again, for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match safe.set("t0", "before", &"x".into()).await {
            Ok(_) => break,
            Err(StorageError::Cluster(ClusterError::NotReplicated { .. }))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the first write failed: {e}"),
        }
    }

    // Stopped: a timeout naming the node, after timeout_ms, not a hang.
    cluster.signal(victim, "STOP");
    let started = Instant::now();
    let stalled = tokio::time::timeout(timeout * 4, fast.get("t0", "before")).await;
    cluster.signal(victim, "CONT");
    let err = stalled
        .expect("a stopped master must not hang a request")
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Cluster(ClusterError::Timeout { node, .. }) if node.ends_with(&format!(":{victim}"))),
        "{err}"
    );
    assert!(started.elapsed() >= timeout);
    assert_eq!(
        bounded(fast.get("t0", "before")).await.unwrap(),
        Some("x".into())
    );

    // Killed under load: writers on tables of every master, through both
    // servers, until the fast one has written t0 again 20 times.
    let ledger = Ledger::default();
    let kill = Arc::new(Mutex::new(None::<Instant>));
    let mut writers = Vec::new();
    for w in 0..8usize {
        let backend = if w % 2 == 0 {
            fast.clone()
        } else {
            safe.clone()
        };
        let (ledger, kill) = (ledger.clone(), kill.clone());
        writers.push(tokio::spawn(async move {
            let table = format!("t{}", w % 4);
            for i in 0i64.. {
                let key = format!("w{w}-{i}");
                let started = Instant::now();
                let after_kill = kill.lock().unwrap().is_some();
                let result = backend.set(&table, &key, &i.into()).await;
                // Never much past timeout_ms (a second of slack for a busy
                // machine: this catches hangs, it does not time anything).
                assert!(
                    started.elapsed() < timeout + Duration::from_secs(1),
                    "a write took {:?}",
                    started.elapsed()
                );
                let ok = match result {
                    Ok(_) => {
                        ledger
                            .acked
                            .lock()
                            .unwrap()
                            .push((w, table.clone(), key, i));
                        true
                    }
                    Err(StorageError::Cluster(e)) => {
                        ledger.failed.lock().unwrap().push((w, e));
                        false
                    }
                    Err(other) => panic!("not a cluster error: {other}"),
                };
                if w % 2 == 0 && table == "t0" && after_kill && ok {
                    ledger.recovered.fetch_add(1, Ordering::Relaxed);
                }
                if ledger.recovered.load(Ordering::Relaxed) >= 20 {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_kill = ledger.acked.lock().unwrap().len();
    assert!(before_kill > 0, "no write succeeded before the kill");
    cluster.kill(victim);
    *kill.lock().unwrap() = Some(Instant::now());
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the wait_replicas = 0 server did not write t0 again within 30 s of the kill")
            .unwrap();
    }
    let failed = ledger.failed.lock().unwrap().clone();
    assert!(!failed.is_empty(), "the kill failed no request");
    for (_, e) in &failed {
        assert!(e.to_string().starts_with("redis cluster: "), "{e}");
    }
    // The promoted master has no replica: the safe server cannot have its
    // writes there confirmed, and says so (once its copy of the layout has
    // the new master: the first write after the failover may still meet
    // the dead one, fail, and make it refresh).
    let started = Instant::now();
    let err = loop {
        let err = bounded(safe.set("t0", "after", &"y".into()))
            .await
            .unwrap_err();
        match err {
            StorageError::Cluster(ClusterError::NotReplicated { acked: 0, .. }) => break err,
            StorageError::Cluster(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("{other}"),
        }
    };
    assert!(
        err.to_string().contains("only 0 of the 1 replica(s)"),
        "{err}"
    );
    // Every write either server acknowledged is there.
    let acked = ledger.acked.lock().unwrap().clone();
    for (w, table, key, i) in &acked {
        assert_eq!(
            bounded(fast.get(table, key)).await.unwrap(),
            Some(Value::from(*i)),
            "acknowledged write {table}/{key} (writer {w}) lost"
        );
    }
    let promoted = {
        let c = Arc::clone(&cluster);
        let key = format!("{prefix}t0");
        tokio::task::spawn_blocking(move || c.master_of(c.slot_of(&key)).unwrap())
            .await
            .unwrap()
    };
    assert_ne!(promoted, victim);
    eprintln!(
        "{} writes acknowledged ({before_kill} before the kill), {} failed during the failover",
        acked.len(),
        failed.len()
    );
}

/// An acknowledged write: writer, table, key, value.
type Acked = (usize, String, String, i64);

/// What the writers of the kill test saw.
#[derive(Clone, Default)]
struct Ledger {
    /// Every acknowledged write.
    acked: Arc<Mutex<Vec<Acked>>>,
    /// Every failure, by writer.
    failed: Arc<Mutex<Vec<(usize, ClusterError)>>>,
    /// Writes of t0 by the wait_replicas = 0 server that began after the kill
    /// and succeeded.
    recovered: Arc<AtomicUsize>,
}

/// `[storage] backend = "redis-cluster"` with no nodes: the real server
/// binary stops with one line naming the file, line and key.
#[test]
fn an_empty_node_list_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"redis-cluster\"\nnodes = []\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(support::SERVER)
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = support::wait_bounded(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{}:5:", config.display())), "{err}");
    assert!(err.contains("storage.nodes"), "{err}");
}
