//! [`RedisCluster::execute`]: a batch of [`Op`]s on its way to the
//! cluster and back.
//!
//! The batch is cut by master (`by_master`: each op's table, its slot, and
//! hookv's copy of which master serves it); each master's ops go out as
//! pipelines (`pipelines`: one, or more when a whole-table read must
//! complete before the ops after it), all masters at once (`join_all`).
//! One pipeline is built, sent and read back by `run_pipeline`, `WAIT`
//! included; a table read that needs more than its first `HSCAN` goes on
//! in `finish_read`. Everything shares one deadline, `timeout_ms` from the
//! batch's start.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use redis::Value as Reply;
use tokio::time::{timeout_at, Instant};

use super::batch::{Answer, Op, Read};
use super::error::ClusterError;
use super::topology::{slot_of, Topology};
use super::{millis, table_read, RedisCluster};
use crate::storage::StorageError;

impl RedisCluster {
    /// Runs a batch: one answer (or error) per op, in order, within
    /// `timeout_ms`. See the module docs for how it is sent, ordered and
    /// bounded.
    pub async fn execute(&self, ops: &[Op<'_>]) -> Vec<Result<Answer, StorageError>> {
        self.execute_until(ops, Instant::now() + self.inner.timeout)
            .await
    }

    /// [`RedisCluster::execute`] with the deadline given: what is not
    /// answered by then fails with [`ClusterError::Timeout`]. (The request
    /// path gives a batch and its follow-up one deadline.)
    pub async fn execute_until(
        &self,
        ops: &[Op<'_>],
        deadline: Instant,
    ) -> Vec<Result<Answer, StorageError>> {
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
    /// write and `wait_replicas` asks for it. Writes next to each other on
    /// one table share one `MULTI`/`EXEC` (see [`Part`]).
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
        let mut parts: Vec<Part> = Vec::with_capacity(round.len());
        let mut count = 0;
        let mut writes = false;
        for &i in round {
            if let Some(answer) = ops[i].trivial_answer() {
                answers.push((i, Ok(answer)));
                continue;
            }
            let joins = ops[i].is_write()
                && matches!(parts.last(), Some(Part::Transaction(run)) if run.last().is_some_and(|&j| keys[j] == keys[i]));
            if !joins {
                if let Some(Part::Transaction(_)) = parts.last() {
                    pipe.cmd("EXEC");
                    count += 1;
                }
                if ops[i].is_write() {
                    pipe.cmd("MULTI");
                    count += 1;
                    parts.push(Part::Transaction(Vec::new()));
                }
            }
            let n = ops[i].push_commands(&keys[i], &mut pipe);
            count += n;
            match parts.last_mut() {
                Some(Part::Transaction(run)) if ops[i].is_write() => run.push(i),
                _ => parts.push(Part::Plain(i, n)),
            }
            writes |= ops[i].is_write();
        }
        if parts.is_empty() {
            return;
        }
        if let Some(Part::Transaction(_)) = parts.last() {
            pipe.cmd("EXEC");
            count += 1;
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
                for i in parts.iter().flat_map(Part::ops) {
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
        let mut each_op = Vec::with_capacity(round.len());
        for part in parts {
            match part {
                Part::Plain(i, n) => each_op.push((i, replies.by_ref().take(n).collect())),
                Part::Transaction(run) => split_transaction(&run, &mut replies, &mut each_op),
            }
        }
        for (i, mine) in each_op {
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

    /// The error of a request that `node` did not answer in time.
    pub(super) fn timed_out(&self, node: &str) -> ClusterError {
        ClusterError::Timeout {
            node: node.to_owned(),
            timeout_ms: millis(self.inner.timeout),
        }
    }
}

/// A part of one pipeline.
#[derive(Debug)]
enum Part {
    /// One op (by index) and the number of its replies.
    Plain(usize, usize),
    /// Writes (by index) next to each other in the pipeline, on one table,
    /// in one `MULTI`/`EXEC`: each op's two commands are queued in turn, so
    /// each reads the values the ones before it left, exactly as if they
    /// ran alone, and a batch of N writes to one table is one transaction.
    Transaction(Vec<usize>),
}

impl Part {
    /// The ops of this part, in order.
    fn ops(&self) -> impl Iterator<Item = usize> + '_ {
        let (one, run) = match self {
            Part::Plain(i, _) => (Some(*i), &[][..]),
            Part::Transaction(run) => (None, run.as_slice()),
        };
        one.into_iter().chain(run.iter().copied())
    }
}

/// Takes a transaction's replies (`MULTI`, two `QUEUED` per op, `EXEC`)
/// from `replies` and gives each op of `run` the four replies it reads as
/// its own transaction: `MULTI`, its two `QUEUED`, and its two results of
/// `EXEC` (or `EXEC`'s refusal, for every op).
fn split_transaction(
    run: &[usize],
    replies: &mut impl Iterator<Item = Reply>,
    each_op: &mut Vec<(usize, Vec<Reply>)>,
) {
    let multi = replies.next().unwrap_or(Reply::Nil);
    let queued: Vec<Reply> = replies.by_ref().take(2 * run.len()).collect();
    let (mut results, exec) = match replies.next().unwrap_or(Reply::Nil) {
        Reply::Array(results) if results.len() == 2 * run.len() => {
            (Some(results.into_iter()), Reply::Nil)
        }
        refused => (None, refused),
    };
    let mut queued = queued.into_iter();
    for &i in run {
        let (read, write) = (queued.next(), queued.next());
        let exec_part = match &mut results {
            Some(results) => Reply::Array(results.by_ref().take(2).collect()),
            None => exec.clone(),
        };
        let mine = [Some(multi.clone()), read, write, Some(exec_part)];
        each_op.push((i, mine.into_iter().flatten().collect()));
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
    use crate::storage::redis_cluster::keyspace::Keyspace;

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
}
