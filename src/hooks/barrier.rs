//! [`WriteBarrier`]: what a connection awaits before it sends answers to
//! writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Makes the connection wait before it sends answers to writes: a
/// write-ahead log uses it so that no write is acknowledged before it is in
/// the log (group commit: every connection waiting on one flush).
pub trait WriteBarrier: Send + Sync + 'static {
    /// Completes when every write executed so far is as durable as the
    /// barrier promises; an error means it never will be, and the answers
    /// must not be sent.
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>>;
}

/// Two barriers that must both hold (the wal over sled with
/// `sync = "always"`), awaited together so their flushes overlap.
pub struct BothBarriers(pub Arc<dyn WriteBarrier>, pub Arc<dyn WriteBarrier>);

impl WriteBarrier for BothBarriers {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
        // Called now, so each fixes what it waits for before this returns.
        let (a, b) = (self.0.wait(), self.1.wait());
        Box::pin(async move { tokio::try_join!(a, b).map(|_| ()) })
    }
}

/// Writes could not be made durable; the connection closes without
/// acknowledging them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BarrierError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    /// A barrier that completes at once, with `Err` if it holds a reason.
    struct Fixed(Option<&'static str>);

    impl WriteBarrier for Fixed {
        fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + '_>> {
            let outcome = self.0.map_or(Ok(()), |r| Err(BarrierError(r.into())));
            Box::pin(async move { outcome })
        }
    }

    #[tokio::test]
    async fn both_barriers_hold_only_when_each_does() {
        let ok = || Arc::new(Fixed(None)) as Arc<dyn WriteBarrier>;
        let failing = || Arc::new(Fixed(Some("disk gone"))) as Arc<dyn WriteBarrier>;
        assert!(BothBarriers(ok(), ok()).wait().await.is_ok());
        for both in [BothBarriers(ok(), failing()), BothBarriers(failing(), ok())] {
            let err = both.wait().await.unwrap_err();
            assert_eq!(err.to_string(), "disk gone");
        }
    }
}
