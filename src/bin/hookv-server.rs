//! `hookv-server [--config FILE] [--listen ADDR] [--log FILTER]`
//!
//! Reads the config, sets up logging and the runtime, and hands the rest to
//! the library ([`hookv::bootstrap::serve`]): it opens storage, listens,
//! and serves until SIGINT or SIGTERM; then finishes in-flight requests,
//! flushes storage and exits 0. Any start-up problem is one line on stderr
//! and exit status 1.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hookv::config::Config;
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
    // As read from the file: `--listen` overrides it without making a
    // reload of the same file look like a change.
    let config = Config::load(&args.config)?;
    init_logging(args.log.as_deref(), &config.log.filter)?;
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
    runtime.block_on(hookv::bootstrap::serve(&config, args.listen))?;
    Ok(())
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
