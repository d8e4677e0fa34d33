//! `hookv-server [--config FILE] [--listen ADDR] [--log FILTER]`
//!
//! Reads the config, opens storage, listens, and serves until SIGINT or
//! SIGTERM; then finishes in-flight requests, flushes storage and exits 0.
//! Any start-up problem is one line on stderr and exit status 1.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hookv::config::{Backend, Config};
use std::sync::Arc;

use hookv::hooks::build::{build_chain, BuildEnv, HookError};
use hookv::hooks::wal::{self, Wal};
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
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    init_logging(args.log.as_deref(), &config.log.filter)?;

    let store: Arc<dyn Storage> = match config.storage.backend {
        Backend::Memory => Arc::new(MemTable::new()),
        Backend::Sled => Arc::new(SledDb::open(&config.storage.path).map_err(|e| {
            format!(
                "storage.path {}: cannot open sled database: {e}",
                config.storage.path.display()
            )
        })?),
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
    let chain = build_chain(&BuildEnv {
        config: &config,
        wal: wal.as_ref(),
    })?;
    let mut inner = ServiceInner::new(store).hooks(&chain);
    if let Some(wal) = &wal {
        inner = inner.write_barrier(wal.barrier());
    }
    let service: Service<Arc<dyn Storage>> = inner.into();

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
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| format!("server.listen {}: cannot listen: {e}", config.server.listen))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            backend = ?config.storage.backend,
            hooks = ?service.hooks(),
            "hookv listening"
        );
        let served =
            hookv::server::run(listener, service.clone(), &config.server, shutdown_signal()).await;
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

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
