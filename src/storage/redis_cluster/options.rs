//! [`ClusterOptions`]: how to reach the cluster, from `[storage]`.

use std::time::Duration;

use super::error::ClusterError;
use crate::config::StorageConfig;

/// How to reach the cluster: `[storage]` with the password resolved.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Seed nodes, `host:port`.
    pub nodes: Vec<String>,
    /// The start of every key hookv writes.
    pub key_prefix: String,
    /// The ACL user, if not `default`.
    pub username: Option<String>,
    /// The password, if any (never printed).
    pub password: Option<String>,
    /// The bound on each batch, and on connecting.
    pub timeout: Duration,
    /// Replicas that must have a write before it is answered.
    pub wait_replicas: u32,
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("nodes", &self.nodes)
            .field("key_prefix", &self.key_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

impl ClusterOptions {
    /// The options `[storage]` gives, the password read from the variable
    /// `password_env` names. (The config check already refused a missing
    /// variable; this says so again if it went away since.)
    pub fn from_config(config: &StorageConfig) -> Result<Self, ClusterError> {
        let password = match &config.password_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|e| ClusterError::Connect {
                nodes: config.nodes.join(", "),
                timeout_ms: config.timeout_ms,
                reason: format!("storage.password_env: environment variable {var}: {e}"),
            })?),
        };
        Ok(Self {
            nodes: config.nodes.clone(),
            key_prefix: config.key_prefix.clone(),
            username: config.username.clone(),
            password,
            timeout: Duration::from_millis(config.timeout_ms),
            wait_replicas: config.wait_replicas,
        })
    }
}
