//! `[storage]`: which backend holds the data, and its options.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

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

/// Bounds of `[storage] timeout_ms` and `wait_replicas`.
const CLUSTER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
const MAX_WAIT_REPLICAS: u32 = 16;

impl StorageConfig {
    /// The redis-cluster keys' checks: ranges always (a bad number is a
    /// mistake whichever backend is on), the rest only for that backend.
    pub(super) fn check_cluster(
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
