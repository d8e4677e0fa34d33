//! The write-ahead log through the real `hookv-server` binary: acknowledged
//! writes survive SIGKILL, torn tails are cut, corruption stops the start,
//! a second server is kept off the log, compaction keeps the log small.
//!
//! Group commit and shutdown (in process): `wal_group_commit.rs`; a failing
//! log and a full disk: `wal_failure.rs`.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookv::client::Client;
use hookv::pb::{value, CommandRequest};
use support::wal::{int, record_offsets, segments, write_config};
use support::{bounded, Running as Server};

const SERVER: &str = env!("CARGO_BIN_EXE_hookv-server");

// ---------------------------------------------------------------------------
// SIGKILL under load

/// Keys written by several connections at once.
const SHARED_KEYS: u64 = 4;

/// One write to a shared key, as its connection saw it.
struct SharedWrite {
    key: u64,
    conn: u64,
    seq: i64,
    sent: Instant,
    acked: Option<Instant>,
}

/// What one connection sent and had acknowledged before the server died.
#[derive(Default)]
struct ConnLog {
    own_sent: i64,
    own_acked: i64,
    shared: Vec<SharedWrite>,
}

/// Writes until the server goes away: its own key `c{conn}` = 1, 2, 3, …
/// and shared keys `s{n}` = "{conn}:{seq}", one request at a time.
async fn write_until_killed(addr: SocketAddr, conn: u64, acks: Arc<AtomicU64>) -> ConnLog {
    let mut log = ConnLog::default();
    let Ok(mut client) = Client::connect(addr).await else {
        return log;
    };
    let ok = |r: Result<Result<hookv::pb::CommandResponse, _>, _>| match r {
        Ok(Ok(res)) => {
            assert_eq!(res.status, 200, "{}", res.message);
            true
        }
        _ => false, // the server died: connection reset or closed
    };
    for seq in 1.. {
        log.own_sent = seq;
        let r = tokio::time::timeout(support::LIMIT, client.hset("own", &format!("c{conn}"), seq))
            .await;
        if !ok(r) {
            return log;
        }
        log.own_acked = seq;
        acks.fetch_add(1, Ordering::Relaxed);

        let key = (seq as u64 + conn) % SHARED_KEYS;
        log.shared.push(SharedWrite {
            key,
            conn,
            seq,
            sent: Instant::now(),
            acked: None,
        });
        let r = tokio::time::timeout(
            support::LIMIT,
            client.hset("shared", &format!("s{key}"), format!("{conn}:{seq}")),
        )
        .await;
        if !ok(r) {
            return log;
        }
        if let Some(w) = log.shared.last_mut() {
            w.acked = Some(Instant::now());
        }
        acks.fetch_add(1, Ordering::Relaxed);
    }
    unreachable!()
}

/// Loads the server from 8 connections, SIGKILLs it mid-load, restarts it,
/// and checks that every acknowledged write is there.
async fn acknowledged_writes_survive_sigkill(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), fsync, "");
    let server = Server::start(&config);
    let acks = Arc::new(AtomicU64::new(0));
    let conns: Vec<_> = (0..8u64)
        .map(|c| tokio::spawn(write_until_killed(server.addr, c, Arc::clone(&acks))))
        .collect();
    let started = Instant::now();
    while (acks.load(Ordering::Relaxed) < 1000 || started.elapsed() < Duration::from_millis(300))
        && started.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log_before = server.log_text();
    server.kill_hard();
    let mut logs = Vec::new();
    for conn in conns {
        logs.push(bounded(conn).await.unwrap());
    }
    let acked = acks.load(Ordering::Relaxed);
    assert!(
        acked >= 50,
        "too few writes before the kill: {acked}\n{log_before}"
    );
    eprintln!("fsync = {fsync}: {acked} writes acknowledged before SIGKILL");

    let server = Server::start(&config);
    let mut client = server.client().await;
    for (conn, log) in logs.iter().enumerate() {
        let res = bounded(client.hget("own", &format!("c{conn}")))
            .await
            .unwrap();
        if res.status == 404 {
            assert_eq!(log.own_acked, 0, "conn {conn}: acknowledged writes lost");
            continue;
        }
        let v = int(&res.values[0]);
        assert!(
            log.own_acked <= v && v <= log.own_sent,
            "conn {conn}: found {v}, but {} was acknowledged and {} the last sent",
            log.own_acked,
            log.own_sent
        );
    }
    let all: Vec<&SharedWrite> = logs.iter().flat_map(|l| &l.shared).collect();
    for key in 0..SHARED_KEYS {
        let writes: Vec<&&SharedWrite> = all.iter().filter(|w| w.key == key).collect();
        let res = bounded(client.hget("shared", &format!("s{key}")))
            .await
            .unwrap();
        if res.status == 404 {
            assert!(
                writes.iter().all(|w| w.acked.is_none()),
                "s{key}: acknowledged writes lost"
            );
            continue;
        }
        let Some(value::Value::String(found)) = &res.values[0].value else {
            panic!("s{key}: not a string: {:?}", res.values);
        };
        let (conn, seq) = found.split_once(':').unwrap();
        let (conn, seq): (u64, i64) = (conn.parse().unwrap(), seq.parse().unwrap());
        let last = writes
            .iter()
            .find(|w| w.conn == conn && w.seq == seq)
            .unwrap_or_else(|| panic!("s{key} = {found}: never sent"));
        // Not older than a write its own connection had acknowledged.
        for w in writes
            .iter()
            .filter(|w| w.conn == conn && w.acked.is_some())
        {
            assert!(
                w.seq <= seq,
                "s{key} = {found}, but {conn}:{} was acknowledged",
                w.seq
            );
        }
        // Not older than an acknowledged write sent after it was acknowledged
        // (that write was applied after it, so must be logged after it).
        if let Some(acked_at) = last.acked {
            for w in writes.iter().filter(|w| w.acked.is_some()) {
                assert!(
                    w.sent <= acked_at,
                    "s{key} = {found}, but {}:{} was sent after that was acknowledged, and acknowledged itself",
                    w.conn,
                    w.seq
                );
            }
        }
    }
    drop(client);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_with_fsync_always() {
    acknowledged_writes_survive_sigkill("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_with_fsync_everysec() {
    acknowledged_writes_survive_sigkill("everysec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_with_fsync_no() {
    acknowledged_writes_survive_sigkill("no").await;
}

// ---------------------------------------------------------------------------
// Recovery rules

async fn write_keys(server: &Server, n: i64) {
    let mut c = server.client().await;
    for i in 0..n {
        let res = bounded(c.hset("t", &format!("k{i}"), i)).await.unwrap();
        assert_eq!(res.status, 200);
    }
    let res = bounded(c.hdel("t", "k0")).await.unwrap();
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "always", "");
    let server = Server::start(&config);
    write_keys(&server, 50).await;
    server.stop_cleanly();

    let segment = segments(&dir.path().join("wal")).pop().unwrap();
    let good = std::fs::read(&segment).unwrap();
    // The first 13 bytes of a record: its header says more follows than does.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&good[..13])
        .unwrap();

    let server = Server::start(&config);
    let log = server.log_text();
    assert!(log.contains("torn"), "no warning:\n{log}");
    assert!(log.contains("WARN"), "not a warning:\n{log}");
    assert_eq!(std::fs::read(&segment).unwrap(), good, "the tail was cut");
    let mut c = server.client().await;
    let res = bounded(c.hgetall("t")).await.unwrap();
    assert_eq!(res.pairs.len(), 49);
    assert_eq!(
        int(&bounded(c.hget("t", "k49")).await.unwrap().values[0]),
        49
    );
    // And the log keeps working after the cut.
    assert_eq!(bounded(c.hset("t", "after", 1)).await.unwrap().status, 200);
    drop(c);
    server.stop_cleanly();
    let server = Server::start(&config);
    let mut c = server.client().await;
    assert_eq!(bounded(c.hgetall("t")).await.unwrap().pairs.len(), 50);
    drop(c);
    server.stop_cleanly();
}

#[tokio::test]
async fn corruption_before_the_end_stops_the_start_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "everysec", "");
    let server = Server::start(&config);
    write_keys(&server, 20).await;
    server.stop_cleanly();

    let segment = segments(&dir.path().join("wal")).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[10] ^= 0x20; // inside the first record's body
    std::fs::write(&segment, &bytes).unwrap();

    let stderr = support::exits_failing(Command::new(SERVER).arg("--config").arg(&config));
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "want one clear line, got:\n{stderr}");
    let line = errors[0];
    eprintln!("{line}");
    assert!(line.contains(&segment.display().to_string()), "{line}");
    assert!(line.contains("byte offset 0"), "{line}");
    assert!(line.contains("kind = \"wal\""), "{line}");
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "left as it was");
}

/// A flipped bit in the length of a record in the middle of the newest
/// segment makes the record run past the end of the file, like a torn last
/// write; but whole records follow it, so it is damage: the start is
/// refused and nothing is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_length_mid_segment_stops_the_start_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "everysec", "");
    let server = Server::start(&config);
    const KEYS: i64 = 4000;
    let mut c = server.client().await;
    for batch in 0..KEYS / 100 {
        let reqs: Vec<CommandRequest> = (batch * 100..(batch + 1) * 100)
            .map(|i| CommandRequest::new_hset("t", format!("k{i}"), i.into()))
            .collect();
        for res in bounded(c.pipeline(&reqs)).await.unwrap() {
            assert_eq!(res.status, 200, "{}", res.message);
        }
    }
    drop(c);
    server.kill_hard();

    let segment = segments(&dir.path().join("wal")).pop().unwrap();
    let good = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&good);
    assert_eq!(offsets.len(), KEYS as usize);
    let middle = offsets[offsets.len() / 2];
    // The most significant byte of the little-endian length: its top bit
    // (a length over 2 GiB) or its lowest (16 MiB more than the file holds).
    for flip in [0x80u8, 0x01] {
        let mut bad = good.clone();
        bad[middle + 3] ^= flip;
        std::fs::write(&segment, &bad).unwrap();
        let stderr = support::exits_failing(Command::new(SERVER).arg("--config").arg(&config));
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{flip:#04x}: want one clear line, got:\n{stderr}"
        );
        let line = errors[0];
        eprintln!("{line}");
        assert!(line.contains(&segment.display().to_string()), "{line}");
        assert!(line.contains(&format!("byte offset {middle}:")), "{line}");
        assert!(!stderr.contains("cutting off"), "{flip:#04x}: {stderr}");
        assert_eq!(
            std::fs::read(&segment).unwrap(),
            bad,
            "{flip:#04x}: a refused log must be left as it was"
        );
    }

    // Repaired, the log starts with every acknowledged write.
    std::fs::write(&segment, &good).unwrap();
    let server = Server::start(&config);
    let mut c = server.client().await;
    let res = bounded(c.hgetall("t")).await.unwrap();
    assert_eq!(res.pairs.len(), KEYS as usize);
    for pair in &res.pairs {
        let i: i64 = pair.key[1..].parse().unwrap();
        assert_eq!(int(pair.value.as_ref().unwrap()), i, "{}", pair.key);
    }
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn a_second_server_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "everysec", "");
    let first = Server::start(&config);
    write_keys(&first, 5).await;
    let mut cmd = Command::new(SERVER);
    cmd.arg("--config").arg(&config);
    let stderr = support::fails_with(&mut cmd);
    assert!(
        stderr.contains("in use by another hookv server"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&dir.path().join("wal").display().to_string()),
        "{stderr}"
    );
    // The first server is unharmed, and once it is gone the log opens.
    write_keys(&first, 10).await;
    first.stop_cleanly();
    let second = Server::start(&config);
    let mut c = second.client().await;
    assert_eq!(bounded(c.hgetall("t")).await.unwrap().pairs.len(), 9);
    drop(c);
    second.stop_cleanly();
}

#[test]
fn bad_wal_options_name_the_key() {
    let cases = [
        ("fsync = \"sometimes\"\n", "sometimes"),
        ("fsynk = \"no\"\n", "fsynk"),
        ("compact_bytes = 0\n", "compact_bytes"),
        ("compact_bytes = \"big\"\n", "big"),
        ("[[hooks]]\nkind = \"wal\"\n", "second wal hook"),
    ];
    for (extra, want) in cases {
        let stderr = support::start_fails(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[hooks]]\nkind = \"wal\"\n{extra}"
        ));
        assert!(stderr.contains(want), "{extra}: {stderr}");
        assert!(stderr.contains("hooks["), "{extra}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// Compaction

fn dir_bytes(dir: &Path) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name() == hookv::wal::LOCK_FILE {
            continue;
        }
        total += e.metadata().map(|m| m.len()).unwrap_or(0);
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    (total, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_log_small_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "everysec", "compact_bytes = 4096\n");
    let wal_dir = dir.path().join("wal");
    let server = Server::start(&config);
    // 4 connections, 5 keys each, 400 updates per key: ~100 KiB of records.
    let mut tasks = Vec::new();
    for conn in 0..4 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            for round in 1..=400i64 {
                let reqs: Vec<CommandRequest> = (0..5)
                    .map(|k| CommandRequest::new_hset("t", format!("c{conn}k{k}"), round.into()))
                    .collect();
                for res in bounded(c.pipeline(&reqs)).await.unwrap() {
                    assert_eq!(res.status, 200, "{}", res.message);
                }
            }
        }));
    }
    for t in tasks {
        bounded(t).await.unwrap();
    }
    // Compaction runs in the background; it soon brings the log down to a
    // snapshot of 20 keys plus the current segment.
    let deadline = Instant::now() + support::LIMIT;
    loop {
        let (bytes, names) = dir_bytes(&wal_dir);
        let compacted = names.iter().any(|n| n.starts_with("snapshot-"))
            && !names.iter().any(|n| n == "wal-000001.log");
        if compacted && bytes < 12 * 1024 && names.len() <= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log not compacted: {bytes} bytes in {names:?}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.log_text().contains("compacted"),
        "{}",
        server.log_text()
    );
    server.stop_cleanly();

    let server = Server::start(&config);
    let mut c = server.client().await;
    let res = bounded(c.hgetall("t")).await.unwrap();
    assert_eq!(res.pairs.len(), 20);
    for pair in &res.pairs {
        assert_eq!(int(pair.value.as_ref().unwrap()), 400, "{}", pair.key);
    }
    drop(c);
    server.stop_cleanly();
}
