//! `hookv-plugin`: the contract between hookv and the code that talks to it.
//!
//! Today this crate holds the wire messages ([`pb`]), generated from
//! `proto/abi.proto` at build time (pure Rust, no system `protoc`). The server,
//! its stock client and plugins all use these types, so the schema has a single
//! source.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb;
