//! [`export_plugin!`](crate::export_plugin): the C glue between a
//! [`Plugin`] and the server.
//!
//! The macro exports `hookv_plugin_descriptor`, returning a static
//! [`HookvPlugin`] built by [`descriptor`]. Its function pointers are the
//! generic `extern "C"` functions below, each of which:
//!
//! 1. turns the borrowed C arguments into Rust values (the protobuf request
//!    and response are decoded lazily, on the plugin's first use),
//! 2. calls the plugin's safe method inside [`std::panic::catch_unwind`]
//!    (a panic must never unwind into the server: that would abort it),
//! 3. hands back the verdict and, if any, a buffer it allocated as a
//!    `Box<[u8]>`, which the server returns through [`free_buf`].
//!
//! A panic becomes [`PANIC`] with the panic's message (and location) in
//! `out`; the server answers that request with a 500 (or, with the entry's
//! `on_panic = "fail_open"`, goes on). While a call is inside this boundary
//! the panic is not printed to stderr (the server logs it with the plugin's
//! name instead); panics elsewhere reach the previous hook.
//!
//! `init` also keeps the server's [`HookvHost`] (valid until the process
//! exits, the same for every state of this library) for the safe
//! [`Log`](crate::Log) and metric types, which call it through `host`.
//!
//! This file holds the SDK's only `unsafe` code (the crate root denies it
//! everywhere else); every block says why it is sound given the contract in
//! [`crate::abi`].

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use prost::Message;

use crate::abi::{
    HookvBuf, HookvBytes, HookvContext, HookvHost, HookvPlugin, ABI_VERSION, BREAK, CONTINUE,
    ERROR, PANIC, STATUS_ERROR, STATUS_OK,
};
use crate::pb::CommandResponse;
use crate::plugin::{Context, Options, Plugin, Request, Response};

// SAFETY: a descriptor is immutable after construction and its pointers
// refer to static data (the name) and functions, which any thread may read
// or call; the thread-safety of the calls themselves is part of the contract
// in `crate::abi` (events may run concurrently).
unsafe impl Sync for HookvPlugin {}
// SAFETY: as above; the descriptor holds no thread-bound data.
unsafe impl Send for HookvPlugin {}
// SAFETY: as for the descriptor: the v1 layout, for test plugins that
// export one.
unsafe impl Sync for crate::abi::v1::HookvPlugin {}
// SAFETY: as above.
unsafe impl Send for crate::abi::v1::HookvPlugin {}

/// Exports `$type` (which implements [`Plugin`](crate::Plugin)) as this
/// library's hookv plugin, named after the crate's package
/// (`CARGO_PKG_NAME`) unless `name = "..."` says otherwise.
///
/// ```ignore
/// hookv_plugin::export_plugin!(KeyGuard);
/// hookv_plugin::export_plugin!(KeyGuard, name = "key-guard");
/// ```
///
/// Use it once per library, in a crate with `crate-type = ["cdylib"]`.
#[macro_export]
macro_rules! export_plugin {
    ($type:ty) => {
        $crate::export_plugin!($type, name = env!("CARGO_PKG_NAME"));
    };
    ($type:ty, name = $name:expr) => {
        /// The hookv plugin descriptor (see `hookv_plugin::abi`).
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn hookv_plugin_descriptor() -> *const $crate::abi::HookvPlugin {
            static DESCRIPTOR: $crate::abi::HookvPlugin =
                $crate::export::descriptor::<$type>($name);
            &DESCRIPTOR
        }
    };
}

/// The descriptor for `P`: every event in `P::EVENTS` wired to `P`'s
/// method, the others NULL.
pub const fn descriptor<P: Plugin>(name: &'static str) -> HookvPlugin {
    let events = P::EVENTS;
    HookvPlugin {
        abi_version: ABI_VERSION,
        name: HookvBytes::from_slice(name.as_bytes()),
        init: Some(init::<P>),
        on_received: if events.received {
            Some(on_received::<P>)
        } else {
            None
        },
        on_executed: if events.executed {
            Some(on_executed::<P>)
        } else {
            None
        },
        on_before_send: if events.before_send {
            Some(on_before_send::<P>)
        } else {
            None
        },
        on_after_send: if events.after_send {
            Some(on_after_send::<P>)
        } else {
            None
        },
        teardown: Some(teardown::<P>),
        free_buf: Some(free_buf),
    }
}

/// Gives back a buffer made by [`to_buf`].
///
/// # Safety
///
/// `buf` must come from this library's [`to_buf`] (every buffer this SDK
/// hands out does) and be freed only once.
pub unsafe extern "C" fn free_buf(buf: HookvBuf) {
    if buf.ptr.is_null() {
        return;
    }
    // SAFETY: per the contract, `buf` is exactly the pointer and length of a
    // `Box<[u8]>` leaked by `to_buf`, returned once.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
}

/// Hands `bytes` to the server as a [`HookvBuf`] (freed by [`free_buf`]).
pub fn to_buf(bytes: Vec<u8>) -> HookvBuf {
    if bytes.is_empty() {
        return HookvBuf::empty();
    }
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    HookvBuf {
        ptr: Box::into_raw(boxed).cast::<u8>(),
        len,
    }
}

/// The bytes behind `b`.
///
/// # Safety
///
/// `b` must describe `len` readable bytes that outlive `'a` (the server
/// guarantees this for the duration of a call), or be `{NULL, 0}`.
pub unsafe fn as_slice<'a>(b: HookvBytes) -> &'a [u8] {
    if b.ptr.is_null() || b.len == 0 {
        return &[];
    }
    // SAFETY: see the function's contract.
    unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
}

/// Writes `buf` into the server's `out` slot.
///
/// # Safety
///
/// `out` must be NULL or valid for a write (the server passes a pointer to
/// its own `HookvBuf`).
unsafe fn put(out: *mut HookvBuf, buf: HookvBuf) {
    if out.is_null() {
        // SAFETY: `buf` came from `to_buf` and has not been handed out.
        unsafe { free_buf(buf) };
        return;
    }
    // SAFETY: `out` is valid for writes per the contract; the server
    // initialises it to `{NULL, 0}`, so nothing is overwritten that needs freeing.
    unsafe { out.write(buf) };
}

thread_local! {
    /// True while this thread runs plugin code inside the boundary.
    static IN_BOUNDARY: Cell<bool> = const { Cell::new(false) };
    /// The location of the last panic caught inside the boundary.
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that keeps panics inside the boundary off
/// stderr and remembers where they happened; other panics go to the hook
/// that was there before.
fn quiet_panics_in_boundary() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_BOUNDARY.with(Cell::get) {
                let at = info.location().map(|l| l.to_string());
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Why a call into the plugin failed: its message, and whether it was a
/// panic (reported as [`PANIC`], not [`ERROR`]).
struct Failure {
    panicked: bool,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            panicked: false,
            message,
        }
    }
}

/// Runs `f` inside the boundary: a panic becomes a [`Failure`] reading
/// "panicked at ...: msg".
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, Failure> {
    let was = IN_BOUNDARY.with(|b| b.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_BOUNDARY.with(|b| b.set(was));
    match result {
        Ok(outcome) => outcome.map_err(Failure::from),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            let at = PANIC_AT.with(|p| p.borrow_mut().take());
            Err(Failure {
                panicked: true,
                message: match at {
                    Some(at) => format!("panicked at {at}: {message}"),
                    None => format!("panicked: {message}"),
                },
            })
        }
    }
}

/// The server's host, kept by the first `init` (every `init` of this
/// library gets the same one, valid until the process exits); NULL when
/// the library was not loaded by a server (a plugin's own tests).
static HOST: AtomicPtr<HookvHost> = AtomicPtr::new(std::ptr::null_mut());

/// The server's host, if a server loaded this library.
pub(crate) fn host() -> Option<&'static HookvHost> {
    // SAFETY: only `init` stores into HOST, a pointer the server passed,
    // which the contract keeps valid (and unchanged) until the process exits.
    unsafe { HOST.load(Ordering::Acquire).as_ref() }
}

/// `log(host, ctx, level, message)` through the server's host; nothing
/// without one.
///
/// `ctx` must be NULL or the context of the event call in progress.
pub(crate) fn host_log(ctx: *const HookvContext, level: i32, message: &str) {
    let Some(host) = host() else { return };
    if let Some(log) = host.log {
        // SAFETY: the host's function takes the host it came from; `ctx` is
        // NULL or the server's context for the call in progress (what every
        // caller in this crate passes, through a `Log` that cannot outlive
        // the call), and the message is borrowed for the call.
        unsafe { log(host, ctx, level, HookvBytes::from_slice(message.as_bytes())) }
    }
}

/// `register_metric` through the server's host: the metric's id, 0 without
/// a host or when the server refuses it.
pub(crate) fn host_register(kind: i32, name: &str, help: &str) -> u32 {
    let Some(host) = host() else { return 0 };
    match host.register_metric {
        // SAFETY: as in `host_log`; the strings are borrowed for the call.
        Some(register) => unsafe {
            register(
                host,
                kind,
                HookvBytes::from_slice(name.as_bytes()),
                HookvBytes::from_slice(help.as_bytes()),
            )
        },
        None => 0,
    }
}

/// `counter_add(host, id, n)`; nothing for id 0 or without a host.
pub(crate) fn host_counter_add(id: u32, n: u64) {
    if id == 0 {
        return;
    }
    if let Some(add) = host().and_then(|h| h.counter_add.map(|f| (h, f))) {
        // SAFETY: as in `host_log`; any id is safe to pass (the server
        // ignores ids it did not hand out).
        unsafe { (add.1)(add.0, id, n) }
    }
}

/// Which of the host's value functions to call.
#[derive(Clone, Copy)]
pub(crate) enum ValueOp {
    GaugeSet,
    GaugeAdd,
    HistogramRecord,
}

/// `gauge_set`, `gauge_add` or `histogram_record`; nothing for id 0 or
/// without a host.
pub(crate) fn host_value(op: ValueOp, id: u32, value: f64) {
    if id == 0 {
        return;
    }
    let Some(host) = host() else { return };
    let f = match op {
        ValueOp::GaugeSet => host.gauge_set,
        ValueOp::GaugeAdd => host.gauge_add,
        ValueOp::HistogramRecord => host.histogram_record,
    };
    if let Some(f) = f {
        // SAFETY: as in `host_counter_add`.
        unsafe { f(host, id, value) }
    }
}

/// `P`'s [`crate::abi::InitFn`].
///
/// # Safety
///
/// As for an `InitFn`: `options` readable for the call, `host` NULL or the
/// server's host (valid until the process exits), `state` and `error` NULL
/// or valid for a write.
unsafe extern "C" fn init<P: Plugin>(
    options: HookvBytes,
    host: *const HookvHost,
    state: *mut *mut c_void,
    error: *mut HookvBuf,
) -> i32 {
    quiet_panics_in_boundary();
    if !host.is_null() {
        // Every init of this library gets the same host; the first one
        // stored stays (a failed exchange means another stored it).
        let _ = HOST.compare_exchange(
            std::ptr::null_mut(),
            host.cast_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    let made = guarded(|| {
        // SAFETY: the server passes the options for the duration of the call.
        let json = unsafe { as_slice(options) };
        let json = std::str::from_utf8(json).map_err(|e| format!("options are not UTF-8: {e}"))?;
        P::init(&Options::from_json(json)?)
    });
    match made {
        Ok(plugin) if !state.is_null() => {
            // SAFETY: `state` is non-null and points to the server's slot.
            unsafe { state.write(Box::into_raw(Box::new(plugin)).cast::<c_void>()) };
            STATUS_OK
        }
        Ok(_) => STATUS_ERROR,
        Err(failure) => {
            // SAFETY: `error` is NULL or the server's slot.
            unsafe { put(error, to_buf(failure.message.into_bytes())) };
            STATUS_ERROR
        }
    }
}

/// `P`'s [`crate::abi::TeardownFn`].
///
/// # Safety
///
/// `state` NULL or from `init::<P>`, and no event in flight or to come.
unsafe extern "C" fn teardown<P: Plugin>(state: *mut c_void) {
    if state.is_null() {
        return;
    }
    // A panic in the plugin's Drop is swallowed: the server is done with it.
    let _ = guarded(|| {
        // SAFETY: `state` is the `Box<P>` leaked by `init`, and the server
        // calls teardown once, after the last event.
        drop(unsafe { Box::from_raw(state.cast::<P>()) });
        Ok(())
    });
}

/// `ctx.elapsed_ns(ctx)`, or 0 without a server context: the clock reader
/// [`arguments`] puts in every [`Context`], beside the server's `ctx`.
fn elapsed_ns(ctx: *const HookvContext) -> u64 {
    // SAFETY: only `arguments` pairs this reader with a pointer, the
    // server's context for the call in progress, in a `Context` that borrows
    // it for no longer (its lifetime is the call's): a non-null `ctx` here is
    // valid, and it is the call during which `elapsed_ns` may be called.
    let Some(raw) = (unsafe { ctx.as_ref() }) else {
        return 0;
    };
    match raw.elapsed_ns {
        // SAFETY: as above; the server's function takes its own context.
        Some(elapsed) => unsafe { elapsed(ctx) },
        None => 0,
    }
}

/// The arguments every event gets.
///
/// # Safety
///
/// As for an [`crate::abi::EventFn`]: `state` from `init`, `ctx` valid for
/// the call, `request` readable for the call.
unsafe fn arguments<'a, P: Plugin>(
    state: *mut c_void,
    ctx: *const HookvContext,
    request: HookvBytes,
) -> Result<(&'a P, Context<'a>, Request<'a>), String> {
    if state.is_null() || ctx.is_null() {
        return Err("called without state or context".to_owned());
    }
    // SAFETY: `state` is the `Box<P>` from `init`, alive until teardown,
    // which the server never runs while an event is in flight; `ctx` points
    // to a context that lives for the call.
    let (plugin, ctx) = unsafe { (&*state.cast::<P>(), &*ctx) };
    // SAFETY: the server's strings live for the call.
    let (peer, principal) = unsafe { (as_slice(ctx.peer), as_slice(ctx.principal)) };
    let context = Context {
        conn_id: ctx.conn_id,
        peer: std::str::from_utf8(peer).map_err(|e| format!("peer is not UTF-8: {e}"))?,
        principal: if ctx.principal.ptr.is_null() {
            None
        } else {
            Some(
                std::str::from_utf8(principal)
                    .map_err(|e| format!("principal is not UTF-8: {e}"))?,
            )
        },
        raw: ctx,
        elapsed_ns,
    };
    // SAFETY: the server's request bytes live for the call.
    let request = Request::from_bytes(unsafe { as_slice(request) });
    Ok((plugin, context, request))
}

/// # Safety
///
/// `response` readable for the call.
unsafe fn response<'a>(response: HookvBytes) -> Response<'a> {
    // SAFETY: the server's response bytes live for the call.
    Response::from_bytes(unsafe { as_slice(response) })
}

/// Reports an event's outcome to the server.
///
/// # Safety
///
/// `out` NULL or valid for a write.
unsafe fn finish(out: *mut HookvBuf, outcome: Result<(i32, Option<Vec<u8>>), Failure>) -> i32 {
    let (verdict, bytes) = match outcome {
        Ok(verdict) => verdict,
        Err(Failure { panicked, message }) => {
            let verdict = if panicked { PANIC } else { ERROR };
            (verdict, Some(message.into_bytes()))
        }
    };
    if let Some(bytes) = bytes {
        // SAFETY: forwarded from the caller.
        unsafe { put(out, to_buf(bytes)) };
    }
    verdict
}

fn flow(flow: ControlFlow<CommandResponse>) -> (i32, Option<Vec<u8>>) {
    match flow {
        ControlFlow::Continue(()) => (CONTINUE, None),
        ControlFlow::Break(res) => (BREAK, Some(res.encode_to_vec())),
    }
}

/// `P::on_received` as an [`crate::abi::EventFn`].
///
/// # Safety
///
/// As for an `EventFn` (see [`arguments`]); `out` NULL or valid for a write.
unsafe extern "C" fn on_received<P: Plugin>(
    state: *mut c_void,
    ctx: *const HookvContext,
    request: HookvBytes,
    _response: HookvBytes,
    out: *mut HookvBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the server keeps the EventFn contract.
        let (plugin, ctx, req) = unsafe { arguments::<P>(state, ctx, request)? };
        Ok(flow(plugin.on_received(&ctx, &req)))
    });
    // SAFETY: `out` is the server's slot.
    unsafe { finish(out, outcome) }
}

/// `P::on_executed` as an [`crate::abi::EventFn`].
///
/// # Safety
///
/// As for an `EventFn` (see [`arguments`]); `out` NULL or valid for a write.
unsafe extern "C" fn on_executed<P: Plugin>(
    state: *mut c_void,
    ctx: *const HookvContext,
    request: HookvBytes,
    response_bytes: HookvBytes,
    out: *mut HookvBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the server keeps the EventFn contract.
        let (plugin, ctx, req) = unsafe { arguments::<P>(state, ctx, request)? };
        // SAFETY: as above.
        let res = unsafe { response(response_bytes) };
        Ok(flow(plugin.on_executed(&ctx, &req, &res)))
    });
    // SAFETY: `out` is the server's slot.
    unsafe { finish(out, outcome) }
}

/// `P::on_before_send` as an [`crate::abi::EventFn`].
///
/// # Safety
///
/// As for an `EventFn` (see [`arguments`]); `out` NULL or valid for a write.
unsafe extern "C" fn on_before_send<P: Plugin>(
    state: *mut c_void,
    ctx: *const HookvContext,
    request: HookvBytes,
    response_bytes: HookvBytes,
    out: *mut HookvBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the server keeps the EventFn contract.
        let (plugin, ctx, req) = unsafe { arguments::<P>(state, ctx, request)? };
        // SAFETY: as above.
        let mut res = unsafe { response(response_bytes) };
        let verdict = match plugin.on_before_send(&ctx, &req, &mut res) {
            ControlFlow::Continue(()) => CONTINUE,
            ControlFlow::Break(()) => BREAK,
        };
        // Send the response back only if the plugin may have changed it.
        Ok((verdict, res.into_changed().map(|res| res.encode_to_vec())))
    });
    // SAFETY: `out` is the server's slot.
    unsafe { finish(out, outcome) }
}

/// `P::on_after_send` as an [`crate::abi::EventFn`].
///
/// # Safety
///
/// As for an `EventFn` (see [`arguments`]); `out` NULL or valid for a write.
unsafe extern "C" fn on_after_send<P: Plugin>(
    state: *mut c_void,
    ctx: *const HookvContext,
    request: HookvBytes,
    response_bytes: HookvBytes,
    out: *mut HookvBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: the server keeps the EventFn contract.
        let (plugin, ctx, req) = unsafe { arguments::<P>(state, ctx, request)? };
        // SAFETY: as above.
        let res = unsafe { response(response_bytes) };
        Ok(match plugin.on_after_send(&ctx, &req, &res) {
            ControlFlow::Continue(()) => (CONTINUE, None),
            ControlFlow::Break(()) => (BREAK, None),
        })
    });
    // SAFETY: `out` is the server's slot.
    unsafe { finish(out, outcome) }
}
