//! Shared test helpers: a real server on 127.0.0.1:0, bounded waits.
#![allow(dead_code)]

pub mod plugins;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hookv::config::ServerConfig;
use hookv::{Service, Storage};
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

/// A server running in this process until dropped or stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), hookv::StorageError>>>,
}

impl TestServer {
    /// Starts `service` on 127.0.0.1 with an OS-chosen port.
    pub async fn start<S: Storage>(service: Service<S>, config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            hookv::server::run(listener, service, &config, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        }
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
