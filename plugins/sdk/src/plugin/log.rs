//! [`Log`]: lines in the server's log, from a plugin (ABI version 2).

use std::marker::PhantomData;

use crate::abi::{HookvContext, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE, LOG_WARN};
use crate::export::host_log;

/// Writes lines into the server's log (its `tracing` output, target
/// `hookv::plugin`), each with the plugin's name; from
/// [`Context::log`](crate::Context::log) also with the request's connection.
///
/// ```
/// # use hookv_plugin::Log;
/// Log::plugin().info("limits: 100 requests a second, 20 at once");
/// ```
///
/// The server's log filter decides what is written (`[log] filter`, e.g.
/// `hookv::plugin=debug`), and the server writes at most a burst of lines
/// from one plugin, then about one a second, saying how many it left out:
/// a line per request is safe, but the message is still formatted on every
/// call. Outside a server (a plugin's own tests) lines go nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Log<'a> {
    /// The server's context of the call in progress, or NULL.
    ctx: *const HookvContext,
    /// A `Log` from a context lives no longer than the call.
    _call: PhantomData<&'a HookvContext>,
}

impl Log<'static> {
    /// The plugin's log, not about a request: for `init` and any thread
    /// the plugin runs.
    pub fn plugin() -> Self {
        Self {
            ctx: std::ptr::null(),
            _call: PhantomData,
        }
    }
}

impl<'a> Log<'a> {
    /// The log about the request whose server context is `ctx` (NULL: none).
    pub(crate) fn about(ctx: *const HookvContext) -> Self {
        Self {
            ctx,
            _call: PhantomData,
        }
    }

    /// An error.
    pub fn error(&self, message: impl AsRef<str>) {
        host_log(self.ctx, LOG_ERROR, message.as_ref());
    }

    /// A warning.
    pub fn warn(&self, message: impl AsRef<str>) {
        host_log(self.ctx, LOG_WARN, message.as_ref());
    }

    /// Information.
    pub fn info(&self, message: impl AsRef<str>) {
        host_log(self.ctx, LOG_INFO, message.as_ref());
    }

    /// Debugging detail.
    pub fn debug(&self, message: impl AsRef<str>) {
        host_log(self.ctx, LOG_DEBUG, message.as_ref());
    }

    /// Tracing detail.
    pub fn trace(&self, message: impl AsRef<str>) {
        host_log(self.ctx, LOG_TRACE, message.as_ref());
    }
}
