//! All nine commands over TCP, with the semantics DESIGN.md promises, on
//! both backends.

mod support;

use hookv::config::ServerConfig;
use hookv::pb::{Kvpair, Value};
use hookv::{MemTable, Service, ServiceInner, SledDb, Storage};
use support::{bounded, TestServer};

fn empty() -> Value {
    Value::empty()
}

async fn all_nine_commands(server: &TestServer) {
    let mut c = server.client().await;

    // hset creates the table and answers the previous value (empty at first).
    let r = bounded(c.hset("t", "k", "v1")).await.unwrap();
    assert_eq!((r.status, r.values.clone()), (200, vec![empty()]), "{r:?}");
    let r = bounded(c.hset("t", "k", 42i64)).await.unwrap();
    assert_eq!(r.values, vec![Value::from("v1")]);

    // hget: the value, or 404 for a missing key or table.
    let r = bounded(c.hget("t", "k")).await.unwrap();
    assert_eq!((r.status, r.values), (200, vec![Value::from(42i64)]));
    let r = bounded(c.hget("t", "missing")).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.message.contains("missing"), "{}", r.message);
    assert_eq!(bounded(c.hget("nope", "k")).await.unwrap().status, 404);

    // hmset answers the previous values, in order.
    let pairs = vec![
        Kvpair::new("a", 1.5f64),
        Kvpair::new("k", true),
        Kvpair::new("b", vec![0u8, 255]),
    ];
    let r = bounded(c.hmset("t", pairs)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.values, vec![empty(), Value::from(42i64), empty()]);

    // hmget: one value per key in request order, empty for a missing key.
    let r = bounded(c.hmget("t", &["b", "zz", "a"])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.values,
        vec![Value::from(vec![0u8, 255]), empty(), Value::from(1.5f64)]
    );

    // hgetall: pairs sorted by key; a missing table is an empty list.
    let r = bounded(c.hgetall("t")).await.unwrap();
    assert_eq!(r.status, 200);
    let keys: Vec<_> = r.pairs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "k"]);
    assert_eq!(r.pairs[2].value, Some(Value::from(true)));
    let r = bounded(c.hgetall("nope")).await.unwrap();
    assert_eq!((r.status, r.pairs.len()), (200, 0));

    // hexist / hmexist: bools, false for a missing table.
    let r = bounded(c.hexist("t", "a")).await.unwrap();
    assert_eq!((r.status, r.values), (200, vec![Value::from(true)]));
    let r = bounded(c.hexist("nope", "a")).await.unwrap();
    assert_eq!((r.status, r.values), (200, vec![Value::from(false)]));
    let r = bounded(c.hmexist("t", &["a", "x", "k"])).await.unwrap();
    assert_eq!(
        r.values,
        vec![Value::from(true), Value::from(false), Value::from(true)]
    );

    // hdel / hmdel: what was removed, empty for a missing key, still 200.
    let r = bounded(c.hdel("t", "a")).await.unwrap();
    assert_eq!((r.status, r.values), (200, vec![Value::from(1.5f64)]));
    let r = bounded(c.hdel("t", "a")).await.unwrap();
    assert_eq!((r.status, r.values), (200, vec![empty()]));
    let r = bounded(c.hmdel("t", &["k", "nothing", "b"])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.values,
        vec![Value::from(true), empty(), Value::from(vec![0u8, 255])]
    );
    assert_eq!(bounded(c.hgetall("t")).await.unwrap().pairs.len(), 0);

    // Reads never create tables: the store holds no table but those written.
    let r = bounded(c.hset("other", "", "")).await.unwrap();
    assert_eq!(r.status, 200);
    let r = bounded(c.hget("other", "")).await.unwrap();
    assert_eq!(r.values, vec![Value::from("")]);
}

#[tokio::test]
async fn memory_backend_serves_all_nine_commands() {
    let server = TestServer::memory().await;
    all_nine_commands(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sled_backend_serves_all_nine_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledDb::open(dir.path().join("db")).unwrap();
    let service: Service<SledDb> = ServiceInner::new(store).into();
    let server = TestServer::start(service, ServerConfig::default()).await;
    all_nine_commands(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn reads_do_not_create_tables() {
    let service: Service = ServiceInner::new(MemTable::new()).into();
    let server = TestServer::start(service.clone(), ServerConfig::default()).await;
    let mut c = server.client().await;
    bounded(c.hget("ghost", "k")).await.unwrap();
    bounded(c.hgetall("ghost2")).await.unwrap();
    bounded(c.hmexist("ghost3", &["a"])).await.unwrap();
    bounded(c.hdel("ghost4", "a")).await.unwrap();
    assert!(service.store().tables().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn writes_without_a_value_are_refused_and_store_nothing() {
    let server = TestServer::memory().await;
    let mut c = server.client().await;
    let r = bounded(c.hset("t", "k", Value::empty())).await.unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message.contains("value"), "{}", r.message);
    let r = bounded(c.hmset(
        "t",
        vec![Kvpair::new("a", 1i64), Kvpair::new("b", Value::empty())],
    ))
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    // Validation happens before any write: "a" was not stored either.
    assert_eq!(bounded(c.hget("t", "a")).await.unwrap().status, 404);
    server.stop().await;
}

#[tokio::test]
async fn corrupt_sled_data_reaches_the_client_as_500() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledDb::open(dir.path().join("db")).unwrap();
    store.insert_raw("t", "bad", b"\xff\xff").unwrap();
    let service: Service<SledDb> = ServiceInner::new(store).into();
    let server = TestServer::start(service, ServerConfig::default()).await;
    let mut c = server.client().await;
    for r in [
        bounded(c.hget("t", "bad")).await.unwrap(),
        bounded(c.hgetall("t")).await.unwrap(),
        bounded(c.hmget("t", &["bad"])).await.unwrap(),
    ] {
        assert_eq!(r.status, 500, "{r:?}");
        assert!(r.message.contains("corrupt"), "{}", r.message);
    }
    // The connection and server stay usable.
    assert_eq!(
        bounded(c.hset("t", "good", 1i64)).await.unwrap().status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::memory().await;
    let mut c = server.client().await;
    let reqs: Vec<_> = (0..200i64)
        .flat_map(|i| {
            [
                hookv::pb::CommandRequest::new_hset("p", format!("k{i}"), i),
                hookv::pb::CommandRequest::new_hget("p", format!("k{i}")),
            ]
        })
        .collect();
    let responses = bounded(c.pipeline(&reqs)).await.unwrap();
    assert_eq!(responses.len(), 400);
    for (i, pair) in responses.chunks(2).enumerate() {
        assert_eq!(pair[0].values, vec![empty()]);
        assert_eq!(pair[1].values, vec![Value::from(i as i64)]);
    }
    server.stop().await;
}
