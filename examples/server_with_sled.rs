//! A hookv server on sled, with an `on_before_send` hook that rewrites every
//! response's message, as the original course's example did.
//!
//! ```text
//! cargo run --example server_with_sled      # data in /tmp/hookv-example-sled
//! cargo run --example client
//! ```

use std::ops::ControlFlow;

use hookv::config::ServerConfig;
use hookv::{Service, ServiceInner, SledDb};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let config = ServerConfig::default();
    let store = SledDb::open("/tmp/hookv-example-sled")?;
    let service: Service<SledDb> = ServiceInner::new(store)
        .on_before_send(|_ctx, _req, res| {
            res.message = "altered".into();
            ControlFlow::Continue(())
        })
        .into();
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!("listening on {}", config.listen);
    hookv::server::run(listener, service, &config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
