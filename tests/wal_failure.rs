//! A failing write-ahead log: once a write or fsync fails, writes are
//! refused and reads go on, seeing exactly the acknowledged writes, before
//! and after a restart (in process on `/dev/full`, and through the binary
//! with a file size limit as a full disk).

mod support;

use std::net::SocketAddr;

use hookv::client::Client;
use hookv::pb::CommandRequest;
use hookv::wal::{Fsync, WalOptions};
use support::wal::{int, record_offsets, segments, wal_server, write_config};
use support::{bounded, Running as Server};

/// A log whose segment cannot take writes (`/dev/full`: every write fails
/// with ENOSPC).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_log_refuses_writes_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("wal-000001.log")).unwrap();
    let (wal, server) = wal_server(WalOptions {
        path: dir.path().to_owned(),
        fsync: Fsync::Always,
        compact_bytes: 1 << 30,
    })
    .await;

    // The write that hits the failure is never acknowledged.
    let mut c = server.client().await;
    let err = bounded(c.hset("t", "k", "v")).await.unwrap_err();
    assert!(
        matches!(err, hookv::client::ClientError::Closed),
        "expected the connection to close without an answer, got {err:?}"
    );

    let mut c = server.client().await;
    let res = bounded(c.hset("t", "k2", "v")).await.unwrap();
    assert_eq!(res.status, 500);
    assert!(
        res.message.contains("write-ahead log failed") && res.message.contains("No space left"),
        "{}",
        res.message
    );
    let res = bounded(c.hmset("t", vec![hookv::pb::Kvpair::new("a", 1i64.into())]))
        .await
        .unwrap();
    assert_eq!(res.status, 500);
    // Reads still work, and see none of the refused writes: k, which was
    // applied before its record failed to reach the log, was undone.
    let res = bounded(c.hget("t", "k2")).await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 404);
    assert_eq!(bounded(c.hget("t", "a")).await.unwrap().status, 404);
    assert!(wal.sync().is_err());
    drop(c);
    // (Stopping would report the failed flush, rightly.)
    drop(server);
}

// ---------------------------------------------------------------------------
// A full disk under load

/// What one writer was told: 200, 500, or nothing (the connection closed
/// without an answer).
#[derive(Default)]
struct Answered {
    acked: Vec<(String, i64)>,
    refused: Vec<String>,
    /// Never answered: the write may have reached the log before it
    /// failed (a batch the log took in two parts), as with any connection
    /// lost before its answer; what a read sees of it must not change
    /// across a restart.
    unanswered: Vec<(String, i64)>,
}

impl Answered {
    fn not_acked(&self) -> usize {
        self.refused.len() + self.unanswered.len()
    }
}

/// Writes fresh keys `w{writer}-{i}` = i, `depth` per pipelined batch,
/// until three writes were not acknowledged (reconnecting after a
/// connection closed). Fails after `max` batches.
async fn write_until_refused(addr: SocketAddr, writer: usize, depth: i64, max: i64) -> Answered {
    let mut seen = Answered::default();
    let mut c = bounded(Client::connect(addr)).await.unwrap();
    let mut refusals = 0;
    for batch in 0..max {
        let keys: Vec<(String, i64)> = (batch * depth..(batch + 1) * depth)
            .map(|i| (format!("w{writer}-{i}"), i))
            .collect();
        let reqs: Vec<CommandRequest> = keys
            .iter()
            .map(|(k, i)| CommandRequest::new_hset("t", k, (*i).into()))
            .collect();
        // Sent in one write, read one answer at a time: the server may
        // answer the first part of a pipelined batch (durable) and close
        // before the rest, and each key counts as what it was told.
        let mut frames = Vec::new();
        for req in &reqs {
            let body = prost::Message::encode_to_vec(req);
            frames.extend((body.len() as u32).to_be_bytes());
            frames.extend(body);
        }
        let mut closed = bounded(c.send_raw(&frames)).await.is_err();
        for (key, i) in keys {
            if closed {
                seen.unanswered.push((key, i));
                continue;
            }
            match bounded(c.read_response()).await {
                Ok(res) => match res.status {
                    200 => seen.acked.push((key, i)),
                    500 => {
                        assert!(res.message.contains("write-ahead log"), "{}", res.message);
                        seen.refused.push(key);
                    }
                    other => panic!("{key}: status {other}: {}", res.message),
                },
                Err(_) => {
                    closed = true;
                    seen.unanswered.push((key, i));
                }
            }
        }
        if closed {
            c = bounded(Client::connect(addr)).await.unwrap();
        }
        if seen.not_acked() > refusals {
            refusals = seen.not_acked();
            if refusals >= 3 {
                return seen;
            }
        }
    }
    panic!("writer {writer}: {max} batches and the log never failed");
}

/// Every acknowledged write is readable, no refused one is, and each
/// unanswered one is either absent or holds its value: which, is returned
/// (per writer, in order), so that a restart can be checked to keep it.
async fn check_answered(client: &mut Client, writers: &[Answered], when: &str) -> Vec<Vec<bool>> {
    let mut kept = Vec::new();
    for (w, seen) in writers.iter().enumerate() {
        for (key, i) in &seen.acked {
            let res = bounded(client.hget("t", key)).await.unwrap();
            assert_eq!(
                res.status, 200,
                "{when}: writer {w}: acknowledged {key} is gone"
            );
            assert_eq!(int(&res.values[0]), *i, "{when}: {key}");
        }
        for key in &seen.refused {
            let res = bounded(client.hget("t", key)).await.unwrap();
            assert_eq!(
                res.status, 404,
                "{when}: writer {w}: {key} was refused, yet it is readable"
            );
        }
        let mut present = Vec::new();
        for (key, i) in &seen.unanswered {
            let res = bounded(client.hget("t", key)).await.unwrap();
            match res.status {
                200 => assert_eq!(int(&res.values[0]), *i, "{when}: {key}"),
                404 => {}
                other => panic!("{when}: {key}: status {other}: {}", res.message),
            }
            present.push(res.status == 200);
        }
        kept.push(present);
    }
    kept
}

/// 8 writers (some pipelining) on a server whose log runs out of space
/// (a 64 KiB file size limit): whatever each was told, the server holds
/// exactly the acknowledged writes, before and after a restart.
async fn a_full_disk_keeps_exactly_the_acknowledged_writes(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), fsync, "");
    let server = Server::start_with_file_size_limit(&config, 128);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(write_until_refused(
                server.addr,
                w,
                1 + w as i64 % 3,
                20_000,
            ))
        })
        .collect();
    let mut seen = Vec::new();
    for w in writers {
        seen.push(bounded(w).await.unwrap());
    }
    // The server's log is read by another thread: wait for the line.
    server.wait_for_log("write-ahead log failed");
    let acked: usize = seen.iter().map(|s| s.acked.len()).sum();
    let refused: usize = seen.iter().map(|s| s.not_acked()).sum();
    eprintln!("fsync = {fsync}: {acked} writes acknowledged, {refused} not");
    assert!(acked > 100, "{acked}");
    let mut c = server.client().await;
    let kept = check_answered(&mut c, &seen, "while running").await;

    // With space back the log stays failed: a write is refused, not applied.
    server.lift_file_size_limit();
    let res = bounded(c.hset("t", "after", 1)).await.unwrap();
    assert_eq!(res.status, 500, "{}", res.message);
    assert_eq!(bounded(c.hget("t", "after")).await.unwrap().status, 404);
    drop(c);

    server.kill_hard();
    // What reached the file of the batch that failed part-way was cut off.
    let segment = segments(&dir.path().join("wal")).pop().unwrap();
    record_offsets(&std::fs::read(&segment).unwrap());
    let server = Server::start(&config);
    let mut c = server.client().await;
    let kept_after = check_answered(&mut c, &seen, "after a restart").await;
    assert_eq!(
        kept, kept_after,
        "an unanswered write read differently after the restart"
    );
    drop(c);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn a_full_disk_keeps_exactly_the_acknowledged_writes_with_fsync_always() {
    a_full_disk_keeps_exactly_the_acknowledged_writes("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn a_full_disk_keeps_exactly_the_acknowledged_writes_with_fsync_everysec() {
    a_full_disk_keeps_exactly_the_acknowledged_writes("everysec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn a_full_disk_keeps_exactly_the_acknowledged_writes_with_fsync_no() {
    a_full_disk_keeps_exactly_the_acknowledged_writes("no").await;
}
