//! The commands of one batch for the Redis Cluster
//! ([`Reach::Batched`](crate::storage::Reach::Batched)): each request
//! becomes an [`Op`] (one match, as in [`dispatch`](super::dispatch), with
//! the same checks first), every op of the batch goes to the cluster in one
//! [`RedisCluster::execute_until`], and each answer becomes the response
//! `dispatch` gives for the same request on a synchronous store.
//!
//! | request | op | answer |
//! |---|---|---|
//! | hget | `Get`, one key | the value; 404 for a miss, naming the missing table when it holds no key (see below) |
//! | hmget | `Get` | one value per key, empty where none |
//! | hset, hmset | `Set` (hmset's pairs all checked first) | the values replaced, empty where none |
//! | hdel, hmdel | `Del` | the values removed, empty where none |
//! | hexist, hmexist | `Contains` | one bool per key |
//! | hgetall | `GetAll` | every pair, in key order (413 past `max_frame_bytes`, when the answer is written) |
//! | hscan | `Scan`, one pair past the page | the page in key order, cut to fit a frame, and its cursor |
//! | auth (no auth hook), unknown | none | 400, as `dispatch` |
//!
//! An hget's 404 says whether the table exists, as `dispatch` says it, at
//! the cost of an `Exists` op for the misses only: asked after the batch,
//! in one more round trip within the same deadline, unless a later write of
//! the batch touches the table (and may create or empty it): then it is
//! asked with the hget, in the same pipeline, so the answer is as of the
//! hget.
//!
//! What differs from a synchronous store, by design: a storage error of the
//! cluster is a [`StorageError::Cluster`], which a client sees as 503 (retry
//! later) naming it; hmset and hmdel are one transaction (all of their keys
//! or none).

use std::collections::HashSet;

use hookv_plugin::pb::command_request::RequestData;
use hookv_plugin::pb::{CommandRequest, CommandResponse, Hscan, Value};
use tokio::time::Instant;

use super::{checked, page, page_size};
use crate::error::Error;
use crate::service::Received;
use crate::storage::redis_cluster::{Answer, ClusterError, Op};
use crate::storage::{RedisCluster, StorageError};

/// How an op's answer becomes a response.
#[derive(Debug, Clone, Copy)]
enum Shape<'r> {
    /// hget: the value, or 404 naming the table and the key; `exists`: an
    /// `Exists` op of the table follows its op.
    Hget {
        table: &'r str,
        key: &'r str,
        exists: bool,
    },
    /// One value per key, the empty `Value` where none (hmget, and every
    /// write: the values replaced or removed).
    Values,
    /// One bool per key (hexist, hmexist).
    Bools,
    /// Every pair (hgetall).
    Pairs,
    /// One page (hscan).
    Page(&'r Hscan),
    /// The server's figures (stats): no op.
    Stats,
}

/// The op of `req` and how its answer becomes a response; or, for a
/// request storage cannot run, the error `dispatch` answers it with.
fn plan(req: &CommandRequest) -> Result<(Option<Op<'_>>, Shape<'_>), Error> {
    let data = req.request_data.as_ref().ok_or(Error::UnknownCommand)?;
    Ok(match data {
        RequestData::Hget(r) => (
            Some(Op::Get {
                table: &r.table,
                keys: vec![&r.key],
            }),
            Shape::Hget {
                table: &r.table,
                key: &r.key,
                exists: false,
            },
        ),
        RequestData::Hgetall(r) => (Some(Op::GetAll { table: &r.table }), Shape::Pairs),
        RequestData::Hmget(r) => (
            Some(Op::Get {
                table: &r.table,
                keys: keys(&r.keys),
            }),
            Shape::Values,
        ),
        RequestData::Hset(r) => {
            let pair = r.pair.as_ref().ok_or(Error::MissingField {
                command: "hset",
                what: "the pair",
            })?;
            let value = checked(pair, "hset")?;
            let pairs = vec![(pair.key.as_str(), value)];
            (
                Some(Op::Set {
                    table: &r.table,
                    pairs,
                }),
                Shape::Values,
            )
        }
        RequestData::Hmset(r) => {
            // Every pair is checked before the op exists, so a bad request
            // changes nothing.
            let pairs = r
                .pairs
                .iter()
                .map(|p| Ok((p.key.as_str(), checked(p, "hmset")?)))
                .collect::<Result<_, Error>>()?;
            (
                Some(Op::Set {
                    table: &r.table,
                    pairs,
                }),
                Shape::Values,
            )
        }
        RequestData::Hdel(r) => (
            Some(Op::Del {
                table: &r.table,
                keys: vec![&r.key],
            }),
            Shape::Values,
        ),
        RequestData::Hmdel(r) => (
            Some(Op::Del {
                table: &r.table,
                keys: keys(&r.keys),
            }),
            Shape::Values,
        ),
        RequestData::Hexist(r) => (
            Some(Op::Contains {
                table: &r.table,
                keys: vec![&r.key],
            }),
            Shape::Bools,
        ),
        RequestData::Hmexist(r) => (
            Some(Op::Contains {
                table: &r.table,
                keys: keys(&r.keys),
            }),
            Shape::Bools,
        ),
        RequestData::Hscan(r) => (
            // One pair more than the page: if there is one, the scan goes on.
            Some(Op::Scan {
                table: &r.table,
                after: r.cursor.as_deref(),
                limit: page_size(r) + 1,
            }),
            Shape::Page(r),
        ),
        // The figures, not storage: see `metrics::stats_answer`.
        RequestData::Stats(_) => (None, Shape::Stats),
        // The auth hook answers `auth` itself; reaching here means no auth hook.
        RequestData::Auth(_) => return Err(Error::AuthNotEnabled),
    })
}

/// Step 2 of the batched path (see `crate::service`): the storage work of
/// every request of `batch` not answered yet, as one batch for `cluster`,
/// within its `timeout_ms`. One result per such request, in order.
/// `max_frame_bytes` is the largest answer the connection may send (hscan
/// pages are cut to fit).
pub(crate) async fn execute(
    cluster: &RedisCluster,
    batch: &[Received],
    max_frame_bytes: usize,
) -> Vec<Result<CommandResponse, Error>> {
    let deadline = Instant::now() + cluster.timeout();
    let mut plans: Vec<Result<(Option<Op<'_>>, Shape<'_>), Error>> = batch
        .iter()
        .filter(|r| r.answered.is_none())
        .map(|r| plan(&r.req))
        .collect();
    ask_exists_with_hgets_written_later(&mut plans);
    let mut ops = Vec::with_capacity(plans.len());
    let shapes: Vec<Result<Shape<'_>, Error>> = plans
        .into_iter()
        .map(|plan| {
            plan.map(|(op, shape)| {
                ops.extend(op);
                if let Shape::Hget {
                    table,
                    exists: true,
                    ..
                } = shape
                {
                    ops.push(Op::Exists { table });
                }
                shape
            })
        })
        .collect();
    let answers = match ops.is_empty() {
        true => Vec::new(),
        false => cluster.execute_until(&ops, deadline).await,
    };
    drop(ops);
    let mut answers = answers.into_iter();
    let mut next = || {
        answers.next().unwrap_or_else(|| {
            Err(ClusterError::UnexpectedReply {
                command: "batch",
                reply: "no answer for this request".to_owned(),
            }
            .into())
        })
    };
    let mut results = Vec::with_capacity(shapes.len());
    // hgets that missed, their table's existence not asked yet: (their
    // place in `results`, their table).
    let mut misses = Vec::new();
    for shape in shapes {
        let result = shape.and_then(|shape| {
            if let Shape::Stats = shape {
                return Ok(crate::metrics::stats_answer());
            }
            let result = respond(shape, next(), max_frame_bytes);
            match shape {
                Shape::Hget { exists: true, .. } => missing_table(result, next()),
                Shape::Hget { table, .. } => {
                    if let Err(Error::NotFound { .. }) = result {
                        misses.push((results.len(), table));
                    }
                    result
                }
                _ => result,
            }
        });
        results.push(result);
    }
    if !misses.is_empty() {
        name_missing_tables(cluster, &misses, &mut results, deadline).await;
    }
    results
}

/// Marks the hgets whose table a later request of the batch writes, so
/// that their table's `Exists` goes with them (see the module docs).
fn ask_exists_with_hgets_written_later(plans: &mut [Result<(Option<Op<'_>>, Shape<'_>), Error>]) {
    let mut written: HashSet<&str> = HashSet::new();
    for (op, shape) in plans.iter_mut().rev().flatten() {
        let Some(op) = op else { continue };
        match shape {
            Shape::Hget { table, exists, .. } => *exists = written.contains(table),
            _ if op.is_write() => {
                written.insert(op.table());
            }
            _ => {}
        }
    }
}

/// The hgets of `misses` ask, after the batch, whether their tables exist
/// (where the cluster cannot tell in time, their 404 stays as it is: the
/// key is missing either way).
async fn name_missing_tables(
    cluster: &RedisCluster,
    misses: &[(usize, &str)],
    results: &mut [Result<CommandResponse, Error>],
    deadline: Instant,
) {
    let ops: Vec<Op<'_>> = misses
        .iter()
        .map(|&(_, table)| Op::Exists { table })
        .collect();
    let exists = cluster.execute_until(&ops, deadline).await;
    for (&(i, _), exists) in misses.iter().zip(exists) {
        if let Some(result) = results.get_mut(i) {
            let missed = std::mem::replace(result, Err(Error::UnknownCommand));
            *result = missing_table(missed, exists);
        }
    }
}

/// An hget's result with the answer of its table's `Exists`: a miss on a
/// table that holds no key says so.
fn missing_table(
    result: Result<CommandResponse, Error>,
    exists: Result<Answer, StorageError>,
) -> Result<CommandResponse, Error> {
    match (result, exists) {
        (Err(Error::NotFound { table, key }), Ok(Answer::Bools(exists))) if exists == [false] => {
            Err(Error::NoTable { table, key })
        }
        (result, _) => result,
    }
}

/// `keys` as the op borrows them.
fn keys(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

/// The response to a request of `shape` whose op answered `answer`.
fn respond(
    shape: Shape<'_>,
    answer: Result<Answer, StorageError>,
    max_frame_bytes: usize,
) -> Result<CommandResponse, Error> {
    match (shape, answer?) {
        (Shape::Hget { table, key, .. }, Answer::Values(values)) => match values.into_iter().next()
        {
            Some(Some(value)) => Ok(vec![value].into()),
            _ => Err(Error::NotFound {
                table: table.to_owned(),
                key: key.to_owned(),
            }),
        },
        (Shape::Values, Answer::Values(values)) => {
            let values: Vec<Value> = values.into_iter().map(Option::unwrap_or_default).collect();
            Ok(values.into())
        }
        (Shape::Bools, Answer::Bools(found)) => {
            let values: Vec<Value> = found.into_iter().map(Value::from).collect();
            Ok(values.into())
        }
        (Shape::Pairs, Answer::Pairs(pairs)) => Ok(pairs.into()),
        (Shape::Page(r), Answer::Pairs(pairs)) => page(r, pairs, max_frame_bytes),
        (shape, answer) => Err(StorageError::from(ClusterError::UnexpectedReply {
            command: "batch",
            reply: format!("{answer:?} for {shape:?}"),
        })
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookv_plugin::pb::Kvpair;

    #[test]
    fn bad_requests_are_answered_before_any_op_as_dispatch_answers_them() {
        let unset =
            CommandRequest::new_hmset("t", vec![Kvpair::new("a", 1i64.into()), Kvpair::default()]);
        let err = plan(&unset).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("hmset"), "{err}");
        assert!(matches!(
            plan(&CommandRequest::default()),
            Err(Error::UnknownCommand)
        ));
        let hmget = CommandRequest::new_hmget("t", vec!["a".into(), "b".into()]);
        let (op, _) = plan(&hmget).unwrap();
        assert_eq!(
            op,
            Some(Op::Get {
                table: "t",
                keys: vec!["a", "b"]
            })
        );
    }

    #[test]
    fn answers_become_the_responses_dispatch_gives() {
        let hget = Shape::Hget {
            table: "t",
            key: "k",
            exists: false,
        };
        let miss = respond(hget, Ok(Answer::Values(vec![None])), 1 << 20).unwrap_err();
        assert!(matches!(miss, Error::NotFound { .. }), "{miss}");
        let values = respond(
            Shape::Values,
            Ok(Answer::Values(vec![Some(1i64.into()), None])),
            1 << 20,
        )
        .unwrap();
        assert_eq!(values.values, vec![Value::from(1i64), Value::default()]);
        // A cluster error is the request's error, 503; an answer of the
        // wrong kind is one too (never a default).
        let down = respond(
            Shape::Bools,
            Err(ClusterError::NoMaster { slot: 7 }.into()),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(down.status(), 503);
        let odd = respond(Shape::Bools, Ok(Answer::Pairs(vec![])), 1 << 20).unwrap_err();
        assert!(odd.to_string().contains("redis cluster"), "{odd}");
    }
}
