//! Connection limit, idle, frame, auth and write timeouts, the budget for
//! unread answers, graceful drain on shutdown.

mod support;

use std::path::Path;
use std::time::Duration;

use hookv::client::{Client, ClientError};
use hookv::config::{Config, ServerConfig};
use hookv::hooks::auth::hash_token;
use hookv::pb::{CommandRequest, CommandResponse};
use hookv::{MemTable, Service, ServiceInner};
use support::{bounded, Running, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server_with(config: ServerConfig) -> TestServer {
    let service: Service = ServiceInner::new(MemTable::new()).into();
    TestServer::start(service, config).await
}

#[tokio::test]
async fn a_connection_beyond_max_connections_waits_for_a_slot() {
    let server = server_with(ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut first = server.client().await;
    assert_eq!(
        bounded(first.hset("t", "k", "v")).await.unwrap().status,
        200
    );

    // The kernel completes the handshake, but the server does not serve it yet.
    let mut second = server.client().await;
    bounded(second.send_raw(&frame(&CommandRequest::new_hget("t", "k"))))
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), second.read_response()).await;
    assert!(
        early.is_err(),
        "second connection was served past the limit: {early:?}"
    );

    // When the first leaves, the second gets its slot and its answer.
    drop(first);
    let res = bounded(second.read_response()).await.unwrap();
    assert_eq!(res.status, 200);
    server.stop().await;
}

fn frame(req: &CommandRequest) -> Vec<u8> {
    use prost::Message;
    let body = req.encode_to_vec();
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_others_are_not() {
    let server = server_with(ServerConfig {
        idle_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut idle = server.client().await;
    let mut busy = server.client().await;
    let start = std::time::Instant::now();
    // `busy` keeps talking every 300 ms; `idle` says nothing.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(bounded(busy.hget("t", "k")).await.unwrap().status, 404);
    }
    match bounded(idle.read_response()).await {
        Err(ClientError::Closed) | Err(ClientError::Io(_)) => {}
        other => panic!("idle connection should be closed, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_answers_what_was_already_sent_and_reports_the_unfinished_one() {
    let server = server_with(ServerConfig::default()).await;
    let mut c = server.client().await;
    // Make sure the connection has been accepted.
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 404);

    let mut batch: Vec<u8> = (0..500)
        .flat_map(|i| {
            frame(&CommandRequest::new_hset(
                "t",
                format!("k{i}"),
                (i as i64).into(),
            ))
        })
        .collect();
    // ...and the first half of one more request.
    let unfinished = frame(&CommandRequest::new_hset("t", "late", 1i64.into()));
    batch.extend_from_slice(&unfinished[..unfinished.len() / 2]);
    bounded(c.send_raw(&batch)).await.unwrap();
    let addr = server.addr;
    server.stop().await;

    for i in 0..500 {
        let res = bounded(c.read_response())
            .await
            .unwrap_or_else(|e| panic!("request {i} was not answered: {e}"));
        assert_eq!(res.status, 200);
    }
    // The cut-off request is reported as not executed.
    let res = bounded(c.read_response()).await.unwrap();
    assert_eq!(res.status, 503, "{res:?}");
    assert!(res.message.contains("not executed"), "{}", res.message);
    assert!(matches!(
        bounded(c.read_response()).await,
        Err(ClientError::Closed) | Err(ClientError::Io(_))
    ));
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A table whose hgetall answer is about 1 MiB.
async fn big_table(c: &mut hookv::client::Client) {
    let value = "v".repeat(1000);
    let pairs: Vec<_> = (0..1000)
        .map(|i| hookv::pb::Kvpair::new(format!("k{i:04}"), value.as_str().into()))
        .collect();
    assert_eq!(bounded(c.hmset("big", pairs)).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_huge_pipelined_batch_is_answered_in_bounded_writes() {
    let server = server_with(ServerConfig::default()).await;
    let mut c = server.client().await;
    big_table(&mut c).await;
    // 40 requests of 9 bytes ask for ~40 MiB of answers: all are answered,
    // in order, though the server holds at most about 1 MiB at a time.
    let reqs: Vec<_> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                CommandRequest::new_hgetall("big")
            } else {
                CommandRequest::new_hget("big", "k0001")
            }
        })
        .collect();
    let answers = bounded(c.pipeline(&reqs)).await.unwrap();
    for (i, res) in answers.iter().enumerate() {
        assert_eq!(res.status, 200);
        assert_eq!(
            if i % 2 == 0 {
                res.pairs.len()
            } else {
                res.values.len()
            },
            if i % 2 == 0 { 1000 } else { 1 }
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_after_the_write_timeout() {
    let server = server_with(ServerConfig {
        write_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut c = server.client().await;
    big_table(&mut c).await;
    // Ask for ~200 MiB and read nothing: the server's writes stall.
    let batch: Vec<u8> = (0..200)
        .flat_map(|_| frame(&CommandRequest::new_hgetall("big")))
        .collect();
    bounded(c.send_raw(&batch)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // What was in flight can be read, then the connection is closed.
    let mut answered = 0;
    loop {
        match bounded(c.read_response()).await {
            Ok(res) => {
                assert_eq!(res.status, 200);
                answered += 1;
            }
            Err(ClientError::Closed) | Err(ClientError::Io(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(answered < 200, "the stalled connection was not closed");
    // Others are served meanwhile.
    let mut other = server.client().await;
    assert_eq!(
        bounded(other.hget("big", "k0001")).await.unwrap().status,
        200
    );
    server.stop().await;
}

/// The next answer, then the server must close the connection.
async fn answered_then_closed(c: &mut Client) -> CommandResponse {
    let res = bounded(c.read_response())
        .await
        .expect("an answer before closing");
    match bounded(c.read_response()).await {
        Err(ClientError::Closed) | Err(ClientError::Io(_)) => {}
        other => panic!("connection should be closed, got {other:?}"),
    }
    res
}

/// Sends `request` one byte every 100 ms (stopping if the server closes),
/// and returns the first answer.
async fn trickle(mut c: Client, request: Vec<u8>) -> CommandResponse {
    for byte in request {
        if c.send_raw(&[byte]).await.is_err() {
            break;
        }
        // Reading is cancel-safe: an answer half-read is kept for the next try.
        if let Ok(answer) =
            tokio::time::timeout(Duration::from_millis(100), c.read_response()).await
        {
            let answer = answer.expect("an answer");
            assert!(matches!(
                bounded(c.read_response()).await,
                Err(ClientError::Closed) | Err(ClientError::Io(_))
            ));
            return answer;
        }
    }
    answered_then_closed(&mut c).await
}

#[tokio::test]
async fn trickling_clients_get_408_after_the_frame_timeout_and_free_their_slots() {
    let server = server_with(ServerConfig {
        max_connections: 20,
        frame_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    // Every slot taken by a client sending a request a byte at a time: it
    // is never idle, and its request would take minutes to arrive whole.
    let request = frame(&CommandRequest::new_hset("t", "k".repeat(2000), "v".into()));
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        let c = server.client().await;
        tricklers.push(tokio::spawn(trickle(c, request.clone())));
    }
    // A new client waits in the listen backlog only until the tricklers'
    // frame timeout frees slots.
    let mut c = server.client().await;
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    for t in tricklers {
        let res = bounded(t).await.unwrap();
        assert_eq!(res.status, 408, "{res:?}");
        assert!(
            res.message.contains("frame_timeout_secs (1 s)"),
            "{}",
            res.message
        );
    }
    server.stop().await;
}

const TOKEN: &str = "limits-test-token-0123456789";

/// A server whose chain authenticates (one user, `TOKEN`).
async fn auth_server(dir: &Path, server: ServerConfig) -> TestServer {
    let path = dir.join("config.toml");
    let hooks = format!(
        "[[hooks]]\nkind = \"auth\"\nusers = [{{ name = \"u\", token_sha256 = \"{}\", read = [\"*\"], write = [\"*\"] }}]\n",
        hash_token(TOKEN)
    );
    std::fs::write(&path, hooks).unwrap();
    let mut config = Config::load(&path).unwrap();
    config.server = server;
    TestServer::from_config(&config).await
}

#[tokio::test]
async fn unauthenticated_connections_are_capped_and_timed_out_authenticated_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = auth_server(
        dir.path(),
        ServerConfig {
            max_connections: 8,
            max_unauthenticated: Some(2),
            auth_timeout_secs: 1,
            ..ServerConfig::default()
        },
    )
    .await;
    let mut user = server.client().await;
    assert_eq!(bounded(user.auth(TOKEN)).await.unwrap().status, 200);
    // Two connections that do not authenticate (each answered, so each is
    // surely counted).
    let mut strangers = Vec::new();
    for _ in 0..2 {
        let mut c = server.client().await;
        assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 401);
        strangers.push(c);
    }
    // A third is refused at once, though slots are free...
    let mut third = server.client().await;
    let res = answered_then_closed(&mut third).await;
    assert_eq!(res.status, 503, "{res:?}");
    assert!(
        res.message.contains("too many unauthenticated connections"),
        "{}",
        res.message
    );
    // ...and the authenticated connection is served.
    assert_eq!(bounded(user.hset("t", "k", "v")).await.unwrap().status, 200);

    // Unauthenticated past auth_timeout_secs: 401 and closed, busy or not.
    let mut busy = strangers.pop().unwrap();
    let res = loop {
        let res = bounded(busy.hget("t", "k"))
            .await
            .expect("answered until closed");
        if res.message.contains("auth_timeout_secs") {
            break res;
        }
        assert_eq!(res.status, 401);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(res.status, 401, "{res:?}");
    assert!(matches!(
        bounded(busy.read_response()).await,
        Err(ClientError::Closed) | Err(ClientError::Io(_))
    ));
    let res = answered_then_closed(&mut strangers[0]).await;
    assert_eq!(res.status, 401, "{res:?}");
    assert!(
        res.message.contains("auth_timeout_secs (1 s)"),
        "{}",
        res.message
    );

    // Their places are free again; the authenticated connection, older
    // than auth_timeout_secs, is still served.
    let mut late = server.client().await;
    assert_eq!(bounded(late.auth(TOKEN)).await.unwrap().status, 200);
    assert_eq!(bounded(late.hget("t", "k")).await.unwrap().status, 200);
    assert_eq!(bounded(user.hget("t", "k")).await.unwrap().status, 200);
    server.stop().await;
}

/// The server's resident memory now and at its peak (VmRSS, VmHWM), in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap();
        line.trim().trim_end_matches("kB").trim().parse().unwrap()
    };
    (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
}

/// How many file descriptors the server has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn clients_that_do_not_read_cannot_pin_memory_and_are_closed() {
    const CONNS: u64 = 64;
    const WORKERS: u64 = 2;
    const MAX_UNSENT: u64 = 16 << 20;
    const MAX_FRAME: u64 = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // With an audit hook: answers are kept for on_after_send too.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworker_threads = {WORKERS}\n\
             max_frame_bytes = {MAX_FRAME}\nmax_unsent_bytes = {MAX_UNSENT}\n\
             write_timeout_secs = 2\n\n[[hooks]]\nkind = \"audit\"\npath = \"audit.jsonl\"\n"
        ),
    )
    .unwrap();
    let server = Running::start(&config);
    let pid = server.child.id();
    let mut reader = server.client().await;
    big_table(&mut reader).await;
    assert_eq!(
        bounded(reader.hgetall("big")).await.unwrap().pairs.len(),
        1000
    );
    let (baseline, _) = memory(pid);
    let fds = open_fds(pid);

    // Each asks for 8 MiB of answers and reads none of them.
    let request: Vec<u8> = (0..8)
        .flat_map(|_| frame(&CommandRequest::new_hgetall("big")))
        .collect();
    let mut silent = Vec::new();
    for _ in 0..CONNS {
        let mut s = bounded(TcpStream::connect(server.addr)).await.unwrap();
        bounded(s.write_all(&request)).await.unwrap();
        silent.push(s);
        // A client that reads is served meanwhile.
        let res = bounded(reader.hget("big", "k0001")).await.unwrap();
        assert_eq!(res.status, 200);
    }
    // The server closes every one of them: at once when their answers would
    // exceed max_unsent_bytes, else after write_timeout_secs.
    bounded(async {
        while open_fds(pid) > fds {
            let res = reader.hget("big", "k0001").await.unwrap();
            assert_eq!(res.status, 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // At its peak the server held at most: the budget; per worker thread,
    // the batch it was building (a buffer of up to 1 MiB + max_frame_bytes,
    // which may have doubled while growing) and the answer being encoded
    // (up to max_frame_bytes); buffers and a task per connection; and some
    // memory the allocator had not returned yet.
    let (_, peak) = memory(pid);
    const MIB: u64 = 1 << 20;
    let per_worker = 2 * (MIB + MAX_FRAME) + MAX_FRAME;
    let bound = baseline + MAX_UNSENT + WORKERS * per_worker + CONNS * (64 << 10) + 8 * MIB;
    eprintln!(
        "baseline {} MiB, peak {} MiB, bound {} MiB",
        baseline >> 20,
        peak >> 20,
        bound >> 20
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over {bound} (baseline {baseline})"
    );
    for mut s in silent {
        let mut sink = vec![0u8; 1 << 20];
        bounded(async {
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    server.stop_cleanly();
}
