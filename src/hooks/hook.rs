//! The [`Hook`] trait: up to four event handlers, each defaulting to
//! "continue".

use std::ops::ControlFlow;

use hookv_plugin::pb::{CommandRequest, CommandResponse};
use hookv_plugin::Events;

use super::ctx::HookCtx;
use super::raw::RawRequest;

/// What an `on_received` or `on_executed` hook returns: continue, or answer
/// with this response now.
pub type Flow = ControlFlow<CommandResponse>;

/// A hook with up to four event handlers; each defaults to "continue".
pub trait Hook: Send + Sync + 'static {
    /// A short name for logs, e.g. `"auth"` or a plugin's name.
    fn name(&self) -> &str;

    /// The events this hook handles. Defaults to all four.
    fn events(&self) -> Events {
        Events::ALL
    }

    /// Before execution. `Break(response)` answers with `response` and leaves
    /// storage untouched.
    fn on_received(&self, _ctx: &mut HookCtx, _req: &CommandRequest) -> Flow {
        ControlFlow::Continue(())
    }

    /// True when the raw form of each event this hook handles
    /// ([`Hook::on_received_raw`], [`Hook::on_executed_raw`],
    /// [`Hook::on_before_send_raw`], [`Hook::on_after_send_raw`]) does
    /// exactly what the decoded form would for the decoded request: the
    /// connection may then answer a plain `hget` or `hset` without
    /// decoding it (see [`RawRequest`]). Defaults to false.
    fn reads_raw(&self) -> bool {
        false
    }

    /// `on_received` for a request still in its frame's bytes, called
    /// instead of [`Hook::on_received`] when [`Hook::reads_raw`] says so.
    fn on_received_raw(&self, _ctx: &mut HookCtx, _req: &RawRequest<'_>) -> Flow {
        ControlFlow::Continue(())
    }

    /// `on_executed` for a request still in its frame's bytes (see
    /// [`Hook::on_received_raw`]).
    fn on_executed_raw(
        &self,
        _ctx: &HookCtx,
        _req: &RawRequest<'_>,
        _res: &CommandResponse,
    ) -> Flow {
        ControlFlow::Continue(())
    }

    /// `on_before_send` for a request still in its frame's bytes (see
    /// [`Hook::on_received_raw`]).
    fn on_before_send_raw(
        &self,
        _ctx: &HookCtx,
        _req: &RawRequest<'_>,
        _res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// `on_after_send` for a request still in its frame's bytes (see
    /// [`Hook::on_received_raw`]).
    fn on_after_send_raw(
        &self,
        _ctx: &HookCtx,
        _req: &RawRequest<'_>,
        _res: &CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// After execution, with the response storage produced. `Break(response)`
    /// replaces it (e.g. a failed WAL write turns success into a 500).
    fn on_executed(&self, _ctx: &HookCtx, _req: &CommandRequest, _res: &CommandResponse) -> Flow {
        ControlFlow::Continue(())
    }

    /// Before the response is written; may rewrite it. `Break` stops the rest
    /// of this chain.
    fn on_before_send(
        &self,
        _ctx: &HookCtx,
        _req: &CommandRequest,
        _res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// After the response frame is written. `Break` stops the rest of this chain.
    fn on_after_send(
        &self,
        _ctx: &HookCtx,
        _req: &CommandRequest,
        _res: &CommandResponse,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// True for a hook that authenticates connections (sets
    /// [`HookCtx::principal`] and refuses requests without one). While such
    /// a hook is in the chain, the server limits how many connections may
    /// stay unauthenticated, and for how long.
    fn authenticates(&self) -> bool {
        false
    }

    /// The server is stopping (or this hook left the chain on a reload):
    /// flush and release what the hook holds. Called once; requests may no
    /// longer reach the hook afterwards.
    fn shutdown(&self) {}
}
