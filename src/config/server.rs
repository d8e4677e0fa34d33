//! `[server]` and `[server.tls]`: the listener, its limits, and the bounds
//! [`Config::parse`](super::Config::parse) checks them against.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::frame::DEFAULT_MAX_FRAME_BYTES;

/// `[server]`: the listener and its limits.
///
/// Every number has a range, checked by [`Config::parse`](super::Config::parse); an out-of-range
/// value stops the start with one line naming the file, line and key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:9527`.
    pub listen: SocketAddr,
    /// Largest frame accepted or sent, in bytes. Default 4 MiB; 256 B to 1 GiB.
    pub max_frame_bytes: usize,
    /// Connections served at once; more wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// While an auth hook is in the chain: connections that have not
    /// authenticated yet, at most; past it a new connection is answered 503
    /// and closed. Default (`None`): a quarter of `max_connections`; see
    /// [`ServerConfig::max_unauthenticated`].
    pub max_unauthenticated: Option<usize>,
    /// Close a connection that sends nothing for this long. 0 = never. Default 300.
    pub idle_timeout_secs: u64,
    /// Once the first byte of a frame has arrived, the rest must arrive
    /// within this many seconds (of the server waiting for it), else the
    /// connection is answered 408 and closed. Default 10.
    pub frame_timeout_secs: u64,
    /// While an auth hook is in the chain: a connection still not
    /// authenticated this long after it was accepted is answered 401 and
    /// closed. Default 10.
    pub auth_timeout_secs: u64,
    /// A batch of answers must be written (taken by a peer that reads)
    /// within this long, else the connection is closed. Default 30.
    pub write_timeout_secs: u64,
    /// Server-wide budget, in bytes, for answers held because their peer is
    /// not reading them (writes the kernel did not take at once). A
    /// connection whose answers would exceed what is left is closed.
    /// Default 256 MiB.
    pub max_unsent_bytes: usize,
    /// On shutdown, how long to wait for connections to finish. Default 10.
    pub shutdown_grace_secs: u64,
    /// Threads serving connections; 0 = one per CPU core. Default 0.
    pub worker_threads: usize,
    /// `[server.tls]`: speak TLS on `listen`. Default none (plain TCP).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: with it, `listen` speaks TLS only (rustls; see the
/// `tls` module). Relative paths are relative to the config file's
/// directory. The files themselves are read and checked by
/// `tls::ServerTls::load`, which names the file and the problem.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM: its own certificate first,
    /// then any intermediates. Required.
    pub cert: PathBuf,
    /// The certificate's private key, PEM, unencrypted (PKCS#8, or PKCS#1
    /// RSA, or SEC1 EC). Required.
    pub key: PathBuf,
    /// CA certificates, PEM. With it, every client must present a
    /// certificate signed by one of them (mutual TLS), and the
    /// certificate's names are its identity. Default none: no client
    /// certificates asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// A second listener without TLS (for local clients). Default none.
    #[serde(default)]
    pub plaintext_listen: Option<SocketAddr>,
}

impl TlsConfig {
    /// Resolves relative paths against `dir` (the config file's directory).
    pub(super) fn resolve(&mut self, dir: &Path) {
        for path in [&mut self.cert, &mut self.key]
            .into_iter()
            .chain(self.client_ca.as_mut())
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

impl ServerConfig {
    /// Whether `other` differs from this config in what only a restart
    /// applies: every key but the files of `[server.tls]` (`cert`, `key`,
    /// `client_ca`), which a reload (SIGHUP) reads again. Adding or
    /// removing `[server.tls]`, or changing `plaintext_listen`, changes the
    /// listeners: restart-only.
    pub fn differs_for_restart(&self, other: &ServerConfig) -> bool {
        let listeners = |c: &ServerConfig| c.tls.as_ref().map(|tls| tls.plaintext_listen);
        let rest = |c: &ServerConfig| ServerConfig {
            tls: None,
            ..c.clone()
        };
        listeners(self) != listeners(other) || rest(self) != rest(other)
    }

    /// `max_unauthenticated` as it applies: as configured, or a quarter of
    /// `max_connections` (at least 1).
    pub fn max_unauthenticated(&self) -> usize {
        self.max_unauthenticated
            .unwrap_or((self.max_connections / 4).max(1))
    }
}

/// Largest accepted `max_frame_bytes`: keeps bit 31 of the header free and
/// bounds what one connection can make the server buffer.
pub const MAX_FRAME_BYTES_LIMIT: usize = 1 << 30;

/// Smallest accepted `max_frame_bytes`: every error answer fits in a frame.
pub const MIN_FRAME_BYTES: usize = 256;

/// The smallest `max_unsent_bytes` that lets the largest batch of answers
/// (up to about 1 MiB of answers plus one of `max_frame_bytes`, in a buffer
/// that may have doubled, plus the copies `on_after_send` hooks are shown)
/// wait for one slow reader.
pub const fn min_unsent_bytes(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(2).saturating_add(4 << 20)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9527)),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_connections: 1024,
            max_unauthenticated: None,
            idle_timeout_secs: 300,
            frame_timeout_secs: 10,
            auth_timeout_secs: 10,
            write_timeout_secs: 30,
            max_unsent_bytes: 256 << 20,
            shutdown_grace_secs: 10,
            worker_threads: 0,
            tls: None,
        }
    }
}

/// Upper bounds of the `[server]` numbers: far past any sane setting, short
/// of what breaks the server (a runtime with 100 000 threads aborts; a
/// timeout of `u64::MAX` seconds overflows the clock).
pub(super) const MAX_CONNECTIONS: u64 = 1_000_000;
pub(super) const MAX_WORKER_THREADS: u64 = 1024;
pub(super) const MAX_UNSENT_BYTES: u64 = 1 << 40;
pub(super) const HOUR: u64 = 3600;
pub(super) const WEEK: u64 = 7 * 24 * HOUR;

/// What an out-of-range key's bounds mean, when they are not plain.
pub(super) fn why(key: &str) -> &'static str {
    match key {
        "server.max_frame_bytes" => " (256 B to 1 GiB)",
        "server.max_unauthenticated" => " (at most max_connections)",
        "server.idle_timeout_secs" => " (0 = never)",
        "server.max_unsent_bytes" => {
            " (at least 2 x max_frame_bytes + 4 MiB, so the largest batch of answers can wait for a slow reader)"
        }
        "server.worker_threads" => " (0 = one per CPU core)",
        _ => "",
    }
}

/// A `usize` setting as a `u64`, for range checks (lossless on every target
/// hookv builds for; saturating otherwise).
pub(super) fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
