//! The server's side: `[server.tls]` loaded into a rustls `ServerConfig`,
//! reloadable, and the handshake.
//!
//! [`ServerTls::load`] reads and checks every file (PEM, each certificate
//! in its validity period, the key matching the certificate, the CA file
//! holding certificates) and fails with one [`TlsError`] naming the file.
//! [`ServerTls::reload`] does the same with the files as they are now and
//! swaps the result in for new handshakes, or keeps the running config
//! when anything fails; a connection keeps the config its handshake used.
//! [`ServerTls::accept`] runs one handshake and reads the client's
//! [`PeerIdentity`] when client certificates are required.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::identity::{IdentityError, PeerIdentity};
use super::{provider, with_key_pair, FileProblem, PemFile, TlsError};
use crate::config::TlsConfig;

/// What the running TLS config serves, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The server certificate's subject (`CN=kv.example.com`).
    pub subject: String,
    /// When the server certificate expires: rotate it before then.
    pub not_after: SystemTime,
    /// Whether clients must present a certificate signed by `client_ca`.
    pub client_auth: bool,
}

/// The loaded config and what it serves, swapped as one.
#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    info: CertInfo,
}

/// `[server.tls]`, loaded: the config new handshakes use, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    /// An `ArcSwap`, not a lock: every accepted connection reads it, a
    /// reload (rare) replaces it whole, and a connection mid-handshake
    /// keeps the `Arc` it loaded, so a reload never disturbs one.
    current: ArcSwap<Loaded>,
}

/// A finished handshake.
#[derive(Debug)]
pub struct Accepted {
    /// The TLS stream; requests and answers go through it.
    pub stream: TlsStream<TcpStream>,
    /// The client certificate's identity, when client certificates are
    /// required (`client_ca`); `None` otherwise.
    pub identity: Option<PeerIdentity>,
}

/// Why a handshake failed. Each variant is a different thing to log:
/// a client that does not speak TLS, one without an acceptable
/// certificate, one that went away.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The first bytes were not TLS: a plaintext client on the TLS port.
    #[error("not TLS (a plaintext client on the TLS port?): {0}")]
    NotTls(rustls::Error),
    /// Client certificates are required and none was presented.
    #[error("no client certificate presented (server.tls.client_ca requires one)")]
    NoClientCertificate,
    /// The client's certificate was refused (another CA, expired, ...).
    #[error("client certificate refused: {0}")]
    BadClientCertificate(rustls::Error),
    /// The verified client certificate gives no identity (not expected:
    /// rustls parsed it to verify it).
    #[error("client certificate: {0}")]
    Identity(#[from] IdentityError),
    /// Any other TLS failure (no common protocol version or cipher, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// The connection failed or closed during the handshake.
    #[error("connection lost during the TLS handshake: {0}")]
    Io(std::io::Error),
}

impl AcceptError {
    /// Sorts the error a handshake ended in.
    fn from_io(e: std::io::Error) -> Self {
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return AcceptError::Io(e);
        };
        match tls {
            rustls::Error::InvalidMessage(_) => AcceptError::NotTls(tls.clone()),
            rustls::Error::NoCertificatesPresented => AcceptError::NoClientCertificate,
            rustls::Error::InvalidCertificate(_) => AcceptError::BadClientCertificate(tls.clone()),
            _ => AcceptError::Tls(tls.clone()),
        }
    }
}

impl ServerTls {
    /// Reads and checks the files `settings` names.
    pub fn load(settings: &TlsConfig) -> Result<Self, TlsError> {
        let loaded = build(settings, SystemTime::now())?;
        Ok(Self {
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Reads the files `settings` names again (the same paths, or new
    /// ones from a re-read config) and, if every check passes, uses them
    /// for new handshakes. On an error the running config stays.
    pub fn reload(&self, settings: &TlsConfig) -> Result<CertInfo, TlsError> {
        let loaded = build(settings, SystemTime::now())?;
        let info = loaded.info.clone();
        self.current.store(Arc::new(loaded));
        Ok(info)
    }

    /// What new handshakes serve.
    pub fn info(&self) -> CertInfo {
        self.current.load().info.clone()
    }

    /// The rustls config new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load().config.clone()
    }

    /// An acceptor on the current config (cheap: an `Arc` clone).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// Runs the server side of a handshake on `tcp`. Bound it with a
    /// timeout: a client that sends nothing makes it wait.
    ///
    /// On failure the alert rustls wrote (if any) is followed by a clean
    /// close of our side, and bytes the client already sent are read and
    /// dropped first: closing a socket with unread data makes the kernel
    /// reset the connection, and a reset can overtake the alert, leaving
    /// the client with "connection reset" instead of the reason.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, AcceptError> {
        let loaded = self.current.load_full();
        let acceptor = TlsAcceptor::from(loaded.config.clone());
        match acceptor.accept(tcp).into_fallible().await {
            Ok(stream) => {
                let identity = match loaded.info.client_auth {
                    true => Some(PeerIdentity::from_chain(
                        stream.get_ref().1.peer_certificates().unwrap_or_default(),
                    )?),
                    false => None,
                };
                Ok(Accepted { stream, identity })
            }
            Err((e, mut tcp)) => {
                let _ = tcp.shutdown().await;
                drain(&tcp);
                Err(AcceptError::from_io(e))
            }
        }
    }
}

/// Reads and drops what `tcp` has already received, without waiting.
fn drain(tcp: &TcpStream) {
    let mut buf = [0u8; 4096];
    // Bounded: a client that keeps sending cannot hold the task here.
    for _ in 0..16 {
        match tcp.try_read(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => return,
        }
    }
}

/// Builds a rustls config from the files `settings` names, checked at `now`.
fn build(settings: &TlsConfig, now: SystemTime) -> Result<Loaded, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_file = PemFile::read(path, "server.tls.client_ca")?;
            let mut roots = RootCertStore::empty();
            for cert in ca_file.certificates()? {
                roots.add(cert.der).map_err(|e| {
                    ca_file.fail(FileProblem::BadAnchor {
                        which: cert.which,
                        reason: e.to_string(),
                    })
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_file.fail(FileProblem::NoVerifier(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let (config, leaf) = with_key_pair(
        (&settings.cert, "server.tls.cert"),
        (&settings.key, "server.tls.key"),
        now,
        |chain, key| builder.with_single_cert(chain, key),
    )?;
    Ok(Loaded {
        config: Arc::new(config),
        info: CertInfo {
            subject: leaf.which.subject,
            not_after: leaf.not_after,
            client_auth: settings.client_ca.is_some(),
        },
    })
}
