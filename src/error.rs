//! Errors a request can end in, and the one mapping from error to status.
//!
//! Each layer has its own small error type ([`StorageError`], [`FrameError`]);
//! [`Error`] gathers them, and [`Error::status`] is the only place that decides
//! which status a client sees. The message is the error's `Display`: it says
//! what went wrong in words a user can act on.

use hookv_plugin::pb::{status, CommandResponse};

use crate::frame::FrameError;
use crate::storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's oneof is unset, or carries a tag this server does not know.
    #[error(
        "request names no command this server knows: set one of hget(1) hgetall(2) hmget(3) \
         hset(4) hmset(5) hdel(6) hmdel(7) hexist(8) hmexist(9) auth(13)"
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
    #[error("key {key:?} not found in table {table:?}")]
    NotFound {
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
        "response of {len} bytes exceeds max_frame_bytes ({max}); read the table in parts with hmget"
    )]
    ResponseTooLarge {
        /// The encoded size of the response.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The storage backend failed.
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
            Error::NotFound { .. } => status::NOT_FOUND,
            Error::Frame(e) => e.status(),
            Error::ResponseTooLarge { .. } => status::TOO_LARGE,
            Error::Storage(_) => status::INTERNAL,
        }
    }
}

impl From<Error> for CommandResponse {
    fn from(e: Error) -> Self {
        CommandResponse::error(e.status(), e.to_string())
    }
}
