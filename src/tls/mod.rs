//! TLS: certificates and keys from PEM files, client certificates as an
//! identity, and the client side. rustls with the ring provider: nothing
//! but a C compiler at build time, no OpenSSL.
//!
//! ```text
//! [server.tls] files ─ ServerTls::load ─ rustls ServerConfig (ArcSwap) ─ accept ─ TLS stream
//!                        (checked: PEM,    ▲ reload(): new files,          └─ PeerIdentity
//!                         expiry, key)     └ or keep the old on error         (CN=…, DNS:…, URI:…)
//! hookv-cli --tls ─ TlsOptions::load ─ ClientTls ─ Client::connect_tls
//! ```
//!
//! - [`server`]: [`ServerTls`] loads `[server.tls]`, checks it, swaps in
//!   new files on `reload()` (keeping the running ones when the new ones
//!   fail), and runs handshakes with [`ServerTls::accept`], which says why
//!   one failed ([`AcceptError`]).
//! - [`identity`]: what a verified client certificate says its client is,
//!   and how a `cert_subject` rule matches it ([`PeerIdentity`], [`CertName`]).
//! - [`client`]: [`TlsOptions`] → [`ClientTls`], for
//!   `Client::connect_tls` and `hookv-cli --tls`.
//!
//! Every problem with a file is a [`TlsError::File`]: one line that names
//! the file, the key or option that named it, and what is wrong with it
//! (`certs/server.pem (server.tls.cert): the certificate (CN=localhost)
//! expired at 2025-01-01T00:00:00Z; renew it`).

pub mod client;
pub mod identity;
pub mod server;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{ClientCertFiles, ClientTls, TlsOptions};
pub use identity::{CertName, PeerIdentity};
pub use server::{AcceptError, Accepted, CertInfo, ServerTls};

/// Largest certificate, key or CA file read. A bundle of every public CA
/// is about 250 KiB; past this, the file is something else (or a device).
pub const MAX_PEM_FILE_BYTES: u64 = 4 << 20;

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file cannot be used.
    #[error("{} ({role}): {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The config key or option that named it, e.g. `server.tls.cert`.
        role: &'static str,
        /// What is wrong with it.
        problem: FileProblem,
    },
    /// The name to check the server's certificate against is not usable.
    #[error("server name {name:?}: not a DNS name or an IP address")]
    ServerName {
        /// The name given (or taken from the address).
        name: String,
    },
    /// No CA file was given, and the system's trust store has no certificate.
    #[error("no CA file given, and the system's trust store has no certificate ({detail}): give the CA that signed the server's certificate")]
    NoTrustStore {
        /// What loading the store said.
        detail: String,
    },
    /// rustls refused the assembled configuration (not expected with the
    /// ring provider's defaults).
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// What is wrong with a certificate, key or CA file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// It cannot be opened or read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// It is larger than [`MAX_PEM_FILE_BYTES`].
    #[error("larger than {MAX_PEM_FILE_BYTES} bytes: not a PEM certificate or key file")]
    TooLarge,
    /// It has no `-----BEGIN` line at all.
    #[error(
        "not PEM (no \"-----BEGIN\" line); a DER file converts with \
         `openssl x509 -inform der -in FILE` (certificate) or `openssl pkey -inform der -in FILE` (key)"
    )]
    NotPem,
    /// A PEM block is broken.
    #[error("broken PEM: {0}")]
    BadPem(String),
    /// It holds no certificate.
    #[error("holds no certificate (found {})", found(.0))]
    NoCertificate(Vec<String>),
    /// It holds no private key.
    #[error("holds no private key (found {})", found(.0))]
    NoKey(Vec<String>),
    /// Its key is encrypted with a passphrase.
    #[error(
        "the private key is encrypted; hookv reads unencrypted keys: decrypt it with \
         `openssl pkey -in KEY -out KEY.plain` and keep that file readable only by the server"
    )]
    EncryptedKey,
    /// A certificate does not parse as X.509.
    #[error("{which} is not valid X.509: {reason}")]
    BadCertificate {
        /// Which one.
        which: Which,
        /// What the parser said.
        reason: String,
    },
    /// A certificate is past its `notAfter`.
    #[error("{which} expired at {at}; renew it", at = rfc3339(*.not_after))]
    Expired {
        /// Which one.
        which: Which,
        /// Its `notAfter`.
        not_after: SystemTime,
    },
    /// A certificate is before its `notBefore`.
    #[error("{which} is not valid before {at} (is this machine's clock right?)", at = rfc3339(*.not_before))]
    NotYetValid {
        /// Which one.
        which: Which,
        /// Its `notBefore`.
        not_before: SystemTime,
    },
    /// The key is not the certificate's key.
    #[error(
        "does not match the certificate in {} (the certificate carries another key's public half)",
        .cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
    },
    /// The key parses as PEM but the crypto provider cannot use it.
    #[error("unusable private key: {0} (RSA, ECDSA P-256/P-384 and Ed25519 keys are supported)")]
    BadKey(String),
    /// rustls cannot build a client verifier from the CA file.
    #[error("cannot verify client certificates with it: {0}")]
    NoVerifier(String),
    /// A CA certificate cannot be a trust anchor.
    #[error("{which} cannot be a trust anchor: {reason}")]
    BadAnchor {
        /// Which one.
        which: Which,
        /// Why.
        reason: String,
    },
}

/// Which certificate of a file a message is about: "the certificate
/// (CN=x)" in a file of one, "certificate 2 of 3 (CN=x)" otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Which {
    /// 1-based position in the file.
    pub index: usize,
    /// Certificates in the file.
    pub count: usize,
    /// Its subject, as written (`CN=x, O=y`), if it could be read.
    pub subject: String,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count {
            1 => write!(f, "the certificate")?,
            n => write!(f, "certificate {} of {n}", self.index)?,
        }
        match self.subject.as_str() {
            "" => Ok(()),
            subject => write!(f, " ({subject})"),
        }
    }
}

/// `labels` for a message: `"PRIVATE KEY, CERTIFICATE REQUEST"`.
fn found(labels: &[String]) -> String {
    match labels {
        [] => "no PEM block".to_owned(),
        labels => format!("only {}", labels.join(", ")),
    }
}

/// `t` as `2025-01-01T00:00:00Z`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The one crypto provider hookv uses, named explicitly rather than taken
/// from a process-wide default that another crate's features could change.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate read from a file, with what the checks need.
#[derive(Debug, Clone)]
struct LoadedCert {
    der: CertificateDer<'static>,
    which: Which,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// A PEM file's bytes, read with a bound.
struct PemFile<'a> {
    path: &'a Path,
    role: &'static str,
    bytes: Vec<u8>,
}

impl<'a> PemFile<'a> {
    fn read(path: &'a Path, role: &'static str) -> Result<Self, TlsError> {
        let fail = |problem| TlsError::File {
            path: path.to_owned(),
            role,
            problem,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(FileProblem::Read(e)))?;
        let mut bytes = Vec::new();
        file.take(MAX_PEM_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(FileProblem::Read(e)))?;
        if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
            return Err(fail(FileProblem::TooLarge));
        }
        if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(fail(FileProblem::NotPem));
        }
        Ok(Self { path, role, bytes })
    }

    fn fail(&self, problem: FileProblem) -> TlsError {
        TlsError::File {
            path: self.path.to_owned(),
            role: self.role,
            problem,
        }
    }

    /// The labels of the file's PEM blocks, in order (`CERTIFICATE`, ...).
    fn labels(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.bytes)
            .lines()
            .filter_map(|line| {
                let label = line.trim().strip_prefix("-----BEGIN ")?;
                Some(label.strip_suffix("-----")?.to_owned())
            })
            .collect()
    }

    /// Every certificate in the file, parsed; at least one.
    fn certificates(&self) -> Result<Vec<LoadedCert>, TlsError> {
        let ders = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(FileProblem::BadPem(describe(e))))?;
        if ders.is_empty() {
            return Err(self.fail(FileProblem::NoCertificate(self.labels())));
        }
        let count = ders.len();
        ders.into_iter()
            .enumerate()
            .map(|(i, der)| {
                let mut which = Which {
                    index: i + 1,
                    count,
                    subject: String::new(),
                };
                let (not_before, not_after) = match x509_parser::parse_x509_certificate(&der) {
                    Ok((_, cert)) => {
                        which.subject = cert.subject().to_string();
                        let validity = cert.validity();
                        (
                            unix(validity.not_before.timestamp()),
                            unix(validity.not_after.timestamp()),
                        )
                    }
                    Err(e) => {
                        return Err(self.fail(FileProblem::BadCertificate {
                            which,
                            reason: e.to_string(),
                        }))
                    }
                };
                Ok(LoadedCert {
                    der,
                    which,
                    not_before,
                    not_after,
                })
            })
            .collect()
    }

    /// The file's certificates, each valid at `now`.
    fn current_certificates(&self, now: SystemTime) -> Result<Vec<LoadedCert>, TlsError> {
        let certs = self.certificates()?;
        for cert in &certs {
            if now > cert.not_after {
                return Err(self.fail(FileProblem::Expired {
                    which: cert.which.clone(),
                    not_after: cert.not_after,
                }));
            }
            if now < cert.not_before {
                return Err(self.fail(FileProblem::NotYetValid {
                    which: cert.which.clone(),
                    not_before: cert.not_before,
                }));
            }
        }
        Ok(certs)
    }

    /// The file's (first) private key.
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        match PrivateKeyDer::from_pem_slice(&self.bytes) {
            Ok(key) => Ok(key),
            Err(pem::Error::NoItemsFound) => {
                let labels = self.labels();
                if labels.iter().any(|l| l.contains("ENCRYPTED")) {
                    return Err(self.fail(FileProblem::EncryptedKey));
                }
                Err(self.fail(FileProblem::NoKey(labels)))
            }
            Err(e) => Err(self.fail(FileProblem::BadPem(describe(e)))),
        }
    }
}

/// Loads a certificate chain and its key for rustls to present (the
/// server's, or a client's): `build` is `with_single_cert` or
/// `with_client_auth_cert`. Each problem names the file it is in.
fn with_key_pair<T>(
    cert: (&Path, &'static str),
    key: (&Path, &'static str),
    now: SystemTime,
    build: impl FnOnce(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) -> Result<T, rustls::Error>,
) -> Result<(T, LoadedCert), TlsError> {
    let cert_file = PemFile::read(cert.0, cert.1)?;
    let chain = cert_file.current_certificates(now)?;
    let key_file = PemFile::read(key.0, key.1)?;
    let private_key = key_file.private_key()?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(cert_file.fail(FileProblem::NoCertificate(cert_file.labels())));
    };
    let ders = chain.into_iter().map(|c| c.der).collect();
    let built = build(ders, private_key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            key_file.fail(FileProblem::KeyMismatch {
                cert: cert.0.to_owned(),
            })
        }
        rustls::Error::InvalidCertificate(e) => cert_file.fail(FileProblem::BadCertificate {
            which: leaf.which.clone(),
            reason: e.to_string(),
        }),
        other => key_file.fail(FileProblem::BadKey(other.to_string())),
    })?;
    Ok((built, leaf))
}

/// A PEM parse error in words (the library's own shows bytes as numbers).
fn describe(e: pem::Error) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("no \"-----END {}-----\" line", text(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => format!("bad BEGIN line {:?}", text(&line)),
        pem::Error::Base64Decode(e) => format!("bad base64 inside a block ({e})"),
        other => other.to_string(),
    }
}

/// A certificate's time (seconds since 1970, maybe before) as a `SystemTime`.
fn unix(secs: i64) -> SystemTime {
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
    .unwrap_or(UNIX_EPOCH)
}
