//! Shared test helpers: a real server on 127.0.0.1:0, bounded waits.
#![allow(dead_code)]

pub mod certs;
pub mod plugins;
pub mod scrape;
pub mod wal;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::sync::Arc;

use hookv::config::{Config, ServerConfig};
use hookv::storage::Backend;
use hookv::wal::Wal;
use hookv::{Server, Service, Storage};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every network wait in the tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("operation did not finish within the test's time limit")
}

/// Why a server task ended badly.
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// A server running in this process until dropped or stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// For a server started from a config on memory or sled: its service
    /// (to look at its storage) and its write-ahead log, if it has one.
    pub service: Option<Service<Arc<dyn Storage>>>,
    pub wal: Option<Arc<Wal>>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), Failure>>>,
}

impl TestServer {
    /// Starts `service` on 127.0.0.1 with an OS-chosen port.
    pub async fn start<S: Backend>(service: Service<S>, config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            hookv::server::run(listener, service, &config, async {
                let _ = stopped.await;
            })
            .await
            .map_err(Failure::from)
        });
        Self {
            addr,
            service: None,
            wal: None,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Starts the server `config` describes, as `hookv-server` does
    /// (`Server::from_config`: storage, wal, hook chain, barriers), on
    /// 127.0.0.1 with an OS-chosen port whatever `[server] listen` says.
    pub async fn from_config(config: &Config) -> Self {
        match Self::try_from_config(config).await {
            Ok(server) => server,
            Err(e) => panic!("the server did not start: {e}"),
        }
    }

    /// [`TestServer::from_config`], or the error the server's start ends in.
    pub async fn try_from_config(config: &Config) -> Result<Self, hookv::bootstrap::ServerError> {
        let mut config = config.clone();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::from_config(&config).await?;
        let addr = server.local_addr();
        let service = server.service().cloned();
        let wal = server.wal().cloned();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .map_err(Failure::from)
        });
        Ok(Self {
            addr,
            service,
            wal,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Starts a memory-backed server with no hooks and default limits.
    pub async fn memory() -> Self {
        let service: Service = hookv::ServiceInner::new(hookv::MemTable::new()).into();
        Self::start(service, ServerConfig::default()).await
    }

    pub async fn client(&self) -> hookv::client::Client {
        bounded(hookv::client::Client::connect(self.addr))
            .await
            .expect("connect")
    }

    /// Signals shutdown and waits for the server to drain and flush.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            bounded(handle)
                .await
                .expect("server task panicked")
                .expect("server failed");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The server binary built for this test run.
pub const SERVER: &str = env!("CARGO_BIN_EXE_hookv-server");

/// Waits for `child` to exit, killing it and failing after [`LIMIT`].
pub fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("server did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running server binary and the address it reported.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the server has written to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    pub fn start(config: &Path) -> Self {
        let mut cmd = Command::new(SERVER);
        cmd.arg("--config").arg(config).args(["--log", "info"]);
        Self::spawn(&mut cmd)
    }

    /// Starts the server on `config` with files limited to `blocks` of 512
    /// bytes, as on a full disk: a write past the limit fails with EFBIG
    /// (`SIGXFSZ` is ignored, and that survives the `exec`). Only the soft
    /// limit is set, so [`Running::lift_file_size_limit`] can give the
    /// space back without privileges.
    pub fn start_with_file_size_limit(config: &Path, blocks: u64) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -S -f {blocks}; exec \"$0\" \"$@\""
            ))
            .arg(SERVER)
            .arg("--config")
            .arg(config)
            .args(["--log", "info"]);
        Self::spawn(&mut cmd)
    }

    /// Lifts the limit set by [`Running::start_with_file_size_limit`].
    pub fn lift_file_size_limit(&self) {
        let ok = Command::new("prlimit")
            .arg("--pid")
            .arg(self.child.id().to_string())
            .arg("--fsize=unlimited")
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Runs `cmd`, which starts the server (e.g. through a shell that sets
    /// limits first), and waits for the address it reports.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(LIMIT) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not report its address");
            }
        };
        Self { child, addr, log }
    }

    /// Sends `signal` (e.g. "HUP") to the server.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until a log line contains `needle`, failing after [`LIMIT`].
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_nth_log(needle, 1)
    }

    /// Waits until `n` log lines contain `needle`; returns the `n`th.
    pub fn wait_for_nth_log(&self, needle: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .nth(n - 1)
            {
                return line.clone();
            }
            assert!(start.elapsed() < LIMIT, "no log line containing {needle:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything logged so far, one line after another.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A client connected to this server.
    pub async fn client(&self) -> hookv::client::Client {
        bounded(hookv::client::Client::connect(self.addr))
            .await
            .expect("connect")
    }

    /// SIGKILL, and wait for the exit: no shutdown code runs.
    pub fn kill_hard(mut self) {
        self.signal("KILL");
        wait_bounded(&mut self.child);
    }

    /// SIGTERM; asserts a clean exit (status 0).
    pub fn stop_cleanly(self) {
        let log = self.log.clone();
        let status = self.terminate();
        assert!(
            status.success(),
            "{status}; log:\n{}",
            log.lock().unwrap().join("\n")
        );
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        wait_bounded(&mut self.child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the server on `config` expecting it to refuse to start; returns stderr.
pub fn start_fails(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    fails_with(Command::new(SERVER).arg("--config").arg(&path))
}

/// Runs `cmd` (the server binary): it must exit non-zero; returns its stderr.
pub fn exits_failing(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "server started; stderr: {stderr}");
    stderr
}

/// Runs `cmd` (the server binary): it must exit non-zero with one line on
/// stderr and no panic; returns that line.
pub fn fails_with(cmd: &mut Command) -> String {
    let stderr = exits_failing(cmd);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one clear line, got: {stderr}");
    // A panic of the server itself (a plugin's caught panic may be quoted).
    assert!(!stderr.contains("thread '"), "{stderr}");
    stderr
}
