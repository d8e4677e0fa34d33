//! A hookv server on the memory backend, built in code with no hooks.
//!
//! Run it, then the client example in another terminal:
//!
//! ```text
//! cargo run --example server
//! cargo run --example client
//! ```

use hookv::config::ServerConfig;
use hookv::{MemTable, Service, ServiceInner};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let config = ServerConfig::default();
    let service: Service = ServiceInner::new(MemTable::new()).into();
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!("listening on {}", config.listen);
    hookv::server::run(listener, service, &config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
