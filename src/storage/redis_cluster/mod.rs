//! [`RedisCluster`]: tables kept in a Redis Cluster that any number of hookv
//! servers share; hookv stays the policy layer (hooks), Redis Cluster is the
//! storage (sharding by hash slot, replication, failover). hookv replicates
//! nothing itself.
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
mod error;
mod keyspace;
mod nodes;
mod table_read;
mod topology;

pub use batch::{Answer, Op};
pub use error::ClusterError;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use hookv_plugin::pb::{Kvpair, Value};
use redis::Value as Reply;
use tokio::time::{timeout_at, Instant};

use self::batch::Read;
use self::keyspace::Keyspace;
use self::nodes::Nodes;
use self::topology::{slot_of, Topology};
use super::StorageError;
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
        .map_err(|e| failed(e.to_string()))?;
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

    /// Runs a batch: one answer (or error) per op, in order. See the module
    /// docs for how it is sent, ordered and bounded.
    pub async fn execute(&self, ops: &[Op<'_>]) -> Vec<Result<Answer, StorageError>> {
        let deadline = Instant::now() + self.inner.timeout;
        let topology = self.inner.topology.load_full();
        let keys: Vec<Vec<u8>> = ops
            .iter()
            .map(|op| self.inner.keyspace.hash_key(op.table()))
            .collect();
        let mut groups = by_master(&keys, &topology);
        let mut answers: Vec<Option<Result<Answer, StorageError>>> =
            std::iter::repeat_with(|| None).take(ops.len()).collect();
        // Tables whose slot no master serves (in hookv's copy): a failover
        // under way, or a cluster not fully set up.
        groups.retain(|(master, group)| {
            if master.is_some() {
                return true;
            }
            for &i in group {
                let slot = slot_of(&keys[i]);
                answers[i] = Some(Err(ClusterError::NoMaster { slot }.into()));
            }
            false
        });
        if answers.iter().any(Option::is_some) {
            self.refresh_soon();
        }
        let runs = groups.iter().map(|(master, group)| {
            let node = topology.address(*master).to_owned();
            self.run_master(node, group, ops, &keys, deadline)
        });
        for (i, answer) in join_all(runs.collect()).await.into_iter().flatten() {
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(ClusterError::UnexpectedReply {
                        command: "batch",
                        reply: "no answer for this op".to_owned(),
                    }
                    .into())
                })
            })
            .collect()
    }

    /// The ops of one master (`group`, indices into `ops`), in pipelines
    /// that each end after a whole-table read.
    async fn run_master(
        &self,
        node: String,
        group: &[usize],
        ops: &[Op<'_>],
        keys: &[Vec<u8>],
        deadline: Instant,
    ) -> Vec<(usize, Result<Answer, StorageError>)> {
        let mut answers = Vec::with_capacity(group.len());
        for round in pipelines(group, ops) {
            self.run_pipeline(&node, round, ops, keys, deadline, &mut answers)
                .await;
        }
        answers
    }

    /// One pipeline to one master: the ops of `round`, then `WAIT` if they
    /// write and `wait_replicas` asks for it.
    async fn run_pipeline(
        &self,
        node: &str,
        round: &[usize],
        ops: &[Op<'_>],
        keys: &[Vec<u8>],
        deadline: Instant,
        answers: &mut Vec<(usize, Result<Answer, StorageError>)>,
    ) {
        let mut pipe = redis::pipe();
        // (op, its first reply, its number of replies)
        let mut spans = Vec::with_capacity(round.len());
        let mut count = 0;
        let mut writes = false;
        let mut first = None;
        for &i in round {
            if let Some(answer) = ops[i].trivial_answer() {
                answers.push((i, Ok(answer)));
                continue;
            }
            let n = ops[i].push_commands(&keys[i], &mut pipe);
            spans.push((i, count, n));
            count += n;
            writes |= ops[i].is_write();
            first.get_or_insert(i);
        }
        if first.is_none() {
            return;
        }
        let wait_ms = (millis(self.inner.timeout) / 2).max(1);
        let wait = writes && self.inner.wait_replicas > 0;
        if wait {
            pipe.cmd("WAIT").arg(self.inner.wait_replicas).arg(wait_ms);
            count += 1;
        }
        let sent = timeout_at(deadline, self.inner.nodes.pipeline(node, &pipe, count)).await;
        let ok = matches!(&sent, Ok(Ok(replies)) if replies.len() == count);
        crate::metrics::cluster_round_trip(!ok);
        let mut replies = match sent {
            Ok(Ok(replies)) if replies.len() == count => replies,
            failed => {
                let error = match failed {
                    Err(_) => self.timed_out(node),
                    Ok(Err(e)) if e.is_timeout() => self.timed_out(node),
                    Ok(Err(e)) => ClusterError::Redis(e),
                    Ok(Ok(replies)) => ClusterError::UnexpectedReply {
                        command: "pipeline",
                        reply: format!("{} replies to {count} commands", replies.len()),
                    },
                };
                self.refresh_soon();
                for (i, _, _) in spans {
                    answers.push((i, Err(error.clone().into())));
                }
                return;
            }
        };
        let replicated = match wait.then(|| replies.pop()).flatten() {
            None => Ok(()),
            Some(Reply::Int(acked)) if acked >= i64::from(self.inner.wait_replicas) => Ok(()),
            Some(Reply::Int(acked)) => Err(ClusterError::NotReplicated {
                wanted: self.inner.wait_replicas,
                acked,
                wait_ms,
            }),
            Some(other) => Err(ClusterError::UnexpectedReply {
                command: "WAIT",
                reply: format!("{other:?}"),
            }),
        };
        let mut replies = replies.into_iter();
        for (i, _, n) in spans {
            let mine: Vec<Reply> = replies.by_ref().take(n).collect();
            let answer = match ops[i].read_replies(mine) {
                Ok(Read::Done(answer)) => Ok(answer),
                Ok(Read::More(read, cursor)) => {
                    self.finish_read(node, &keys[i], read, cursor, deadline)
                        .await
                }
                Err(e) => Err(e),
            };
            let answer = match (answer, &replicated) {
                (Ok(_), Err(e)) if ops[i].is_write() => Err(e.clone().into()),
                (answer, _) => answer,
            };
            if matches!(answer, Err(StorageError::Cluster(_))) {
                self.refresh_soon();
            }
            answers.push((i, answer));
        }
    }

    /// Goes on with a table read from `cursor` until `HSCAN` says it is
    /// complete.
    async fn finish_read(
        &self,
        node: &str,
        key: &[u8],
        mut read: table_read::TableRead<'_>,
        mut cursor: table_read::Cursor,
        deadline: Instant,
    ) -> Result<Answer, StorageError> {
        while let Some(at) = cursor {
            let mut cmd = redis::cmd("HSCAN");
            cmd.arg(key)
                .arg(at)
                .arg("COUNT")
                .arg(table_read::SCAN_COUNT);
            let reply = timeout_at(deadline, self.inner.nodes.command(node, &cmd))
                .await
                .map_err(|_| self.timed_out(node))?
                .map_err(|e| match e.is_timeout() {
                    true => self.timed_out(node),
                    false => ClusterError::Redis(e),
                })?;
            cursor = read.add(reply)?;
        }
        Ok(Answer::Pairs(read.finish()))
    }

    fn timed_out(&self, node: &str) -> ClusterError {
        ClusterError::Timeout {
            node: node.to_owned(),
            timeout_ms: millis(self.inner.timeout),
        }
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

    /// Runs one op.
    async fn one(&self, op: Op<'_>) -> Result<Answer, StorageError> {
        self.execute(std::slice::from_ref(&op))
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(ClusterError::UnexpectedReply {
                    command: "batch",
                    reply: "no answer".to_owned(),
                }
                .into())
            })
    }

    /// The value of `key` in `table`, `None` if either is missing.
    pub async fn get(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        first(self.get_many(table, &[key]).await?)
    }

    /// The values of `keys`, in order; `None` where missing.
    pub async fn get_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        let op = Op::Get {
            table,
            keys: keys.to_vec(),
        };
        values(self.one(op).await?)
    }

    /// Sets `key` to `value`, returning the previous value.
    pub async fn set(
        &self,
        table: &str,
        key: &str,
        value: &Value,
    ) -> Result<Option<Value>, StorageError> {
        first(self.set_many(table, &[(key, value)]).await?)
    }

    /// Sets every pair (atomically), returning the values replaced, in order.
    pub async fn set_many(
        &self,
        table: &str,
        pairs: &[(&str, &Value)],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        let op = Op::Set {
            table,
            pairs: pairs.to_vec(),
        };
        values(self.one(op).await?)
    }

    /// Removes `key`, returning what was there.
    pub async fn del(&self, table: &str, key: &str) -> Result<Option<Value>, StorageError> {
        first(self.del_many(table, &[key]).await?)
    }

    /// Removes `keys` (atomically), returning what was there, in order.
    pub async fn del_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        let op = Op::Del {
            table,
            keys: keys.to_vec(),
        };
        values(self.one(op).await?)
    }

    /// Whether `table` holds `key`.
    pub async fn contains(&self, table: &str, key: &str) -> Result<bool, StorageError> {
        let found = self.contains_many(table, &[key]).await?;
        found.first().copied().ok_or_else(|| no_answer("HEXISTS"))
    }

    /// Whether `table` holds each of `keys`, in order.
    pub async fn contains_many(
        &self,
        table: &str,
        keys: &[&str],
    ) -> Result<Vec<bool>, StorageError> {
        let op = Op::Contains {
            table,
            keys: keys.to_vec(),
        };
        match self.one(op).await? {
            Answer::Bools(found) => Ok(found),
            _ => Err(no_answer("HEXISTS")),
        }
    }

    /// Every pair of `table`, sorted by key; empty for a missing table.
    pub async fn get_all(&self, table: &str) -> Result<Vec<Kvpair>, StorageError> {
        pairs(self.one(Op::GetAll { table }).await?)
    }

    /// One page of `table` in key order: the first `limit` pairs whose keys
    /// come after `after` (as [`Storage::scan`](super::Storage::scan)).
    pub async fn scan(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kvpair>, StorageError> {
        pairs(
            self.one(Op::Scan {
                table,
                after,
                limit,
            })
            .await?,
        )
    }

    /// The masters as hookv last learned them, `host:port` (for tests and
    /// diagnostics).
    pub fn masters(&self) -> Vec<String> {
        self.inner.topology.load().masters().to_vec()
    }
}

/// The ops (by index) of each master, in batch order; `None` gathers the
/// ops whose slot no master serves.
fn by_master(keys: &[Vec<u8>], topology: &Topology) -> Vec<(Option<u16>, Vec<usize>)> {
    let mut groups: Vec<(Option<u16>, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let master = topology.master_of(slot_of(key));
        match groups.iter_mut().find(|(m, _)| *m == master) {
            Some((_, group)) => group.push(i),
            None => groups.push((master, vec![i])),
        }
    }
    groups
}

/// One master's ops cut into pipelines: each ends after an op that reads a
/// whole table, so that the ops after it wait for the read to complete.
fn pipelines<'g>(group: &'g [usize], ops: &[Op<'_>]) -> Vec<&'g [usize]> {
    let mut pipelines = Vec::new();
    let mut rest = group;
    while !rest.is_empty() {
        let cut = rest
            .iter()
            .position(|&i| ops[i].reads_whole_table())
            .map_or(rest.len(), |p| p + 1);
        let (pipeline, next) = rest.split_at(cut);
        pipelines.push(pipeline);
        rest = next;
    }
    pipelines
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

fn values(answer: Answer) -> Result<Vec<Option<Value>>, StorageError> {
    match answer {
        Answer::Values(values) => Ok(values),
        _ => Err(no_answer("HMGET")),
    }
}

fn pairs(answer: Answer) -> Result<Vec<Kvpair>, StorageError> {
    match answer {
        Answer::Pairs(pairs) => Ok(pairs),
        _ => Err(no_answer("HSCAN")),
    }
}

fn first(values: Vec<Option<Value>>) -> Result<Option<Value>, StorageError> {
    values.into_iter().next().ok_or_else(|| no_answer("HMGET"))
}

fn no_answer(command: &'static str) -> StorageError {
    ClusterError::UnexpectedReply {
        command,
        reply: "an answer of another kind".to_owned(),
    }
    .into()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Awaits every future together (they borrow the batch, so they cannot be
/// spawned), answering in their order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = std::iter::repeat_with(|| None)
        .take(futures.len())
        .collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(done) => *output = Some(done),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two masters: slots 0-8191 on A, 8192-16383 on B.
    fn two_masters() -> Topology {
        let range = |start, end, port| {
            Reply::Array(vec![
                Reply::Int(start),
                Reply::Int(end),
                Reply::Array(vec![
                    Reply::BulkString(b"127.0.0.1".to_vec()),
                    Reply::Int(port),
                ]),
            ])
        };
        Topology::from_cluster_slots(Reply::Array(vec![
            range(0, 8191, 7000),
            range(8192, 16383, 7001),
        ]))
        .unwrap()
    }

    #[test]
    fn a_batch_is_one_group_per_master_in_batch_order() {
        let ks = Keyspace::new("hookv:");
        // Tables alternating between the two masters.
        let tables: Vec<String> = (0..)
            .map(|i| format!("t{i}"))
            .scan(None, |last: &mut Option<bool>, t| {
                let low = slot_of(&ks.hash_key(&t)) < 8192;
                let keep = *last != Some(low);
                if keep {
                    *last = Some(low);
                }
                Some(keep.then_some(t))
            })
            .flatten()
            .take(6)
            .collect();
        let keys: Vec<Vec<u8>> = tables.iter().map(|t| ks.hash_key(t)).collect();
        let groups = by_master(&keys, &two_masters());
        assert_eq!(groups.len(), 2);
        let (first, second) = (&groups[0].1, &groups[1].1);
        assert_eq!(
            (first.as_slice(), second.as_slice()),
            (&[0, 2, 4][..], &[1, 3, 5][..])
        );
        assert_ne!(groups[0].0, groups[1].0);
    }

    #[test]
    fn a_pipeline_ends_after_each_whole_table_read() {
        let ops = [
            Op::Get {
                table: "a",
                keys: vec!["k"],
            },
            Op::GetAll { table: "a" },
            Op::Set {
                table: "a",
                pairs: vec![],
            },
            Op::Del {
                table: "a",
                keys: vec!["k"],
            },
            Op::Scan {
                table: "a",
                after: None,
                limit: 5,
            },
        ];
        let group = [0, 1, 2, 3, 4];
        assert_eq!(pipelines(&group, &ops), [&[0, 1][..], &[2, 3, 4][..]]);
        let only_reads = [0, 3];
        assert_eq!(pipelines(&only_reads, &ops), [&[0, 3][..]]);
    }

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
