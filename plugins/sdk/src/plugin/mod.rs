//! The safe side of a plugin, one noun per file: the [`Plugin`] trait
//! (here), what its hooks see ([`Context`], [`Request`] and [`Response`],
//! which are [`Lazy`] messages, and their [`Keys`]), which [`Events`] it
//! handles, its configuration ([`Options`]), and what it may say back to
//! the server (ABI version 2): lines in its [`Log`], and metrics
//! ([`Counter`], [`Gauge`], [`Histogram`]).

use std::ops::ControlFlow;

use crate::pb::CommandResponse;

mod context;
mod events;
mod json;
mod keys;
mod lazy;
mod log;
mod metric;
mod options;

pub use context::Context;
pub use events::Events;
pub use json::{OptionError, OptionValue};
pub use keys::Keys;
pub use lazy::{Lazy, Request, Response};
pub use log::Log;
pub use metric::{Counter, Gauge, Histogram};
pub use options::Options;

/// What `on_received` and `on_executed` return: go on, or answer with this
/// response now.
pub type Flow = ControlFlow<CommandResponse>;

/// A hook loaded from a shared library. Export it with
/// [`export_plugin!`](crate::export_plugin).
///
/// One value is created by [`Plugin::init`] and shared by every connection:
/// events may run on several threads at once, so keep mutable state behind
/// a `Mutex` or atomics. Every event defaults to "continue"; list the ones
/// you implement in [`Plugin::EVENTS`] so that the server does not call the
/// others at all.
///
/// A panic in any method is caught at the boundary: in `init` it refuses
/// the server's start with the panic's message, in an event it answers that
/// request with a 500 and the server carries on.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The events this plugin handles; the others are never called.
    /// Defaults to all four.
    const EVENTS: Events = Events::ALL;

    /// Builds the plugin from the options of its `[[hooks]]` table. An
    /// `Err` refuses the server's start with that message: name the option.
    fn init(options: &Options) -> Result<Self, String>;

    /// Before execution. `Break(response)` answers with `response`; storage
    /// is not touched.
    fn on_received(&self, _ctx: &Context<'_>, _req: &Request<'_>) -> Flow {
        ControlFlow::Continue(())
    }

    /// After execution, with the response storage produced. `Break(response)`
    /// replaces it.
    fn on_executed(&self, _ctx: &Context<'_>, _req: &Request<'_>, _res: &Response<'_>) -> Flow {
        ControlFlow::Continue(())
    }

    /// Before the response is written; may change it (through `&mut *res`:
    /// only a response borrowed that way is sent back to the server).
    /// `Break` stops the rest of this chain (the change stays).
    fn on_before_send(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        _res: &mut Response<'_>,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// After the response was written; observe only. `Break` stops the rest
    /// of this chain.
    fn on_after_send(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        _res: &Response<'_>,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}
