//! A hookv client written the way the original Rust course wrote its client:
//! prost 0.10 messages framed by `async-prost` 0.4's
//! `AsyncProstStream::from(stream).for_async()`.
//!
//! It shares no code with hookv: the messages below are written by hand, as
//! prost-build 0.10 generates them from `plugins/sdk/proto/abi.proto`
//! (package `abi`, same field numbers and oneof tags). The tests in
//! `tests/async_prost.rs` run all nine commands through it against a real
//! hookv server, proving the wire format is the course's, unchanged.
//!
//! ```no_run
//! use futures::{SinkExt, StreamExt};
//! use hookv_compat_async_prost_client::{CommandRequest, CommandResponse};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let stream = tokio::net::TcpStream::connect("127.0.0.1:9527").await?;
//! let mut client =
//!     async_prost::AsyncProstStream::<_, CommandResponse, CommandRequest, _>::from(stream)
//!         .for_async();
//! client.send(CommandRequest::new_hset("t", "k", "v")).await?;
//! let res = client.next().await;
//! # let _ = res;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![deny(unsafe_code)]

use std::io;

use async_prost::{AsyncDestination, AsyncProstStream};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// The wire messages of package `abi`, as prost-build 0.10 would generate them.
// prost 0.10's `Oneof` derive adds undocumented pub methods (`encode`, `merge`...).
#[allow(missing_docs)]
pub mod abi {
    /// A request from a client.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct CommandRequest {
        /// The command.
        #[prost(
            oneof = "command_request::RequestData",
            tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 13"
        )]
        pub request_data: ::core::option::Option<command_request::RequestData>,
    }
    /// Nested message and enum types in `CommandRequest`.
    pub mod command_request {
        /// The command and its arguments. Tags 10, 11 and 12 (subscribe,
        /// unsubscribe, publish in the original course) are reserved.
        #[derive(Clone, PartialEq, ::prost::Oneof)]
        pub enum RequestData {
            /// `hget table key`
            #[prost(message, tag = "1")]
            Hget(super::Hget),
            /// `hgetall table`
            #[prost(message, tag = "2")]
            Hgetall(super::Hgetall),
            /// `hmget table key...`
            #[prost(message, tag = "3")]
            Hmget(super::Hmget),
            /// `hset table key value`
            #[prost(message, tag = "4")]
            Hset(super::Hset),
            /// `hmset table key value...`
            #[prost(message, tag = "5")]
            Hmset(super::Hmset),
            /// `hdel table key`
            #[prost(message, tag = "6")]
            Hdel(super::Hdel),
            /// `hmdel table key...`
            #[prost(message, tag = "7")]
            Hmdel(super::Hmdel),
            /// `hexist table key`
            #[prost(message, tag = "8")]
            Hexist(super::Hexist),
            /// `hmexist table key...`
            #[prost(message, tag = "9")]
            Hmexist(super::Hmexist),
            /// `auth token` (hookv's addition)
            #[prost(message, tag = "13")]
            Auth(super::Auth),
        }
    }
    /// The server's answer to one request.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct CommandResponse {
        /// HTTP-style status.
        #[prost(uint32, tag = "1")]
        pub status: u32,
        /// What went wrong (empty on success).
        #[prost(string, tag = "2")]
        pub message: ::prost::alloc::string::String,
        /// Values answered.
        #[prost(message, repeated, tag = "3")]
        pub values: ::prost::alloc::vec::Vec<Value>,
        /// Pairs answered.
        #[prost(message, repeated, tag = "4")]
        pub pairs: ::prost::alloc::vec::Vec<Kvpair>,
    }
    /// Get one key from a table.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hget {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The key.
        #[prost(string, tag = "2")]
        pub key: ::prost::alloc::string::String,
    }
    /// Get every pair of a table.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hgetall {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
    }
    /// Get several keys of a table.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hmget {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The keys.
        #[prost(string, repeated, tag = "2")]
        pub keys: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
    }
    /// A stored value. An unset oneof is the "empty value".
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Value {
        /// The value, if any.
        #[prost(oneof = "value::Value", tags = "1, 2, 3, 4, 5")]
        pub value: ::core::option::Option<value::Value>,
    }
    /// Nested message and enum types in `Value`.
    pub mod value {
        /// The kinds of value.
        #[derive(Clone, PartialEq, ::prost::Oneof)]
        pub enum Value {
            /// A UTF-8 string.
            #[prost(string, tag = "1")]
            String(::prost::alloc::string::String),
            /// Raw bytes (`bytes(["."])` in the course's build.rs: `Bytes`).
            #[prost(bytes = "bytes", tag = "2")]
            Binary(::prost::bytes::Bytes),
            /// A signed integer.
            #[prost(int64, tag = "3")]
            Integer(i64),
            /// A float.
            #[prost(double, tag = "4")]
            Float(f64),
            /// A bool.
            #[prost(bool, tag = "5")]
            Bool(bool),
        }
    }
    /// A key and its value.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Kvpair {
        /// The key.
        #[prost(string, tag = "1")]
        pub key: ::prost::alloc::string::String,
        /// The value.
        #[prost(message, optional, tag = "2")]
        pub value: ::core::option::Option<Value>,
    }
    /// Set one pair; answers the previous value.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hset {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The pair.
        #[prost(message, optional, tag = "2")]
        pub pair: ::core::option::Option<Kvpair>,
    }
    /// Set several pairs; answers the previous values.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hmset {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The pairs.
        #[prost(message, repeated, tag = "2")]
        pub pairs: ::prost::alloc::vec::Vec<Kvpair>,
    }
    /// Delete one key; answers the removed value.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hdel {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The key.
        #[prost(string, tag = "2")]
        pub key: ::prost::alloc::string::String,
    }
    /// Delete several keys; answers the removed values.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hmdel {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The keys.
        #[prost(string, repeated, tag = "2")]
        pub keys: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
    }
    /// Does a key exist?
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hexist {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The key.
        #[prost(string, tag = "2")]
        pub key: ::prost::alloc::string::String,
    }
    /// Do these keys exist?
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Hmexist {
        /// The table.
        #[prost(string, tag = "1")]
        pub table: ::prost::alloc::string::String,
        /// The keys.
        #[prost(string, repeated, tag = "2")]
        pub keys: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
    }
    /// Authenticate this connection with a token.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Auth {
        /// The token.
        #[prost(string, tag = "1")]
        pub token: ::prost::alloc::string::String,
    }
}

pub use abi::command_request::RequestData;
pub use abi::*;

/// The course's client stream: writes `CommandRequest`s, reads
/// `CommandResponse`s, each frame a 4-byte big-endian length then the message.
pub type Client = AsyncProstStream<TcpStream, CommandResponse, CommandRequest, AsyncDestination>;

/// Connects to a hookv server, exactly as the course's client did.
pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<Client> {
    let stream = TcpStream::connect(addr).await?;
    Ok(AsyncProstStream::<_, CommandResponse, CommandRequest, _>::from(stream).for_async())
}

/// Sends one request and reads its response. A connection closed before the
/// response arrives is [`io::ErrorKind::UnexpectedEof`].
pub async fn call(client: &mut Client, req: CommandRequest) -> io::Result<CommandResponse> {
    client.send(req).await?;
    match client.next().await {
        Some(res) => res,
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection before answering",
        )),
    }
}

impl CommandRequest {
    fn with(data: RequestData) -> Self {
        Self {
            request_data: Some(data),
        }
    }

    /// `hget table key`
    pub fn new_hget(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self::with(RequestData::Hget(Hget {
            table: table.into(),
            key: key.into(),
        }))
    }

    /// `hgetall table`
    pub fn new_hgetall(table: impl Into<String>) -> Self {
        Self::with(RequestData::Hgetall(Hgetall {
            table: table.into(),
        }))
    }

    /// `hmget table key...`
    pub fn new_hmget(table: impl Into<String>, keys: Vec<String>) -> Self {
        Self::with(RequestData::Hmget(Hmget {
            table: table.into(),
            keys,
        }))
    }

    /// `hset table key value`
    pub fn new_hset(
        table: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Self {
        Self::with(RequestData::Hset(Hset {
            table: table.into(),
            pair: Some(Kvpair::new(key, value)),
        }))
    }

    /// `hmset table key value...`
    pub fn new_hmset(table: impl Into<String>, pairs: Vec<Kvpair>) -> Self {
        Self::with(RequestData::Hmset(Hmset {
            table: table.into(),
            pairs,
        }))
    }

    /// `hdel table key`
    pub fn new_hdel(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self::with(RequestData::Hdel(Hdel {
            table: table.into(),
            key: key.into(),
        }))
    }

    /// `hmdel table key...`
    pub fn new_hmdel(table: impl Into<String>, keys: Vec<String>) -> Self {
        Self::with(RequestData::Hmdel(Hmdel {
            table: table.into(),
            keys,
        }))
    }

    /// `hexist table key`
    pub fn new_hexist(table: impl Into<String>, key: impl Into<String>) -> Self {
        Self::with(RequestData::Hexist(Hexist {
            table: table.into(),
            key: key.into(),
        }))
    }

    /// `hmexist table key...`
    pub fn new_hmexist(table: impl Into<String>, keys: Vec<String>) -> Self {
        Self::with(RequestData::Hmexist(Hmexist {
            table: table.into(),
            keys,
        }))
    }

    /// `auth token`
    pub fn new_auth(token: impl Into<String>) -> Self {
        Self::with(RequestData::Auth(Auth {
            token: token.into(),
        }))
    }
}

impl Kvpair {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

impl Value {
    /// The empty value: "nothing there".
    pub fn empty() -> Self {
        Self { value: None }
    }
}

impl From<value::Value> for Value {
    fn from(v: value::Value) -> Self {
        Self { value: Some(v) }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        value::Value::String(s.to_owned()).into()
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        value::Value::String(s).into()
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        value::Value::Integer(i).into()
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        value::Value::Float(f).into()
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        value::Value::Bool(b).into()
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        value::Value::Binary(::prost::bytes::Bytes::copy_from_slice(b)).into()
    }
}
