//! `hookv-server [--config FILE] [--listen ADDR] [--log FILTER]`
//!
//! Reads the config, opens storage, listens, and serves until SIGINT or
//! SIGTERM; then finishes in-flight requests, flushes storage and exits 0.
//! Any start-up problem is one line on stderr and exit status 1.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use hookv::config::{Backend, Config};

use hookv::hooks::build::{rebuild, BuildEnv, HookError};
use hookv::hooks::wal::{self, Wal};
use hookv::hooks::{BothBarriers, WriteBarrier};
use hookv::reload::Reloader;
use hookv::{MemTable, Service, ServiceInner, SledDb, Storage};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// mimalloc: measurably faster than the system allocator for the many small,
/// short-lived allocations of decoding requests (see README, Benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "hookv: a key-value server extended by hooks")]
struct Args {
    /// The config file.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Listen here instead of `[server] listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log filter instead of `[log] filter` and RUST_LOG (e.g. `debug`).
    #[arg(long)]
    log: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookv-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::load(&args.config)?;
    // The reloader compares later reads of the file with the file as it was,
    // not with the command line's overrides.
    let from_file = config.clone();
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    init_logging(args.log.as_deref(), &config.log.filter)?;

    // sled with `sync = "always"` answers writes only once flushed: its barrier.
    let (store, sled_barrier): (Arc<dyn Storage>, Option<Arc<dyn WriteBarrier>>) =
        match config.storage.backend {
            Backend::Memory => (Arc::new(MemTable::new()), None),
            Backend::Sled => {
                let db =
                    SledDb::open_with(&config.storage.path, config.storage.sync).map_err(|e| {
                        format!(
                            "storage.path {}: cannot open sled database: {e}",
                            config.storage.path.display()
                        )
                    })?;
                let barrier = db.barrier().map(|b| b as Arc<dyn WriteBarrier>);
                (Arc::new(db), barrier)
            }
            // Served once the request path is async (storage::redis_cluster).
            Backend::RedisCluster => Err("storage.backend = \"redis-cluster\": not served yet")?,
        };
    // The WAL wraps the storage, so it opens (and replays) before the
    // service and the hook chain are built.
    let (wal, store) = match wal::find_in_config(&config)? {
        Some((entry, options)) => {
            let (wal, store) = Wal::open(options, &config.dir, store)
                .map_err(|e| HookError::new(&config.path, entry, e.to_string()))?;
            (Some(wal), store)
        }
        None => (None, store),
    };
    let env = BuildEnv {
        config: &config,
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
    let reloader = Reloader::new(from_file, built, wal.clone());

    let runtime = match config.server.worker_threads {
        // One thread: the current-thread scheduler skips work stealing.
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    }
    .enable_all()
    .build()?;
    runtime.block_on(async {
        // Installed before listening, so no signal meets its default action.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
        let signals =
            shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| format!("server.listen {}: cannot listen: {e}", config.server.listen))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            backend = ?config.storage.backend,
            hooks = ?service.hooks(),
            "hookv listening"
        );
        let reloads = tokio::spawn(reload_on_sighup(hangups, reloader, service.clone()));
        let served = hookv::server::run(listener, service.clone(), &config.server, signals).await;
        reloads.abort();
        // Flush what hooks hold (audit queue, logs) even if storage failed to flush.
        service.hooks().shutdown();
        served?;
        Ok(())
    })
}

fn init_logging(flag: Option<&str>, from_config: &str) -> Result<(), String> {
    let filter = match (flag, std::env::var("RUST_LOG").ok()) {
        (Some(f), _) => EnvFilter::try_new(f).map_err(|e| format!("--log {f:?}: {e}"))?,
        (None, Some(env)) => {
            EnvFilter::try_new(&env).map_err(|e| format!("RUST_LOG {env:?}: {e}"))?
        }
        (None, None) => EnvFilter::try_new(from_config)
            .map_err(|e| format!("log.filter {from_config:?}: {e}"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Reloads the hook chain from the config file on every SIGHUP.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    mut reloader: Reloader,
    service: Service<Arc<dyn Storage>>,
) {
    while hangups.recv().await.is_some() {
        // Building hooks may open files and load libraries: keep it off the
        // threads that serve connections.
        let svc = service.clone();
        let (back, outcome) = match tokio::task::spawn_blocking(move || {
            let outcome = reloader.reload(&svc);
            (reloader, outcome)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "reload task failed; hook reload is off");
                return;
            }
        };
        reloader = back;
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
            Err(e) => tracing::error!(error = %e, "reload failed; the running hook chain stays"),
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives
/// as soon as the server listens is not lost to the default action), and
/// returns a future that completes on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
