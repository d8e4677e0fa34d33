//! An `async-prost` 0.4 client with prost 0.10 messages, written exactly as
//! the original course's client was, runs all nine commands against a real
//! hookv server (memory and sled backends), one at a time and pipelined.
//!
//! Every network wait is bounded by [`WAIT`], so a broken server fails the
//! test instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use async_prost::AsyncProstStream;
use futures::{SinkExt, StreamExt};
use hookv_compat_async_prost_client::{
    call, connect, value, Client, CommandRequest, CommandResponse, Kvpair, Value,
};
use prost::bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The longest any single network step may take.
const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most [`WAIT`], panicking with `what` on timeout.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no progress within {WAIT:?}"),
    }
}

/// A hookv server running in this process.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), hookv::StorageError>>,
}

impl Server {
    async fn start<S: hookv::Storage>(service: hookv::Service<S>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (stop, stop_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let config = hookv::config::ServerConfig::default();
            hookv::server::run(listener, service, &config, async {
                let _ = stop_rx.await;
            })
            .await
        });
        Self { addr, stop, handle }
    }

    /// Stops the server and waits for it to finish (flushing storage).
    async fn shutdown(self) {
        self.stop
            .send(())
            .expect("server exited before being told to stop");
        bounded("server shutdown", self.handle)
            .await
            .expect("server task panicked")
            .expect("storage flush failed");
    }
}

/// Connects exactly as the course's client did.
async fn course_client(addr: SocketAddr) -> Client {
    let stream = bounded("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    AsyncProstStream::<_, CommandResponse, CommandRequest, _>::from(stream).for_async()
}

/// `client.send(cmd).await?; client.next().await`, as the course did, bounded.
async fn ask(client: &mut Client, req: CommandRequest) -> CommandResponse {
    let name = format!("{req:?}");
    bounded(&format!("send {name}"), client.send(req))
        .await
        .expect("send");
    bounded(&format!("answer to {name}"), client.next())
        .await
        .expect("server closed the connection")
        .expect("response decodes")
}

fn s(v: &str) -> Value {
    v.into()
}

fn keys(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|k| (*k).to_owned()).collect()
}

#[track_caller]
fn assert_values(res: &CommandResponse, expected: &[Value]) {
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.message, "", "{res:?}");
    assert_eq!(res.values, expected, "{res:?}");
    assert!(res.pairs.is_empty(), "{res:?}");
}

#[track_caller]
fn assert_pairs(res: &CommandResponse, expected: &[Kvpair]) {
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.message, "", "{res:?}");
    assert!(res.values.is_empty(), "{res:?}");
    assert_eq!(res.pairs, expected, "{res:?}");
}

/// All nine commands, checked in detail, on an initially empty store.
async fn nine_commands(client: &mut Client) {
    let bin: &[u8] = &[0, 1, 0xfe, 0xff];
    let bin = Value::from(bin);

    // Reads of a table that does not exist.
    let res = ask(client, CommandRequest::new_hexist("t1", "a")).await;
    assert_values(&res, &[false.into()]);
    let res = ask(client, CommandRequest::new_hmexist("t1", keys(&["a", "b"]))).await;
    assert_values(&res, &[false.into(), false.into()]);
    let res = ask(client, CommandRequest::new_hget("t1", "a")).await;
    assert_eq!(res.status, 404, "{res:?}");
    assert!(res.message.contains("Not found"), "{res:?}");
    assert!(res.values.is_empty() && res.pairs.is_empty(), "{res:?}");
    let res = ask(client, CommandRequest::new_hgetall("t1")).await;
    assert_pairs(&res, &[]);
    let res = ask(client, CommandRequest::new_hmget("t1", keys(&["a", "b"]))).await;
    assert_values(&res, &[Value::empty(), Value::empty()]);

    // hset answers the previous value, empty where there was none.
    let res = ask(client, CommandRequest::new_hset("t1", "b", "world")).await;
    assert_values(&res, &[Value::empty()]);
    let res = ask(client, CommandRequest::new_hset("t1", "b", 42_i64)).await;
    assert_values(&res, &[s("world")]);

    // hmset answers one previous value per pair, in order.
    let res = ask(
        client,
        CommandRequest::new_hmset(
            "t1",
            vec![
                Kvpair::new("a", 1.5_f64),
                Kvpair::new("c", true),
                Kvpair::new("d", bin.clone()),
            ],
        ),
    )
    .await;
    assert_values(&res, &[Value::empty(), Value::empty(), Value::empty()]);
    let res = ask(
        client,
        CommandRequest::new_hmset("t1", vec![Kvpair::new("a", "A"), Kvpair::new("e", "E")]),
    )
    .await;
    assert_values(&res, &[1.5_f64.into(), Value::empty()]);

    // Every value kind round-trips.
    let res = ask(client, CommandRequest::new_hget("t1", "b")).await;
    assert_values(&res, &[42_i64.into()]);
    let res = ask(client, CommandRequest::new_hget("t1", "d")).await;
    assert_values(&res, std::slice::from_ref(&bin));
    assert_eq!(
        res.values[0].value,
        Some(value::Value::Binary(Bytes::from_static(&[
            0, 1, 0xfe, 0xff
        ])))
    );

    // hmget: one value per key, in request order, empty for a missing key.
    let res = ask(
        client,
        CommandRequest::new_hmget("t1", keys(&["c", "missing", "a", "d", "b"])),
    )
    .await;
    assert_values(
        &res,
        &[
            true.into(),
            Value::empty(),
            s("A"),
            bin.clone(),
            42_i64.into(),
        ],
    );

    // hgetall: sorted by key, whatever the insertion order.
    let res = ask(client, CommandRequest::new_hgetall("t1")).await;
    assert_pairs(
        &res,
        &[
            Kvpair::new("a", "A"),
            Kvpair::new("b", 42_i64),
            Kvpair::new("c", true),
            Kvpair::new("d", bin.clone()),
            Kvpair::new("e", "E"),
        ],
    );

    // Tables are separate.
    let res = ask(client, CommandRequest::new_hgetall("t2")).await;
    assert_pairs(&res, &[]);
    let res = ask(client, CommandRequest::new_hexist("t2", "a")).await;
    assert_values(&res, &[false.into()]);

    // hexist / hmexist on an existing table.
    let res = ask(client, CommandRequest::new_hexist("t1", "a")).await;
    assert_values(&res, &[true.into()]);
    let res = ask(client, CommandRequest::new_hexist("t1", "zz")).await;
    assert_values(&res, &[false.into()]);
    let res = ask(
        client,
        CommandRequest::new_hmexist("t1", keys(&["a", "zz", "e"])),
    )
    .await;
    assert_values(&res, &[true.into(), false.into(), true.into()]);

    // hdel answers what it removed; a missing key is an empty value, still 200.
    let res = ask(client, CommandRequest::new_hdel("t1", "b")).await;
    assert_values(&res, &[42_i64.into()]);
    let res = ask(client, CommandRequest::new_hdel("t1", "b")).await;
    assert_values(&res, &[Value::empty()]);
    let res = ask(client, CommandRequest::new_hdel("nope", "b")).await;
    assert_values(&res, &[Value::empty()]);
    let res = ask(client, CommandRequest::new_hget("t1", "b")).await;
    assert_eq!(res.status, 404, "{res:?}");

    // hmdel answers one removed value per key, in order.
    let res = ask(
        client,
        CommandRequest::new_hmdel("t1", keys(&["a", "nope", "c"])),
    )
    .await;
    assert_values(&res, &[s("A"), Value::empty(), true.into()]);

    let res = ask(client, CommandRequest::new_hgetall("t1")).await;
    assert_pairs(&res, &[Kvpair::new("d", bin), Kvpair::new("e", "E")]);
    let res = ask(
        client,
        CommandRequest::new_hmexist("t1", keys(&["a", "b", "c", "d", "e"])),
    )
    .await;
    assert_values(
        &res,
        &[
            false.into(),
            false.into(),
            false.into(),
            true.into(),
            true.into(),
        ],
    );

    // Tag 13 reaches the server as `auth` (not as an unknown command).
    let res = ask(client, CommandRequest::new_auth("secret")).await;
    assert_eq!(res.status, 400, "{res:?}");
    assert!(res.message.contains("no auth hook"), "{res:?}");

    // An empty request is a zero-length frame: answered 400, and the
    // connection stays usable.
    let res = ask(client, CommandRequest::default()).await;
    assert_eq!(res.status, 400, "{res:?}");
    assert!(res.message.contains("no command"), "{res:?}");
    let res = ask(client, CommandRequest::new_hexist("t1", "e")).await;
    assert_values(&res, &[true.into()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_commands_memory_backend() {
    let service: hookv::Service = hookv::ServiceInner::new(hookv::MemTable::new()).into();
    let server = Server::start(service).await;

    let mut client = course_client(server.addr).await;
    nine_commands(&mut client).await;
    drop(client);

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_commands_sled_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = hookv::SledDb::open(dir.path()).expect("open sled");
    let service: hookv::Service<hookv::SledDb> = hookv::ServiceInner::new(store).into();
    let server = Server::start(service).await;

    let mut client = course_client(server.addr).await;
    nine_commands(&mut client).await;
    drop(client);

    server.shutdown().await;

    // What the course client wrote is on disk once the server has stopped.
    use hookv::Storage as _;
    // sled's background threads hold the database's lock a moment after
    // the last handle is dropped: open again until it is free (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let store = loop {
        match hookv::SledDb::open(dir.path()) {
            Ok(store) => break store,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen sled: {e}"),
        }
    };
    let pairs = store.get_all("t1").expect("get_all");
    let keys: Vec<&str> = pairs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["d", "e"]);
    assert_eq!(pairs[1].value, Some(hookv::pb::Value::from("E")));
}

/// Sends many requests before reading any answer: async-prost's sink only
/// buffers on `feed` and writes on `flush`, so they reach the server together.
async fn pipelined(addr: SocketAddr) {
    const N: usize = 200;
    let mut client = course_client(addr).await;

    let mut requests = Vec::new();
    for i in 0..N {
        requests.push(CommandRequest::new_hset(
            "pipe",
            format!("k{i:03}"),
            i as i64,
        ));
        requests.push(CommandRequest::new_hget("pipe", format!("k{i:03}")));
    }
    requests.push(CommandRequest::new_hexist("pipe", "k000"));
    requests.push(CommandRequest::new_hmexist("pipe", keys(&["k001", "zzz"])));
    requests.push(CommandRequest::new_hmget(
        "pipe",
        keys(&["k002", "zzz", "k003"]),
    ));
    requests.push(CommandRequest::new_hmset(
        "pipe",
        vec![Kvpair::new("k000", "x"), Kvpair::new("new", "y")],
    ));
    requests.push(CommandRequest::new_hdel("pipe", "new"));
    requests.push(CommandRequest::new_hmdel("pipe", keys(&["k000", "zzz"])));
    requests.push(CommandRequest::new_hget("pipe", "k000"));
    let total = requests.len();

    for req in requests {
        bounded("feed", client.feed(req)).await.expect("feed");
    }
    bounded("flush", client.flush()).await.expect("flush");

    let mut answers = Vec::with_capacity(total);
    for _ in 0..total {
        let res = bounded("pipelined answer", client.next())
            .await
            .expect("server closed the connection")
            .expect("response decodes");
        answers.push(res);
    }

    let mut it = answers.iter();
    for i in 0..N {
        assert_values(it.next().expect("hset answer"), &[Value::empty()]);
        assert_values(it.next().expect("hget answer"), &[(i as i64).into()]);
    }
    assert_values(it.next().expect("hexist"), &[true.into()]);
    assert_values(it.next().expect("hmexist"), &[true.into(), false.into()]);
    assert_values(
        it.next().expect("hmget"),
        &[2_i64.into(), Value::empty(), 3_i64.into()],
    );
    assert_values(it.next().expect("hmset"), &[0_i64.into(), Value::empty()]);
    assert_values(it.next().expect("hdel"), &[s("y")]);
    assert_values(it.next().expect("hmdel"), &[s("x"), Value::empty()]);
    let res = it.next().expect("hget");
    assert_eq!(res.status, 404, "{res:?}");
    assert!(it.next().is_none());

    // `send_all` pipelines too; then the table reads back sorted.
    let mut batch = futures::stream::iter(
        (0..N).map(|i| Ok(CommandRequest::new_hdel("pipe", format!("k{i:03}")))),
    );
    bounded("send_all", client.send_all(&mut batch))
        .await
        .expect("send_all");
    for i in 0..N {
        let res = bounded("send_all answer", client.next())
            .await
            .expect("server closed the connection")
            .expect("response decodes");
        let expected: Value = if i == 0 {
            Value::empty() // deleted by the hmdel above
        } else {
            (i as i64).into()
        };
        assert_values(&res, &[expected]);
    }
    let res = ask(&mut client, CommandRequest::new_hgetall("pipe")).await;
    assert_pairs(&res, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_memory_backend() {
    let service: hookv::Service = hookv::ServiceInner::new(hookv::MemTable::new()).into();
    let server = Server::start(service).await;
    pipelined(server.addr).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_sled_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = hookv::SledDb::open(dir.path()).expect("open sled");
    let service: hookv::Service<hookv::SledDb> = hookv::ServiceInner::new(store).into();
    let server = Server::start(service).await;
    pipelined(server.addr).await;
    server.shutdown().await;
}

/// The crate's own `connect`/`call` helpers, and several course clients at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_and_concurrent_clients() {
    let service: hookv::Service = hookv::ServiceInner::new(hookv::MemTable::new()).into();
    let server = Server::start(service).await;

    let mut client = bounded("connect", connect(server.addr))
        .await
        .expect("connect");
    let res = bounded(
        "call",
        call(&mut client, CommandRequest::new_hset("c", "k", "v")),
    )
    .await
    .expect("call");
    assert_values(&res, &[Value::empty()]);

    let mut tasks = Vec::new();
    for n in 0..4_i64 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = course_client(addr).await;
            let key = format!("k{n}");
            let res = ask(&mut client, CommandRequest::new_hset("c", key.as_str(), n)).await;
            assert_values(&res, &[Value::empty()]);
            let res = ask(&mut client, CommandRequest::new_hget("c", key.as_str())).await;
            assert_values(&res, &[n.into()]);
        }));
    }
    for task in tasks {
        bounded("client task", task).await.expect("client task");
    }

    let res = bounded("call", call(&mut client, CommandRequest::new_hgetall("c")))
        .await
        .expect("call");
    assert_pairs(
        &res,
        &[
            Kvpair::new("k", "v"),
            Kvpair::new("k0", 0_i64),
            Kvpair::new("k1", 1_i64),
            Kvpair::new("k2", 2_i64),
            Kvpair::new("k3", 3_i64),
        ],
    );
    drop(client);
    server.shutdown().await;
}

/// async-prost's frames (all nine commands and auth) are byte-for-byte hookv's own frames (4-byte
/// big-endian length, then the protobuf; prost 0.10 here, 0.14 in hookv), in
/// both directions.
#[tokio::test]
async fn frames_are_byte_identical() {
    let codec = hookv::frame::FrameCodec::new(hookv::frame::DEFAULT_MAX_FRAME_BYTES);

    // Requests: async-prost's writer vs hookv's encoder.
    let ours = vec![
        CommandRequest::new_hset("t", "k", "v"),
        CommandRequest::new_hmset("t", vec![Kvpair::new("a", 1.5_f64), Kvpair::new("b", true)]),
        CommandRequest::new_hmget("t", keys(&["a", "b"])),
        CommandRequest::new_hget("t", "k"),
        CommandRequest::new_hgetall("t"),
        CommandRequest::new_hdel("t", "a"),
        CommandRequest::new_hmdel("t", keys(&["a", ""])),
        CommandRequest::new_hexist("t", "a"),
        CommandRequest::new_hmexist("t", keys(&["a", "b"])),
        CommandRequest::new_hset("t", "i", -3_i64),
        CommandRequest::new_hset("t", "x", Value::from(&b"\x00\xff"[..])),
        CommandRequest::new_auth("tok"),
        CommandRequest::default(),
    ];
    let theirs = vec![
        hookv::pb::CommandRequest::new_hset("t", "k", "v".into()),
        hookv::pb::CommandRequest::new_hmset(
            "t",
            vec![
                hookv::pb::Kvpair::new("a", 1.5_f64.into()),
                hookv::pb::Kvpair::new("b", true.into()),
            ],
        ),
        hookv::pb::CommandRequest::new_hmget("t", keys(&["a", "b"])),
        hookv::pb::CommandRequest::new_hget("t", "k"),
        hookv::pb::CommandRequest::new_hgetall("t"),
        hookv::pb::CommandRequest::new_hdel("t", "a"),
        hookv::pb::CommandRequest::new_hmdel("t", keys(&["a", ""])),
        hookv::pb::CommandRequest::new_hexist("t", "a"),
        hookv::pb::CommandRequest::new_hmexist("t", keys(&["a", "b"])),
        hookv::pb::CommandRequest::new_hset("t", "i", (-3_i64).into()),
        hookv::pb::CommandRequest::new_hset("t", "x", b"\x00\xff".to_vec().into()),
        hookv::pb::CommandRequest::new_auth("tok"),
        hookv::pb::CommandRequest::default(),
    ];
    let mut writer =
        async_prost::AsyncProstWriter::<_, CommandRequest, _>::from(Vec::<u8>::new()).for_async();
    for req in ours {
        writer.feed(req).await.expect("feed");
    }
    writer.flush().await.expect("flush");
    let got = writer.into_inner();
    let mut expected = prost::bytes::BytesMut::new();
    for req in &theirs {
        codec.encode_message(req, &mut expected).expect("encode");
    }
    assert_eq!(got, &expected[..]);
    // The empty request is a bare zero-length header.
    assert_eq!(&got[got.len() - 4..], &[0, 0, 0, 0]);

    // Responses: hookv's encoder, read back by async-prost's reader.
    let bin: &[u8] = &[9, 8];
    let mut wire = prost::bytes::BytesMut::new();
    let responses = vec![
        hookv::pb::CommandResponse::from(vec![
            hookv::pb::Value::from("v"),
            hookv::pb::Value::empty(),
            hookv::pb::Value::from(7_i64),
            hookv::pb::Value::from(false),
        ]),
        hookv::pb::CommandResponse::from(vec![
            hookv::pb::Kvpair::new("a", 2.5_f64.into()),
            hookv::pb::Kvpair::new("b", bin.to_vec().into()),
        ]),
        hookv::pb::CommandResponse::error(404, "gone"),
    ];
    for res in &responses {
        codec.encode_message(res, &mut wire).expect("encode");
    }
    // The reader's destination marker picks the framing: AsyncDestination is
    // what `for_async()` selects.
    let reader =
        async_prost::AsyncProstReader::<_, CommandResponse, async_prost::AsyncDestination>::from(
            &wire[..],
        );
    let got: Vec<CommandResponse> = reader.map(|r| r.expect("response decodes")).collect().await;
    assert_eq!(
        got,
        vec![
            CommandResponse {
                status: 200,
                values: vec![s("v"), Value::empty(), 7_i64.into(), false.into()],
                ..Default::default()
            },
            CommandResponse {
                status: 200,
                pairs: vec![Kvpair::new("a", 2.5_f64), Kvpair::new("b", bin)],
                ..Default::default()
            },
            CommandResponse {
                status: 404,
                message: "gone".into(),
                ..Default::default()
            },
        ]
    );
}
