//! `config.toml`: everything the server needs to start.
//!
//! Unknown keys and bad values are errors that name the key and the line;
//! every key has a default except where noted, so an empty file is a valid
//! config: the memory backend on 127.0.0.1:9527 (see [`ServerConfig`]).
//!
//! - `mod.rs`: [`Config`], the whole file, [`load`](Config::load) and the checks;
//! - [`server`]: `[server]` and `[server.tls]`, and the bounds of their numbers;
//! - [`storage`]: `[storage]`: the backend and its options;
//! - [`metrics`]: `[metrics]`: the Prometheus endpoint;
//! - `position.rs`: where a key is written, so an error names its line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod metrics;
mod position;
pub mod server;
pub mod storage;
#[cfg(test)]
mod tests;

pub use metrics::MetricsConfig;
use position::{line_column, position};
use server::{
    min_unsent_bytes, why, wide, HOUR, MAX_CONNECTIONS, MAX_UNSENT_BYTES, MAX_WORKER_THREADS, WEEK,
};
pub use server::{ServerConfig, TlsConfig, MAX_FRAME_BYTES_LIMIT, MIN_FRAME_BYTES, TLS_LISTENER};
pub use storage::{Backend, StorageConfig, SyncPolicy};

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
    /// `[metrics]`
    pub metrics: MetricsConfig,
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
        if let Some(addr) = self.metrics.listen {
            // Port 0 picks a free port for each listener, so they differ.
            let plaintext = s.tls.as_ref().and_then(|tls| tls.plaintext_listen);
            if addr.port() != 0 && (addr == s.listen || Some(addr) == plaintext) {
                return Err(invalid(
                    "metrics.listen",
                    format!("\"{addr}\""),
                    "must differ from server.listen (and server.tls.plaintext_listen): \
                     /metrics is plain HTTP on a port of its own"
                        .into(),
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
