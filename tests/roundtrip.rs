//! All nine commands over TCP, with the semantics DESIGN.md promises, on
//! both backends; and paging through a table with hscan.

mod support;

use hookv::config::ServerConfig;
use hookv::pb::{CommandResponse, Kvpair, Value};
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
        Kvpair::new("a", 1.5f64.into()),
        Kvpair::new("k", true.into()),
        Kvpair::new("b", vec![0u8, 255].into()),
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
        vec![
            Kvpair::new("a", 1i64.into()),
            Kvpair::new("b", Value::empty()),
        ],
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
                hookv::pb::CommandRequest::new_hset("p", format!("k{i}"), i.into()),
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

/// A server on `backend` ("memory" or "sled", in `dir`) with `max_frame_bytes`.
async fn server_on(backend: &str, dir: &std::path::Path, max_frame_bytes: usize) -> TestServer {
    let config = ServerConfig {
        max_frame_bytes,
        ..ServerConfig::default()
    };
    match backend {
        "memory" => {
            TestServer::start(Service::from(ServiceInner::new(MemTable::new())), config).await
        }
        _ => {
            let store = SledDb::open(dir.join("db")).unwrap();
            TestServer::start(Service::from(ServiceInner::new(store)), config).await
        }
    }
}

/// Every page of `table` from the start, `count` at a time.
async fn all_pages(c: &mut hookv::client::Client, table: &str, count: u32) -> Vec<CommandResponse> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = bounded(c.hscan(table, cursor.as_deref(), count))
            .await
            .unwrap();
        assert_eq!(page.status, 200, "{}", page.message);
        assert!(pages.len() < 10_000, "the scan does not end");
        cursor = page.cursor.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
}

#[tokio::test]
async fn a_table_too_large_for_hgetall_is_read_whole_by_hscan_pages() {
    const MAX: usize = 64 * 1024;
    for backend in ["memory", "sled"] {
        let dir = tempfile::tempdir().unwrap();
        let server = server_on(backend, dir.path(), MAX).await;
        let mut c = server.client().await;
        // 400 pairs of about 1 KiB (keys in a shuffled order, "" among
        // them): about 400 KiB, over six times a frame.
        let mut keys: Vec<String> = (0..399)
            .map(|i| format!("key-{:04}", (i * 7919) % 1000))
            .collect();
        keys.push(String::new());
        let value = |k: &str| format!("{k}:{}", "v".repeat(1000));
        for chunk in keys.chunks(40) {
            let pairs = chunk
                .iter()
                .map(|k| Kvpair::new(k.clone(), value(k).into()))
                .collect();
            assert_eq!(bounded(c.hmset("big", pairs)).await.unwrap().status, 200);
        }
        let all = bounded(c.hgetall("big")).await.unwrap();
        assert_eq!(all.status, 413, "{backend}: {}", all.message);
        assert!(all.message.contains("hscan"), "{}", all.message);

        keys.sort();
        // 0 asks for the default (100 pairs: too big, so cut to fit); 7
        // pages that fit anyway; 10000 (the cap) is cut to fit as well.
        for count in [0, 7, 10_000] {
            let pages = all_pages(&mut c, "big", count).await;
            let mut seen = Vec::new();
            for page in &pages {
                assert!(!page.pairs.is_empty() || pages.len() == 1);
                assert!(page.pairs.len() <= if count == 0 { 100 } else { count as usize });
                if let Some(cursor) = &page.cursor {
                    assert_eq!(Some(cursor), page.pairs.last().map(|p| &p.key));
                }
                for pair in &page.pairs {
                    assert_eq!(pair.value, Some(Value::from(value(&pair.key))));
                    seen.push(pair.key.clone());
                }
            }
            assert_eq!(
                seen, keys,
                "{backend}, count {count}: every key once, in order"
            );
            if count != 7 {
                assert!(
                    pages.len() > 6,
                    "{backend}: pages were not cut to fit: {}",
                    pages.len()
                );
            }
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn hscan_cursor_edges() {
    for backend in ["memory", "sled"] {
        let dir = tempfile::tempdir().unwrap();
        let server = server_on(backend, dir.path(), 4 * 1024 * 1024).await;
        let mut c = server.client().await;
        let keys = |page: &CommandResponse| -> Vec<String> {
            page.pairs.iter().map(|p| p.key.clone()).collect()
        };
        for k in ["", "a", "b", "c", "d"] {
            bounded(c.hset("t", k, k)).await.unwrap();
        }
        // "" is a key: no cursor starts before it, cursor "" starts after it.
        let page = bounded(c.hscan("t", None, 2)).await.unwrap();
        assert_eq!(
            (keys(&page), page.cursor.as_deref()),
            (vec!["".into(), "a".into()], Some("a"))
        );
        let page = bounded(c.hscan("t", Some(""), 2)).await.unwrap();
        assert_eq!(keys(&page), ["a", "b"]);
        // A key deleted between pages, the cursor's own key included.
        bounded(c.hmdel("t", &["b", "c"])).await.unwrap();
        let page = bounded(c.hscan("t", Some("b"), 2)).await.unwrap();
        assert_eq!((keys(&page), page.cursor), (vec!["d".to_string()], None));
        // Past the end, and a table that does not exist: empty, complete.
        for (table, cursor) in [("t", Some("d")), ("t", Some("zzz")), ("ghost", None)] {
            let page = bounded(c.hscan(table, cursor, 10)).await.unwrap();
            assert_eq!(
                (page.status, page.pairs.len(), page.cursor),
                (200, 0, None),
                "{table} {cursor:?}"
            );
        }
        assert_eq!(
            bounded(c.hexist("ghost", "k")).await.unwrap().values,
            vec![Value::from(false)]
        );

        // count 0 is 100; a count above the cap is 10000.
        let many: Vec<Kvpair> = (0..10_050)
            .map(|i| Kvpair::new(format!("{i:05}"), 1i64.into()))
            .collect();
        for chunk in many.chunks(2000) {
            assert_eq!(
                bounded(c.hmset("many", chunk.to_vec()))
                    .await
                    .unwrap()
                    .status,
                200
            );
        }
        let page = bounded(c.hscan("many", None, 0)).await.unwrap();
        assert_eq!(
            (page.pairs.len(), page.cursor.as_deref()),
            (100, Some("00099"))
        );
        let page = bounded(c.hscan("many", None, 1_000_000)).await.unwrap();
        assert_eq!(
            (page.pairs.len(), page.cursor.as_deref()),
            (10_000, Some("09999"))
        );
        let page = bounded(c.hscan("many", page.cursor.as_deref(), u32::MAX))
            .await
            .unwrap();
        assert_eq!((page.pairs.len(), page.cursor), (50, None));
        server.stop().await;
    }
}

#[tokio::test]
async fn a_pair_too_large_for_any_answer_is_a_413_whose_cursor_skips_it() {
    const MAX: usize = 64 * 1024;
    for backend in ["memory", "sled"] {
        let dir = tempfile::tempdir().unwrap();
        let server = server_on(backend, dir.path(), MAX).await;
        let mut c = server.client().await;
        // The key travels twice in an hscan answer (the pair, the cursor):
        // a request that fits can store a pair no hscan answer can carry.
        let huge_key = format!("b{}", "k".repeat(30 * 1024));
        let set = bounded(c.hset("t", &huge_key, "v".repeat(30 * 1024)))
            .await
            .unwrap();
        assert_eq!(set.status, 200, "{}", set.message);
        bounded(c.hset("t", "a", "small")).await.unwrap();
        bounded(c.hset("t", "c", "small")).await.unwrap();
        let page = bounded(c.hscan("t", None, 10)).await.unwrap();
        // The pairs before it come first.
        assert_eq!(
            (page.pairs.len(), page.cursor.as_deref()),
            (1, Some("a")),
            "{}",
            page.message
        );
        let refused = bounded(c.hscan("t", Some("a"), 10)).await.unwrap();
        assert_eq!(refused.status, 413, "{backend}");
        assert!(refused.message.contains("\"bkkkk"), "{}", refused.message);
        assert!(refused.message.len() < 1024, "{}", refused.message);
        assert_eq!(refused.cursor.as_deref(), Some(huge_key.as_str()));
        let rest = bounded(c.hscan("t", refused.cursor.as_deref(), 10))
            .await
            .unwrap();
        assert_eq!((rest.status, rest.pairs.len(), rest.cursor), (200, 1, None));
        assert_eq!(rest.pairs[0].key, "c");
        server.stop().await;
    }
}
