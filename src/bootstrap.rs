//! Building the server a `config.toml` describes: what `hookv-server` runs
//! once it has parsed its arguments, and what tests start in process.
//!
//! ```text
//! config ─ [server.tls] files ─ storage (memory | sled) ─ WalStore over it (a wal entry) ─ service ─ listeners ─ run
//!        │                                                                                   ├ hook chain ([[hooks]])
//!        │                                                                                   └ write barrier: the log's, sled's, or both
//!        └ storage (redis-cluster): connect, read its layout ─────────────────────────────────── service (its own hook chain)
//! ```
//!
//! The certificate files are read and checked first, so a bad one stops
//! the start before the log replays. Then in that order, because each
//! wraps or needs the one before: the log
//! replays into the storage before anything serves, and the wal entry of
//! the chain is the log opened then. The Redis Cluster takes no log (a
//! wal entry with it is refused: the cluster keeps the data, replicated,
//! for every hookv server, and one server's local log would diverge from
//! it) and no barrier (a write is answered once the cluster has it); its
//! service is a `Service<RedisCluster>`, whose connections send each batch
//! to the cluster as one awaited call (see `crate::service`). A write is answered once every
//! barrier holds: the log's (its records written or fsync'd) and, with
//! `[storage] sync = "always"`, sled's (flushed), awaited together.
//!
//! [`Server::from_config`] builds all of it and binds the listener;
//! [`Server::run`] serves until a future completes, then drains the
//! connections, flushes storage, shuts the hooks down and closes the log.
//! [`serve`] is the binary's whole life: the same, stopped by SIGINT or
//! SIGTERM, with SIGHUP reloading the hook chain and the certificate files
//! (`crate::reload`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

use crate::config::{Backend, Config, ServerConfig};
use crate::hooks::build::{rebuild, wal_entry, BuildEnv, HookError};
use crate::hooks::{BothBarriers, WriteBarrier};
use crate::metrics::MetricsError;
use crate::reload::Reloader;
use crate::server::Listeners;
use crate::service::{Service, ServiceInner};
use crate::storage::redis_cluster::{ClusterError, ClusterOptions};
use crate::storage::{self, MemTable, RedisCluster, SledDb, Storage, StorageError};
use crate::tls::{ServerTls, TlsError};
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
    #[error("{key} {addr}: cannot listen: {source}")]
    Listen {
        /// `server.listen` or `server.tls.plaintext_listen`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A `[server.tls]` file cannot be used (the message names it).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Redis Cluster cannot be reached at start (or its password
    /// variable is gone): the error names the seed nodes tried.
    #[error("{}: storage.nodes: {source}", file.display())]
    Cluster {
        /// The config file.
        file: PathBuf,
        /// What went wrong, naming the nodes tried.
        source: ClusterError,
    },
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
    listeners: Listeners,
    addr: SocketAddr,
    plaintext_addr: Option<SocketAddr>,
    service: Served,
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

/// The service of a server, over the storage its config names.
#[derive(Clone)]
enum Served {
    /// Memory or sled (and the log over it): called inline.
    Local(Service<Arc<dyn Storage>>),
    /// The Redis Cluster: called once per batch.
    Cluster(Service<RedisCluster>),
}

impl Served {
    fn hooks(&self) -> Arc<crate::hooks::HookChain> {
        match self {
            Served::Local(service) => service.hooks(),
            Served::Cluster(service) => service.hooks(),
        }
    }
}

/// The parts of a server before it listens.
struct Built {
    service: Served,
    reloader: Reloader,
    wal: Option<Arc<Wal>>,
    /// `[server.tls]`, loaded; the reloader holds it too.
    tls: Option<Arc<ServerTls>>,
}

impl Server {
    /// Builds the server `config` describes (its TLS certificate, storage,
    /// the write-ahead log over it, the hook chain, the write barriers) and
    /// binds `[server] listen` (port 0: a free port; see
    /// [`Server::local_addr`]) and `plaintext_listen`, if set. Nothing is
    /// served until [`Server::run`].
    pub async fn from_config(config: &Config) -> Result<Self, ServerError> {
        let built = build(config).await?;
        Self::listen(config, built, config.server.listen).await
    }

    async fn listen(config: &Config, built: Built, addr: SocketAddr) -> Result<Self, ServerError> {
        let (main, addr) = bind("server.listen", addr).await?;
        let plaintext = match config.server.tls.as_ref().and_then(|t| t.plaintext_listen) {
            Some(addr) => Some(bind("server.tls.plaintext_listen", addr).await?),
            None => None,
        };
        let plaintext_addr = plaintext.as_ref().map(|(_, addr)| *addr);
        let metrics = match config.metrics.listen {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listeners: Listeners {
                main,
                tls: built.tls,
                plaintext: plaintext.map(|(listener, _)| listener),
            },
            addr,
            plaintext_addr,
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

    /// The address the server listens on (`[server] listen`: TLS when
    /// `[server.tls]` is set).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the plaintext listener (`plaintext_listen`), if any.
    pub fn plaintext_addr(&self) -> Option<SocketAddr> {
        self.plaintext_addr
    }

    /// The service connections are handed to (its storage, its hooks), for
    /// memory and sled; `None` for the Redis Cluster (see
    /// [`Server::cluster_service`]).
    pub fn service(&self) -> Option<&Service<Arc<dyn Storage>>> {
        match &self.service {
            Served::Local(service) => Some(service),
            Served::Cluster(_) => None,
        }
    }

    /// The service of a server on the Redis Cluster, if it is one.
    pub fn cluster_service(&self) -> Option<&Service<RedisCluster>> {
        match &self.service {
            Served::Cluster(service) => Some(service),
            Served::Local(_) => None,
        }
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
            listeners,
            addr,
            plaintext_addr,
            service,
            reloader,
            wal,
            limits,
            backend,
            metrics,
        } = self;
        let tls = listeners.tls.as_ref().map(|tls| tls.info());
        info!(
            %addr,
            tls = tls.as_ref().map(|t| t.subject.as_str()),
            client_certificates = tls.as_ref().map(|t| t.client_auth),
            expires = tls.as_ref().map(|t| humantime::format_rfc3339_seconds(t.not_after).to_string()),
            plaintext = plaintext_addr.map(|a| a.to_string()),
            ?backend,
            hooks = ?service.hooks(),
            "hookv listening"
        );
        if let Some(user) = ungrantable_cert_user(reloader.config()) {
            warn!(
                user,
                "an auth user has a cert_subject, but no listener asks for client certificates \
                 ([server.tls] client_ca is not set): only tokens can log in"
            );
        }
        let metrics = metrics
            .map(|listener| tokio::spawn(crate::metrics::serve(listener, std::future::pending())));
        let served = match service {
            Served::Local(service) => {
                serve_with(listeners, service, reloader, &limits, shutdown, hangups).await
            }
            Served::Cluster(service) => {
                serve_with(listeners, service, reloader, &limits, shutdown, hangups).await
            }
        };
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        if let Some(wal) = &wal {
            wal.close();
        }
        served?;
        Ok(())
    }
}

/// Serves `service` until `shutdown`, reloading its hook chain on every
/// signal of `hangups` (if any); then shuts the hooks down.
async fn serve_with<S: storage::Backend>(
    listeners: Listeners,
    service: Service<S>,
    reloader: Reloader,
    limits: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    hangups: Option<Signal>,
) -> Result<(), StorageError> {
    let reloads =
        hangups.map(|hangups| tokio::spawn(reloader.on_hangups(hangups, service.clone())));
    let served = crate::server::serve(listeners, service.clone(), limits, shutdown).await;
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    // Flush what hooks hold (audit queue, logs) even if storage failed to flush.
    service.hooks().shutdown();
    served
}

/// What `hookv-server` does once it has read `config` (from its file) and
/// its arguments: builds the server, listens on `listen` (or `[server]
/// listen`), and serves until SIGINT or SIGTERM, reloading the hook chain
/// on SIGHUP.
pub async fn serve(config: &Config, listen: Option<SocketAddr>) -> Result<(), ServerError> {
    let built = build(config).await?;
    // Installed before listening, so no signal meets its default action.
    let hangups = signal(SignalKind::hangup()).map_err(ServerError::Hangup)?;
    let shutdown = shutdown_signal().map_err(ServerError::Signals)?;
    let server = Server::listen(config, built, listen.unwrap_or(config.server.listen)).await?;
    server.serve(shutdown, Some(hangups)).await
}

/// The name of an auth user with a `cert_subject` in `config`, if no
/// listener asks for client certificates (no `[server.tls] client_ca`).
fn ungrantable_cert_user(config: &Config) -> Option<String> {
    if config
        .server
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca.is_some())
    {
        return None;
    }
    let users = config
        .hooks
        .iter()
        .filter(|entry| entry.kind() == Some("auth"))
        .filter_map(|entry| entry.table.get("users")?.as_array())
        .flatten()
        .filter_map(toml::Value::as_table);
    users
        .filter(|user| user.contains_key("cert_subject"))
        .find_map(|user| Some(user.get("name")?.as_str()?.to_owned()))
}

/// Binds `addr` (`key` names it in errors); the address bound.
async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listen_error = |source| ServerError::Listen { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    Ok((listener, addr))
}

/// The TLS certificate, storage, the log over it, the hook chain and the
/// barriers of `config`.
async fn build(config: &Config) -> Result<Built, ServerError> {
    crate::metrics::mark_start();
    // Before any hook is built, so that what hooks register goes to it.
    if config.metrics.listen.is_some() {
        crate::metrics::install()?;
    }
    let tls = match &config.server.tls {
        Some(settings) => Some(Arc::new(ServerTls::load(settings)?)),
        None => None,
    };
    // Checked next: a mistake in the wal entry (or one with the cluster)
    // is found before any storage opens.
    let wal_entry = wal_entry(config)?;
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
            Backend::RedisCluster => return build_cluster(config, tls).await,
        };
    // The log wraps the storage, so it opens (and replays) before the
    // service and the hook chain are built.
    let (wal, store) = match wal_entry {
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
    let reloader = Reloader::new(config.clone(), built, wal.clone(), tls.clone());
    Ok(Built {
        service: Served::Local(service),
        reloader,
        wal,
        tls,
    })
}

/// The Redis Cluster of `config` (connected, its layout read, within
/// `timeout_ms`) and the hook chain over it.
async fn build_cluster(config: &Config, tls: Option<Arc<ServerTls>>) -> Result<Built, ServerError> {
    let failed = |source| ServerError::Cluster {
        file: config.path.clone(),
        source,
    };
    let options = ClusterOptions::from_config(&config.storage).map_err(failed)?;
    let cluster = RedisCluster::connect(options).await.map_err(failed)?;
    let env = BuildEnv { config, wal: None };
    let built = rebuild(&env, &[])?.built;
    let service: Service<RedisCluster> = ServiceInner::new(cluster).hooks(&built.chain).into();
    let reloader = Reloader::new(config.clone(), built, None, tls.clone());
    Ok(Built {
        service: Served::Cluster(service),
        reloader,
        wal: None,
        tls,
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
