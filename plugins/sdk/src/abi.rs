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
//! it as the first field) and refuses a plugin whose version it does not
//! speak. This crate builds version [`ABI_VERSION`] (2); a server that
//! speaks 2 still loads version 1 plugins ([`v1`]), unchanged. A version 2
//! plugin on a server that speaks only 1 is refused by its version, with a
//! line naming the file.
//!
//! # What version 2 adds: host callbacks
//!
//! Version 1 plugins could only answer. Version 2 gives `init` one more
//! argument, a [`HookvHost`]: functions of the server's that the plugin may
//! call back, from `init` on, from any thread, at any time until the
//! process exits (the host and its data are never freed):
//!
//! - `log(host, ctx, level, message)`: a line in the server's log (its
//!   `tracing` output, target `hookv::plugin`) at a [`LOG_ERROR`] ..
//!   [`LOG_TRACE`] level, with the plugin's name and, given the `ctx` of
//!   the event being handled (NULL elsewhere), the connection. The server
//!   limits how many lines a plugin writes (a burst, then about one a
//!   second, counting what it left out), since a plugin may log per request.
//! - `register_metric(host, kind, name, help)`: a counter, gauge or
//!   histogram ([`METRIC_COUNTER`], ...) named `name` (`[a-zA-Z_][a-zA-Z0-9_]*`,
//!   at most 100 bytes), exported as `hookv_plugin_<name>{plugin="<plugin
//!   name>"}`. Returns its id for the three functions below, the same id for
//!   the same name and kind, or 0 when refused (a bad name, another kind
//!   under that name, more than [`MAX_METRICS`] metrics): updates of id 0 do
//!   nothing. Register once, in `init`: it takes a lock and a lookup, the
//!   updates do not.
//! - `counter_add(host, id, n)`, `gauge_set(host, id, v)`,
//!   `gauge_add(host, id, v)`, `histogram_record(host, id, v)`.
//!
//! Nothing else changed: the events, the context, the verdicts (plus
//! [`PANIC`], which the v1 SDK reported as [`ERROR`]) and the memory rules
//! are version 1's, so a version 2 plugin that never calls back costs what
//! a version 1 plugin costs.
//!
//! 1. **init**: the server calls `init(options, host, &state, &error)` once
//!    per state, with the plugin's `[[hooks]]` table (minus the `plugin`
//!    key and the server's own `tables` and `on_panic`) as a UTF-8 JSON
//!    object. [`STATUS_OK`] stores an opaque `state` pointer
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
//!    | [`ERROR`], [`PANIC`] | answer 500; `out` may hold a message | response becomes a 500     | logged          |
//!
//!    Any other return value, or bytes in `out` that do not decode as a
//!    `CommandResponse`, count as [`ERROR`]: the request gets a 500 and the
//!    server logs it with the plugin's name. Each of these is a failure of
//!    the plugin, which the entry's `on_panic = "fail_open"` turns into
//!    "continue" instead of a 500 (logged and counted all the same).
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

/// The ABI version this crate builds. Bumped on any incompatible change to
/// the structs or the rules above.
pub const ABI_VERSION: u32 = 2;

/// The name of the one symbol a plugin exports: a
/// `const HookvPlugin *hookv_plugin_descriptor(void)` function.
pub const DESCRIPTOR_SYMBOL: &str = "hookv_plugin_descriptor";

/// Verdict: go on.
pub const CONTINUE: i32 = 0;
/// Verdict: answer now / stop this chain (see the table above).
pub const BREAK: i32 = 1;
/// Verdict: the plugin failed; the request gets a 500.
pub const ERROR: i32 = 2;
/// Verdict: the plugin panicked (or threw) and caught it at the boundary;
/// `out` may hold the message. Treated as [`ERROR`], counted as a panic.
/// (Version 2; a version 1 SDK answered [`ERROR`] with a message that
/// starts `panicked`.)
pub const PANIC: i32 = 3;

/// `log` level: an error.
pub const LOG_ERROR: i32 = 1;
/// `log` level: a warning.
pub const LOG_WARN: i32 = 2;
/// `log` level: information.
pub const LOG_INFO: i32 = 3;
/// `log` level: debugging detail.
pub const LOG_DEBUG: i32 = 4;
/// `log` level: tracing detail.
pub const LOG_TRACE: i32 = 5;

/// `register_metric` kind: a counter (only goes up; `counter_add`).
pub const METRIC_COUNTER: i32 = 1;
/// `register_metric` kind: a gauge (`gauge_set`, `gauge_add`).
pub const METRIC_GAUGE: i32 = 2;
/// `register_metric` kind: a histogram (`histogram_record`).
pub const METRIC_HISTOGRAM: i32 = 3;
/// The most metrics one plugin (by name) may register.
pub const MAX_METRICS: u32 = 256;
/// The longest metric name, in bytes.
pub const MAX_METRIC_NAME: usize = 100;

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

/// The server's functions a version 2 plugin may call (see the module
/// docs). Valid, with everything it points to, until the process exits; its
/// functions may be called from any thread. Each takes the host it came
/// from as its first argument.
#[repr(C)]
#[derive(Debug)]
pub struct HookvHost {
    /// The server's data for these functions; opaque to plugins.
    pub server: *const c_void,
    /// `log(host, ctx, level, message)`.
    pub log: Option<LogFn>,
    /// `register_metric(host, kind, name, help) -> id` (0: refused).
    pub register_metric: Option<RegisterMetricFn>,
    /// `counter_add(host, id, n)`.
    pub counter_add: Option<CounterAddFn>,
    /// `gauge_set(host, id, value)`.
    pub gauge_set: Option<MetricValueFn>,
    /// `gauge_add(host, id, delta)`.
    pub gauge_add: Option<MetricValueFn>,
    /// `histogram_record(host, id, value)`.
    pub histogram_record: Option<MetricValueFn>,
}

/// `log(host, ctx, level, message)`: `ctx` is the context of the event
/// being handled, or NULL; `message` UTF-8.
pub type LogFn = unsafe extern "C" fn(
    host: *const HookvHost,
    ctx: *const HookvContext,
    level: i32,
    message: HookvBytes,
);

/// `register_metric(host, kind, name, help) -> id`; 0 when refused.
pub type RegisterMetricFn = unsafe extern "C" fn(
    host: *const HookvHost,
    kind: i32,
    name: HookvBytes,
    help: HookvBytes,
) -> u32;

/// `counter_add(host, id, n)`.
pub type CounterAddFn = unsafe extern "C" fn(host: *const HookvHost, id: u32, n: u64);

/// `gauge_set`, `gauge_add`, `histogram_record`: `(host, id, value)`.
pub type MetricValueFn = unsafe extern "C" fn(host: *const HookvHost, id: u32, value: f64);

/// `init(options_json, host, &state, &error) -> STATUS_OK | STATUS_ERROR`.
pub type InitFn = unsafe extern "C" fn(
    options_json: HookvBytes,
    host: *const HookvHost,
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

/// ABI version 1, which servers that speak version 2 still load: the same
/// descriptor but for `init`, which gets no host.
pub mod v1 {
    use std::ffi::c_void;

    use super::{FreeBufFn, HookvBuf, HookvBytes, TeardownFn};

    /// The version number.
    pub const ABI_VERSION: u32 = 1;

    /// Version 1's `init(options_json, &state, &error)`.
    pub type InitFn = unsafe extern "C" fn(
        options_json: HookvBytes,
        state: *mut *mut c_void,
        error: *mut HookvBuf,
    ) -> i32;

    /// Version 1's descriptor: [`super::HookvPlugin`] with a version 1
    /// `init`.
    #[repr(C)]
    #[derive(Debug)]
    pub struct HookvPlugin {
        /// 1. Always first.
        pub abi_version: u32,
        /// The plugin's name for logs and errors (UTF-8).
        pub name: HookvBytes,
        /// Required.
        pub init: Option<InitFn>,
        /// NULL = not handled.
        pub on_received: Option<super::EventFn>,
        /// NULL = not handled.
        pub on_executed: Option<super::EventFn>,
        /// NULL = not handled.
        pub on_before_send: Option<super::EventFn>,
        /// NULL = not handled.
        pub on_after_send: Option<super::EventFn>,
        /// Required.
        pub teardown: Option<TeardownFn>,
        /// Required.
        pub free_buf: Option<FreeBufFn>,
    }
}
