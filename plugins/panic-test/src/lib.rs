//! `panic-test`: a hookv plugin that misbehaves on purpose, so the tests can
//! show the server survives it. Not for production.
//!
//! - `on_received` panics for any request to table `"boom"`.
//! - `on_executed` (hand-written against the raw ABI, since the SDK cannot
//!   produce bad bytes) answers requests to table `"garbage"` with bytes
//!   that are not a `CommandResponse`, and requests to table `"unknown"`
//!   with a verdict that does not exist.
//! - options: `fail_init = "message"` makes init fail with that message,
//!   `panic_init = true` makes it panic, and any other key is refused.

use std::ffi::c_void;
use std::ops::ControlFlow;

use hookv_plugin::abi::{HookvBuf, HookvBytes, HookvContext, HookvPlugin, BREAK, CONTINUE};
use hookv_plugin::pb::CommandRequest;
use hookv_plugin::prost::Message;
use hookv_plugin::{Context, Events, Flow, Options, Plugin, Request};

/// Stateless.
pub struct PanicTest;

impl Plugin for PanicTest {
    const EVENTS: Events = Events::RECEIVED;

    fn init(options: &Options) -> Result<Self, String> {
        options.only(&["fail_init", "panic_init"])?;
        if let Some(message) = options.get::<String>("fail_init")? {
            return Err(message);
        }
        if options.get::<bool>("panic_init")?.unwrap_or(false) {
            panic!("asked to panic in init");
        }
        Ok(PanicTest)
    }

    fn on_received(&self, _ctx: &Context<'_>, req: &Request<'_>) -> Flow {
        if req.table() == Some("boom") {
            panic!("asked to panic on table boom");
        }
        ControlFlow::Continue(())
    }
}

/// A raw `on_executed`: garbage bytes or an unknown verdict on request.
unsafe extern "C" fn on_executed(
    _state: *mut c_void,
    _ctx: *const HookvContext,
    request: HookvBytes,
    _response: HookvBytes,
    out: *mut HookvBuf,
) -> i32 {
    // SAFETY: the server lends the request bytes for the call.
    let bytes = unsafe { hookv_plugin::export::as_slice(request) };
    let table = CommandRequest::decode(bytes)
        .ok()
        .and_then(|r| r.table().map(str::to_owned));
    match table.as_deref() {
        Some("garbage") => {
            // SAFETY: `out` is the server's slot; the buffer is freed by this
            // library's `free_buf` (the SDK's), which `to_buf` matches.
            unsafe { out.write(hookv_plugin::export::to_buf(vec![0xff; 16])) };
            BREAK
        }
        Some("unknown") => 42,
        _ => CONTINUE,
    }
}

/// The SDK's descriptor with the raw `on_executed` added.
#[unsafe(no_mangle)]
pub extern "C" fn hookv_plugin_descriptor() -> *const HookvPlugin {
    static DESCRIPTOR: HookvPlugin = HookvPlugin {
        on_executed: Some(on_executed),
        ..hookv_plugin::export::descriptor::<PanicTest>("panic-test")
    };
    &DESCRIPTOR
}
