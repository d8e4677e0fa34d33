//! The C ABI between hookv and a plugin, as Rust types.
//!
//! This module mirrors `plugins/hookv_plugin.h` field for field; the header
//! is the contract for plugins written in C (or anything that can export a C
//! function), this module is the same contract for Rust. Only `#[repr(C)]`
//! structs of plain integers and pointers cross the boundary, never a Rust
//! type, so a plugin built by another compiler (or version of rustc) works.
//!
//! # The contract
//!
//! A plugin is a shared library exporting one function,
//! [`DESCRIPTOR_SYMBOL`] (`hookv_plugin_descriptor`), that returns a pointer
//! to a [`HookvPlugin`] that stays valid while the library is loaded. The
//! server reads [`HookvPlugin::abi_version`] first (every ABI version keeps
//! it as the first field) and refuses a plugin whose version is not
//! [`ABI_VERSION`].
//!
//! 1. **init**: the server calls `init(options, &state, &error)` once per
//!    state, with the plugin's `[[hooks]]` table (minus the `plugin` key) as
//!    a UTF-8 JSON object. [`STATUS_OK`] stores an opaque `state` pointer
//!    that is handed to every other call; anything else refuses the server's
//!    start, with the UTF-8 message the plugin put in `error`. One loaded
//!    library may make several states, alive at once (one per `[[hooks]]`
//!    entry naming it, and one more per reload that changes its options):
//!    keep what belongs to one in its state, not in statics.
//! 2. **events**: one function pointer per event; NULL means "not handled"
//!    and the server never calls it (so it costs nothing). Each receives the
//!    state, a [`HookvContext`], the request (a protobuf `abi.CommandRequest`)
//!    and, except for `on_received`, the response (`abi.CommandResponse`),
//!    and returns a verdict:
//!
//!    | return          | `on_received`, `on_executed`        | `on_before_send`                 | `on_after_send` |
//!    |-----------------|-------------------------------------|----------------------------------|-----------------|
//!    | [`CONTINUE`]    | go on                               | go on (`out`, if set, replaces the response) | go on |
//!    | [`BREAK`]       | answer with the response in `out`   | stop this chain (`out`, if set, replaces the response) | stop this chain |
//!    | [`ERROR`]       | answer 500; `out` may hold a message | response becomes a 500          | logged          |
//!
//!    Any other return value, or bytes in `out` that do not decode as a
//!    `CommandResponse`, count as [`ERROR`]: the request gets a 500 and the
//!    server logs it with the plugin's name.
//! 3. **teardown**: called once with the state when no request can reach
//!    the plugin any more; the plugin frees its state.
//!
//! Events may be called from several threads at once: the state must be
//! thread-safe.
//!
//! # Memory
//!
//! Each side frees what it allocated. Everything the server passes in
//! (options, context, request, response) is borrowed for the duration of the
//! call only. Every buffer the plugin hands back in a [`HookvBuf`] (`out`,
//! `error`) belongs to the plugin; the server copies or decodes it, then
//! gives it back through the plugin's `free_buf`, exactly once.

use std::ffi::c_void;

/// The ABI version this crate speaks. Bumped on any incompatible change to
/// the structs or the rules above.
pub const ABI_VERSION: u32 = 1;

/// The name of the one symbol a plugin exports: a
/// `const HookvPlugin *hookv_plugin_descriptor(void)` function.
pub const DESCRIPTOR_SYMBOL: &str = "hookv_plugin_descriptor";

/// Verdict: go on.
pub const CONTINUE: i32 = 0;
/// Verdict: answer now / stop this chain (see the table above).
pub const BREAK: i32 = 1;
/// Verdict: the plugin failed; the request gets a 500.
pub const ERROR: i32 = 2;

/// `init` succeeded.
pub const STATUS_OK: i32 = 0;
/// `init` failed; `error` holds the reason.
pub const STATUS_ERROR: i32 = 1;

/// Borrowed bytes (or UTF-8 text): valid for the duration of one call.
/// `ptr` may be NULL only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HookvBytes {
    /// First byte.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl HookvBytes {
    /// No bytes.
    pub const EMPTY: HookvBytes = HookvBytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `bytes` (the caller keeps them alive for the call).
    pub const fn from_slice(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

/// A buffer the plugin allocated and hands to the server, which returns it
/// through [`HookvPlugin::free_buf`]. `{NULL, 0}` means "nothing".
#[repr(C)]
#[derive(Debug)]
pub struct HookvBuf {
    /// First byte, or NULL.
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl HookvBuf {
    /// The empty buffer.
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }
}

/// The connection and request a hook runs for.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HookvContext {
    /// Unique per server process, in accept order.
    pub conn_id: u64,
    /// `elapsed_ns(ctx)`: nanoseconds since the server read the request.
    /// A function, so that only plugins that want the time read a clock.
    pub elapsed_ns: Option<ElapsedFn>,
    /// The server's own data for `elapsed_ns`; opaque to plugins.
    pub server: *const c_void,
    /// The client's address as text: `127.0.0.1:5555`, `[::1]:5555`.
    pub peer: HookvBytes,
    /// Who the connection authenticated as (UTF-8); `ptr` NULL when nobody.
    pub principal: HookvBytes,
}

/// `elapsed_ns(ctx) -> nanoseconds`, called with the context the server
/// passed, during the call it was passed to.
pub type ElapsedFn = unsafe extern "C" fn(ctx: *const HookvContext) -> u64;

/// `init(options_json, &state, &error) -> STATUS_OK | STATUS_ERROR`.
pub type InitFn = unsafe extern "C" fn(
    options_json: HookvBytes,
    state: *mut *mut c_void,
    error: *mut HookvBuf,
) -> i32;

/// One event: `(state, ctx, request, response, &out) -> CONTINUE | BREAK | ERROR`.
/// `response` is empty for `on_received`.
pub type EventFn = unsafe extern "C" fn(
    state: *mut c_void,
    ctx: *const HookvContext,
    request: HookvBytes,
    response: HookvBytes,
    out: *mut HookvBuf,
) -> i32;

/// `teardown(state)`: free the state; no call follows.
pub type TeardownFn = unsafe extern "C" fn(state: *mut c_void);

/// `free_buf(buf)`: give back a buffer the plugin handed out.
pub type FreeBufFn = unsafe extern "C" fn(buf: HookvBuf);

/// What `hookv_plugin_descriptor()` points to. It is `Send` and `Sync`
/// (declared in [`crate::export`], the crate's one `unsafe` module), so a
/// plugin can keep it in a `static`.
#[repr(C)]
#[derive(Debug)]
pub struct HookvPlugin {
    /// [`ABI_VERSION`] of the SDK the plugin was built with. Always first.
    pub abi_version: u32,
    /// The plugin's name for logs and errors (UTF-8).
    pub name: HookvBytes,
    /// Required.
    pub init: Option<InitFn>,
    /// NULL = not handled.
    pub on_received: Option<EventFn>,
    /// NULL = not handled.
    pub on_executed: Option<EventFn>,
    /// NULL = not handled.
    pub on_before_send: Option<EventFn>,
    /// NULL = not handled.
    pub on_after_send: Option<EventFn>,
    /// Required.
    pub teardown: Option<TeardownFn>,
    /// Required.
    pub free_buf: Option<FreeBufFn>,
}

/// The signature of [`DESCRIPTOR_SYMBOL`].
pub type DescriptorFn = unsafe extern "C" fn() -> *const HookvPlugin;
