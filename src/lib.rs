//! hookv: a TCP key-value server whose behaviour is extended by hooks.
//!
//! # Layout, in the order a request travels
//!
//! ```text
//! TCP ─ frame ─ connection ─ service ─ hooks(on_received) ─ command ─ storage
//!                  ▲            └─ hooks(on_executed, on_before_send)
//!                  └─ write ─ hooks(on_after_send)
//! ```
//!
//! - [`bootstrap`]: [`Server::from_config`] builds what `config.toml` describes
//!   (storage, the log over it, the hook chain, barriers, listener): what
//!   `hookv-server` runs and tests start.
//! - [`server`]: accept loop, connection limit, graceful shutdown.
//! - [`frame`]: 4-byte big-endian length + protobuf, size-checked before allocating.
//! - [`connection`]: one client: read, answer in order (pipelined), write, after-send.
//! - [`service`]: [`Service`] and its builder [`ServiceInner`]: runs the hook chains
//!   around execution.
//! - [`hooks`]: the [`Hook`](hooks::Hook) trait, [`HookCtx`](hooks::HookCtx), chains.
//! - [`plugin`]: hooks loaded from shared libraries (the only `unsafe` code,
//!   in `plugin/ffi.rs`).
//! - [`command`]: one match from request to storage calls.
//! - [`storage`]: the [`Storage`] trait, [`MemTable`], [`SledDb`] (and the
//!   migration of a database the course's `SledDb` wrote), and
//!   [`RedisCluster`](storage::RedisCluster), reached in batches.
//! - [`wal`]: the write-ahead log, a layer over [`Storage`] that logs every
//!   write before it is answered.
//! - [`config`], [`error`]: `config.toml`, and the error → status mapping.
//! - [`reload`]: swapping in a new hook chain from `config.toml` on SIGHUP.
//! - [`metrics`]: the figures the server counts, served as Prometheus text at
//!   `[metrics] listen` and answered to the `stats` request.
//! - [`tls`]: TLS material (rustls): `[server.tls]` loaded and reloadable,
//!   client certificates as identities, the client's side.
//! - [`client`]: a small async client used by `hookv-cli`, the examples and tests.
//! - [`log_limit`]: rate-limited logging for events a client can trigger.
//! - [`course`]: the original course's API as it spelled it ([`dispatch`],
//!   [`CommandService`], [`KvError`], ...), so its code ports by its `use`
//!   lines.
//!
//! # The original course's names
//!
//! The crate root holds what the course's crate root did: the wire messages
//! (`CommandRequest`, `Kvpair`, `Value`, `Hget`, ..., also under [`pb`]),
//! [`KvError`], [`dispatch`], [`CommandService`], [`Storage`], [`MemTable`],
//! [`SledDb`], [`Service`], [`ServiceInner`], [`Notify`], [`NotifyMut`], so
//! `use hookv::*` stands for the course's `use kv::*`. See README.md,
//! "Coming from the course".
//!
//! The wire types live in the `hookv-plugin` crate (re-exported as [`pb`]) so
//! that plugins share them.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![deny(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod command;
pub mod config;
pub mod connection;
pub mod course;
pub mod error;
pub mod frame;
pub mod hooks;
pub mod log_limit;
pub mod metrics;
pub mod plugin;
pub mod reload;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
pub mod wal;

pub use bootstrap::Server;
pub use course::{dispatch, CommandService, KvError, Notify, NotifyMut};
pub use hookv_plugin::pb;
/// The wire messages at the root, as the course's crate had them.
pub use hookv_plugin::pb::*;
pub use service::{Service, ServiceInner};
pub use storage::{MemTable, SledDb, Storage, StorageError, StorageIter};
