//! [`Nodes`]: one multiplexed connection per cluster node, opened on first
//! use and dropped when it breaks, so the next use opens a new one.
//!
//! hookv routes by itself (`topology.rs`) and sends each pipeline to the
//! node it chose, over the redis crate's `MultiplexedConnection` (many
//! requests in flight on one socket, answered in order). It does not use
//! the crate's cluster client (`cluster_async::ClusterConnection`, redis
//! 1.8.1), for two reasons found in its source and on a real cluster:
//!
//! - It routes a pipeline by its first key and refuses one whose keys span
//!   slots, so a batch over many tables could not be one pipeline per node
//!   anyway without choosing the node ourselves.
//! - Under a failover with requests coming in, its connection task stopped
//!   answering, to any node, for good: the test
//!   `a_master_stopped_then_killed_under_load` saw every request time out
//!   for the 20 s after the promotion, the client silent. Our reading of
//!   its source: every request refused with `MOVED` (by the replica, before
//!   its promotion) starts a refresh of the slot map, which takes its
//!   topology lock (a fair tokio `RwLock`) for writing; the background
//!   future reconnecting to the dead node queues for that lock and is
//!   granted it when a refresh ends, but is polled only while no refresh
//!   runs, and the next refresh (started by the next `MOVED`) waits for
//!   the lock that future now holds.
//!
//! What the cluster client would have added, hookv does in a few lines:
//! the slot map (`topology.rs`, refreshed on errors), a connection per
//! node (here), and no retries (see the module docs of `redis_cluster`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisResult,
    Value as Reply,
};

/// Connections by node address (`host:port`).
pub(super) struct Nodes {
    /// Open connections. A std mutex: held only to look up, insert or
    /// remove, never across an await.
    open: Mutex<HashMap<String, MultiplexedConnection>>,
    /// User and password for every node.
    login: RedisConnectionInfo,
    /// Connect and response timeouts.
    config: AsyncConnectionConfig,
}

impl Nodes {
    /// No connection yet; `timeout` bounds each connect, and each answer
    /// (a backstop: callers put their own deadline on every call).
    pub(super) fn new(username: Option<&str>, password: Option<&str>, timeout: Duration) -> Self {
        let mut login = RedisConnectionInfo::default();
        if let Some(user) = username {
            login = login.set_username(user);
        }
        if let Some(password) = password {
            login = login.set_password(password);
        }
        Self {
            open: Mutex::new(HashMap::new()),
            login,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout * 2)),
        }
    }

    /// The connection to `addr`, opened if there is none.
    async fn connection(&self, addr: &str) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.lock().get(addr) {
            return Ok(conn.clone());
        }
        let info = format!("redis://{addr}")
            .into_connection_info()?
            .set_redis_settings(self.login.clone());
        let conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        // Two callers may both have connected: either connection serves.
        Ok(self.lock().entry(addr.to_owned()).or_insert(conn).clone())
    }

    /// Sends `pipe` (`count` commands) to `addr`; its replies, in order.
    pub(super) async fn pipeline(
        &self,
        addr: &str,
        pipe: &Pipeline,
        count: usize,
    ) -> RedisResult<Vec<Reply>> {
        let mut conn = self.connection(addr).await?;
        let replies = conn.req_packed_commands(pipe, 0, count).await;
        self.forget_if_broken(addr, &replies);
        replies
    }

    /// Sends `cmd` to `addr`; its reply.
    pub(super) async fn command(&self, addr: &str, cmd: &Cmd) -> RedisResult<Reply> {
        let mut conn = self.connection(addr).await?;
        let reply = conn.req_packed_command(cmd).await;
        self.forget_if_broken(addr, &reply);
        reply
    }

    /// Drops the connection to `addr` after an error that means it is
    /// closed (the node died, the network dropped it): the next call opens
    /// a new one. A timeout keeps it (a slow node may answer later, and
    /// the connection matches late answers to their requests).
    fn forget_if_broken<T>(&self, addr: &str, result: &RedisResult<T>) {
        if let Err(e) = result {
            if e.is_connection_dropped() || e.is_unrecoverable_error() {
                self.lock().remove(addr);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MultiplexedConnection>> {
        // A panic elsewhere while holding it left the map whole (every
        // change is one call), so a poisoned lock is still usable.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
