//! `hookv-plugin`: the contract between hookv and the code that talks to it.
//!
//! - [`pb`]: the wire messages, generated from `proto/abi.proto` at build
//!   time (pure Rust, no system `protoc`). The server, its stock client and
//!   plugins all use these types, so the schema has a single source.
//! - [`catalogue`]: every command hookv knows ([`Command`]: tag, name,
//!   read or write, shape), written out once for the server and plugins.
//! - [`Plugin`], [`export_plugin!`]: write a hookv plugin in safe Rust;
//!   [`Log`] and [`Counter`], [`Gauge`], [`Histogram`]: talk back to the
//!   server (its log, its `/metrics`).
//! - [`abi`]: the C ABI underneath (also written down as the C header
//!   `plugins/hookv_plugin.h`), for the server's loader and for plugins in
//!   other languages.
//!
//! # Writing a plugin
//!
//! A plugin is a `cdylib` crate that implements [`Plugin`] and exports it:
//!
//! ```
//! use std::ops::ControlFlow;
//! use hookv_plugin::pb::{status, CommandResponse};
//! use hookv_plugin::{Context, Events, Flow, Options, Plugin, Request};
//!
//! /// Refuses every request to one table.
//! struct Deny {
//!     table: String,
//! }
//!
//! impl Plugin for Deny {
//!     const EVENTS: Events = Events::RECEIVED; // the server skips the others
//!
//!     fn init(options: &Options) -> Result<Self, String> {
//!         options.only(&["table"])?;
//!         Ok(Deny { table: options.require("table")? })
//!     }
//!
//!     fn on_received(&self, _ctx: &Context<'_>, req: &Request<'_>) -> Flow {
//!         if req.table() == Some(self.table.as_str()) {
//!             return ControlFlow::Break(CommandResponse::error(
//!                 status::FORBIDDEN,
//!                 format!("table {} is closed", self.table),
//!             ));
//!         }
//!         ControlFlow::Continue(())
//!     }
//! }
//!
//! hookv_plugin::export_plugin!(Deny);
//! ```
//!
//! and `config.toml` loads it, passing the other keys as options:
//!
//! ```toml
//! [[hooks]]
//! plugin = "target/release/libdeny.so"   # relative to config.toml
//! table = "secrets"
//! ```
//!
//! # Talking back to the server
//!
//! A plugin built with this crate (plugin ABI version 2) may write into the
//! server's log ([`Log`], [`Context::log`]) and keep metrics that the server
//! exports as `hookv_plugin_<name>{plugin="..."}` ([`Counter`], [`Gauge`],
//! [`Histogram`]). Make metrics in `init` and keep them:
//!
//! ```
//! use std::ops::ControlFlow;
//!
//! use hookv_plugin::pb::{status, CommandResponse};
//! use hookv_plugin::{Context, Counter, Events, Flow, Log, Options, Plugin, Request};
//!
//! pub struct Guard {
//!     refused: Counter,
//! }
//!
//! impl Plugin for Guard {
//!     const EVENTS: Events = Events::RECEIVED;
//!
//!     fn init(options: &Options) -> Result<Self, String> {
//!         Log::plugin().info(format!("options: {:?}", options.as_map()));
//!         Ok(Guard { refused: Counter::new("guard_refused_total") })
//!     }
//!
//!     fn on_received(&self, ctx: &Context<'_>, req: &Request<'_>) -> Flow {
//!         if req.table() != Some("closed") {
//!             return ControlFlow::Continue(());
//!         }
//!         self.refused.increment(1);
//!         ctx.log().warn("refused a request to table closed");
//!         ControlFlow::Break(CommandResponse::error(status::FORBIDDEN, "table closed is closed"))
//!     }
//! }
//!
//! hookv_plugin::export_plugin!(Guard);
//! ```
//!
//! The step-by-step guide is the "Write your own plugin" section of README.md in the hookv
//! repository; `plugins/key-guard` and `plugins/rate-limit` are complete
//! examples.
//!
//! # Unsafe code
//!
//! The crate denies `unsafe` but in one module, [`export`], where the C ABI
//! needs it (raw pointers in, buffers out, a descriptor shared between
//! threads); every `unsafe` there says why it is sound on a `// SAFETY:`
//! line. The [`export_plugin!`] macro also writes one `unsafe` attribute,
//! `#[unsafe(no_mangle)]`, into the plugin's crate, under its own `allow`.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![deny(unsafe_code)]

pub mod abi;
pub mod catalogue;
#[allow(unsafe_code)]
pub mod export;
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb;
mod plugin;
#[cfg(feature = "prost-0_10")]
mod prost010;
mod view;

pub use catalogue::{Access, Command, Shape};
pub use plugin::{
    Context, Counter, Events, Flow, Gauge, Histogram, Keys, Lazy, Log, OptionError, OptionValue,
    Options, Plugin, Request, Response,
};
/// The protobuf runtime the messages in [`pb`] are built on (for
/// `Message::encode` / `decode` in hand-written ABI code).
pub use prost;
