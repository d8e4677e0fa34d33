//! `v1-guard`: a test-only plugin at plugin ABI **version 1**, exported
//! exactly as the version 1 SDK exported `key-guard` (its descriptor, its
//! `init` without a host, its glue's verdicts), so the tests can show that
//! a plugin built before version 2 still loads and runs unchanged.
//!
//! The version 1 layout is `hookv_plugin::abi::v1::HookvPlugin`; the
//! glue below is the version 1 SDK's (`export.rs` before ABI version 2),
//! cut to the one event this plugin handles: a panic is caught and answered
//! [`ERROR`] with a message that starts `panicked` (version 1 had no panic
//! verdict), the state is a `Box` of the plugin, buffers are `Box<[u8]>`
//! given back through `free_buf`.
//!
//! What it does, on `on_received`: refuses writes naming a key longer than
//! `max_key_len` (default 256) with 400, as `key-guard` does, and, given
//! `panic_table = "boom"`, panics on any request to that table.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hookv_plugin::abi::v1::{HookvPlugin, InitFn, ABI_VERSION};
use hookv_plugin::abi::{
    HookvBuf, HookvBytes, HookvContext, BREAK, CONTINUE, ERROR, STATUS_ERROR, STATUS_OK,
};
use hookv_plugin::export::{as_slice, free_buf, to_buf};
use hookv_plugin::pb::{status, CommandResponse};
use hookv_plugin::prost::Message;
use hookv_plugin::{Options, Request};

/// The plugin's state: its limit, and the table it panics on.
struct Guard {
    max_key_len: usize,
    panic_table: Option<String>,
}

impl Guard {
    fn on_received(&self, req: &Request<'_>) -> Option<CommandResponse> {
        if let Some(table) = &self.panic_table {
            if req.table() == Some(table.as_str()) {
                panic!("asked to panic on table {table}");
            }
        }
        if !req.is_write() {
            return None;
        }
        let key = req.keys().find(|k| k.len() > self.max_key_len)?;
        Some(CommandResponse::error(
            status::BAD_REQUEST,
            format!(
                "key of {} bytes is longer than the limit of {} (v1-guard max_key_len)",
                key.len(),
                self.max_key_len
            ),
        ))
    }
}

/// The version 1 SDK's boundary: a panic becomes `Err("panicked: ...")`.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".to_owned());
        Err(format!("panicked: {message}"))
    })
}

/// Version 1's `init(options, &state, &error)`: no host.
unsafe extern "C" fn init(
    options: HookvBytes,
    state: *mut *mut c_void,
    error: *mut HookvBuf,
) -> i32 {
    // Panics inside the boundary are answered, not printed.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let made = guarded(|| {
        // SAFETY: the server lends the options for the call.
        let json = std::str::from_utf8(unsafe { as_slice(options) }).map_err(|e| e.to_string())?;
        let options = Options::from_json(json)?;
        options.only(&["max_key_len", "panic_table"])?;
        let max_key_len: u32 = options.get("max_key_len")?.unwrap_or(256);
        Ok(Guard {
            max_key_len: max_key_len as usize,
            panic_table: options.get("panic_table")?,
        })
    });
    match made {
        Ok(guard) if !state.is_null() => {
            // SAFETY: `state` is the server's slot.
            unsafe { state.write(Box::into_raw(Box::new(guard)).cast::<c_void>()) };
            STATUS_OK
        }
        Ok(_) => STATUS_ERROR,
        Err(message) => {
            if !error.is_null() {
                // SAFETY: `error` is the server's slot, `{NULL, 0}` so far.
                unsafe { error.write(to_buf(message.into_bytes())) };
            }
            STATUS_ERROR
        }
    }
}

/// `on_received(state, ctx, request, response, &out)`.
unsafe extern "C" fn on_received(
    state: *mut c_void,
    _ctx: *const HookvContext,
    request: HookvBytes,
    _response: HookvBytes,
    out: *mut HookvBuf,
) -> i32 {
    let outcome = guarded(|| {
        // SAFETY: `state` is the `Box<Guard>` from `init`, alive until
        // teardown; the request bytes are lent for the call.
        let (guard, bytes) = unsafe { (&*state.cast::<Guard>(), as_slice(request)) };
        Ok(guard.on_received(&Request::from_bytes(bytes)))
    });
    let (verdict, bytes) = match outcome {
        Ok(None) => (CONTINUE, None),
        Ok(Some(res)) => (BREAK, Some(res.encode_to_vec())),
        Err(message) => (ERROR, Some(message.into_bytes())),
    };
    if let (Some(bytes), false) = (bytes, out.is_null()) {
        // SAFETY: `out` is the server's slot, `{NULL, 0}` so far.
        unsafe { out.write(to_buf(bytes)) };
    }
    verdict
}

/// `teardown(state)`: frees the `Box<Guard>`.
unsafe extern "C" fn teardown(state: *mut c_void) {
    if !state.is_null() {
        // SAFETY: `state` is the `Box<Guard>` from `init`; no call follows.
        drop(unsafe { Box::from_raw(state.cast::<Guard>()) });
    }
}

/// The version 1 descriptor.
#[unsafe(no_mangle)]
pub extern "C" fn hookv_plugin_descriptor() -> *const HookvPlugin {
    const INIT: InitFn = init;
    static DESCRIPTOR: HookvPlugin = HookvPlugin {
        abi_version: ABI_VERSION,
        name: HookvBytes::from_slice(b"v1-guard"),
        init: Some(INIT),
        on_received: Some(on_received),
        on_executed: None,
        on_before_send: None,
        on_after_send: None,
        teardown: Some(teardown),
        free_buf: Some(free_buf),
    };
    &DESCRIPTOR
}
