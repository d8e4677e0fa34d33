//! Dispatch: one exhaustive match from a request to [`Storage`] calls.
//!
//! Semantics (the original course's, made explicit):
//! - `hset`/`hmset` create the table on first use and answer the previous
//!   value(s), an empty `Value` where there was none.
//! - `hdel`/`hmdel` answer what they removed, an empty `Value` for a missing
//!   key (still 200).
//! - `hget` of a missing key is 404; `hmget` answers one value per key in
//!   request order, an empty `Value` for a missing key.
//! - `hexist`/`hmexist` answer bool values (false for a missing table).
//! - `hgetall` answers pairs sorted by key (byte order); a missing table is an
//!   empty list.
//! - Reads never create tables.
//!
//! A failure part-way through a multi-key write (storage error) answers 500;
//! the keys before the failing one stay written.

use hookv_plugin::pb::command_request::RequestData;
use hookv_plugin::pb::{CommandRequest, CommandResponse, Kvpair, Value};

use crate::error::Error;
use crate::storage::Storage;

/// Runs `request` against `store`.
pub fn dispatch(request: &CommandRequest, store: &dyn Storage) -> Result<CommandResponse, Error> {
    let data = request.request_data.as_ref().ok_or(Error::UnknownCommand)?;
    let response = match data {
        RequestData::Hget(r) => match store.get(&r.table, &r.key)? {
            Some(v) => vec![v].into(),
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
            let old = store.set(&r.table, &pair.key, value)?;
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
                old.push(store.set(&r.table, &pair.key, value)?.unwrap_or_default());
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
        // The auth hook answers `auth` itself; reaching here means no auth hook.
        RequestData::Auth(_) => return Err(Error::AuthNotEnabled),
    };
    Ok(response)
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
    match &pair.value {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        _ => Err(Error::MissingField {
            command,
            what: "the value (an unset Value cannot be stored)",
        }),
    }
}
