//! `[[hooks]] kind = "wal"`: the write-ahead log's place in the hook chain.
//!
//! The log itself is a storage layer ([`crate::wal`]): it wraps the
//! storage and is opened, and replayed, before the service and its chain
//! are built. This hook only refuses writes on `on_received` once the log
//! has stopped (it takes raw requests: an `hget` or `hset` need not be
//! decoded for it, see [`crate::hooks::RawRequest`]), before they reach storage: 500 naming the cause once it
//! failed, 503 once it is closed. Its `shutdown` flushes and fsyncs the
//! log. Its options are the log's ([`crate::wal::WalOptions`]).

use std::ops::ControlFlow;
use std::sync::Arc;

use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use tracing::error;

use super::{Events, Flow, Hook, HookCtx, RawRequest};
use crate::wal::{Stopped, Wal};

/// The hook of an `kind = "wal"` entry: refuses writes once the log has
/// stopped.
pub struct WalHook {
    wal: Arc<Wal>,
}

/// The wal entry cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum WalHookError {
    /// No log was opened at start for the entry to stand for.
    #[error("the write-ahead log was not opened before the hook chain was built (Wal::open)")]
    NotOpened,
}

impl WalHook {
    /// The hook of `wal`, the log opened at start (it wraps the storage);
    /// `None` when no log was opened.
    pub fn new(wal: Option<&Arc<Wal>>) -> Result<Self, WalHookError> {
        let wal = wal.ok_or(WalHookError::NotOpened)?;
        Ok(Self {
            wal: Arc::clone(wal),
        })
    }
}

impl Hook for WalHook {
    fn name(&self) -> &str {
        "wal"
    }

    fn events(&self) -> Events {
        Events {
            received: true,
            ..Events::NONE
        }
    }

    fn on_received(&self, _ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        self.admit(req.is_write())
    }

    /// It needs to know only whether the request writes.
    fn reads_raw(&self) -> bool {
        true
    }

    fn on_received_raw(&self, _ctx: &mut HookCtx, req: &RawRequest<'_>) -> Flow {
        self.admit(req.is_write())
    }

    /// Flushes and fsyncs; the log stays open (a reload may keep it), and
    /// closes when the server stops.
    fn shutdown(&self) {
        if let Err(e) = self.wal.sync() {
            error!(error = %e, "write-ahead log: cannot flush on shutdown");
        }
    }
}

impl WalHook {
    /// A read goes on; a write goes on while the log runs.
    fn admit(&self, write: bool) -> Flow {
        if !write {
            return ControlFlow::Continue(());
        }
        match self.wal.stopped() {
            None => ControlFlow::Continue(()),
            Some(Stopped::Closed) => ControlFlow::Break(CommandResponse::error(
                status::UNAVAILABLE,
                "write refused: the write-ahead log is closed (server shutting down)",
            )),
            Some(Stopped::Failed(reason)) => ControlFlow::Break(CommandResponse::error(
                status::INTERNAL,
                format!(
                    "write refused: the write-ahead log failed ({reason}); reads still work, \
                     writes need a server restart once the cause is fixed"
                ),
            )),
        }
    }
}
