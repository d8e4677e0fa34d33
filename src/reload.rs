//! Reloading the hook chain from `config.toml` while serving.
//!
//! On SIGHUP the server re-reads its config file, builds a complete new
//! chain (initialising every new hook, loading new plugins), and swaps it in
//! atomically ([`Service::replace_hooks`]: an `ArcSwap`, so the request path
//! takes no lock). A batch of requests already running finishes on the chain
//! it loaded; the next batch uses the new one.
//!
//! - An entry whose table is identical to a running hook's keeps that hook
//!   instance, with its state (audit queue, rate-limit buckets, plugin state).
//! - Hooks that left the chain are shut down once no request still runs on
//!   the old chain (an audit hook drains its queue and fsyncs then: no record
//!   is lost; none is written twice, since each request is recorded by the
//!   one chain it ran on).
//! - A config that does not parse, or a hook that fails to build, changes
//!   nothing: the running chain stays, and the error (file, line, key,
//!   reason) is logged and returned.
//! - `[server]`, `[storage]` and `[log]` take effect only on restart; a reload
//!   that changes them says so in the log.
//! - The `wal` hook wraps the storage, so it is fixed at start: the log
//!   opened then runs until the server stops. A reload is compared with that
//!   log, not with the config the previous reload installed: a wal entry
//!   whose options equal the open log's is that log's hook (so reloading the
//!   config the server started with always works, even after a reload that
//!   removed the entry); one that changes its options, or a config without
//!   one, keeps the open log exactly as it is (every write is still logged,
//!   with the old options) and says that a restart is needed; one that adds a
//!   wal hook to a server started without a log is refused.
//! - Plugin libraries that leave the chain stay loaded (unloading a Rust
//!   `cdylib` is unsound in practice). A plugin entry whose options change
//!   gets a new instance from the library already loaded; a file with new
//!   bytes at the same path is a new build, loaded anew, so it runs. A
//!   process loads at most `plugin::MAX_BUILDS` builds: past that, a reload
//!   that needs another is refused until a restart (see `crate::plugin`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;

use crate::config::{Config, ConfigError};
use crate::hooks::build::{rebuild, wal_entry, BuildEnv, BuiltChain, Changes, HookError, Rebuilt};
use crate::hooks::{Hook, HookChain};
use crate::service::Service;
use crate::storage::Storage;
use crate::wal::{Wal, WalOptions};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A hook cannot be built.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The new config adds a wal hook to a server started without one.
    #[error(
        "a wal hook cannot be added by a reload: the log must replay into storage before \
         serving; restart the server to turn it on"
    )]
    WalAdded,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Hooks added, replaced, removed and kept, by label.
    pub changes: Changes,
    /// Sections that differ from the running config and need a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Remembers the running config and chain between reloads.
pub struct Reloader {
    path: PathBuf,
    running: Config,
    built: BuiltChain,
    /// The log opened at start; it wraps the storage, so it stays as it is.
    wal: Option<Arc<Wal>>,
    /// The options that log was opened with: what a wal entry is compared
    /// with. `None` exactly when there is no log.
    opened: Option<WalOptions>,
}

impl Reloader {
    /// `config` is the running config as loaded from its `path` (without
    /// command-line overrides, so that reloading the same file changes
    /// nothing), `built` the chain the service runs, `wal` the log opened
    /// at start (from this config's wal entry).
    pub fn new(config: Config, built: BuiltChain, wal: Option<Arc<Wal>>) -> Self {
        let opened = wal.as_ref().map(|wal| wal.options().clone());
        Self {
            path: config.path.clone(),
            running: config,
            built,
            wal,
            opened,
        }
    }

    /// Re-reads the config file and swaps the new chain into `service`.
    pub fn reload<S: Storage>(&mut self, service: &Service<S>) -> Result<Reloaded, ReloadError> {
        let mut config = Config::load(&self.path)?;
        // Restart-only sections keep their running values; say which differ.
        let mut needs_restart = Vec::new();
        if config.server != self.running.server {
            needs_restart.push("server");
        }
        if config.storage != self.running.storage {
            needs_restart.push("storage");
        }
        if config.log != self.running.log {
            needs_restart.push("log");
        }
        if config.metrics != self.running.metrics {
            needs_restart.push("metrics");
        }
        // The write-ahead log wraps the storage: it cannot be added, removed
        // or re-optioned while serving. The open log goes on as it is, but a
        // wal entry must still be valid, so that the next restart works.
        let wanted = wal_entry(&config)?.map(|(_, options)| options);
        if self.wal.is_none() && wanted.is_some() {
            return Err(ReloadError::WalAdded);
        }
        if wanted != self.opened {
            needs_restart.push("wal hook");
        }
        config.server = self.running.server.clone();
        config.storage = self.running.storage.clone();
        config.log = self.running.log.clone();
        config.metrics = self.running.metrics.clone();

        let Rebuilt {
            built,
            changes,
            retired,
        } = rebuild(
            &BuildEnv {
                config: &config,
                wal: self.wal.as_ref(),
            },
            &self.built.parts,
        )?;
        let old = service.replace_hooks(built.chain.clone());
        retire(old, retired);
        self.built = built;
        self.running = config;
        Ok(Reloaded {
            changes,
            needs_restart,
        })
    }

    /// Reloads on every SIGHUP (`hangups`) until the task is dropped,
    /// logging what each reload did. Building hooks may open files and load
    /// libraries, so each reload runs off the threads that serve
    /// connections.
    pub async fn on_hangups<S: Storage>(mut self, mut hangups: Signal, service: Service<S>) {
        while hangups.recv().await.is_some() {
            let svc = service.clone();
            let (back, outcome) = match tokio::task::spawn_blocking(move || {
                let outcome = self.reload(&svc);
                (self, outcome)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "reload task failed; hook reload is off");
                    return;
                }
            };
            self = back;
            crate::metrics::reloaded(outcome.is_ok());
            match outcome {
                Ok(done) => {
                    tracing::info!(
                        added = ?done.changes.added,
                        replaced = ?done.changes.replaced,
                        removed = ?done.changes.removed,
                        kept = ?done.changes.kept,
                        hooks = ?service.hooks(),
                        "hook chain reloaded"
                    );
                    if !done.needs_restart.is_empty() {
                        tracing::warn!(
                            sections = ?done.needs_restart,
                            "these config sections changed but take effect only on restart"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; the running hook chain stays")
                }
            }
        }
    }
}

/// Shuts down `retired` hooks once no chain that a request may still run on
/// holds them, off the async runtime (a shutdown may flush and fsync).
fn retire(old: Arc<HookChain>, retired: Vec<Arc<dyn Hook>>) {
    if retired.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("hookv-retire".into())
        .spawn(move || {
            // Requests may still run on this chain or on older ones that
            // hold the hook too: wait until ours is the only reference left.
            // Connections hold a chain for one batch, so this is short.
            drop(old);
            while retired.iter().any(|hook| Arc::strong_count(hook) > 1) {
                std::thread::sleep(Duration::from_millis(5));
            }
            for hook in retired {
                hook.shutdown();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread to retire hooks; they stop at exit");
    }
}
