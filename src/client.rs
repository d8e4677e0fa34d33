//! A small async client: one method per command, plus raw and pipelined sends.
//!
//! [`Client::connect`] speaks plain TCP; [`Client::connect_tls`] speaks TLS
//! (see [`crate::tls::client`] for the options). Everything else is the same.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hookv::client::ClientError> {
//! let mut client = hookv::client::Client::connect("127.0.0.1:9527").await?;
//! client.hset("users", "alice", "admin").await?;
//! let res = client.hget("users", "alice").await?;
//! assert_eq!(res.status, 200);
//! # Ok(()) }
//! ```

use bytes::BytesMut;
use hookv_plugin::pb::{CommandRequest, CommandResponse, Kvpair, Value};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::client::TlsStream;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::either::Either;

use crate::config::MAX_FRAME_BYTES_LIMIT;
use crate::frame::{FrameCodec, FrameError};
use crate::tls::client::HandshakeError;
use crate::tls::{ClientTls, TlsError};

/// Why a call failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("i/o: {0}")]
    Io(std::io::Error),
    /// TLS files or options cannot be used.
    #[error("TLS: {0}")]
    TlsSetup(#[from] TlsError),
    /// The TLS handshake failed, or the server ended the session (a
    /// refused client certificate shows on the first read under TLS 1.3).
    #[error("TLS: {0}")]
    Tls(#[from] HandshakeError),
    /// The server sent a frame this client cannot accept.
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    /// The server sent bytes that are not a `CommandResponse`.
    #[error("bad response from server: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The server closed the connection before answering.
    #[error("server closed the connection before answering")]
    Closed,
}

impl From<std::io::Error> for ClientError {
    /// A TLS failure inside an I/O error becomes [`ClientError::Tls`].
    fn from(e: std::io::Error) -> Self {
        match HandshakeError::from_io(&e) {
            Some(tls) => ClientError::Tls(tls),
            None => ClientError::Io(e),
        }
    }
}

/// One connection to a hookv server.
#[derive(Debug)]
pub struct Client {
    /// Plain TCP or TLS over it; boxed, the TLS state is a few KiB.
    stream: Either<TcpStream, Box<TlsStream<TcpStream>>>,
    codec: FrameCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(Either::Left(stream)))
    }

    /// Connects to `addr` (`host:port`) with TLS. The server's
    /// certificate must be signed by a CA `tls` trusts and carry its server
    /// name (by default the host of `addr`).
    pub async fn connect_tls(addr: &str, tls: &ClientTls) -> Result<Self, ClientError> {
        let name = tls.server_name_for(addr)?;
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = tls
            .connector()
            .connect(name, tcp)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => ClientError::Tls(HandshakeError::Closed),
                _ => ClientError::from(e),
            })?;
        Ok(Self::over(Either::Right(Box::new(stream))))
    }

    fn over(stream: Either<TcpStream, Box<TlsStream<TcpStream>>>) -> Self {
        Self {
            stream,
            codec: FrameCodec::new(MAX_FRAME_BYTES_LIMIT),
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Sends one request and waits for its response.
    pub async fn send(&mut self, req: &CommandRequest) -> Result<CommandResponse, ClientError> {
        let mut out = self.pipeline(std::slice::from_ref(req)).await?;
        out.pop().ok_or(ClientError::Closed)
    }

    /// Sends every request in one write, then reads their responses, in order.
    pub async fn pipeline(
        &mut self,
        reqs: &[CommandRequest],
    ) -> Result<Vec<CommandResponse>, ClientError> {
        self.wbuf.clear();
        for req in reqs {
            self.codec.encode(req, &mut self.wbuf)?;
        }
        self.stream.write_all(&self.wbuf).await?;
        // An AsyncWrite may hold bytes until flushed (plain TCP does not).
        self.stream.flush().await?;
        let mut out = Vec::with_capacity(reqs.len());
        while out.len() < reqs.len() {
            out.push(self.read_response().await?);
        }
        Ok(out)
    }

    /// Reads the next response frame.
    pub async fn read_response(&mut self) -> Result<CommandResponse, ClientError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.rbuf)? {
                return Ok(CommandResponse::decode(frame)?);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Writes raw bytes to the server (for tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(self.stream.flush().await?)
    }

    /// Closes the write half (for tests of truncated input); responses can
    /// still be read.
    pub async fn shutdown_write(&mut self) -> Result<(), ClientError> {
        Ok(self.stream.shutdown().await?)
    }

    /// `hget table key`
    pub async fn hget(&mut self, table: &str, key: &str) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hget(table, key)).await
    }

    /// `hgetall table`
    pub async fn hgetall(&mut self, table: &str) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hgetall(table)).await
    }

    /// `hmget table keys...`
    pub async fn hmget(
        &mut self,
        table: &str,
        keys: &[&str],
    ) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hmget(table, owned(keys)))
            .await
    }

    /// `hset table key value`
    pub async fn hset(
        &mut self,
        table: &str,
        key: &str,
        value: impl Into<Value>,
    ) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hset(table, key, value.into()))
            .await
    }

    /// `hmset table pairs...`
    pub async fn hmset(
        &mut self,
        table: &str,
        pairs: Vec<Kvpair>,
    ) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hmset(table, pairs)).await
    }

    /// `hdel table key`
    pub async fn hdel(&mut self, table: &str, key: &str) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hdel(table, key)).await
    }

    /// `hmdel table keys...`
    pub async fn hmdel(
        &mut self,
        table: &str,
        keys: &[&str],
    ) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hmdel(table, owned(keys)))
            .await
    }

    /// `hexist table key`
    pub async fn hexist(&mut self, table: &str, key: &str) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hexist(table, key)).await
    }

    /// `hmexist table keys...`
    pub async fn hmexist(
        &mut self,
        table: &str,
        keys: &[&str],
    ) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hmexist(table, owned(keys)))
            .await
    }

    /// `hscan table`: one page of `table` in key order, the pairs after
    /// `cursor` (`None`: from the first key), at most `count` (0: the
    /// server's default). Pass the answer's `cursor` to get the next page;
    /// an answer without one ends the scan.
    ///
    /// ```no_run
    /// # async fn demo(client: &mut hookv::client::Client) -> Result<(), hookv::client::ClientError> {
    /// let mut cursor = None;
    /// loop {
    ///     let page = client.hscan("big", cursor.as_deref(), 1000).await?;
    ///     assert_eq!(page.status, 200, "{}", page.message);
    ///     for pair in &page.pairs {
    ///         println!("{}", pair.key);
    ///     }
    ///     match page.cursor {
    ///         Some(next) => cursor = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn hscan(
        &mut self,
        table: &str,
        cursor: Option<&str>,
        count: u32,
    ) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_hscan(
            table,
            cursor.map(str::to_owned),
            count,
        ))
        .await
    }

    /// `stats`: the server's figures, as `pairs` of `section.name` → value
    /// (see `hookv::metrics::stats_answer`).
    pub async fn stats(&mut self) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_stats()).await
    }

    /// `auth token`
    pub async fn auth(&mut self, token: &str) -> Result<CommandResponse, ClientError> {
        self.send(&CommandRequest::new_auth(token)).await
    }
}

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}
