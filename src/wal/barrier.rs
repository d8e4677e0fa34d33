//! The log's write barrier: a connection awaits it before it answers a
//! batch with a successful write, so no write is acknowledged before its
//! record is as durable as the policy promises (see the module docs of
//! `wal`, "Pieces").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::commit::Progress;
use super::options::Fsync;
use super::shared::Shared;
use super::writer::write_inline;
use crate::hooks::{BarrierError, WriteBarrier};

/// Completes when the records appended so far are as durable as the policy
/// promises.
pub(super) struct WalBarrier {
    shared: Arc<Shared>,
}

impl WalBarrier {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl WriteBarrier for WalBarrier {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
        let commit = &self.shared.commit;
        // Read now: every record this connection appended is at or below it.
        let target = commit.appended();
        let always = commit.policy == Fsync::Always;
        let done = move |p: &Progress| {
            if always {
                p.synced >= target
            } else {
                p.written >= target
            }
        };
        Box::pin(async move {
            let mut rx = commit.subscribe();
            if done(&rx.borrow_and_update()) {
                return Ok(());
            }
            if !always {
                // Let every other connection with a request ready in this
                // scheduler tick append first (the yield lets the scheduler
                // poll the sockets and run them), then write: one `write`
                // covers them all. (With `always` the writer is already on
                // its way: it woke at the first append.)
                tokio::task::yield_now().await;
                if !write_inline(&self.shared) {
                    commit.kick();
                }
            }
            let finished = rx
                .wait_for(|p| done(p) || commit.stop.settled().is_some())
                .await
                .map(|p| done(&p))
                .map_err(|_| BarrierError("the write-ahead log is gone".into()))?;
            match commit.stop.settled() {
                Some(stopped) if !finished => {
                    Err(BarrierError(format!("the write-ahead log {stopped}")))
                }
                _ => Ok(()),
            }
        })
    }
}
