//! Talks to a running hookv server: set, get, and read a table back.
//!
//! ```text
//! cargo run --bin hookv-server        # or: cargo run --example server
//! cargo run --example client          # connects to 127.0.0.1:9527
//! ```

use hookv::client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9527".into());
    let mut client = Client::connect(addr.as_str()).await?;

    let res = client.hset("table1", "hello", "world").await?;
    println!("hset -> status {} previous {:?}", res.status, res.values);

    let res = client.hget("table1", "hello").await?;
    println!(
        "hget -> status {} values {:?} message {:?}",
        res.status, res.values, res.message
    );

    let res = client.hgetall("table1").await?;
    for pair in &res.pairs {
        let value = pair.value.clone().unwrap_or_default();
        println!("hgetall -> {} = {value}", pair.key);
    }
    Ok(())
}
