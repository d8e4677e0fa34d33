//! Errors a request can end in, and the one mapping from error to status.
//!
//! Each layer has its own small error type ([`StorageError`], [`FrameError`]);
//! [`Error`] gathers them, and [`Error::status`] is the only place that decides
//! which status a client sees. The message is the error's `Display`: it says
//! what went wrong in words a user can act on.

use hookv_plugin::pb::{status, CommandResponse};
use hookv_plugin::Command;

use crate::frame::FrameError;
use crate::storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's oneof is unset, or carries a tag this server does not know.
    #[error(
        "request names no command this server knows: set one of {}",
        known_commands()
    )]
    UnknownCommand,
    /// A required field of the command is missing.
    #[error("{command}: {what} is missing")]
    MissingField {
        /// The command, e.g. `hset`.
        command: &'static str,
        /// What is missing, e.g. `the value`.
        what: &'static str,
    },
    /// The key is not in the table (hget only; multi-key reads answer empty values).
    /// The words begin as the original course's did ("Not found for table:
    /// ..., key: ..."), which its tests match on.
    #[error("Not found for table: {table:?}, key: {key:?}")]
    NotFound {
        /// The table asked.
        table: String,
        /// The key asked.
        key: String,
    },
    /// The table holds no keys at all (hget only): said apart from a missing
    /// key, so a typo in the table's name does not read as a missing key.
    #[error("Not found for table: {table:?}, key: {key:?} (table {table:?} does not exist)")]
    NoTable {
        /// The table asked.
        table: String,
        /// The key asked.
        key: String,
    },
    /// An `auth` request reached a server with no auth hook configured.
    #[error("auth: this server has no auth hook configured, so no token is needed")]
    AuthNotEnabled,
    /// The frame's bytes are not a protobuf `CommandRequest`.
    #[error("malformed request: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The frame itself is unacceptable (too large, compressed, truncated).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The response would not fit in a frame the server may send.
    #[error(
        "response of {len} bytes exceeds max_frame_bytes ({max}); page through a big table \
         with hscan, or hmget fewer keys at a time"
    )]
    ResponseTooLarge {
        /// The encoded size of the response.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// One pair of an hscan page does not fit in any answer the server may
    /// send. The answer's `cursor` is its key, so the scan can go on past it.
    #[error(
        "hscan: the pair at key {} of table {table:?} makes an answer of {len} bytes, over \
         max_frame_bytes ({max}), so it cannot be sent; this answer's cursor skips it",
        preview(.key)
    )]
    PairTooLarge {
        /// The table scanned.
        table: String,
        /// The key of the pair.
        key: String,
        /// The encoded size of an answer carrying just that pair.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The storage backend failed: 500, or 503 when the Redis Cluster
    /// cannot answer now ([`StorageError::Cluster`]: a node down, a
    /// failover, a timeout; the client may retry).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl Error {
    /// The status a client sees for this error.
    pub fn status(&self) -> u32 {
        match self {
            Error::UnknownCommand
            | Error::MissingField { .. }
            | Error::AuthNotEnabled
            | Error::Decode(_) => status::BAD_REQUEST,
            Error::NotFound { .. } | Error::NoTable { .. } => status::NOT_FOUND,
            Error::Frame(e) => e.status(),
            Error::ResponseTooLarge { .. } | Error::PairTooLarge { .. } => status::TOO_LARGE,
            Error::Storage(StorageError::Cluster(_)) => status::UNAVAILABLE,
            Error::Storage(_) => status::INTERNAL,
        }
    }
}

impl From<Error> for CommandResponse {
    fn from(e: Error) -> Self {
        let mut res = CommandResponse::error(e.status(), e.to_string());
        if let Error::PairTooLarge { key, .. } = e {
            res.cursor = Some(key);
        }
        res
    }
}

/// Every command the catalogue knows, with its tag: `hget(1) hgetall(2) ...`.
fn known_commands() -> String {
    let named: Vec<String> = Command::ALL
        .iter()
        .map(|c| format!("{}({})", c.name(), c.tag()))
        .collect();
    named.join(" ")
}

/// `key` quoted for a message; a long key is cut (it may be nearly a frame
/// long, and the message must fit in one too).
fn preview(key: &str) -> String {
    const SHOWN: usize = 64;
    match key.char_indices().nth(SHOWN) {
        None => format!("{key:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &key[..cut], key.len()),
    }
}
