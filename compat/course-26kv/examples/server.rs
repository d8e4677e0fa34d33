//! The course's `examples/server.rs`, with its `use` line naming hookv
//! (`use kv1::{...}` was the course's): a memory store served over the
//! course's `async-prost` framing on 127.0.0.1:9527.
use anyhow::Result;
use async_prost::AsyncProstStream;
use futures::prelude::*;
use hookv::{CommandRequest, CommandResponse, MemTable, Service, ServiceInner};
use tokio::net::TcpListener;
use tracing::info;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt::init();
    let service: Service = ServiceInner::new(MemTable::new()).into();
    let addr = "127.0.0.1:9527";
    let listener = TcpListener::bind(addr).await?;
    info!("Start listening on {}", addr);
    loop {
        let (stream, addr) = listener.accept().await?;
        info!("Client {:?} connected", addr);
        let svc = service.clone();
        tokio::spawn(async move {
            let mut stream =
                AsyncProstStream::<_, CommandRequest, CommandResponse, _>::from(stream).for_async();
            while let Some(Ok(cmd)) = stream.next().await {
                info!("Got a new command: {:?}", cmd);
                let res = svc.execute(cmd);
                if stream.send(res).await.is_err() {
                    break;
                }
            }
            info!("Client {:?} disconnected", addr);
        });
    }
}
