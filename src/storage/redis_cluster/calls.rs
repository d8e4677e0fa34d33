//! One method per operation (`get`, `set_many`, `scan`, ...): each is a
//! batch of one [`Op`] through [`RedisCluster::execute`], its [`Answer`]
//! unpacked. The request path does not use them (it sends a connection's
//! whole batch at once); tests and programs that want one answer do.

use hookv_plugin::pb::{Kvpair, Value};

use super::batch::{Answer, Op};
use super::error::ClusterError;
use super::RedisCluster;
use crate::storage::StorageError;

impl RedisCluster {
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
    /// come after `after` (as [`Storage::scan`](crate::storage::Storage::scan)).
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
