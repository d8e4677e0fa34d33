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
