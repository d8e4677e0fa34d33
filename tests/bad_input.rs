//! Bad input gets a clear answer, loses nothing, and never takes the server
//! down for anyone else.

mod support;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use hookv::client::ClientError;
use hookv::config::ServerConfig;
use hookv::pb::{CommandRequest, CommandResponse, Kvpair};
use hookv::{MemTable, Service, ServiceInner};
use prost::Message;
use support::{bounded, TestServer};

/// A framed payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Another client can still write and read.
async fn others_still_served(server: &TestServer) {
    let mut c = server.client().await;
    assert_eq!(bounded(c.hset("ok", "k", "v")).await.unwrap().status, 200);
    assert_eq!(bounded(c.hget("ok", "k")).await.unwrap().status, 200);
}

/// The next response, then the server must close the connection.
async fn answered_then_closed(c: &mut hookv::client::Client) -> CommandResponse {
    let res = bounded(c.read_response())
        .await
        .expect("an answer before closing");
    match bounded(c.read_response()).await {
        Err(ClientError::Closed) | Err(ClientError::Io(_)) => {}
        other => panic!("connection should be closed, got {other:?}"),
    }
    res
}

async fn small_frame_server(max: usize) -> TestServer {
    let service: Service = ServiceInner::new(MemTable::new()).into();
    let config = ServerConfig {
        max_frame_bytes: max,
        ..ServerConfig::default()
    };
    TestServer::start(service, config).await
}

#[tokio::test]
async fn garbage_bytes_get_413_and_close_only_that_connection() {
    let server = TestServer::memory().await;
    let mut bystander = server.client().await;
    let mut c = server.client().await;
    // "GET " read as a length is ~1.2 GB: refused before allocating.
    bounded(c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .unwrap();
    let res = answered_then_closed(&mut c).await;
    assert_eq!(res.status, 413, "{res:?}");
    assert!(res.message.contains("max_frame_bytes"), "{}", res.message);
    assert_eq!(
        bounded(bystander.hget("ok", "nope")).await.unwrap().status,
        404
    );
    others_still_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_length_prefixes_are_refused() {
    let server = small_frame_server(1024).await;
    for header in [0x0000_0401u32, 0x7fff_ffff, 0x4000_0000] {
        let mut c = server.client().await;
        bounded(c.send_raw(&header.to_be_bytes())).await.unwrap();
        let res = answered_then_closed(&mut c).await;
        assert_eq!(res.status, 413, "header {header:#x}: {res:?}");
        assert!(res.message.contains("1024"), "{}", res.message);
    }
    // Exactly the maximum is accepted.
    let req = (1..1024)
        .map(|n| hookv::pb::CommandRequest::new_hset("t", "k".repeat(n), "v".into()))
        .find(|r| r.encoded_len() == 1024)
        .expect("a request of exactly 1024 bytes");
    let mut c = server.client().await;
    assert_eq!(bounded(c.send(&req)).await.unwrap().status, 200);
    others_still_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_header_with_bit_31_is_refused_as_compression_not_read_as_a_length() {
    let server = TestServer::memory().await;
    for header in [0xffff_ffffu32, 0x8000_0010] {
        let mut c = server.client().await;
        let mut bytes = header.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 16]);
        bounded(c.send_raw(&bytes)).await.unwrap();
        let res = answered_then_closed(&mut c).await;
        assert_eq!(res.status, 400, "{res:?}");
        assert!(res.message.contains("bit 31"), "{}", res.message);
    }
    others_still_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_truncated_frame_is_reported_and_the_connection_closed() {
    let server = TestServer::memory().await;
    let mut c = server.client().await;
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    bounded(c.send_raw(&bytes)).await.unwrap();
    bounded(c.shutdown_write()).await.unwrap();
    let res = answered_then_closed(&mut c).await;
    assert_eq!(res.status, 400, "{res:?}");
    assert!(res.message.contains("mid-frame"), "{}", res.message);
    others_still_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unset_or_unknown_oneof_is_400_and_the_connection_stays_usable() {
    let server = TestServer::memory().await;
    let mut c = server.client().await;
    let cases: [&[u8]; 4] = [
        &[],                 // empty message: oneof unset
        &[0xa2, 0x01, 0x00], // field 20 (unknown), empty submessage
        &[0x52, 0x00],       // field 10: reserved (subscribe)
        &[0x82, 0x01, 0x00], // field 16: a request kind from the future
    ];
    for payload in cases {
        bounded(c.send_raw(&frame(payload))).await.unwrap();
        let res = bounded(c.read_response()).await.unwrap();
        assert_eq!(res.status, 400, "payload {payload:?}: {res:?}");
        assert!(res.message.contains("hget(1)"), "{}", res.message);
    }
    // Still the same, working connection.
    assert_eq!(bounded(c.hset("t", "k", "v")).await.unwrap().status, 200);
    others_still_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn undecodable_protobuf_is_400_and_the_connection_stays_usable() {
    let server = TestServer::memory().await;
    let mut c = server.client().await;
    for payload in [
        &[0xffu8, 0xff, 0xff][..],
        &[0x0a, 0x05, 0x0a][..],
        &[0x22, 0x03, 0xff, 0xff, 0xff][..],
    ] {
        bounded(c.send_raw(&frame(payload))).await.unwrap();
        let res = bounded(c.read_response()).await.unwrap();
        assert_eq!(res.status, 400, "payload {payload:?}: {res:?}");
        assert!(
            res.message.starts_with("malformed request"),
            "{}",
            res.message
        );
    }
    assert_eq!(bounded(c.hget("t", "k")).await.unwrap().status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_response_larger_than_the_maximum_becomes_413() {
    let server = small_frame_server(256).await;
    let mut c = server.client().await;
    for i in 0..10 {
        let value = "x".repeat(100);
        assert_eq!(
            bounded(c.hset("big", &format!("k{i}"), value.as_str()))
                .await
                .unwrap()
                .status,
            200
        );
    }
    let res = bounded(c.hgetall("big")).await.unwrap();
    assert_eq!(res.status, 413, "{res:?}");
    assert!(res.message.contains("hmget"), "{}", res.message);
    // Nothing was lost: the data is still there, readable in parts.
    assert_eq!(
        bounded(c.hmget("big", &["k0", "k9"]))
            .await
            .unwrap()
            .values
            .len(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn on_after_send_sees_each_answer_as_the_client_got_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let service: Service = ServiceInner::new(MemTable::new())
        .on_after_send(move |_ctx, _req, res| {
            record.lock().unwrap().push(res.clone());
            ControlFlow::Continue(())
        })
        .into();
    let config = ServerConfig {
        max_frame_bytes: 256 * 1024,
        ..ServerConfig::default()
    };
    let server = TestServer::start(service, config).await;
    let mut c = server.client().await;
    // "mid" answers about 100 KB (a large answer, kept for the hook only
    // as its bytes); "big" about 300 KB, over max_frame_bytes (a 413).
    let value = "v".repeat(1000);
    for (table, from, to) in [
        ("mid", 0, 100),
        ("big", 0, 100),
        ("big", 100, 200),
        ("big", 200, 300),
    ] {
        let pairs = (from..to)
            .map(|i| Kvpair::new(format!("k{i:03}"), value.as_str().into()))
            .collect();
        assert_eq!(bounded(c.hmset(table, pairs)).await.unwrap().status, 200);
    }
    seen.lock().unwrap().clear();
    let answers = bounded(c.pipeline(&[
        CommandRequest::new_hgetall("mid"),
        CommandRequest::new_hgetall("big"),
        CommandRequest::new_hget("mid", "k007"),
    ]))
    .await
    .unwrap();
    assert_eq!(answers[0].pairs.len(), 100);
    assert_eq!(answers[1].status, 413, "{:?}", answers[1].message);
    assert_eq!(answers[2].status, 200);
    // The connection runs on_after_send for a batch before it reads again:
    // one more answer means the hook has seen the three.
    assert_eq!(bounded(c.hget("mid", "k000")).await.unwrap().status, 200);
    let seen = seen.lock().unwrap().clone();
    let summary = |r: &[CommandResponse]| -> Vec<(u32, usize)> {
        r.iter().map(|r| (r.status, r.pairs.len())).collect()
    };
    assert!(
        seen[..3] == answers[..],
        "hooks saw {:?}, the client got {:?}",
        summary(&seen[..3]),
        summary(&answers)
    );
    server.stop().await;
}
