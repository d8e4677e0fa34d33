//! `floor`: the least a server can do for `loadgen`'s load, to measure
//! hookv against (`scripts/loadtest.sh`, the "vs floor" column).
//!
//! It accepts, reads, cuts the bytes read into hookv's length-prefixed
//! frames, and answers every frame with the same canned `CommandResponse`:
//! status 200 and one string value of `--value-size` bytes, the size of
//! hookv's answer to an `hget` hit or an `hset` that replaced a value (what
//! the load's answers are once its keys are set). Nothing is decoded and
//! nothing stored: what is left is the syscalls, the framing and the
//! runtime, as hookv pays them: one runtime thread (hookv's
//! `worker_threads = 1`, a current-thread runtime), a task per connection,
//! `TCP_NODELAY`, one write per read.
//!
//! ```text
//! cargo run --release -p loadgen --bin floor -- --listen 127.0.0.1:19527
//! ```
//!
//! It listens on loopback only, and runs until killed.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::{Buf, BufMut, BytesMut};
use clap::Parser;
use hookv::pb::{CommandResponse, Value};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A frame's length prefix: 4 bytes, big-endian.
const HEADER_LEN: usize = 4;
/// The largest frame read (hookv's default `max_frame_bytes`).
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// The read and write buffers' size to start with (hookv's).
const BUF_BYTES: usize = 8 * 1024;

#[derive(Debug, Parser)]
#[command(
    about = "A server that answers every hookv frame with a canned answer (a benchmark floor)"
)]
struct Args {
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:9527")]
    listen: SocketAddr,
    /// Bytes of the string value in the canned answer (loadgen's --value-size).
    #[arg(long, default_value_t = 16)]
    value_size: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    if !args.listen.ip().to_canonical().is_loopback() {
        return Err(format!("--listen {} is not a loopback address", args.listen).into());
    }
    let answer = canned(args.value_size);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let answer = answer.clone();
            tokio::spawn(async move {
                // A peer that leaves, or sends garbage, ends its connection.
                let _ = serve(stream, &answer).await;
            });
        }
    })
}

/// The answer every frame gets, framed.
fn canned(value_size: usize) -> Vec<u8> {
    let res = CommandResponse::from(vec![Value::from("v".repeat(value_size))]);
    let mut framed = Vec::with_capacity(HEADER_LEN + res.encoded_len());
    framed.put_u32(res.encoded_len() as u32);
    res.encode_raw(&mut framed);
    framed
}

/// Answers `stream`'s frames until it closes: each read's whole frames
/// answered in one write.
async fn serve(mut stream: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(BUF_BYTES);
    let mut wbuf = BytesMut::with_capacity(BUF_BYTES);
    loop {
        if stream.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
        while let Some(head) = rbuf.first_chunk::<HEADER_LEN>() {
            let len = u32::from_be_bytes(*head) as usize;
            if len > MAX_FRAME_BYTES {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            if rbuf.len() < HEADER_LEN + len {
                rbuf.reserve(HEADER_LEN + len - rbuf.len());
                break;
            }
            rbuf.advance(HEADER_LEN + len);
            wbuf.extend_from_slice(answer);
        }
        stream.write_all(&wbuf).await?;
        wbuf.clear();
    }
}
