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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:9527`.
    pub listen: SocketAddr,
    /// Largest frame accepted or sent, in bytes. Default 4 MiB; at most 1 GiB.
    pub max_frame_bytes: usize,
    /// Connections served at once; more wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// Close a connection that sends nothing for this long. 0 = never. Default 300.
    pub idle_timeout_secs: u64,
    /// On shutdown, how long to wait for connections to finish. Default 10.
    pub shutdown_grace_secs: u64,
    /// Threads serving connections; 0 = one per CPU core. Default 0.
    pub worker_threads: usize,
}

/// Largest accepted `max_frame_bytes`: keeps bit 31 of the header free and
/// bounds what one connection can make the server buffer.
pub const MAX_FRAME_BYTES_LIMIT: usize = 1 << 30;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9527)),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_connections: 1024,
            idle_timeout_secs: 300,
            shutdown_grace_secs: 10,
            worker_threads: 0,
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
    /// `"memory"` or `"sled"`. Default memory.
    pub backend: Backend,
    /// Directory of the sled database. Default `data/sled`. Relative paths are
    /// relative to the config file's directory.
    pub path: PathBuf,
    /// When sled's writes are flushed (sled only; the memory backend's
    /// durability is the wal hook's `fsync`). Default `always`.
    pub sync: SyncPolicy,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            path: PathBuf::from("data/sled"),
            sync: SyncPolicy::Always,
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
    /// A value parses but is out of range.
    #[error("{path}: {key} = {value}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `server.max_frame_bytes`.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl Config {
    /// Reads and checks the file at `path`. A relative `storage.path` is
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.dir = path.parent().map(Path::to_owned).unwrap_or_default();
        if config.storage.path.is_relative() {
            config.storage.path = config.dir.join(&config.storage.path);
        }
        Ok(config)
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
        config.check(path)?;
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

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, reason| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            reason,
        };
        let s = &self.server;
        if s.max_frame_bytes == 0 || s.max_frame_bytes > MAX_FRAME_BYTES_LIMIT {
            return Err(invalid(
                "server.max_frame_bytes",
                s.max_frame_bytes.to_string(),
                "must be between 1 and 1073741824 (1 GiB)",
            ));
        }
        if s.max_connections == 0 {
            return Err(invalid(
                "server.max_connections",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.storage.backend == Backend::Sled && self.storage.path.as_os_str().is_empty() {
            return Err(invalid(
                "storage.path",
                "\"\"".into(),
                "the sled backend needs a directory",
            ));
        }
        Ok(())
    }
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
}
