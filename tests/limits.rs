//! Connection limit, idle timeout, graceful drain on shutdown.

mod support;

use std::time::Duration;

use hookv::client::ClientError;
use hookv::config::ServerConfig;
use hookv::pb::CommandRequest;
use hookv::{MemTable, Service, ServiceInner};
use support::{bounded, TestServer};

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
        .flat_map(|i| frame(&CommandRequest::new_hset("t", format!("k{i}"), i as i64)))
        .collect();
    // ...and the first half of one more request.
    let unfinished = frame(&CommandRequest::new_hset("t", "late", 1i64));
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
        .map(|i| hookv::pb::Kvpair::new(format!("k{i:04}"), value.as_str()))
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
async fn a_peer_that_stops_reading_is_closed_after_the_idle_timeout() {
    let server = server_with(ServerConfig {
        idle_timeout_secs: 1,
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
