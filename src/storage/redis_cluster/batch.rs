//! [`Op`] and [`Answer`]: the storage operations a batch carries, the Redis
//! commands each becomes, and how each reads its replies.
//!
//! | op | commands | atomic |
//! |---|---|---|
//! | `Get` (hget, hmget) | `HGET` (one key) or `HMGET` | one command |
//! | `Contains` (hexist, hmexist) | one `HEXISTS` per key | per key |
//! | `Exists` (whether a table exists: hget's 404) | `EXISTS` | one command |
//! | `Set` (hset, hmset) | `HMGET`, `HSET` in a `MULTI`/`EXEC` | yes: the previous values are the ones replaced |
//! | `Del` (hdel, hmdel) | `HMGET`, `HDEL` in a `MULTI`/`EXEC` | yes: the values answered are the ones removed |
//! | `GetAll` (hgetall), `Scan` (hscan) | `HSCAN` until its cursor is 0 | no (see `table_read.rs`) |
//!
//! A `MULTI` ... `EXEC` block runs on the hash's master with nothing else in
//! between, whichever hookv server sent it, so no other write can slip
//! between reading the previous values and writing the new ones. (Redis
//! refuses the whole block, writing nothing, when any of its commands is
//! refused when queued, e.g. `MOVED` during a failover.) The pipeline puts
//! the writes next to each other on one table in one block
//! (`pipeline.rs`); each op still reads its replies as its own block's:
//! `MULTI`, its two `QUEUED`, and its two results of `EXEC`.

use std::collections::{HashMap, HashSet};

use hookv_plugin::pb::{Kvpair, Value};
use redis::{Pipeline, Value as Reply};

use super::error::ClusterError;
use super::keyspace;
use super::table_read::{TableRead, SCAN_COUNT};
use crate::storage::StorageError;

/// One storage operation of a batch, on one table. Keys and values are
/// borrowed from the request they come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    /// The values of `keys` (hget, hmget).
    Get {
        /// The table.
        table: &'a str,
        /// The keys, answered in this order.
        keys: Vec<&'a str>,
    },
    /// Whether each of `keys` is in the table (hexist, hmexist).
    Contains {
        /// The table.
        table: &'a str,
        /// The keys, answered in this order.
        keys: Vec<&'a str>,
    },
    /// Sets each pair, in order, answering the values replaced (hset, hmset).
    Set {
        /// The table (created by its first key).
        table: &'a str,
        /// The pairs; a key given twice ends with its last value.
        pairs: Vec<(&'a str, &'a Value)>,
    },
    /// Removes `keys`, answering the values removed (hdel, hmdel).
    Del {
        /// The table.
        table: &'a str,
        /// The keys, answered in this order.
        keys: Vec<&'a str>,
    },
    /// Whether the table exists, i.e. holds at least one key (asked to
    /// tell a missing table from a missing key in hget's 404).
    Exists {
        /// The table.
        table: &'a str,
    },
    /// Every pair of the table, in key order (hgetall).
    GetAll {
        /// The table.
        table: &'a str,
    },
    /// The first `limit` pairs whose keys come after `after`, in key order
    /// (hscan; as [`Storage::scan`](crate::storage::Storage::scan)).
    Scan {
        /// The table.
        table: &'a str,
        /// The cursor: the last key of the previous page.
        after: Option<&'a str>,
        /// The most pairs answered.
        limit: usize,
    },
}

/// What an [`Op`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `Get`, `Set`, `Del`: one per key, in order; `None` where the key was
    /// missing (read, replaced or removed: nothing).
    Values(Vec<Option<Value>>),
    /// `Contains`: one per key, in order; `Exists`: one.
    Bools(Vec<bool>),
    /// `GetAll`, `Scan`: pairs in key order.
    Pairs(Vec<Kvpair>),
}

impl Op<'_> {
    /// The table the op reads or writes.
    pub fn table(&self) -> &str {
        match self {
            Op::Get { table, .. }
            | Op::Contains { table, .. }
            | Op::Set { table, .. }
            | Op::Del { table, .. }
            | Op::Exists { table }
            | Op::GetAll { table }
            | Op::Scan { table, .. } => table,
        }
    }

    /// Whether the op may change the table (and so waits for replicas when
    /// `wait_replicas` > 0).
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Set { .. } | Op::Del { .. })
    }

    /// Whether the op walks the whole table (and may need more than the
    /// first reply).
    pub(super) fn reads_whole_table(&self) -> bool {
        matches!(self, Op::GetAll { .. } | Op::Scan { .. })
    }

    /// The answer of an op that needs no command (no keys, an empty page).
    pub(super) fn trivial_answer(&self) -> Option<Answer> {
        match self {
            Op::Get { keys, .. } | Op::Del { keys, .. } if keys.is_empty() => {
                Some(Answer::Values(Vec::new()))
            }
            Op::Set { pairs, .. } if pairs.is_empty() => Some(Answer::Values(Vec::new())),
            Op::Contains { keys, .. } if keys.is_empty() => Some(Answer::Bools(Vec::new())),
            Op::Scan { limit: 0, .. } => Some(Answer::Pairs(Vec::new())),
            _ => None,
        }
    }

    /// Appends the op's commands on hash `key` to `pipe`; returns how many
    /// replies they bring. Call only when [`Op::trivial_answer`] is `None`.
    /// A write's two commands go inside a `MULTI`/`EXEC` its caller opens
    /// and closes.
    pub(super) fn push_commands(&self, key: &[u8], pipe: &mut Pipeline) -> usize {
        match self {
            Op::Get { keys, .. } if keys.len() == 1 => {
                pipe.cmd("HGET").arg(key).arg(keys[0]);
                1
            }
            Op::Get { keys, .. } => {
                pipe.cmd("HMGET").arg(key).arg(keys);
                1
            }
            Op::Contains { keys, .. } => {
                for k in keys {
                    pipe.cmd("HEXISTS").arg(key).arg(*k);
                }
                keys.len()
            }
            Op::Set { pairs, .. } => {
                let hmget = pipe.cmd("HMGET").arg(key);
                for (k, _) in pairs {
                    hmget.arg(*k);
                }
                let hset = pipe.cmd("HSET").arg(key);
                for (k, v) in pairs {
                    hset.arg(*k).arg(keyspace::encode(v));
                }
                2
            }
            Op::Del { keys, .. } => {
                pipe.cmd("HMGET").arg(key).arg(keys);
                pipe.cmd("HDEL").arg(key).arg(keys);
                2
            }
            Op::Exists { .. } => {
                pipe.cmd("EXISTS").arg(key);
                1
            }
            Op::GetAll { .. } | Op::Scan { .. } => {
                push_hscan(pipe, key, b"0");
                1
            }
        }
    }

    /// Reads the op's `replies` (as many as [`Op::push_commands`] said; a
    /// write's four: `MULTI`, two `QUEUED`, its part of `EXEC`). A table
    /// read may need more `HSCAN`s: then it comes back unfinished.
    pub(super) fn read_replies(&self, mut replies: Vec<Reply>) -> Result<Read<'_>, StorageError> {
        match self {
            Op::Get { table, keys } => {
                let values = match one(replies, "HMGET")? {
                    Reply::Array(values) => values,
                    single => vec![single],
                };
                Ok(Read::Done(Answer::Values(values_of(table, keys, values)?)))
            }
            Op::Contains { table, .. } => {
                let bools = replies
                    .into_iter()
                    .map(|r| match r {
                        Reply::Int(n) => Ok(n == 1),
                        other => Err(refused(table, other, "HEXISTS")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Read::Done(Answer::Bools(bools)))
            }
            Op::Exists { table } => match one(replies, "EXISTS")? {
                Reply::Int(n) => Ok(Read::Done(Answer::Bools(vec![n == 1]))),
                other => Err(refused(table, other, "EXISTS")),
            },
            Op::Set { table, pairs } => {
                let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
                let mut old = values_of(table, &keys, transaction(table, replies, "HSET")?)?;
                // A key set twice in one op replaced, the second time, the
                // value the op itself wrote before (one pass: a request may
                // hold hundreds of thousands of keys).
                let mut last: HashMap<&str, usize> = HashMap::with_capacity(pairs.len());
                for (i, (key, _)) in pairs.iter().enumerate() {
                    if let Some(j) = last.insert(key, i) {
                        old[i] = Some(pairs[j].1.clone());
                    }
                }
                Ok(Read::Done(Answer::Values(old)))
            }
            Op::Del { table, keys } => {
                let mut old = values_of(table, keys, transaction(table, replies, "HDEL")?)?;
                // A key removed twice in one op was gone the second time.
                let mut seen: HashSet<&str> = HashSet::with_capacity(keys.len());
                for (i, key) in keys.iter().enumerate() {
                    if !seen.insert(key) {
                        old[i] = None;
                    }
                }
                Ok(Read::Done(Answer::Values(old)))
            }
            Op::GetAll { table } => {
                let mut read = TableRead::all(table);
                let cursor = read.add(one_checked(table, replies.pop(), "HSCAN")?)?;
                Ok(Read::More(read, cursor))
            }
            Op::Scan {
                table,
                after,
                limit,
            } => {
                let mut read = TableRead::page(table, *after, *limit);
                let cursor = read.add(one_checked(table, replies.pop(), "HSCAN")?)?;
                Ok(Read::More(read, cursor))
            }
        }
    }
}

/// An op's replies read: its answer, or a table read to go on with.
#[derive(Debug)]
pub(super) enum Read<'a> {
    Done(Answer),
    /// Go on from the cursor (`None`: complete).
    More(TableRead<'a>, super::table_read::Cursor),
}

/// Appends `HSCAN key cursor COUNT n`.
pub(super) fn push_hscan(pipe: &mut Pipeline, key: &[u8], cursor: &[u8]) {
    pipe.cmd("HSCAN")
        .arg(key)
        .arg(cursor)
        .arg("COUNT")
        .arg(SCAN_COUNT);
}

/// The single reply of a one-command op.
fn one(mut replies: Vec<Reply>, command: &'static str) -> Result<Reply, StorageError> {
    match (replies.pop(), replies.is_empty()) {
        (Some(reply), true) => Ok(reply),
        _ => Err(unexpected(command, "not one reply").into()),
    }
}

/// `reply`, unless it is a refusal.
fn one_checked(
    table: &str,
    reply: Option<Reply>,
    command: &'static str,
) -> Result<Reply, StorageError> {
    match reply {
        Some(Reply::ServerError(e)) => Err(refused(table, Reply::ServerError(e), command)),
        Some(reply) => Ok(reply),
        None => Err(unexpected(command, "no reply").into()),
    }
}

/// The `HMGET` result inside the replies of `MULTI`, `HMGET`, `WRITE`,
/// `EXEC`: the values before the write.
fn transaction(
    table: &str,
    replies: Vec<Reply>,
    write: &'static str,
) -> Result<Vec<Reply>, StorageError> {
    let Ok::<[Reply; 4], _>([multi, queued_read, queued_write, exec]) = replies.try_into() else {
        return Err(unexpected("MULTI/EXEC", "not four replies").into());
    };
    // A command refused while queued says more than EXEC's EXECABORT.
    for reply in [multi, queued_read, queued_write] {
        if let Reply::ServerError(_) = reply {
            return Err(refused(table, reply, write));
        }
    }
    let Reply::Array(results) = exec else {
        return Err(refused(table, exec, "EXEC"));
    };
    let Ok::<[Reply; 2], _>([read, written]) = results.try_into() else {
        return Err(unexpected("EXEC", "not two results").into());
    };
    if let Reply::ServerError(_) = written {
        return Err(refused(table, written, write));
    }
    match read {
        Reply::Array(values) => Ok(values),
        other => Err(refused(table, other, "HMGET")),
    }
}

/// One `Option<Value>` per key from `HGET`/`HMGET` replies.
fn values_of(
    table: &str,
    keys: &[&str],
    replies: Vec<Reply>,
) -> Result<Vec<Option<Value>>, StorageError> {
    if replies.len() != keys.len() {
        return Err(unexpected("HMGET", "not one value per key").into());
    }
    keys.iter()
        .zip(replies)
        .map(|(key, reply)| match reply {
            Reply::Nil => Ok(None),
            Reply::BulkString(raw) => keyspace::decode(table, key, &raw).map(Some),
            other => Err(refused(table, other, "HMGET")),
        })
        .collect()
}

/// The error for a reply that is not what `command` answers: a refusal
/// (`WRONGTYPE`: the key is not a hash, so not a hookv table), or a shape
/// Redis does not give.
fn refused(table: &str, reply: Reply, command: &'static str) -> StorageError {
    match reply {
        Reply::ServerError(e) if e.code() == "WRONGTYPE" => StorageError::Corrupt {
            table: table.to_owned(),
            key: String::new(),
            reason: format!("the Redis key of this table is not a hash: {e}"),
        },
        Reply::ServerError(e) => ClusterError::Redis(e.into()).into(),
        other => unexpected(command, &format!("{other:?}")).into(),
    }
}

fn unexpected(command: &'static str, reply: &str) -> ClusterError {
    let mut reply = reply.to_owned();
    if reply.len() > 200 {
        let mut cut = 200;
        while !reply.is_char_boundary(cut) {
            cut -= 1;
        }
        reply.truncate(cut);
        reply.push_str("...");
    }
    ClusterError::UnexpectedReply { command, reply }
}
