//! The write-ahead log in process: concurrent writers share fsyncs (group
//! commit), and a server that stops flushes the log, which replays.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hookv::client::Client;
use hookv::pb::CommandRequest;
use hookv::wal::{Fsync, Stopped, Wal, WalOptions};
use hookv::{MemTable, Storage};
use support::bounded;
use support::wal::{int, wal_server};

/// `conns` connections each send `rounds` batches of `depth` writes;
/// returns how many were acknowledged.
async fn write_load(addr: SocketAddr, conns: usize, rounds: usize, depth: usize) -> u64 {
    let tasks: Vec<_> = (0..conns)
        .map(|conn| {
            tokio::spawn(async move {
                let mut c = bounded(Client::connect(addr)).await.unwrap();
                let mut acked = 0;
                for round in 0..rounds {
                    let reqs: Vec<CommandRequest> = (0..depth)
                        .map(|i| {
                            CommandRequest::new_hset(
                                "g",
                                format!("{conn}:{i}"),
                                (round as i64).into(),
                            )
                        })
                        .collect();
                    for res in bounded(c.pipeline(&reqs)).await.unwrap() {
                        assert_eq!(res.status, 200, "{}", res.message);
                        acked += 1;
                    }
                }
                acked
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += bounded(t).await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs() {
    // Under the target dir rather than /tmp, which may be a tmpfs, where an
    // fsync costs nothing and nobody needs to share one.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (wal, server) = wal_server(WalOptions {
        path: dir.path().to_owned(),
        fsync: Fsync::Always,
        compact_bytes: 1 << 30,
    })
    .await;
    let before = wal.fsync_count();
    let writes = write_load(server.addr, 50, 10, 8).await;
    let fsyncs = wal.fsync_count() - before;
    eprintln!("pipelined: {writes} acknowledged writes, {fsyncs} fsyncs");
    assert_eq!(writes, 50 * 10 * 8);
    assert!(fsyncs > 0);
    assert!(fsyncs < writes / 2, "{fsyncs} fsyncs for {writes} writes");

    // One write in flight per connection: batching can only come from
    // several connections sharing an fsync.
    let before = wal.fsync_count();
    let writes = write_load(server.addr, 50, 40, 1).await;
    let fsyncs = wal.fsync_count() - before;
    eprintln!("one at a time: {writes} acknowledged writes, {fsyncs} fsyncs");
    assert!(fsyncs < writes / 2, "{fsyncs} fsyncs for {writes} writes");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_flushes_and_the_data_replays() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        path: dir.path().to_owned(),
        fsync: Fsync::No,
        compact_bytes: 1 << 30,
    };
    let (wal, server) = wal_server(options.clone()).await;
    let mut want = HashMap::new();
    let mut c = server.client().await;
    for i in 0..100i64 {
        let key = format!("k{}", i % 30);
        assert_eq!(bounded(c.hset("t", &key, i)).await.unwrap().status, 200);
        want.insert(key, i);
    }
    let res = bounded(c.hmdel("t", &["k1", "k2", "nope"])).await.unwrap();
    assert_eq!(res.status, 200);
    want.remove("k1");
    want.remove("k2");
    drop(c);
    // The server shuts its hooks down (the log is flushed) and closes the
    // log once it has stopped, so its directory is free for the reopen.
    server.stop().await;
    wal.close();
    drop(wal);

    let mem = Arc::new(MemTable::new());
    let (_wal, _store) = Wal::open(options, Path::new("/"), mem.clone()).unwrap();
    let got: HashMap<String, i64> = mem
        .get_all("t")
        .unwrap()
        .into_iter()
        .map(|p| (p.key, int(p.value.as_ref().unwrap())))
        .collect();
    assert_eq!(got, want);
}

/// Once `Server::run` returns, the log is closed and its directory free:
/// no clone of the service or the log that outlives the server (as a
/// connection task's may, for an instant) keeps it locked.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_stopped_server_has_closed_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        path: dir.path().to_owned(),
        fsync: Fsync::No,
        compact_bytes: 1 << 30,
    };
    let (wal, server) = wal_server(options.clone()).await;
    let mut c = server.client().await;
    assert_eq!(bounded(c.hset("t", "k", 7i64)).await.unwrap().status, 200);
    drop(c);
    let service = server.service.clone();
    server.stop().await;
    assert!(
        matches!(wal.stopped(), Some(Stopped::Closed)),
        "{:?}",
        wal.stopped()
    );

    let mem = Arc::new(MemTable::new());
    let reopened = Wal::open(options, Path::new("/"), mem.clone());
    assert!(reopened.is_ok(), "{:?}", reopened.err());
    assert_eq!(int(&mem.get("t", "k").unwrap().unwrap()), 7);
    drop((service, wal));
}
