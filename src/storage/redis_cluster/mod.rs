//! [`RedisCluster`]: tables kept in a Redis Cluster that any number of hookv
//! servers share; hookv stays the policy layer (hooks), Redis Cluster is the
//! storage (sharding by hash slot, replication, failover). hookv replicates
//! nothing itself.
//!
//! # Files
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`RedisCluster`]: connecting, the layout's refresh, `tables` |
//! | `options.rs` | [`ClusterOptions`]: `[storage]` with the password resolved |
//! | `batch.rs` | [`Op`] and [`Answer`]: the Redis commands of each op, and their replies read |
//! | `pipeline.rs` | [`RedisCluster::execute`]: a batch cut by master, pipelined, `WAIT`, the deadline |
//! | `calls.rs` | one method per op ([`RedisCluster::get`], ...): a batch of one |
//! | `table_read.rs` | `hgetall` and `hscan` gathered from `HSCAN` replies, in key order |
//! | `keyspace.rs` | where tables live among the cluster's keys, and how values are stored |
//! | `topology.rs` | which master serves which slot; a key's slot |
//! | `nodes.rs` | one connection per node, and why not the redis crate's cluster client |
//! | `error.rs` | [`ClusterError`] |
//!
//! # The data model (`keyspace.rs`)
//!
//! A table is one Redis hash, key `key_prefix` + the table's name; its
//! fields are the table's keys, its values the protobuf encoding of
//! `abi.Value`. Writes answer the values they replaced from inside one
//! `MULTI`/`EXEC` block on the hash (`batch.rs`), so the answer is exact
//! even with other hookv servers writing the same key.
//!
//! # The API: async, batched
//!
//! Waiting for the network must not block a tokio worker, so this backend
//! does not implement the synchronous [`Storage`](super::Storage) trait. Its
//! API is async: one method per operation ([`RedisCluster::get`],
//! [`RedisCluster::set_many`], ...) and [`RedisCluster::execute`], which
//! takes a connection's whole batch of pipelined requests as [`Op`]s and
//! answers each with an [`Answer`] or its own error. Every method is a batch
//! of one.
//!
//! A batch is cut by master (`topology.rs`: each table's slot, and hookv's
//! copy of which master serves it), and each master gets its ops as one
//! pipeline, all masters at once: a batch costs one round trip per master it
//! touches, not one per request. Ops on one table keep their order (they
//! are in one pipeline, on one connection); ops on tables of different
//! masters run concurrently, so another client may see them in any order.
//! An op that reads a whole table (`GetAll`, `Scan`) ends its pipeline; the
//! ops after it on that master go in the next one, once the read is
//! complete, so they do not overtake it.
//!
//! # Failures
//!
//! Each batch has `timeout_ms` in all: what has not answered by then fails
//! with [`ClusterError::Timeout`]. hookv does not retry: a request caught
//! by a failover, a dead node or a moved slot fails with a [`ClusterError`] (503 for the client, which may retry),
//! hookv's copy of the layout is refreshed in the background, and later
//! requests go to the new master. Retrying inside hookv would run a write
//! twice whenever its first answer was lost, and a write answers the value
//! it replaced: the second run would answer the first's value. So a write
//! that failed with a [`ClusterError`] may or may not have been applied.
//!
//! With `wait_replicas` = N > 0, each pipeline holding writes ends with
//! `WAIT N`, and its writes are answered only once N replicas have them;
//! fewer within half of `timeout_ms` fails them with
//! [`ClusterError::NotReplicated`] (they are on the master, unconfirmed).
//! `WAIT` holds that master's connection while it waits, so the requests
//! behind it on that master wait too.

mod batch;
mod calls;
mod error;
mod keyspace;
mod nodes;
mod options;
mod pipeline;
mod table_read;
mod topology;

pub use batch::{Answer, Op};
pub use error::ClusterError;
pub use options::ClusterOptions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::Value as Reply;
use tokio::time::{timeout_at, Instant};

use self::keyspace::Keyspace;
use self::nodes::Nodes;
use self::topology::Topology;
use super::StorageError;

/// A connection to a Redis Cluster holding hookv's tables. Cheap to clone;
/// clones share the connections.
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// A connection per node (`nodes.rs`).
    nodes: Nodes,
    /// The seed nodes, asked for the layout when no known master answers.
    seeds: Vec<String>,
    keyspace: Keyspace,
    /// hookv's copy of the slot → master map, swapped whole on refresh so
    /// a batch reads it without a lock.
    topology: ArcSwap<Topology>,
    /// Set while a refresh of `topology` runs (at most one at a time).
    refreshing: AtomicBool,
    timeout: Duration,
    wait_replicas: u32,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("masters", &self.inner.topology.load().masters())
            .field("keyspace", &self.inner.keyspace)
            .field("timeout", &self.inner.timeout)
            .field("wait_replicas", &self.inner.wait_replicas)
            .finish_non_exhaustive()
    }
}

/// Pauses between refreshes of the layout, so a storm of failing requests
/// asks the cluster for it a few times a second at most.
const REFRESH_PAUSE: Duration = Duration::from_millis(100);

impl RedisCluster {
    /// Connects through the seed nodes and reads the cluster's layout, all
    /// within `options.timeout`; the error names the nodes tried.
    pub async fn connect(options: ClusterOptions) -> Result<Self, ClusterError> {
        let failed = |reason: String| ClusterError::Connect {
            nodes: options.nodes.join(", "),
            timeout_ms: millis(options.timeout),
            reason,
        };
        let nodes = Nodes::new(
            options.username.as_deref(),
            options.password.as_deref(),
            options.timeout,
        );
        let topology = timeout_at(
            Instant::now() + options.timeout,
            read_topology(&nodes, &options.nodes),
        )
        .await
        .map_err(|_| failed("no answer".to_owned()))?
        .map_err(|e| {
            // Its own words (the error names the cluster already), on one line.
            let reason = match e {
                ClusterError::Redis(e) => e.to_string(),
                other => other.to_string(),
            };
            failed(reason.replace('\n', " "))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                nodes,
                seeds: options.nodes.clone(),
                keyspace: Keyspace::new(&options.key_prefix),
                topology: ArcSwap::from_pointee(topology),
                refreshing: AtomicBool::new(false),
                timeout: options.timeout,
                wait_replicas: options.wait_replicas,
            }),
        })
    }

    /// Starts a refresh of hookv's copy of the layout, unless one is under
    /// way (or just finished).
    fn refresh_soon(&self) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // The masters known, then the seeds: whoever answers first.
            let mut candidates = inner.topology.load().masters().to_vec();
            candidates.extend(inner.seeds.iter().cloned());
            candidates.dedup();
            let read = read_topology(&inner.nodes, &candidates);
            match tokio::time::timeout(inner.timeout, read).await {
                Ok(Ok(topology)) => inner.topology.store(Arc::new(topology)),
                Ok(Err(error)) => {
                    crate::log_limited!(warn, %error, "redis cluster: cannot read the cluster's layout; keeping the last known one");
                }
                Err(_) => {
                    crate::log_limited!(
                        warn,
                        "redis cluster: no answer to CLUSTER SLOTS; keeping the last known layout"
                    );
                }
            }
            tokio::time::sleep(REFRESH_PAUSE).await;
            inner.refreshing.store(false, Ordering::Release);
        });
    }

    /// The names of all tables that hold at least one key, sorted: a `SCAN`
    /// of every master for keys with the prefix.
    pub async fn tables(&self) -> Result<Vec<String>, StorageError> {
        let deadline = Instant::now() + self.inner.timeout;
        let topology = self.inner.topology.load_full();
        let mut names = Vec::new();
        for master in topology.masters() {
            let mut cursor = b"0".to_vec();
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(&cursor)
                    .arg("MATCH")
                    .arg(self.inner.keyspace.pattern())
                    .arg("COUNT")
                    .arg(table_read::SCAN_COUNT)
                    .arg("TYPE")
                    .arg("hash");
                let reply = timeout_at(deadline, self.inner.nodes.command(master, &cmd))
                    .await
                    .map_err(|_| self.timed_out(master))?
                    .map_err(ClusterError::Redis)?;
                let (next, keys) = scan_reply(reply)?;
                for key in keys {
                    if let Some(name) = self.inner.keyspace.table_of(&key) {
                        names.push(name?);
                    }
                }
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// `timeout_ms`: the bound on each batch ([`RedisCluster::execute`]).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The masters as hookv last learned them, `host:port` (for tests and
    /// diagnostics).
    pub fn masters(&self) -> Vec<String> {
        self.inner.topology.load().masters().to_vec()
    }
}

/// The cluster's layout (`CLUSTER SLOTS`) from the first of `candidates`
/// that gives one in which some master serves slots.
async fn read_topology(nodes: &Nodes, candidates: &[String]) -> Result<Topology, ClusterError> {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let mut last = None;
    for node in candidates {
        match nodes.command(node, &cmd).await {
            Ok(reply) => match Topology::from_cluster_slots(reply) {
                Ok(topology) if !topology.masters().is_empty() => return Ok(topology),
                Ok(_) => {
                    last = Some(ClusterError::UnexpectedReply {
                        command: "CLUSTER SLOTS",
                        reply: format!("{node} knows no master serving slots"),
                    })
                }
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(ClusterError::Redis(e)),
        }
    }
    Err(last.unwrap_or(ClusterError::UnexpectedReply {
        command: "CLUSTER SLOTS",
        reply: "no node to ask".to_owned(),
    }))
}

/// A `SCAN` reply: the next cursor and the keys.
fn scan_reply(reply: Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>), ClusterError> {
    let bad = || ClusterError::UnexpectedReply {
        command: "SCAN",
        reply: "not [cursor, [key, ...]]".to_owned(),
    };
    let Reply::Array(mut parts) = reply else {
        return Err(bad());
    };
    let (Some(Reply::Array(keys)), Some(Reply::BulkString(cursor)), None) =
        (parts.pop(), parts.pop(), parts.pop())
    else {
        return Err(bad());
    };
    let keys = keys
        .into_iter()
        .map(|k| match k {
            Reply::BulkString(k) => Ok(k),
            _ => Err(bad()),
        })
        .collect::<Result<_, _>>()?;
    Ok((cursor, keys))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time: the backend can be shared across tasks and threads,
    /// and a batch can run inside a spawned task.
    #[allow(dead_code)]
    fn assert_send_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: T) {}
        send_sync::<RedisCluster>();
        send_sync::<ClusterError>();
        let cluster: Option<RedisCluster> = None;
        if let Some(cluster) = cluster {
            send(async move { cluster.execute(&[]).await });
        }
    }
}
