//! The course's `examples/client.rs`, with its `use` line naming hookv
//! (`use kv1::{...}` was the course's): one `hset` to 127.0.0.1:9527 (this
//! crate's `server` example, or `hookv-server` itself).
use anyhow::Result;
use async_prost::AsyncProstStream;
use futures::prelude::*;
use hookv::{CommandRequest, CommandResponse};
use tokio::net::TcpStream;
use tracing::info;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt::init();

    let addr = "127.0.0.1:9527";
    let stream = TcpStream::connect(addr).await?;

    let mut client =
        AsyncProstStream::<_, CommandResponse, CommandRequest, _>::from(stream).for_async();

    let cmd = CommandRequest::new_hset("table1", "hello", "world".to_string().into());

    client.send(cmd).await?;
    if let Some(Ok(data)) = client.next().await {
        info!("Got response {:?}", data);
    }

    Ok(())
}
