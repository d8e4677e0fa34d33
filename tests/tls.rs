//! TLS material and the client side (issue 14, phase 1): loading errors,
//! handshakes between `Client::connect_tls` and a minimal server built
//! from `ServerTls` (with and without client certificates), reloads that
//! keep the running certificate when the new one is bad, and
//! `hookv-cli --tls`. Certificates are made at run time (support::certs).
//! The server's own TLS listener: tests/tls_server.rs.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use hookv::client::{Client, ClientError};
use hookv::config::TlsConfig;
use hookv::frame::FrameCodec;
use hookv::pb::{CommandRequest, CommandResponse};
use hookv::tls::client::HandshakeError;
use hookv::tls::{AcceptError, ClientCertFiles, ClientTls, ServerTls, TlsOptions};
use prost::Message;
use rustls::AlertDescription;
use support::bounded;
use support::certs::{self, Files, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

fn settings(server: &Files, client_ca: Option<&Path>) -> TlsConfig {
    TlsConfig {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: client_ca.map(Path::to_owned),
        plaintext_listen: None,
    }
}

fn options(ca: &Path, client: Option<&Files>) -> TlsOptions {
    TlsOptions {
        ca: Some(ca.to_owned()),
        client_cert: client.map(|f| ClientCertFiles {
            cert: f.cert.clone(),
            key: f.key.clone(),
        }),
        server_name: None,
    }
}

/// What the in-test server saw of one connection's handshake: the
/// client's certificate names, or why the handshake failed.
type Handshake = Result<Option<Vec<String>>, AcceptError>;

/// A minimal TLS server on 127.0.0.1:0 built from `tls`: each request is
/// answered 200 with the client certificate's names as values (no storage,
/// no hooks: the real server's are tested in tests/tls_server.rs).
async fn serve(tls: Arc<ServerTls>) -> (String, mpsc::UnboundedReceiver<Handshake>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (seen, handshakes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (tls, seen) = (tls.clone(), seen.clone());
            tokio::spawn(async move {
                let accepted = match tls.accept(tcp).await {
                    Ok(accepted) => accepted,
                    Err(e) => return drop(seen.send(Err(e))),
                };
                let names: Option<Vec<String>> = accepted
                    .identity
                    .map(|id| id.names.iter().map(ToString::to_string).collect());
                let _ = seen.send(Ok(names.clone()));
                answer(accepted.stream, names.unwrap_or_default()).await;
            });
        }
    });
    (addr.to_string(), handshakes)
}

/// Answers every request on `stream` with `names`, until the client closes.
async fn answer(mut stream: impl AsyncReadExt + AsyncWriteExt + Unpin, names: Vec<String>) {
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            CommandRequest::decode(frame).unwrap();
            let mut res = CommandResponse::ok();
            res.values = names.iter().map(|n| n.as_str().into()).collect();
            let mut out = BytesMut::new();
            codec.encode(&res, &mut out).unwrap();
            stream.write_all(&out).await.unwrap();
            stream.flush().await.unwrap();
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The names the server answered with.
fn names(res: &CommandResponse) -> Vec<String> {
    assert_eq!(res.status, 200, "{}", res.message);
    res.values.iter().map(|v| v.to_string()).collect()
}

/// Connects with `tls` and sends one request.
async fn request(addr: &str, tls: &ClientTls) -> Result<CommandResponse, ClientError> {
    let mut client = bounded(Client::connect_tls(addr, tls)).await?;
    bounded(client.hget("t", "k")).await
}

#[test]
fn every_loading_error_is_one_line_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "main");
    let good = ca.server("server");
    let other = ca.server("other");
    let expired = ca.issue("expired", certs::expired(certs::server_params("old")));
    let early = ca.issue("early", certs::not_yet_valid(certs::server_params("new")));
    let write = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap();
    let garbage = write("garbage.pem", "this is not a certificate\n");
    let broken = write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n",
    );
    let unterminated = write("unterminated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let key_only = write("key-only.pem", &read(&good.key));
    let encrypted = write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let chain_with_expired = write(
        "chain.pem",
        &format!("{}{}", read(&good.cert), read(&expired.cert)),
    );
    let missing = d.join("missing.pem");
    let mismatch = format!("does not match the certificate in {}", good.cert.display());
    let with = |cert: &PathBuf, key: &PathBuf, client_ca: Option<&PathBuf>| TlsConfig {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: client_ca.cloned(),
        plaintext_listen: None,
    };
    let cases: Vec<(TlsConfig, &PathBuf, &str, &str)> = vec![
        (
            with(&missing, &good.key, None),
            &missing,
            "server.tls.cert",
            "cannot read: No such file",
        ),
        (
            with(&good.cert, &missing, None),
            &missing,
            "server.tls.key",
            "cannot read: No such file",
        ),
        (
            with(&garbage, &good.key, None),
            &garbage,
            "server.tls.cert",
            "not PEM (no \"-----BEGIN\" line)",
        ),
        (
            with(&broken, &good.key, None),
            &broken,
            "server.tls.cert",
            "broken PEM: bad base64 inside a block",
        ),
        (
            with(&unterminated, &good.key, None),
            &unterminated,
            "server.tls.cert",
            "broken PEM: no \"-----END CERTIFICATE-----\" line",
        ),
        (
            with(&key_only, &good.key, None),
            &key_only,
            "server.tls.cert",
            "holds no certificate (found only PRIVATE KEY)",
        ),
        (
            with(&good.cert, &good.cert, None),
            &good.cert,
            "server.tls.key",
            "holds no private key (found only CERTIFICATE)",
        ),
        (
            with(&good.cert, &encrypted, None),
            &encrypted,
            "server.tls.key",
            "the private key is encrypted",
        ),
        (
            with(&good.cert, &other.key, None),
            &other.key,
            "server.tls.key",
            &mismatch,
        ),
        (
            with(&expired.cert, &expired.key, None),
            &expired.cert,
            "server.tls.cert",
            "the certificate (CN=old) expired at 2021-01-01T00:00:00Z; renew it",
        ),
        (
            with(&early.cert, &early.key, None),
            &early.cert,
            "server.tls.cert",
            "the certificate (CN=new) is not valid before 2090-01-01T00:00:00Z",
        ),
        (
            with(&chain_with_expired, &good.key, None),
            &chain_with_expired,
            "server.tls.cert",
            "certificate 2 of 2 (CN=old) expired at 2021-01-01T00:00:00Z",
        ),
        (
            with(&good.cert, &good.key, Some(&key_only)),
            &key_only,
            "server.tls.client_ca",
            "holds no certificate (found only PRIVATE KEY)",
        ),
        (
            with(&good.cert, &good.key, Some(&garbage)),
            &garbage,
            "server.tls.client_ca",
            "not PEM",
        ),
        (
            with(&good.cert, &good.key, Some(&missing)),
            &missing,
            "server.tls.client_ca",
            "cannot read",
        ),
    ];
    for (config, file, role, problem) in cases {
        let msg = ServerTls::load(&config).unwrap_err().to_string();
        let head = format!("{} ({role}): ", file.display());
        assert!(msg.starts_with(&head), "want {head:?}...: {msg}");
        assert!(msg.contains(problem), "want {problem:?}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    ServerTls::load(&with(&good.cert, &good.key, Some(&ca.file))).unwrap();
}

#[tokio::test]
async fn a_client_trusting_the_ca_talks_to_the_server_without_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let tls = ServerTls::load(&settings(&ca.server("server"), None)).unwrap();
    assert!(!tls.info().client_auth);
    assert_eq!(tls.info().subject, "CN=localhost");
    let (addr, mut handshakes) = serve(Arc::new(tls)).await;
    let client_tls = options(&ca.file, None).load().unwrap();
    let mut client = bounded(Client::connect_tls(&addr, &client_tls))
        .await
        .unwrap();
    // Several requests, pipelined, over the one session.
    let reqs = vec![CommandRequest::new_hget("t", "k"); 3];
    let answers = bounded(client.pipeline(&reqs)).await.unwrap();
    assert_eq!(answers.iter().map(names).collect::<Vec<_>>(), [[""; 0]; 3]);
    assert_eq!(bounded(handshakes.recv()).await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn with_client_ca_the_server_sees_the_client_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let tls = ServerTls::load(&settings(&ca.server("server"), Some(&ca.file))).unwrap();
    assert!(tls.info().client_auth);
    let (addr, mut handshakes) = serve(Arc::new(tls)).await;
    let billing = ca.client("billing", "billing");
    let res = request(&addr, &options(&ca.file, Some(&billing)).load().unwrap())
        .await
        .unwrap();
    assert_eq!(names(&res), ["CN=billing"]);
    let seen = bounded(handshakes.recv()).await.unwrap().unwrap();
    assert_eq!(seen, Some(vec!["CN=billing".to_owned()]));
}

#[tokio::test]
async fn with_client_ca_a_client_without_a_certificate_is_refused_and_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let tls = ServerTls::load(&settings(&ca.server("server"), Some(&ca.file))).unwrap();
    let (addr, mut handshakes) = serve(Arc::new(tls)).await;
    let err = request(&addr, &options(&ca.file, None).load().unwrap())
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
    assert!(err.to_string().contains("it requires one"), "{err}");
    let seen = bounded(handshakes.recv()).await.unwrap();
    assert!(
        matches!(seen, Err(AcceptError::NoClientCertificate)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let stranger = TestCa::new(dir.path(), "stranger");
    let tls = ServerTls::load(&settings(&ca.server("server"), Some(&ca.file))).unwrap();
    let (addr, mut handshakes) = serve(Arc::new(tls)).await;
    // Same commonName as a client the server would accept; another CA.
    let impostor = stranger.client("impostor", "billing");
    let err = request(&addr, &options(&ca.file, Some(&impostor)).load().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Tls(HandshakeError::ClientCertificateRefused(
                AlertDescription::UnknownCA
            ))
        ),
        "{err:?}"
    );
    let seen = bounded(handshakes.recv()).await.unwrap();
    assert!(
        matches!(seen, Err(AcceptError::BadClientCertificate(_))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_client_refuses_a_server_certificate_it_cannot_trust_or_not_for_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let stranger = TestCa::new(dir.path(), "stranger");
    let tls = ServerTls::load(&settings(&ca.server("server"), None)).unwrap();
    let (addr, _handshakes) = serve(Arc::new(tls)).await;
    let err = request(&addr, &options(&stranger.file, None).load().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Tls(HandshakeError::ServerCertificate(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // The certificate is for localhost and 127.0.0.1, not this name.
    let mut elsewhere = options(&ca.file, None);
    elsewhere.server_name = Some("kv.example.com".into());
    let err = request(&addr, &elsewhere.load().unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not valid for name \"kv.example.com\""),
        "{err}"
    );
    // Named as the certificate names it, the same server is fine.
    let mut by_name = options(&ca.file, None);
    by_name.server_name = Some("localhost".into());
    request(&addr, &by_name.load().unwrap()).await.unwrap();
}

#[tokio::test]
async fn plaintext_and_tls_clients_on_the_wrong_port_fail_at_once_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let tls = ServerTls::load(&settings(&ca.server("server"), None)).unwrap();
    let (addr, mut handshakes) = serve(Arc::new(tls)).await;
    // A plaintext hookv client on the TLS port.
    let mut plain = bounded(Client::connect(addr.as_str())).await.unwrap();
    assert!(bounded(plain.hget("t", "k")).await.is_err());
    let seen = bounded(handshakes.recv()).await.unwrap();
    assert!(matches!(seen, Err(AcceptError::NotTls(_))), "{seen:?}");
    // A TLS client on a plaintext hookv server.
    let server = support::TestServer::memory().await;
    let client_tls = options(&ca.file, None).load().unwrap();
    let err = bounded(Client::connect_tls(&server.addr.to_string(), &client_tls))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Tls(HandshakeError::NotTls(_) | HandshakeError::Closed)
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does it speak TLS on this port?"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_certificates_for_new_handshakes_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new(dir.path(), "first");
    let second = TestCa::new(dir.path(), "second");
    let live = first.server("live");
    let config = settings(&live, None);
    let tls = Arc::new(ServerTls::load(&config).unwrap());
    let (addr, _handshakes) = serve(tls.clone()).await;
    let trusts_first = options(&first.file, None).load().unwrap();
    let trusts_second = options(&second.file, None).load().unwrap();
    let mut before = bounded(Client::connect_tls(&addr, &trusts_first))
        .await
        .unwrap();

    // The files are replaced by an expired certificate: refused, kept.
    let running = tls.config();
    let expired = second.issue("expired", certs::expired(certs::server_params("localhost")));
    std::fs::copy(&expired.cert, &live.cert).unwrap();
    std::fs::copy(&expired.key, &live.key).unwrap();
    let msg = tls.reload(&config).unwrap_err().to_string();
    assert!(msg.contains("expired at 2021-01-01T00:00:00Z"), "{msg}");
    assert!(Arc::ptr_eq(&running, &tls.config()));
    request(&addr, &trusts_first).await.unwrap();
    // A certificate without its key: refused, kept.
    let rotated = second.server("rotated");
    std::fs::copy(&rotated.cert, &live.cert).unwrap();
    let msg = tls.reload(&config).unwrap_err().to_string();
    assert!(msg.contains("(server.tls.key): does not match"), "{msg}");
    assert!(Arc::ptr_eq(&running, &tls.config()));
    request(&addr, &trusts_first).await.unwrap();

    // Both files rotated: new handshakes get the new certificate.
    std::fs::copy(&rotated.key, &live.key).unwrap();
    let info = tls.reload(&config).unwrap();
    assert_eq!(info.subject, "CN=localhost");
    assert!(!Arc::ptr_eq(&running, &tls.config()));
    request(&addr, &trusts_second).await.unwrap();
    let err = request(&addr, &trusts_first).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Tls(HandshakeError::ServerCertificate(_))),
        "{err:?}"
    );
    // A connection made before the reload goes on with its session.
    assert_eq!(
        names(&bounded(before.hget("t", "k")).await.unwrap()),
        [""; 0]
    );
}

#[test]
fn client_files_are_checked_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let client = ca.client("client", "billing");
    let other = ca.client("other", "other");
    let old = ca.issue("old", certs::expired(certs::server_params("old")));
    let load = |opts: TlsOptions| opts.load().unwrap_err().to_string();
    let msg = load(options(&client.key, None));
    assert!(
        msg.starts_with(&format!(
            "{} (CA file): holds no certificate",
            client.key.display()
        )),
        "{msg}"
    );
    let mismatched = Files {
        cert: client.cert.clone(),
        key: other.key.clone(),
    };
    let msg = load(options(&ca.file, Some(&mismatched)));
    assert!(
        msg.starts_with(&format!(
            "{} (client key): does not match",
            other.key.display()
        )),
        "{msg}"
    );
    let msg = load(options(&ca.file, Some(&old)));
    assert!(
        msg.starts_with(&format!(
            "{} (client certificate): the certificate (CN=old) expired",
            old.cert.display()
        )),
        "{msg}"
    );
    let mut bad_name = options(&ca.file, None);
    bad_name.server_name = Some("not a host name".into());
    assert_eq!(
        load(bad_name),
        "server name \"not a host name\": not a DNS name or an IP address"
    );
}

/// Runs hookv-cli with `args` (off the runtime's threads: it blocks).
async fn cli(args: Vec<String>) -> std::process::Output {
    bounded(tokio::task::spawn_blocking(move || {
        std::process::Command::new(CLI)
            .args(args)
            .env_remove("HOOKV_ADDR")
            .env_remove("HOOKV_TOKEN")
            .output()
            .unwrap()
    }))
    .await
    .unwrap()
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    list.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookv_cli_speaks_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let tls = ServerTls::load(&settings(&ca.server("server"), Some(&ca.file))).unwrap();
    let (addr, _handshakes) = serve(Arc::new(tls)).await;
    let billing = ca.client("billing", "billing");
    let o = cli(args(&[
        &"--addr",
        &addr,
        &"--tls",
        &"--ca",
        &ca.file,
        &"--cert",
        &billing.cert,
        &"--key",
        &billing.key,
        &"hget",
        &"t",
        &"k",
    ]))
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("CN=billing"), "{stdout}");
    // Without a certificate: the server's refusal, in words, exit 3.
    let o = cli(args(&[
        &"--addr", &addr, &"--tls", &"--ca", &ca.file, &"hget", &"t", &"k",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("it requires one"), "{stderr}");
    // With --server-name: the name the certificate must carry.
    let o = cli(args(&[
        &"--addr",
        &addr,
        &"--tls",
        &"--ca",
        &ca.file,
        &"--cert",
        &billing.cert,
        &"--key",
        &billing.key,
        &"--server-name",
        &"kv.example.com",
        &"hget",
        &"t",
        &"k",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("not valid for name \"kv.example.com\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookv_cli_tls_flags_are_checked_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "main");
    let client = ca.client("client", "billing");
    // Nothing listens here: each case must fail before connecting.
    let addr = "127.0.0.1:9";
    for (flags, says) in [
        (args(&[&"--ca", &ca.file]), "--tls"),
        (args(&[&"--tls", &"--cert", &client.cert]), "--key"),
        (args(&[&"--tls", &"--key", &client.key]), "--cert"),
        (
            args(&[&"--tls", &"--ca", &client.key]),
            "holds no certificate",
        ),
    ] {
        let mut all = args(&[&"--addr", &addr]);
        all.extend(flags.iter().cloned());
        all.extend(args(&[&"hget", &"t", &"k"]));
        let o = cli(all).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
