//! The server speaking TLS (issue 14, phase 2), tested on the real binary
//! (and once in process, for what hooks see): requests with and without
//! client certificates, users granted by certificate, the plaintext
//! listener beside the TLS one, clients on the wrong port closed at once,
//! handshakes bounded in time and counted among the unauthenticated, and
//! certificate rotation by SIGHUP under load. Certificates are made at run
//! time (support::certs).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookv::client::{Client, ClientError};
use hookv::hooks::auth::hash_token;
use hookv::pb::{CommandRequest, CommandResponse, Value};
use hookv::server::Listeners;
use hookv::tls::client::HandshakeError;
use hookv::tls::{ClientCertFiles, ClientTls, ServerTls, TlsOptions};
use hookv::{MemTable, Service, ServiceInner};
use rustls::AlertDescription;
use support::certs::{Files, TestCa};
use support::{bounded, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");
const ADMIN_TOKEN: &str = "tls-admin-token-0123456789";

/// A `[server]` table whose own timeouts never fire during a test, so that
/// a connection closed within the test's time limit was closed for what
/// the test is about.
const PATIENT: &str = "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout_secs = 3600\n\
                       frame_timeout_secs = 3600\nauth_timeout_secs = 3600\n";

/// Billing may read and write `invoices*` by its certificate (CN=billing);
/// admin may do anything, by token.
fn auth_hook() -> String {
    format!(
        "[[hooks]]\nkind = \"auth\"\nusers = [\n\
         {{ name = \"billing\", cert_subject = \"CN=billing\", read = [\"invoices*\"], write = [\"invoices*\"] }},\n\
         {{ name = \"admin\", token_sha256 = \"{}\", read = [\"*\"], write = [\"*\"] }},\n]\n",
        hash_token(ADMIN_TOKEN)
    )
}

/// Writes `text` as `dir/config.toml` and returns its path.
fn config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `[server.tls]` with the files of `TestCa::server("server")`, and these
/// lines after them.
fn tls_table(more: &str) -> String {
    format!("[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n{more}")
}

fn client_tls(ca: &Path, cert: Option<&Files>) -> ClientTls {
    TlsOptions {
        ca: Some(ca.to_owned()),
        client_cert: cert.map(|f| ClientCertFiles {
            cert: f.cert.clone(),
            key: f.key.clone(),
        }),
        server_name: None,
    }
    .load()
    .unwrap()
}

async fn connect(addr: SocketAddr, tls: &ClientTls) -> Result<Client, ClientError> {
    bounded(Client::connect_tls(&addr.to_string(), tls)).await
}

/// Connects and sends one request (a refused client certificate shows on
/// the first read under TLS 1.3).
async fn request(addr: SocketAddr, tls: &ClientTls) -> Result<CommandResponse, ClientError> {
    bounded(connect(addr, tls).await?.hget("invoices", "a1")).await
}

/// The plaintext listener's address, from the server's "listening" line.
fn plaintext_addr(server: &Running) -> SocketAddr {
    let line = server.wait_for_log("hookv listening");
    let rest = line.split("plaintext=\"").nth(1).expect(&line);
    rest.split('"').next().unwrap().parse().unwrap()
}

/// Reads until the server closes the connection (EOF or reset): bounded,
/// so a server that keeps it open fails the test.
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match bounded(tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn status(res: Result<CommandResponse, ClientError>) -> u32 {
    res.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_grants_users_by_client_certificate_and_by_token_on_the_plaintext_listener() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    ca.server("server");
    let billing = ca.client("billing", "billing");
    let stranger = ca.client("stranger", "stranger");
    let tls = tls_table("client_ca = \"main-ca.pem\"\nplaintext_listen = \"127.0.0.1:0\"\n");
    let server = Running::start(&config(d, &format!("{PATIENT}{tls}{}", auth_hook())));
    let addr = server.addr;

    // Billing's certificate is its login: no `auth`, its patterns apply.
    let mut c = connect(addr, &client_tls(&ca.file, Some(&billing)))
        .await
        .unwrap();
    assert_eq!(status(bounded(c.hset("invoices", "a1", "10")).await), 200);
    let res = bounded(c.hget("users", "alice")).await.unwrap();
    assert_eq!(res.status, 403, "{res:?}");
    assert_eq!(
        res.message,
        "hget: user billing may not read table \"users\""
    );
    let res = bounded(c.hset("users", "alice", "x")).await.unwrap();
    assert_eq!(res.status, 403, "{res:?}");
    // Pipelined over TLS: every answer, in order.
    let reqs: Vec<_> = (0..50)
        .map(|i| match i % 2 {
            0 => CommandRequest::new_hset("invoices", format!("k{i}"), i.to_string().into()),
            _ => CommandRequest::new_hget("invoices", format!("k{}", i - 1)),
        })
        .collect();
    let answers = bounded(c.pipeline(&reqs)).await.unwrap();
    for (i, res) in answers.iter().enumerate() {
        assert_eq!(res.status, 200, "{i}: {res:?}");
        if i % 2 == 1 {
            assert_eq!(res.values, [Value::from((i - 1).to_string())], "{i}");
        }
    }

    // A certificate the CA signed but no user names: 401 saying so; a
    // token still logs it in.
    let mut c = connect(addr, &client_tls(&ca.file, Some(&stranger)))
        .await
        .unwrap();
    let res = bounded(c.hget("invoices", "a1")).await.unwrap();
    assert_eq!(res.status, 401, "{res:?}");
    assert!(
        res.message.contains("certificate (CN=stranger)"),
        "{}",
        res.message
    );
    assert_eq!(status(bounded(c.auth(ADMIN_TOKEN)).await), 200);
    assert_eq!(status(bounded(c.hget("invoices", "a1")).await), 200);

    // No certificate: the handshake is refused, nothing reaches a hook
    // (TLS 1.3: the client hears it on its first read).
    let err = request(addr, &client_tls(&ca.file, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Tls(HandshakeError::ClientCertificateRefused(
                AlertDescription::CertificateRequired
            ))
        ),
        "{err:?}"
    );
    server.wait_for_log("no client certificate presented");

    // The plaintext listener: the same service and data, tokens only.
    let plain = plaintext_addr(&server);
    let mut c = bounded(Client::connect(plain)).await.unwrap();
    assert_eq!(status(bounded(c.hget("invoices", "a1")).await), 401);
    assert_eq!(status(bounded(c.auth(ADMIN_TOKEN)).await), 200);
    let res = bounded(c.hget("invoices", "a1")).await.unwrap();
    assert_eq!(res.values, [Value::from("10")]);

    // hookv-cli --tls against the real server.
    let cli = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = std::process::Command::new(CLI);
        cmd.env_remove("HOOKV_ADDR")
            .env_remove("HOOKV_TOKEN")
            .arg("--addr")
            .arg(addr.to_string())
            .args(["--tls", "--ca"])
            .arg(&ca.file);
        for a in extra {
            cmd.arg(a);
        }
        cmd.output().unwrap()
    };
    let o = cli(&[
        &"--cert",
        &billing.cert,
        &"--key",
        &billing.key,
        &"--raw",
        &"hget",
        &"invoices",
        &"a1",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "10\n");
    let o = cli(&[
        &"--cert",
        &billing.cert,
        &"--key",
        &billing.key,
        &"hget",
        &"users",
        &"alice",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 403: hget: user billing"), "{stderr}");
    let o = cli(&[&"hget", &"invoices", &"a1"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("it requires one"), "{stderr}");
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_ca_every_tls_client_is_served_and_limits_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    ca.server("server");
    let text = format!("{PATIENT}max_frame_bytes = 1024\n{}", tls_table(""));
    let server = Running::start(&config(d, &text));
    let tls = client_tls(&ca.file, None);
    let mut c = connect(server.addr, &tls).await.unwrap();
    assert_eq!(status(bounded(c.hset("t", "k", "v")).await), 200);
    let res = bounded(c.hget("t", "k")).await.unwrap();
    assert_eq!(res.values, [Value::from("v")]);
    // A frame over max_frame_bytes: answered 413 and closed, as over TCP.
    let res = bounded(c.hset("t", "big", "x".repeat(2000))).await.unwrap();
    assert_eq!(res.status, 413, "{res:?}");
    assert!(matches!(
        bounded(c.hget("t", "k")).await,
        Err(ClientError::Closed)
    ));
    // The server's certificate is the one the client checked.
    let wrong = TestCa::new(d, "other");
    let err = connect(server.addr, &client_tls(&wrong.file, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Tls(HandshakeError::ServerCertificate(_))),
        "{err:?}"
    );
    server.stop_cleanly();
}

#[tokio::test]
async fn hooks_see_the_client_certificate_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    let files = ca.server("server");
    let settings = hookv::config::TlsConfig {
        cert: files.cert,
        key: files.key,
        client_ca: Some(ca.file.clone()),
        plaintext_listen: None,
    };
    let tls = Arc::new(ServerTls::load(&settings).unwrap());
    // A hook that answers every request with the certificate's names.
    let service: Service = ServiceInner::new(MemTable::new())
        .on_received(|ctx, _req| {
            let mut res = CommandResponse::ok();
            res.message = ctx
                .identity()
                .map_or("none".into(), |id| id.subject.clone());
            res.values = ctx
                .identity()
                .map(|id| id.names.iter().map(|n| n.to_string().into()).collect())
                .unwrap_or_default();
            std::ops::ControlFlow::Break(res)
        })
        .into();
    let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = main.local_addr().unwrap();
    let listeners = Listeners {
        main,
        tls: Some(tls),
        plaintext: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = hookv::config::ServerConfig::default();
    let server = tokio::spawn(async move {
        hookv::server::serve(listeners, service, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    let billing = ca.client("billing", "billing");
    let mut c = connect(addr, &client_tls(&ca.file, Some(&billing)))
        .await
        .unwrap();
    let res = bounded(c.hget("t", "k")).await.unwrap();
    assert_eq!(res.message, "CN=billing");
    assert_eq!(res.values, [Value::from("CN=billing")]);
    stop.send(()).unwrap();
    bounded(server).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_the_wrong_port_are_closed_at_once_and_the_log_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    ca.server("server");
    let tls = tls_table("plaintext_listen = \"127.0.0.1:0\"\n");
    let server = Running::start(&config(d, &format!("{PATIENT}{tls}")));
    // A plaintext hookv client on the TLS port: closed without an answer
    // (its frame is no ClientHello), long before any of the server's
    // timeouts (an hour each here).
    let mut plain = bounded(Client::connect(server.addr)).await.unwrap();
    let err = bounded(plain.hget("t", "k")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed | ClientError::Io(_)),
        "{err:?}"
    );
    server.wait_for_log("not TLS (a plaintext client on the TLS port?)");
    // A TLS client on the plaintext port: closed, and it says where it was.
    let plain_addr = plaintext_addr(&server);
    let err = bounded(Client::connect_tls(
        &plain_addr.to_string(),
        &client_tls(&ca.file, None),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::Tls(HandshakeError::Closed)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does it speak TLS on this port?"),
        "{err}"
    );
    server.wait_for_log("a TLS client on a plaintext port");
    // Both listeners still serve.
    let mut c = bounded(Client::connect(plain_addr)).await.unwrap();
    assert_eq!(status(bounded(c.hset("t", "k", "v")).await), 200);
    let mut c = connect(server.addr, &client_tls(&ca.file, None))
        .await
        .unwrap();
    assert_eq!(status(bounded(c.hget("t", "k")).await), 200);
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_must_finish_within_frame_timeout_secs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    ca.server("server");
    let text =
        "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout_secs = 3600\nframe_timeout_secs = 1\n";
    let server = Running::start(&config(d, &format!("{text}{}", tls_table(""))));
    // Silent, and a ClientHello cut short: both closed by the server.
    let mut silent = bounded(TcpStream::connect(server.addr)).await.unwrap();
    let mut partial = bounded(TcpStream::connect(server.addr)).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    closed_by_server(&mut silent).await;
    closed_by_server(&mut partial).await;
    let line = server.wait_for_nth_log(
        "TLS handshake not finished within frame_timeout_secs (1 s)",
        2,
    );
    assert!(line.contains("WARN"), "{line}");
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_count_among_the_unauthenticated_while_auth_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    ca.server("server");
    let billing = ca.client("billing", "billing");
    // One worker thread: connections are admitted in accept order.
    let text = format!(
        "{PATIENT}worker_threads = 1\nmax_connections = 16\nmax_unauthenticated = 2\n{}{}",
        tls_table("client_ca = \"main-ca.pem\"\n"),
        auth_hook()
    );
    let server = Running::start(&config(d, &text));
    // Two connections that never finish their handshake take the two places...
    let mut stallers = Vec::new();
    for _ in 0..2 {
        stallers.push(bounded(TcpStream::connect(server.addr)).await.unwrap());
    }
    // ...so the next is closed at once, before any handshake.
    let mut third = bounded(TcpStream::connect(server.addr)).await.unwrap();
    closed_by_server(&mut third).await;
    server.wait_for_log("too many unauthenticated connections (max_unauthenticated = 2)");
    let tls = client_tls(&ca.file, Some(&billing));
    // Closed before its ClientHello was read: an end of stream, or a reset
    // if the ClientHello arrived first.
    let err = request(server.addr, &tls).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Tls(HandshakeError::Closed) | ClientError::Io(_)
        ),
        "{err:?}"
    );
    // Once they leave, a client with a certificate gets in, and its
    // certificate's user frees its place at its first request.
    drop(stallers);
    let mut clients = Vec::new();
    while clients.len() < 4 {
        let Ok(mut c) = connect(server.addr, &tls).await else {
            // The server has not yet seen the stallers go.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match bounded(c.hset("invoices", "k", "v")).await {
            Ok(res) => {
                assert_eq!(res.status, 200, "{res:?}");
                clients.push(c);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    server.stop_cleanly();
}

/// One client's loop: pipelines of 8 requests through TLS until `stop`,
/// on one connection or (`reconnect`) a new one every few pipelines;
/// counts requests answered 200, and panics on anything else.
async fn load(
    addr: SocketAddr,
    tls: ClientTls,
    reconnect: bool,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let mut c = connect(addr, &tls).await.unwrap();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if reconnect && round.is_multiple_of(5) {
            c = connect(addr, &tls).await.unwrap();
        }
        let reqs: Vec<_> = (0..8)
            .map(|i| {
                CommandRequest::new_hset("rotation", format!("k{i}"), round.to_string().into())
            })
            .collect();
        for res in bounded(c.pipeline(&reqs)).await.unwrap() {
            assert_eq!(res.status, 200, "{res:?}");
        }
        done.fetch_add(8, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old_ca = TestCa::new(d, "old");
    let new_ca = TestCa::new(d, "new");
    let live = old_ca.server("server");
    let server = Running::start(&config(d, &format!("{PATIENT}{}", tls_table(""))));
    let addr = server.addr;
    // The clients under load trust both CAs, as clients do while a CA is
    // being replaced; two keep their connection, two reconnect all along.
    let both = d.join("both-ca.pem");
    let pems = [&old_ca.file, &new_ca.file].map(|f| std::fs::read_to_string(f).unwrap());
    std::fs::write(&both, pems.concat()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let tls = client_tls(&both, None);
            tokio::spawn(load(addr, tls, i % 2 == 1, stop.clone(), done.clone()))
        })
        .collect();
    let trusts_old = client_tls(&old_ca.file, None);
    let trusts_new = client_tls(&new_ca.file, None);
    connect(addr, &trusts_old).await.unwrap();
    let mut kept = connect(addr, &trusts_old).await.unwrap();
    let wait_for_load = |more: u64| {
        let done = done.clone();
        async move {
            let until = done.load(Ordering::Relaxed) + more;
            while done.load(Ordering::Relaxed) < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    bounded(wait_for_load(400)).await;

    // New files in place (each replaced whole, as a deploy tool does),
    // then SIGHUP.
    let rotated = new_ca.server("rotated");
    for (from, to) in [(&rotated.cert, &live.cert), (&rotated.key, &live.key)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    server.signal("HUP");
    server.wait_for_log("TLS files reloaded");
    bounded(wait_for_load(400)).await;
    // New connections get the new certificate; a connection from before
    // the rotation goes on with its session.
    connect(addr, &trusts_new).await.unwrap();
    let err = request(addr, &trusts_old).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Tls(HandshakeError::ServerCertificate(_))),
        "{err:?}"
    );
    assert_eq!(
        status(bounded(kept.hset("rotation", "kept", "1")).await),
        200
    );

    // A certificate without its key: refused, logged, the running one stays.
    let next = old_ca.server("next");
    std::fs::copy(&next.cert, &live.cert).unwrap();
    server.signal("HUP");
    let line = server.wait_for_log("TLS reload failed; the running certificate stays");
    assert!(line.contains("(server.tls.key): does not match"), "{line}");
    bounded(wait_for_load(400)).await;
    connect(addr, &trusts_new).await.unwrap();

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        // A failed request panics its client: this fails the test.
        bounded(client).await.unwrap();
    }
    server.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_users_without_client_certificates_are_warned_of_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(&config(dir.path(), &format!("{PATIENT}{}", auth_hook())));
    let line = server.wait_for_log("no listener asks for client certificates");
    assert!(
        line.contains("WARN") && line.contains("user=\"billing\""),
        "{line}"
    );
    let mut c = server.client().await;
    assert_eq!(status(bounded(c.hget("invoices", "a1")).await), 401);
    assert_eq!(status(bounded(c.auth(ADMIN_TOKEN)).await), 200);
    server.stop_cleanly();
}
