//! Dispatch: one exhaustive match from a request to [`Storage`] calls.
//!
//! Semantics (the original course's, made explicit):
//! - `hset`/`hmset` create the table on first use and answer the previous
//!   value(s), an empty `Value` where there was none.
//! - `hdel`/`hmdel` answer what they removed, an empty `Value` for a missing
//!   key (still 200).
//! - `hget` of a missing key is 404, saying when the table itself is
//!   missing (holds no key) if the store can tell cheaply
//!   ([`Storage::table_exists`]); `hmget` answers one value per key in
//!   request order, an empty `Value` for a missing key.
//! - `hexist`/`hmexist` answer bool values (false for a missing table).
//! - `hgetall` answers pairs sorted by key (byte order); a missing table is an
//!   empty list.
//! - `hscan` answers one page of the same order: the pairs after `cursor`
//!   (all of them when absent), at most `count` ([`HSCAN_DEFAULT_COUNT`] for
//!   0, capped at [`HSCAN_MAX_COUNT`]), and fewer when the answer would not
//!   fit in a frame (at least one while any remain; one that fits in no frame
//!   is a 413 naming its key, with that key as the cursor to skip it). The
//!   answer's `cursor` is the key to continue after, absent once the table
//!   is exhausted.
//! - Reads never create tables.
//! - `stats` answers the server's figures as pairs (`metrics::stats_answer`);
//!   it touches no storage.
//!
//! A failure part-way through a multi-key write (storage error) answers 500;
//! the keys before the failing one stay written.
//!
//! [`dispatch`] calls a synchronous [`Storage`]; `batched.rs` runs the
//! same commands, with the same answers, as the [`Op`](crate::storage::redis_cluster::Op)s
//! of one batch for the Redis Cluster (where a multi-key write is one
//! transaction: all of it or none, and a storage error answers 503).
//! `inplace.rs` runs `hget` and `hset` straight from their frame's bytes,
//! with the same answers, when no hook is there to see the request.

use hookv_plugin::pb::command_request::RequestData;
use hookv_plugin::pb::{CommandRequest, CommandResponse, Hscan, Kvpair, Value};
use prost::Message;

use crate::error::Error;
use crate::storage::Storage;

pub(crate) mod batched;
pub(crate) mod inplace;

/// The page size of an `hscan` that asks for `count = 0`.
pub const HSCAN_DEFAULT_COUNT: u32 = 100;
/// The most pairs one `hscan` page holds; a larger `count` is capped to this.
pub const HSCAN_MAX_COUNT: u32 = 10_000;

/// An `hscan` page fills at most this part of `max_frame_bytes` (but for
/// its first pair, which may use it all), leaving 1/16 for hooks that edit
/// the answer on its way out (a rewrite's message, a redaction).
const PAGE_FILL: (usize, usize) = (15, 16);

/// Runs `request` against `store`. `max_frame_bytes` is the largest answer
/// the connection may send: `hscan` cuts its pages to fit.
pub fn dispatch(
    request: &CommandRequest,
    store: &dyn Storage,
    max_frame_bytes: usize,
) -> Result<CommandResponse, Error> {
    let data = request.request_data.as_ref().ok_or(Error::UnknownCommand)?;
    let response = match data {
        RequestData::Hget(r) => match store.get(&r.table, &r.key)? {
            Some(v) => vec![v].into(),
            // Which is missing is asked only here, off the fast path.
            None if store.table_exists(&r.table)? == Some(false) => {
                return Err(Error::NoTable {
                    table: r.table.clone(),
                    key: r.key.clone(),
                })
            }
            None => {
                return Err(Error::NotFound {
                    table: r.table.clone(),
                    key: r.key.clone(),
                })
            }
        },
        RequestData::Hgetall(r) => store.get_all(&r.table)?.into(),
        RequestData::Hmget(r) => each_key(&r.keys, |k| store.get(&r.table, k))?,
        RequestData::Hset(r) => {
            let pair = r.pair.as_ref().ok_or(Error::MissingField {
                command: "hset",
                what: "the pair",
            })?;
            let value = checked_value(pair, "hset")?;
            let old = store.put(&r.table, &pair.key, value)?;
            vec![old.unwrap_or_default()].into()
        }
        RequestData::Hmset(r) => {
            // Validate every pair before writing any, so a bad request changes nothing.
            let values = r
                .pairs
                .iter()
                .map(|p| checked_value(p, "hmset"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut old = Vec::with_capacity(values.len());
            for (pair, value) in r.pairs.iter().zip(values) {
                old.push(store.put(&r.table, &pair.key, value)?.unwrap_or_default());
            }
            old.into()
        }
        RequestData::Hdel(r) => vec![store.del(&r.table, &r.key)?.unwrap_or_default()].into(),
        RequestData::Hmdel(r) => each_key(&r.keys, |k| store.del(&r.table, k))?,
        RequestData::Hexist(r) => vec![Value::from(store.contains(&r.table, &r.key)?)].into(),
        RequestData::Hmexist(r) => {
            let found = r
                .keys
                .iter()
                .map(|k| store.contains(&r.table, k).map(Value::from))
                .collect::<Result<Vec<_>, _>>()?;
            found.into()
        }
        RequestData::Hscan(r) => hscan(r, store, max_frame_bytes)?,
        // The figures, not storage: see `metrics::stats_answer`.
        RequestData::Stats(_) => crate::metrics::stats_answer(),
        // The auth hook answers `auth` itself; reaching here means no auth hook.
        RequestData::Auth(_) => return Err(Error::AuthNotEnabled),
    };
    Ok(response)
}

/// One page of a table: see the module docs.
fn hscan(r: &Hscan, store: &dyn Storage, max_frame_bytes: usize) -> Result<CommandResponse, Error> {
    // One pair more than the page: if there is one, the scan goes on.
    let pairs = store.scan(&r.table, r.cursor.as_deref(), page_size(r) + 1)?;
    page(r, pairs, max_frame_bytes)
}

/// The pairs an `hscan` page holds at most.
fn page_size(r: &Hscan) -> usize {
    (match r.count {
        0 => HSCAN_DEFAULT_COUNT,
        n => n.min(HSCAN_MAX_COUNT),
    }) as usize
}

/// The answer to `r`, from the first [`page_size`] + 1 pairs after its
/// cursor: the page, cut to fit a frame, and the cursor to go on from.
fn page(
    r: &Hscan,
    mut pairs: Vec<Kvpair>,
    max_frame_bytes: usize,
) -> Result<CommandResponse, Error> {
    let count = page_size(r);
    let mut more = pairs.len() > count;
    pairs.truncate(count);
    let fit = fitting(&pairs, max_frame_bytes);
    if fit < pairs.len() {
        if fit == 0 {
            let first = pairs.swap_remove(0);
            return Err(Error::PairTooLarge {
                len: one_pair_len(&first),
                table: r.table.clone(),
                key: first.key,
                max: max_frame_bytes,
            });
        }
        pairs.truncate(fit);
        more = true;
    }
    let cursor = if more {
        pairs.last().map(|p| p.key.clone())
    } else {
        None
    };
    Ok(CommandResponse {
        pairs,
        cursor,
        ..CommandResponse::ok()
    })
}

/// How many of `pairs`, from the first, one answer can carry, cursor
/// included: the first only has to fit in a frame, the rest within
/// [`PAGE_FILL`] of it.
fn fitting(pairs: &[Kvpair], max_frame_bytes: usize) -> usize {
    let Some(first) = pairs.first() else {
        return 0;
    };
    if one_pair_len(first) > max_frame_bytes {
        return 0;
    }
    let budget = max_frame_bytes / PAGE_FILL.1 * PAGE_FILL.0;
    let mut len = CommandResponse::ok().encoded_len();
    for (i, pair) in pairs.iter().enumerate() {
        len += field_len(pair.encoded_len());
        // Should the page end here, this pair's key is the cursor.
        if i > 0 && len + field_len(pair.key.len()) > budget {
            return i;
        }
    }
    pairs.len()
}

/// The encoded size of an answer carrying `pair` alone, and its key as the cursor.
fn one_pair_len(pair: &Kvpair) -> usize {
    CommandResponse::ok().encoded_len() + field_len(pair.encoded_len()) + field_len(pair.key.len())
}

/// The encoded size of a length-delimited field (tag below 16) of `len` bytes.
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Applies `op` to each key in order; a missing value becomes the empty `Value`.
fn each_key(
    keys: &[String],
    op: impl Fn(&str) -> Result<Option<Value>, crate::storage::StorageError>,
) -> Result<CommandResponse, Error> {
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        values.push(op(key)?.unwrap_or_default());
    }
    Ok(values.into())
}

/// The value of a pair to write; an absent or empty value is refused, since
/// storing "nothing" would read back as a missing key.
fn checked_value(pair: &Kvpair, command: &'static str) -> Result<Value, Error> {
    checked(pair, command).cloned()
}

/// [`checked_value`], borrowed.
fn checked<'p>(pair: &'p Kvpair, command: &'static str) -> Result<&'p Value, Error> {
    match &pair.value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::MissingField {
            command,
            what: "the value (an unset Value cannot be stored)",
        }),
    }
}
