//! `config.toml`: everything the server needs to start.
//!
//! Unknown keys and bad values are errors that name the key and the line;
//! every key has a default except where noted, so an empty file is a valid
//! config: the memory backend on 127.0.0.1:9527 (see [`ServerConfig`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::frame::DEFAULT_MAX_FRAME_BYTES;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[[hooks]]` as written, with their positions; see [`Config::hooks`].
    #[serde(rename = "hooks")]
    raw_hooks: Vec<toml::Spanned<toml::Table>>,
    /// The hook list, in config order. Each entry is checked when the chain
    /// is built (`hooks::build`), which knows every kind's options.
    #[serde(skip)]
    pub hooks: Vec<HookEntry>,
    /// The file this config came from (names it in errors).
    #[serde(skip)]
    pub path: PathBuf,
    /// The directory relative paths in the config are resolved against.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One `[[hooks]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct HookEntry {
    /// 1-based position in the hook list.
    pub index: usize,
    /// 1-based line of the table's `[[hooks]]` header in the file.
    pub line: usize,
    /// Every key of the table, `kind` or `plugin` included.
    pub table: toml::Table,
}

impl HookEntry {
    /// `kind = "..."`, naming a built-in hook.
    pub fn kind(&self) -> Option<&str> {
        self.table.get("kind").and_then(toml::Value::as_str)
    }

    /// `plugin = "..."`, the path of a plugin library.
    pub fn plugin(&self) -> Option<&str> {
        self.table.get("plugin").and_then(toml::Value::as_str)
    }

    /// A short label for messages: `hooks[2] (kind = "wal")`.
    pub fn label(&self) -> String {
        match (self.kind(), self.plugin()) {
            (Some(kind), _) => format!("hooks[{}] (kind = {kind:?})", self.index),
            (None, Some(plugin)) => format!("hooks[{}] (plugin = {plugin:?})", self.index),
            (None, None) => format!("hooks[{}]", self.index),
        }
    }
}

/// `[server]`: the listener and its limits.
///
/// Every number has a range, checked by [`Config::parse`]; an out-of-range
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
    fn resolve(&mut self, dir: &Path) {
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

/// Whether this build's `hookv-server` serves `[server.tls]`. The TLS
/// material, the identity and the client are in place (the `tls` module);
/// the listener is wired to them in a second step (issue 14, phase 2). Until
/// then [`Config::load`] refuses a `[server.tls]` table: a server told to
/// speak TLS must never answer in clear instead.
pub const TLS_LISTENER: bool = false;

impl ServerConfig {
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

/// Which storage backend to use.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In memory (lost on exit unless the WAL hook is on).
    #[default]
    Memory,
    /// On disk, in sled, at `path`.
    Sled,
    /// A Redis Cluster shared by any number of hookv servers, reached
    /// through the seed `nodes` (see `storage::redis_cluster`).
    #[serde(rename = "redis-cluster")]
    RedisCluster,
}

/// `[storage] sync`: when sled's writes reach the disk, relative to their
/// answers. sled keeps writes in its own (user-space) buffers until it
/// flushes them, so unlike a `write(2)` into the page cache, an unflushed
/// write is lost even when only the server process dies (`kill -9`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Flush (write and sync) before answering a write; concurrent writers
    /// share flushes (group commit). An answered write survives `kill -9`
    /// and a crash of the machine.
    #[default]
    Always,
    /// sled flushes in the background once a second: a crash may lose the
    /// last second of answered writes.
    Everysec,
    /// Only sled's own background flush (every 500 ms in sled 0.34): a crash
    /// may lose the writes answered since its last run.
    No,
}

impl<'de> Deserialize<'de> for SyncPolicy {
    /// By hand, so that a bad value's error names the key.
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let value = String::deserialize(de)?;
        match value.as_str() {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::Everysec),
            "no" => Ok(Self::No),
            _ => Err(serde::de::Error::custom(format!(
                "storage.sync = {value:?}: must be \"always\", \"everysec\" or \"no\""
            ))),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"memory"`, `"sled"` or `"redis-cluster"`. Default memory.
    pub backend: Backend,
    /// Directory of the sled database. Default `data/sled`. Relative paths are
    /// relative to the config file's directory.
    pub path: PathBuf,
    /// When sled's writes are flushed (sled only; the memory backend's
    /// durability is the wal hook's `fsync`). Default `always`.
    pub sync: SyncPolicy,
    /// redis-cluster: seed nodes, `host:port` each; the client learns the
    /// rest of the cluster from them. Required (at least one) for that
    /// backend.
    pub nodes: Vec<String>,
    /// redis-cluster: every Redis key hookv writes starts with this, so
    /// hookv's keys stay apart from other users of the cluster. Default
    /// `"hookv:"`; not empty, no `{` or `}` (they would make a hash tag
    /// and put every table in one slot).
    pub key_prefix: String,
    /// redis-cluster: the Redis ACL user to authenticate as. Default none
    /// (the `default` user).
    pub username: Option<String>,
    /// redis-cluster: the name of the environment variable holding the
    /// password (never the password itself: the config file is not a
    /// secret store). Default none (no password).
    pub password_env: Option<String>,
    /// redis-cluster: how long one storage operation (a batch of them)
    /// may take; past it the request fails (503). Default 2000; 10 to 60000.
    pub timeout_ms: u64,
    /// redis-cluster: a write is answered only once this many replicas
    /// have it (Redis `WAIT`); 0 answers as soon as the master has it.
    /// Default 0; 0 to 16.
    pub wait_replicas: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            path: PathBuf::from("data/sled"),
            sync: SyncPolicy::Always,
            nodes: Vec::new(),
            key_prefix: "hookv:".to_owned(),
            username: None,
            password_env: None,
            timeout_ms: 2000,
            wait_replicas: 0,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `"info"` or `"hookv=debug"`. `RUST_LOG` and
    /// `--log` override it. Default `"info"`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has a bad value.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value parses but is out of range (or does not fit with another).
    #[error("{path}:{line}:{column}: {key} = {value}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// 1-based column of the value.
        column: usize,
        /// The key, e.g. `server.max_frame_bytes`.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused, saying what is accepted.
        reason: String,
    },
    /// A section this build of the server does not serve yet.
    #[error("{path}:{line}:{column}: {key}: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// 1-based line of the section.
        line: usize,
        /// 1-based column of the section.
        column: usize,
        /// The section, e.g. `server.tls`.
        key: &'static str,
        /// What to do instead.
        reason: &'static str,
    },
}

impl Config {
    /// Reads and checks the file at `path`. Relative paths (`storage.path`,
    /// the `[server.tls]` files) are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.resolve_paths(path.parent().map(Path::to_owned).unwrap_or_default());
        if config.server.tls.is_some() && !TLS_LISTENER {
            let (line, column) = position(&text, "server.tls").unwrap_or((1, 1));
            return Err(ConfigError::Unsupported {
                path: path.to_owned(),
                line,
                column,
                key: "server.tls",
                reason: "this hookv-server cannot serve TLS yet (its listener is not wired to \
                         the tls module), and it will not answer in clear instead: remove \
                         [server.tls], or put a TLS proxy in front",
            });
        }
        Ok(config)
    }

    /// Sets `dir` and resolves the config's relative paths against it.
    fn resolve_paths(&mut self, dir: PathBuf) {
        self.dir = dir;
        if self.storage.path.is_relative() {
            self.storage.path = self.dir.join(&self.storage.path);
        }
        if let Some(tls) = &mut self.server.tls {
            tls.resolve(&self.dir);
        }
    }

    /// Parses and checks `text`; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        config.check(text, path)?;
        config.path = path.to_owned();
        config.hooks = config
            .raw_hooks
            .iter()
            .enumerate()
            .map(|(i, spanned)| HookEntry {
                index: i + 1,
                line: line_column(text, spanned.span().start).0,
                table: spanned.get_ref().clone(),
            })
            .collect();
        Ok(config)
    }

    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, reason: String| {
            // Only a key written in the file can be out of range (every
            // default is in range), so its position is there to find.
            // A [storage] key left out (nodes = [] by default) points at the
            // backend that needs it.
            let (line, column) = position(text, key)
                .or_else(|| {
                    key.starts_with("storage.")
                        .then(|| position(text, "storage.backend"))
                        .flatten()
                })
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                key,
                value,
                reason,
            }
        };
        let s = &self.server;
        for (key, value, range) in [
            (
                "server.max_frame_bytes",
                wide(s.max_frame_bytes),
                wide(MIN_FRAME_BYTES)..=wide(MAX_FRAME_BYTES_LIMIT),
            ),
            (
                "server.max_connections",
                wide(s.max_connections),
                1..=MAX_CONNECTIONS,
            ),
            (
                "server.max_unauthenticated",
                s.max_unauthenticated.map_or(1, wide),
                1..=wide(s.max_connections),
            ),
            ("server.idle_timeout_secs", s.idle_timeout_secs, 0..=WEEK),
            ("server.frame_timeout_secs", s.frame_timeout_secs, 1..=HOUR),
            ("server.auth_timeout_secs", s.auth_timeout_secs, 1..=HOUR),
            ("server.write_timeout_secs", s.write_timeout_secs, 1..=HOUR),
            (
                "server.max_unsent_bytes",
                wide(s.max_unsent_bytes),
                wide(min_unsent_bytes(s.max_frame_bytes))..=MAX_UNSENT_BYTES,
            ),
            (
                "server.shutdown_grace_secs",
                s.shutdown_grace_secs,
                0..=HOUR,
            ),
            (
                "server.worker_threads",
                wide(s.worker_threads),
                0..=MAX_WORKER_THREADS,
            ),
        ] {
            if range.contains(&value) {
                continue;
            }
            let reason = format!(
                "must be between {} and {}{}",
                range.start(),
                range.end(),
                why(key)
            );
            // A limit that follows from another key: if only that key is in
            // the file, it is the one to point at.
            let (key, value) = match key {
                "server.max_unsent_bytes" if position(text, key).is_none() => {
                    ("server.max_frame_bytes", s.max_frame_bytes.to_string())
                }
                _ => (key, value.to_string()),
            };
            return Err(invalid(key, value, reason));
        }
        if let Some(tls) = &s.tls {
            for (key, path) in [
                ("server.tls.cert", Some(&tls.cert)),
                ("server.tls.key", Some(&tls.key)),
                ("server.tls.client_ca", tls.client_ca.as_ref()),
            ] {
                if path.is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(invalid(key, "\"\"".into(), "needs a file".into()));
                }
            }
            // Port 0 picks a free port for each listener, so they differ.
            if tls.plaintext_listen == Some(s.listen) && s.listen.port() != 0 {
                return Err(invalid(
                    "server.tls.plaintext_listen",
                    format!("\"{}\"", s.listen),
                    "must differ from server.listen, which speaks TLS".into(),
                ));
            }
        }
        if self.storage.backend == Backend::Sled && self.storage.path.as_os_str().is_empty() {
            return Err(invalid(
                "storage.path",
                "\"\"".into(),
                "the sled backend needs a directory".into(),
            ));
        }
        self.storage.check_cluster(invalid)
    }
}

/// Bounds of `[storage] timeout_ms` and `wait_replicas`.
const CLUSTER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
const MAX_WAIT_REPLICAS: u32 = 16;

impl StorageConfig {
    /// The redis-cluster keys' checks: ranges always (a bad number is a
    /// mistake whichever backend is on), the rest only for that backend.
    fn check_cluster(
        &self,
        invalid: impl Fn(&'static str, String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !CLUSTER_TIMEOUT_MS.contains(&self.timeout_ms) {
            return Err(invalid(
                "storage.timeout_ms",
                self.timeout_ms.to_string(),
                format!(
                    "must be between {} and {} (milliseconds per storage operation)",
                    CLUSTER_TIMEOUT_MS.start(),
                    CLUSTER_TIMEOUT_MS.end()
                ),
            ));
        }
        if self.wait_replicas > MAX_WAIT_REPLICAS {
            return Err(invalid(
                "storage.wait_replicas",
                self.wait_replicas.to_string(),
                format!("must be between 0 and {MAX_WAIT_REPLICAS} (replicas that must have a write before it is answered)"),
            ));
        }
        if self.backend != Backend::RedisCluster {
            return Ok(());
        }
        if self.nodes.is_empty() {
            return Err(invalid(
                "storage.nodes",
                "[]".into(),
                "the redis-cluster backend needs at least one seed node, e.g. nodes = [\"127.0.0.1:7000\"]".into(),
            ));
        }
        for node in &self.nodes {
            if let Err(reason) = check_node(node) {
                return Err(invalid("storage.nodes", format!("{node:?}"), reason));
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(invalid(
                "storage.key_prefix",
                format!("{:?}", self.key_prefix),
                "must be non-empty (it keeps hookv's keys apart from others') and hold no `{` or `}` \
                 (a Redis Cluster hash tag would put every table in one slot)"
                    .into(),
            ));
        }
        if self.username.as_deref() == Some("") {
            return Err(invalid(
                "storage.username",
                "\"\"".into(),
                "must not be empty: leave it out to use Redis's default user".into(),
            ));
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() || var.contains(['=', '\0']) {
                return Err(invalid(
                    "storage.password_env",
                    format!("{var:?}"),
                    "must name an environment variable (the password itself never goes in this file)"
                        .into(),
                ));
            }
            if std::env::var_os(var).is_none() {
                return Err(invalid(
                    "storage.password_env",
                    format!("{var:?}"),
                    format!("the environment variable {var} is not set: export the Redis password in it"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks that `node` is `host:port` (an IPv6 host in brackets).
fn check_node(node: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("must be host:port ({why})"));
    let Some((host, port)) = node.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("an IPv6 address goes in brackets: [::1]:7000");
    }
    if host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
        return bad("a host name or address, nothing more");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => bad("the port is a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

/// Upper bounds of the `[server]` numbers: far past any sane setting, short
/// of what breaks the server (a runtime with 100 000 threads aborts; a
/// timeout of `u64::MAX` seconds overflows the clock).
const MAX_CONNECTIONS: u64 = 1_000_000;
const MAX_WORKER_THREADS: u64 = 1024;
const MAX_UNSENT_BYTES: u64 = 1 << 40;
const HOUR: u64 = 3600;
const WEEK: u64 = 7 * 24 * HOUR;

/// What an out-of-range key's bounds mean, when they are not plain.
fn why(key: &str) -> &'static str {
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
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Where the restart-only sections' keys are written: read again from the
/// text only when a value turns out to be refused, to name its line.
#[derive(Deserialize)]
struct Positions {
    #[serde(default)]
    server: Spans,
    #[serde(default)]
    storage: Spans,
}

/// Where each key of a table is written.
type Spans = std::collections::BTreeMap<String, toml::Spanned<serde::de::IgnoredAny>>;

/// `[server.tls]`, the one nested table whose keys are range-checked.
#[derive(Deserialize)]
struct TlsPositions {
    server: TlsSection,
}

#[derive(Deserialize)]
struct TlsSection {
    tls: Spans,
}

/// 1-based line and column of the value of `key` (`"server.max_connections"`,
/// `"server.tls.cert"`) in `text`, if the key is written there.
fn position(text: &str, key: &str) -> Option<(usize, usize)> {
    let span = match key.split('.').collect::<Vec<_>>()[..] {
        ["server", "tls", name] => {
            let positions: TlsPositions = toml::from_str(text).ok()?;
            positions.server.tls.get(name)?.span()
        }
        [section, name] => {
            let positions: Positions = toml::from_str(text).ok()?;
            let table = match section {
                "server" => &positions.server,
                "storage" => &positions.storage,
                _ => return None,
            };
            table.get(name)?.span()
        }
        _ => return None,
    };
    Some(line_column(text, span.start))
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.toml"))
    }

    #[test]
    fn hooks_keep_their_order_and_lines() {
        let c = parse("[[hooks]]\nkind = \"auth\"\n\n[[hooks]]\nplugin = \"x.so\"\nlimit = 3\n")
            .unwrap();
        assert_eq!(c.hooks.len(), 2);
        assert_eq!((c.hooks[0].index, c.hooks[0].kind()), (1, Some("auth")));
        assert_eq!(c.hooks[1].plugin(), Some("x.so"));
        assert_eq!(c.hooks[1].line, 4);
        assert_eq!(c.hooks[1].label(), "hooks[2] (plugin = \"x.so\")");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        let d = Config::default();
        assert_eq!((c.server, c.storage, c.log), (d.server, d.storage, d.log));
        assert!(c.hooks.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config.toml:3:1:"), "{msg}");
        assert!(msg.contains("listn"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn sled_sync_defaults_to_always() {
        let c = parse("[storage]\nbackend = \"sled\"\n").unwrap();
        assert_eq!(c.storage.sync, SyncPolicy::Always);
        let c = parse("[storage]\nsync = \"everysec\"\n").unwrap();
        assert_eq!(c.storage.sync, SyncPolicy::Everysec);
    }

    #[test]
    fn bad_values_are_refused() {
        let msg = parse("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("config.toml:2:"), "{msg}");
        let msg = parse("[storage]\nbackend = \"redis\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("redis"), "{msg}");
        let msg = parse("[server]\nmax_frame_bytes = 0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("server.max_frame_bytes"), "{msg}");
        let msg = parse("[storage]\nbackend = \"sled\"\nsync = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("config.toml:3:"), "{msg}");
        assert!(
            msg.contains("storage.sync") && msg.contains("everysec"),
            "{msg}"
        );
        let msg = parse("[server]\nmax_frame_bytes = 4294967295\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("server.max_frame_bytes"), "{msg}");
    }

    #[test]
    fn out_of_range_numbers_name_file_line_and_key_in_one_line() {
        let msg = parse("[server]\nlisten = \"127.0.0.1:1\"\nworker_threads = 100000\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "config.toml:3:18: server.worker_threads = 100000: must be between 0 and 1024"
            ),
            "{msg}"
        );
        for (line, max) in [
            ("max_frame_bytes = 255", "1073741824"),
            ("max_connections = 1000001", "1000000"),
            ("max_unauthenticated = 0", "1024"),
            ("idle_timeout_secs = 18446744073709551615", "604800"),
            ("frame_timeout_secs = 0", "3600"),
            ("auth_timeout_secs = 3601", "3600"),
            ("write_timeout_secs = 0", "3600"),
            ("max_unsent_bytes = 1048576", "1099511627776"),
            ("shutdown_grace_secs = 86400", "3600"),
            ("worker_threads = 1025", "1024"),
        ] {
            let key = line.split(' ').next().unwrap();
            let msg = parse(&format!("# limits\n[server]\n\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(msg.starts_with("config.toml:4:"), "{line}: {msg}");
            assert!(msg.contains(&format!("server.{key} = ")), "{line}: {msg}");
            assert!(msg.contains(&format!("and {max}")), "{line}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn redis_cluster_keys_parse_with_defaults() {
        let c = parse(
            "[storage]\nbackend = \"redis-cluster\"\nnodes = [\"127.0.0.1:7000\", \"[::1]:7001\", \"redis-0.local:6379\"]\n",
        )
        .unwrap();
        assert_eq!(c.storage.backend, Backend::RedisCluster);
        assert_eq!(c.storage.nodes.len(), 3);
        assert_eq!(c.storage.key_prefix, "hookv:");
        assert_eq!((c.storage.timeout_ms, c.storage.wait_replicas), (2000, 0));
        assert_eq!((c.storage.username, c.storage.password_env), (None, None));
        let c = parse(
            "[storage]\nbackend = \"redis-cluster\"\nnodes = [\"h:1\"]\nkey_prefix = \"app/\"\n\
             username = \"hookv\"\ntimeout_ms = 10\nwait_replicas = 16\n",
        )
        .unwrap();
        assert_eq!(c.storage.key_prefix, "app/");
        assert_eq!(c.storage.username.as_deref(), Some("hookv"));
        // The other backends ignore the cluster's keys (but not their ranges).
        parse("[storage]\nbackend = \"sled\"\nnodes = []\n").unwrap();
    }

    #[test]
    fn redis_cluster_mistakes_name_file_line_and_key_in_one_line() {
        let cluster = "[storage]\nbackend = \"redis-cluster\"\n";
        for (rest, line, key) in [
            // No nodes at all: the backend's line is the one to fix.
            ("", 2, "storage.nodes = []"),
            ("nodes = []\n", 3, "storage.nodes = []"),
            (
                "nodes = [\"127.0.0.1\"]\n",
                3,
                "storage.nodes = \"127.0.0.1\": must be host:port",
            ),
            ("nodes = [\"h:0\"]\n", 3, "storage.nodes = \"h:0\""),
            ("nodes = [\"::1:7000\"]\n", 3, "in brackets"),
            ("nodes = [\"redis://h:1\"]\n", 3, "storage.nodes"),
            (
                "nodes = [\"h:1\"]\nkey_prefix = \"\"\n",
                4,
                "storage.key_prefix",
            ),
            ("nodes = [\"h:1\"]\nkey_prefix = \"a{b}\"\n", 4, "hash tag"),
            (
                "nodes = [\"h:1\"]\nusername = \"\"\n",
                4,
                "storage.username",
            ),
            (
                "nodes = [\"h:1\"]\ntimeout_ms = 0\n",
                4,
                "storage.timeout_ms = 0: must be between 10 and 60000",
            ),
            (
                "nodes = [\"h:1\"]\ntimeout_ms = 60001\n",
                4,
                "storage.timeout_ms",
            ),
            (
                "nodes = [\"h:1\"]\nwait_replicas = 17\n",
                4,
                "storage.wait_replicas = 17: must be between 0 and 16",
            ),
            (
                "nodes = [\"h:1\"]\npassword = \"secret\"\n",
                4,
                "unknown field `password`",
            ),
            (
                "nodes = [\"h:1\"]\npassword_env = \"\"\n",
                4,
                "storage.password_env",
            ),
            (
                "nodes = [\"h:1\"]\npassword_env = \"HOOKV_TEST_UNSET_PASSWORD_VARIABLE\"\n",
                4,
                "HOOKV_TEST_UNSET_PASSWORD_VARIABLE is not set",
            ),
        ] {
            let msg = parse(&format!("{cluster}{rest}")).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("config.toml:{line}:")),
                "{rest}: {msg}"
            );
            assert!(msg.contains(key), "{rest}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        // A variable that is set: accepted, and its value is not in the config.
        let c = parse(&format!(
            "{cluster}nodes = [\"h:1\"]\npassword_env = \"PATH\"\n"
        ))
        .unwrap();
        assert_eq!(c.storage.password_env.as_deref(), Some("PATH"));
    }

    #[test]
    fn limits_that_follow_other_keys_are_checked_against_them() {
        // At most max_connections connections can be unauthenticated.
        let msg = parse("[server]\nmax_connections = 10\nmax_unauthenticated = 11\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "config.toml:3:23: server.max_unauthenticated = 11: must be between 1 and 10"
            ),
            "{msg}"
        );
        let c = parse("[server]\nmax_connections = 10\n").unwrap();
        assert_eq!(c.server.max_unauthenticated(), 2);
        assert_eq!(parse("").unwrap().server.max_unauthenticated(), 256);
        // Raising max_frame_bytes past what the default max_unsent_bytes
        // can hold points at the key that was changed.
        let msg = parse("[server]\nmax_frame_bytes = 1073741824\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "config.toml:2:19: server.max_frame_bytes = 1073741824: must be between 2151677952"
            ),
            "{msg}"
        );
        parse("[server]\nmax_frame_bytes = 1073741824\nmax_unsent_bytes = 2151677952\n").unwrap();
    }

    const TLS: &str = "[server]\nlisten = \"127.0.0.1:9527\"\n\n[server.tls]\n\
                       cert = \"certs/server.pem\"\nkey = \"/etc/hookv/server.key\"\n";

    #[test]
    fn server_tls_paths_are_relative_to_the_config_file() {
        let text =
            format!("{TLS}client_ca = \"clients.pem\"\nplaintext_listen = \"127.0.0.1:9528\"\n");
        let mut c = parse(&text).unwrap();
        c.resolve_paths(PathBuf::from("/srv/hookv"));
        let tls = c.server.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/srv/hookv/certs/server.pem"));
        assert_eq!(tls.key, Path::new("/etc/hookv/server.key"));
        assert_eq!(tls.client_ca.unwrap(), Path::new("/srv/hookv/clients.pem"));
        assert_eq!(
            tls.plaintext_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9528)))
        );
        assert_eq!(parse("").unwrap().server.tls, None);
    }

    #[test]
    fn server_tls_mistakes_name_file_line_and_key() {
        let one_line = |text: &str| {
            let msg = parse(text).unwrap_err().to_string();
            assert!(!msg.contains('\n'), "{msg}");
            msg
        };
        let msg = one_line("[server.tls]\ncert = \"c.pem\"\n");
        assert!(msg.starts_with("config.toml:1:"), "{msg}");
        assert!(msg.contains("missing field `key`"), "{msg}");
        let msg = one_line(&format!("{TLS}ca = \"clients.pem\"\n"));
        assert!(msg.starts_with("config.toml:7:1:"), "{msg}");
        assert!(msg.contains("unknown field `ca`"), "{msg}");
        let msg = one_line("[server.tls]\ncert = \"c.pem\"\nkey = \"\"\n");
        assert_eq!(msg, "config.toml:3:7: server.tls.key = \"\": needs a file");
        let msg = one_line(&format!("{TLS}plaintext_listen = \"127.0.0.1:9527\"\n"));
        assert!(
            msg.starts_with(
                "config.toml:7:20: server.tls.plaintext_listen = \"127.0.0.1:9527\": must differ"
            ),
            "{msg}"
        );
        // Two listeners on port 0 get two ports.
        parse("[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"c\"\nkey = \"k\"\nplaintext_listen = \"127.0.0.1:0\"\n").unwrap();
    }

    #[test]
    fn a_server_without_a_tls_listener_refuses_server_tls_rather_than_serve_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, TLS).unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:4:", path.display())), "{msg}");
        assert!(
            msg.contains("server.tls: this hookv-server cannot serve TLS yet"),
            "{msg}"
        );
        std::fs::write(&path, "[server]\n").unwrap();
        Config::load(&path).unwrap();
    }

    #[test]
    fn the_checked_in_server_tls_example_parses_once_uncommented() {
        let text = include_str!("../config.toml");
        let start = text.find("# [server.tls]\n").unwrap();
        let block: String = text[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.trim_start().starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect();
        let tls = parse(&block).unwrap().server.tls.unwrap();
        assert_eq!(tls.client_ca, Some(PathBuf::from("certs/ca.pem")));
        assert!(tls.plaintext_listen.is_some());
    }
}
