//! The accept loop: admit connections up to the limit, serve each in its own
//! task, and shut down gracefully.
//!
//! Connections come from [`Listeners`]: the `listen` socket, which speaks
//! TLS when `[server.tls]` is set, and optionally a second, plaintext one
//! (`plaintext_listen`). One loop accepts from both, under one connection
//! limit; a TLS handshake runs in the connection's own task (see
//! [`crate::connection`]), so a slow one never holds up the loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::ServerConfig;
use crate::connection::{self, Incoming, Limits, Shared};
use crate::hooks::HookCtx;
use crate::service::Service;
use crate::storage::Backend;
use crate::tls::ServerTls;

/// The sockets a server accepts connections on.
#[derive(Debug)]
pub struct Listeners {
    /// `[server] listen`.
    pub main: TcpListener,
    /// With `[server.tls]`: `main` speaks TLS with this config only.
    pub tls: Option<Arc<ServerTls>>,
    /// `[server.tls] plaintext_listen`: a second socket, without TLS.
    pub plaintext: Option<TcpListener>,
}

impl Listeners {
    /// One plaintext socket.
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            main: listener,
            tls: None,
            plaintext: None,
        }
    }

    /// The next connection from either socket, as the connection will
    /// take it (TLS handshake still to run, or not).
    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr, Option<Arc<ServerTls>>)> {
        let (accepted, tls) = match &self.plaintext {
            None => (self.main.accept().await, self.tls.as_ref()),
            Some(plaintext) => tokio::select! {
                accepted = self.main.accept() => (accepted, self.tls.as_ref()),
                accepted = plaintext.accept() => (accepted, None),
            },
        };
        let (stream, peer) = accepted?;
        Ok((stream, peer, tls.cloned()))
    }
}

/// Serves `listener` (plain TCP) until `shutdown` completes: [`serve`]
/// with one plaintext listener.
pub async fn run<S: Backend>(
    listener: TcpListener,
    service: Service<S>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::storage::StorageError> {
    serve(Listeners::plain(listener), service, config, shutdown).await
}

/// Serves `listeners` until `shutdown` completes, then stops accepting, lets
/// open connections finish what they already read (up to
/// `shutdown_grace_secs`), and flushes storage.
///
/// Only a storage flush failure at the end is an error; accept errors are
/// logged and retried with backoff, connection errors end that connection.
pub async fn serve<S: Backend>(
    listeners: Listeners,
    service: Service<S>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::storage::StorageError> {
    // A permit per connection, taken *before* accept: past the limit, new
    // clients wait in the kernel's listen backlog instead of being accepted
    // and starved.
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // Cancelling tells every connection to finish its batch and close.
    let stop = CancellationToken::new();
    // Lets shutdown wait for every connection task to end.
    let tasks = TaskTracker::new();
    let next_id = AtomicU64::new(1);
    let limits = Limits::new(config);
    // Server-wide limits: unauthenticated connections, unread answers.
    let shared = Arc::new(Shared::new(config));

    let accept_loop = async {
        let mut backoff = Duration::from_millis(5);
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return; // the semaphore is never closed
            };
            let (stream, peer, tls) = match listeners.accept().await {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(e) => {
                    // e.g. out of file descriptors: wait and try again, never exit.
                    error!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            // Without TCP_NODELAY, pipelined clients stall ~40 ms per batch
            // (Nagle meets delayed ACK).
            if let Err(e) = stream.set_nodelay(true) {
                warn!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let ctx = HookCtx::new(next_id.fetch_add(1, Ordering::Relaxed), peer);
            let service = service.clone();
            let stop = stop.clone();
            let shared = Arc::clone(&shared);
            let incoming = match tls {
                None => Incoming::Plain(stream),
                Some(tls) => Incoming::Tls(stream, tls),
            };
            tasks.spawn(async move {
                connection::serve(incoming, ctx, service, limits, shared, stop).await;
                drop(permit);
            });
        }
    };

    tokio::select! {
        () = accept_loop => {}
        () = shutdown => info!("shutting down: no new connections"),
    }
    drop(listeners);
    stop.cancel();
    tasks.close();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!(
            still_open = tasks.len(),
            "connections did not finish within shutdown_grace_secs; leaving them"
        );
    }
    service.flush()?;
    info!("storage flushed; bye");
    Ok(())
}
