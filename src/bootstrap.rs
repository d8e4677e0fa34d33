//! Building the server a `config.toml` describes: what `hookv-server` runs
//! once it has parsed its arguments, and what tests start in process.
//!
//! ```text
//! config ─ storage (memory | sled) ─ WalStore over it (a wal entry) ─ service ─ listener ─ run
//!                                                                       ├ hook chain ([[hooks]])
//!                                                                       └ write barrier: the log's, sled's, or both
//! ```
//!
//! In that order, because each wraps or needs the one before: the log
//! replays into the storage before anything serves, and the wal entry of
//! the chain is the log opened then. A write is answered once every
//! barrier holds: the log's (its records written or fsync'd) and, with
//! `[storage] sync = "always"`, sled's (flushed), awaited together.
//!
//! [`Server::from_config`] builds all of it and binds the listener;
//! [`Server::run`] serves until a future completes, then drains the
//! connections, flushes storage, shuts the hooks down and closes the log.
//! [`serve`] is the binary's whole life: the same, stopped by SIGINT or
//! SIGTERM, with SIGHUP reloading the hook chain (`crate::reload`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::info;

use crate::config::{Backend, Config, ServerConfig};
use crate::hooks::build::{rebuild, wal_entry, BuildEnv, HookError};
use crate::hooks::{BothBarriers, WriteBarrier};
use crate::metrics::MetricsError;
use crate::reload::Reloader;
use crate::service::{Service, ServiceInner};
use crate::storage::{MemTable, SledDb, Storage, StorageError};
use crate::wal::Wal;

/// Why the server could not start, or failed when it stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The sled database cannot be opened.
    #[error("storage.path {}: cannot open sled database: {source}", path.display())]
    Sled {
        /// `[storage] path`.
        path: PathBuf,
        /// sled's error.
        source: StorageError,
    },
    /// A hook cannot be built, or the write-ahead log cannot be opened.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The listen address cannot be bound.
    #[error("server.listen {addr}: cannot listen: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configured backend is not served by this build yet.
    #[error("storage.backend = {0:?}: not served yet (the request path is not async yet)")]
    NotServed(&'static str),
    /// The metrics endpoint cannot start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The SIGHUP handler cannot be installed.
    #[error("cannot install the SIGHUP handler: {0}")]
    Hangup(std::io::Error),
    /// The SIGINT and SIGTERM handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// Storage (or the log over it) could not be flushed at the end.
    #[error(transparent)]
    Flush(#[from] StorageError),
}

/// A server built from a config and listening, not yet serving.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    service: Service<Arc<dyn Storage>>,
    /// Swaps in a new hook chain when the config file changes.
    reloader: Reloader,
    /// The log opened at start, closed once the server has stopped.
    wal: Option<Arc<Wal>>,
    /// Limits and timeouts of the accept loop and the connections.
    limits: ServerConfig,
    backend: Backend,
    /// `[metrics] listen`, bound: served while the server runs.
    metrics: Option<TcpListener>,
}

/// The parts of a server before it listens.
struct Built {
    service: Service<Arc<dyn Storage>>,
    reloader: Reloader,
    wal: Option<Arc<Wal>>,
}

impl Server {
    /// Builds the server `config` describes (storage, the write-ahead log
    /// over it, the hook chain, the write barriers) and binds
    /// `[server] listen` (port 0: a free port; see [`Server::local_addr`]).
    /// Nothing is served until [`Server::run`].
    pub async fn from_config(config: &Config) -> Result<Self, ServerError> {
        let built = build(config)?;
        Self::listen(config, built, config.server.listen).await
    }

    async fn listen(config: &Config, built: Built, addr: SocketAddr) -> Result<Self, ServerError> {
        let listen_error = |source| ServerError::Listen { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let metrics = match config.metrics.listen {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            addr,
            service: built.service,
            reloader: built.reloader,
            wal: built.wal,
            limits: config.server.clone(),
            backend: config.storage.backend,
            metrics,
        })
    }

    /// The address `/metrics` is served on, if `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service connections are handed to (its storage, its hooks).
    pub fn service(&self) -> &Service<Arc<dyn Storage>> {
        &self.service
    }

    /// The write-ahead log, if the config has a wal entry.
    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.as_ref()
    }

    /// Serves until `shutdown` completes. Then it stops accepting, lets
    /// open connections finish what they sent (up to
    /// `shutdown_grace_secs`), flushes storage, shuts the hooks down (the
    /// audit queue drains) and closes the log; a failed flush is the error,
    /// once all of that is done. The hook chain is not reloaded here
    /// ([`serve`] reloads it on SIGHUP).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        self.serve(shutdown, None).await
    }

    /// [`Server::run`], reloading the hook chain on every signal of
    /// `hangups` (if any) meanwhile.
    async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        hangups: Option<Signal>,
    ) -> Result<(), ServerError> {
        let Self {
            listener,
            addr,
            service,
            reloader,
            wal,
            limits,
            backend,
            metrics,
        } = self;
        info!(%addr, ?backend, hooks = ?service.hooks(), "hookv listening");
        let reloads =
            hangups.map(|hangups| tokio::spawn(reloader.on_hangups(hangups, service.clone())));
        let metrics = metrics
            .map(|listener| tokio::spawn(crate::metrics::serve(listener, std::future::pending())));
        let served = crate::server::run(listener, service.clone(), &limits, shutdown).await;
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        // Flush what hooks hold (audit queue, logs) even if storage failed to flush.
        service.hooks().shutdown();
        if let Some(wal) = &wal {
            wal.close();
        }
        served?;
        Ok(())
    }
}

/// What `hookv-server` does once it has read `config` (from its file) and
/// its arguments: builds the server, listens on `listen` (or `[server]
/// listen`), and serves until SIGINT or SIGTERM, reloading the hook chain
/// on SIGHUP.
pub async fn serve(config: &Config, listen: Option<SocketAddr>) -> Result<(), ServerError> {
    let built = build(config)?;
    // Installed before listening, so no signal meets its default action.
    let hangups = signal(SignalKind::hangup()).map_err(ServerError::Hangup)?;
    let shutdown = shutdown_signal().map_err(ServerError::Signals)?;
    let server = Server::listen(config, built, listen.unwrap_or(config.server.listen)).await?;
    server.serve(shutdown, Some(hangups)).await
}

/// Storage, the log over it, the hook chain and the barriers of `config`.
fn build(config: &Config) -> Result<Built, ServerError> {
    crate::metrics::mark_start();
    // Before any hook is built, so that what hooks register goes to it.
    if config.metrics.listen.is_some() {
        crate::metrics::install()?;
    }
    // sled with `sync = "always"` answers writes only once flushed: its barrier.
    let (store, sled_barrier): (Arc<dyn Storage>, Option<Arc<dyn WriteBarrier>>) =
        match config.storage.backend {
            Backend::Memory => (Arc::new(MemTable::new()), None),
            Backend::Sled => {
                let db = SledDb::open_with(&config.storage.path, config.storage.sync).map_err(
                    |source| ServerError::Sled {
                        path: config.storage.path.clone(),
                        source,
                    },
                )?;
                let barrier = db.barrier().map(|b| b as Arc<dyn WriteBarrier>);
                (Arc::new(db), barrier)
            }
            // Served once the request path is async (storage::redis_cluster).
            Backend::RedisCluster => return Err(ServerError::NotServed("redis-cluster")),
        };
    // The log wraps the storage, so it opens (and replays) before the
    // service and the hook chain are built.
    let (wal, store) = match wal_entry(config)? {
        Some((entry, options)) => {
            let (wal, store) = Wal::open(options, &config.dir, store)
                .map_err(|e| HookError::new(&config.path, entry, e))?;
            (Some(wal), Arc::new(store) as Arc<dyn Storage>)
        }
        None => (None, store),
    };
    let env = BuildEnv {
        config,
        wal: wal.as_ref(),
    };
    let built = rebuild(&env, &[])?.built;
    let mut inner = ServiceInner::new(store).hooks(&built.chain);
    // Both the log and sled must hold before a write is answered.
    match (wal.as_ref().map(|wal| wal.barrier()), sled_barrier) {
        (Some(wal), Some(sled)) => inner = inner.write_barrier(Arc::new(BothBarriers(wal, sled))),
        (Some(one), None) | (None, Some(one)) => inner = inner.write_barrier(one),
        (None, None) => {}
    }
    let service: Service<Arc<dyn Storage>> = inner.into();
    let reloader = Reloader::new(config.clone(), built, wal.clone());
    Ok(Built {
        service,
        reloader,
        wal,
    })
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives
/// as soon as the server listens is not lost to the default action), and
/// returns a future that completes on either.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT received"),
            _ = terminate.recv() => info!("SIGTERM received"),
        }
    })
}
