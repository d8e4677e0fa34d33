//! [`ClusterError`]: what can go wrong between hookv and the cluster.

/// The cluster could not do what was asked: no node reachable, no answer in
/// time, a failover under way, too few replicas. These are conditions of
/// the moment, not of the request, so they reach a client as 503 (retry
/// later), with this message naming the storage error.
///
/// Data that is there but cannot be read as hookv's (a value that does not
/// decode, a key of another type under the prefix) is not one of these: it
/// is a [`StorageError::Corrupt`](crate::storage::StorageError::Corrupt).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No seed node answered with the cluster's layout in time (at start).
    #[error("redis cluster: cannot connect through any of the seed nodes {nodes} within {timeout_ms} ms: {reason}")]
    Connect {
        /// The seed nodes tried, as configured.
        nodes: String,
        /// The bound on the whole attempt.
        timeout_ms: u64,
        /// The last failure seen.
        reason: String,
    },
    /// No answer within `timeout_ms`.
    #[error("redis cluster: no answer from {node} within timeout_ms ({timeout_ms} ms)")]
    Timeout {
        /// The node the request was sent to, as hookv's map of the cluster
        /// has it (its master for the slot).
        node: String,
        /// The configured bound.
        timeout_ms: u64,
    },
    /// No master serves the slot of this table, as far as hookv knows: a
    /// failover under way, or a cluster whose slots are not all assigned.
    #[error("redis cluster: no master serves hash slot {slot} now (a failover under way, or the slot is unassigned)")]
    NoMaster {
        /// The slot of the table's hash.
        slot: u16,
    },
    /// Redis, or the connection to it, failed: a node down or unreachable,
    /// a slot served elsewhere after a failover (`MOVED`), the cluster down
    /// (`CLUSTERDOWN`), a refused command (`OOM`, `NOPERM`).
    #[error("redis cluster: {0}")]
    Redis(redis::RedisError),
    /// The write is on its master, but fewer replicas than `wait_replicas`
    /// confirmed it in time: it may be lost if that master fails now.
    #[error(
        "redis cluster: the write reached its master but only {acked} of the {wanted} replica(s) \
         wait_replicas asks for confirmed it within {wait_ms} ms; it may be lost if that master fails"
    )]
    NotReplicated {
        /// `wait_replicas`.
        wanted: u32,
        /// Replicas that confirmed (`WAIT`'s answer).
        acked: i64,
        /// How long `WAIT` waited.
        wait_ms: u64,
    },
    /// A reply without the shape its command promises: a server that is
    /// not the Redis hookv expects, or a proxy in between.
    #[error("redis cluster: unexpected reply to {command}: {reply}")]
    UnexpectedReply {
        /// The command answered.
        command: &'static str,
        /// The reply, abridged.
        reply: String,
    },
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}
