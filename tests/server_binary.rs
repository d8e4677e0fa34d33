//! The real `hookv-server` binary: start-up errors, signals, persistence.

mod support;

use std::process::Command;

use support::{bounded, fails_with, start_fails, Running};

use support::SERVER;

#[test]
fn unknown_key_names_the_key_and_line() {
    let err = start_fails("[server]\nlisten = \"127.0.0.1:0\"\nmax_conections = 5\n");
    assert!(err.contains("max_conections"), "{err}");
    assert!(err.contains("config.toml:3:"), "{err}");
}

#[test]
fn bad_value_names_the_key() {
    let err = start_fails("[server]\nlisten = \"127.0.0.1:0\"\nmax_frame_bytes = -1\n");
    assert!(err.contains("config.toml:3:"), "{err}");
    let err = start_fails("[storage]\nbackend = \"postgres\"\n");
    assert!(
        err.contains("postgres") && err.contains("config.toml:2:"),
        "{err}"
    );
    let err = start_fails("[server]\nmax_connections = 0\n");
    assert!(err.contains("server.max_connections"), "{err}");
}

#[test]
fn out_of_range_numbers_name_the_file_line_and_key() {
    let err = start_fails("[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 10000000\n");
    assert!(
        err.contains("config.toml:3:") && err.contains("server.max_connections = 10000000"),
        "{err}"
    );
    // Once accepted, and the server aborted spawning threads.
    let err = start_fails("[server]\nlisten = \"127.0.0.1:0\"\n\nworker_threads = 100000\n");
    assert!(
        err.contains(
            "config.toml:4:18: server.worker_threads = 100000: must be between 0 and 1024"
        ),
        "{err}"
    );
    let err = start_fails("[server]\nframe_timeout_secs = 0\n");
    assert!(
        err.contains("config.toml:2:") && err.contains("server.frame_timeout_secs = 0"),
        "{err}"
    );
}

#[test]
fn missing_config_file_names_the_path() {
    let err = fails_with(Command::new(SERVER).args(["--config", "/nonexistent/hookv.toml"]));
    assert!(err.contains("/nonexistent/hookv.toml"), "{err}");
}

#[test]
fn unreachable_listen_address_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = start_fails(&format!("[server]\nlisten = \"{addr}\"\n"));
    assert!(
        err.contains("server.listen") && err.contains(&addr.to_string()),
        "{err}"
    );
}

#[test]
fn unopenable_sled_path_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let db = blocker.join("db");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"sled\"\npath = {:?}\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let err = fails_with(Command::new(SERVER).arg("--config").arg(&config));
    assert!(
        err.contains("storage.path") && err.contains(&db.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn sled_data_survives_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"sled\"\npath = \"db\"\n",
    )
    .unwrap();

    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    for i in 0..100i64 {
        let r = bounded(c.hset("persist", &format!("k{i}"), i))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    drop(c);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert!(
        dir.path().join("db").is_dir(),
        "sled path is relative to the config file"
    );

    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    let r = bounded(c.hgetall("persist")).await.unwrap();
    assert_eq!(r.pairs.len(), 100);
    let r = bounded(c.hget("persist", "k42")).await.unwrap();
    assert_eq!(r.values, vec![hookv::pb::Value::from(42i64)]);
    drop(c);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sigterm_closes_connections_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(bounded(c.hget("t", "k")).await.is_err());
}

#[tokio::test]
async fn the_checked_in_config_starts_as_it_is() {
    // A copy in a tempdir, so its data and logs land there; only the
    // listen address is overridden (port 0), as the CLI allows.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    std::fs::write(
        &config,
        checked_in.replace("listen = \"127.0.0.1:9527\"", "listen = \"127.0.0.1:0\""),
    )
    .unwrap();
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();
    assert_eq!(
        bounded(c.hset("secret", "k", "v")).await.unwrap().status,
        200
    );
    // Its rewrite rule redacts secret* tables.
    let res = bounded(c.hget("secret", "k")).await.unwrap();
    assert_eq!(res.values, vec![hookv::pb::Value::from("***")]);
    drop(c);
    assert!(server.terminate().success());
    assert!(dir.path().join("logs/audit.jsonl").is_file());
    assert!(dir.path().join("data/wal").is_dir());
}

/// Eight connections each write their 20 keys 25 times over (pipelined, a
/// batch per round); returns every key with the value last acknowledged.
async fn write_acknowledged(server: &Running) -> Vec<(String, i64)> {
    const WRITERS: usize = 8;
    const KEYS: usize = 20;
    const ROUNDS: i64 = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = server.client().await;
        writers.push(tokio::spawn(async move {
            let keys: Vec<String> = (0..KEYS).map(|k| format!("w{w}k{k}")).collect();
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                let reqs: Vec<_> = keys
                    .iter()
                    .map(|k| hookv::pb::CommandRequest::new_hset("acked", k, round.into()))
                    .collect();
                let answers = bounded(c.pipeline(&reqs)).await.unwrap();
                assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
                acked = keys.iter().map(|k| (k.clone(), round)).collect();
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(bounded(writer).await.unwrap());
    }
    acked
}

/// Every key reads back with the value it was last acknowledged with.
async fn assert_reads_back(server: &Running, acked: &[(String, i64)]) {
    let mut c = server.client().await;
    let mut wrong = Vec::new();
    for (key, value) in acked {
        let got = bounded(c.hget("acked", key)).await.unwrap();
        if got.values != vec![hookv::pb::Value::from(*value)] {
            wrong.push(format!("{key}: {:?} (status {})", got.values, got.status));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes lost or stale, e.g. {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Writers on the sled backend with the default `[storage] sync`: every
/// write acknowledged before a SIGKILL reads back, with the value that was
/// acknowledged, after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_default_sync_keeps_every_acknowledged_write_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"sled\"\npath = \"db\"\n",
    )
    .unwrap();
    let server = Running::start(&config);
    let acked = write_acknowledged(&server).await;
    server.kill_hard();

    let server = Running::start(&config);
    assert_reads_back(&server, &acked).await;
    assert!(server.terminate().success());
}

/// With a wal over sled, an answer waits for both: sled alone (the wal
/// hook removed after the SIGKILL) still holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_over_sled_still_waits_for_sled_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let sled_only =
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"sled\"\npath = \"db\"\n";
    std::fs::write(
        &config,
        format!("{sled_only}[[hooks]]\nkind = \"wal\"\npath = \"wal\"\nfsync = \"no\"\n"),
    )
    .unwrap();
    let server = Running::start(&config);
    let acked = write_acknowledged(&server).await;
    server.kill_hard();

    std::fs::write(&config, sled_only).unwrap();
    let server = Running::start(&config);
    assert_reads_back(&server, &acked).await;
    assert!(server.terminate().success());
}
