//! The client's side: which server certificates to trust, which client
//! certificate to present, and what a failed handshake means.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hookv::client::ClientError> {
//! use hookv::tls::{ClientCertFiles, TlsOptions};
//! let tls = TlsOptions {
//!     ca: Some("certs/ca.pem".into()),
//!     client_cert: Some(ClientCertFiles {
//!         cert: "certs/billing.pem".into(),
//!         key: "certs/billing.key".into(),
//!     }),
//!     server_name: None, // the host of the address: "localhost"
//! }
//! .load()?; // read once, connect many times
//! let mut client = hookv::client::Client::connect_tls("localhost:9527", &tls).await?;
//! client.hget("accounts", "alice").await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{provider, with_key_pair, FileProblem, PemFile, TlsError};

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// The certificate chain, the client's own certificate first.
    pub cert: PathBuf,
    /// Its private key, unencrypted.
    pub key: PathBuf,
}

/// How to connect with TLS, as given (files not read yet); see [`TlsOptions::load`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) to trust for the server's certificate. `None`:
    /// the system's trust store.
    pub ca: Option<PathBuf>,
    /// A certificate to present, for servers that require one
    /// (`[server.tls] client_ca`).
    pub client_cert: Option<ClientCertFiles>,
    /// The name the server's certificate must carry (a DNS name or an IP
    /// address). `None`: the host part of the address connected to.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Reads and checks the files: PEM, certificates in their validity
    /// period, the key matching the certificate.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                let ca_file = PemFile::read(path, "CA file")?;
                for cert in ca_file.certificates()? {
                    roots.add(cert.der).map_err(|e| {
                        ca_file.fail(FileProblem::BadAnchor {
                            which: cert.which,
                            reason: e.to_string(),
                        })
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _unusable) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    let detail = match native.errors.first() {
                        Some(e) => e.to_string(),
                        None => "none found".to_owned(),
                    };
                    return Err(TlsError::NoTrustStore { detail });
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(files) => {
                with_key_pair(
                    (&files.cert, "client certificate"),
                    (&files.key, "client key"),
                    SystemTime::now(),
                    |chain, key| builder.with_client_auth_cert(chain, key),
                )?
                .0
            }
        };
        let server_name = match &self.server_name {
            Some(name) => Some(server_name(name)?),
            None => None,
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Loaded [`TlsOptions`]: cheap to clone, good for any number of connections.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// The name the server's certificate must carry when connecting to
    /// `addr` (`host:port`, `[v6]:port`): the configured server name, or
    /// the address's host.
    pub fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name(host_of(addr)),
        }
    }

    /// A connector on this config.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.clone())
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName {
        name: name.to_owned(),
    })
}

/// The host of `host:port`, `[v6]:port`, or a bare host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host;
        }
    }
    match addr.rsplit_once(':') {
        Some((host, _port)) if !host.contains(':') => host,
        _ => addr,
    }
}

/// A TLS failure, sorted by what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server's certificate is not trusted, or not for this name.
    #[error(
        "the server's certificate was refused: {0} (trust its CA with a CA file, or set the \
         server name its certificate carries)"
    )]
    ServerCertificate(rustls::Error),
    /// The server refused this client's certificate, or its lack of one.
    #[error("the server refused {}", refusal(*.0))]
    ClientCertificateRefused(AlertDescription),
    /// The server answered with something that is not TLS.
    #[error("the server did not answer in TLS (does it speak TLS on this port?): {0}")]
    NotTls(rustls::Error),
    /// The server closed the connection during the handshake.
    #[error("the server closed the connection during the TLS handshake (does it speak TLS on this port?)")]
    Closed,
    /// Any other TLS failure.
    #[error("{0}")]
    Other(rustls::Error),
}

fn refusal(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::CertificateRequired => {
            "to go on without a client certificate: it requires one (give a certificate and key)"
                .to_owned()
        }
        alert => format!(
            "this client's certificate ({alert:?}): it must be signed by a CA the server \
             trusts, and be in its validity period"
        ),
    }
}

impl HandshakeError {
    /// The TLS failure inside an I/O error from a TLS stream, if it is one.
    /// A server refuses a client certificate after a TLS 1.3 client
    /// considers the handshake done, so this shows on the first read too.
    pub fn from_io(e: &std::io::Error) -> Option<Self> {
        let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(match tls {
            rustls::Error::InvalidCertificate(_) => Self::ServerCertificate(tls.clone()),
            rustls::Error::InvalidMessage(_) => Self::NotTls(tls.clone()),
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA),
            ) => Self::ClientCertificateRefused(*alert),
            _ => Self::Other(tls.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(host_of("kv.example.com:9527"), "kv.example.com");
        assert_eq!(host_of("127.0.0.1:9527"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9527"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert_eq!(host_of("::1"), "::1");
        assert!(server_name(host_of("[::1]:1")).is_ok());
        let err = server_name("not a name").unwrap_err().to_string();
        assert_eq!(
            err,
            "server name \"not a name\": not a DNS name or an IP address"
        );
    }
}
