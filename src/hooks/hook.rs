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

    /// True when this hook may be handed requests still in their frame's
    /// bytes (see [`RawRequest`]): the connection may then answer a plain
    /// `hget` or `hset` without decoding it. The hook's raw forms
    /// ([`Hook::on_received_raw`], [`Hook::on_executed_raw`],
    /// [`Hook::on_before_send_raw`], [`Hook::on_after_send_raw`]) are then
    /// called instead of the decoded ones; each defaults to decoding the
    /// frame and calling the decoded form, so a hook overrides the raw
    /// forms it can do without decoding and loses nothing on the others.
    /// During a raw call [`HookCtx::request_frame`] is `None`: the bytes are
    /// [`RawRequest::frame`]. Defaults to false.
    fn reads_raw(&self) -> bool {
        false
    }

    /// `on_received` for a request still in its frame's bytes, called
    /// instead of [`Hook::on_received`] when [`Hook::reads_raw`] says so.
    /// By default: [`Hook::on_received`] on the decoded request.
    fn on_received_raw(&self, ctx: &mut HookCtx, req: &RawRequest<'_>) -> Flow {
        match req.decode() {
            Some(decoded) => self.on_received(ctx, &decoded),
            None => ControlFlow::Continue(()),
        }
    }

    /// `on_executed` for a request still in its frame's bytes (see
    /// [`Hook::on_received_raw`]). By default: [`Hook::on_executed`] on the
    /// decoded request.
    fn on_executed_raw(&self, ctx: &HookCtx, req: &RawRequest<'_>, res: &CommandResponse) -> Flow {
        match req.decode() {
            Some(decoded) => self.on_executed(ctx, &decoded, res),
            None => ControlFlow::Continue(()),
        }
    }

    /// `on_before_send` for a request still in its frame's bytes (see
    /// [`Hook::on_received_raw`]). By default: [`Hook::on_before_send`] on
    /// the decoded request.
    fn on_before_send_raw(
        &self,
        ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        match req.decode() {
            Some(decoded) => self.on_before_send(ctx, &decoded, res),
            None => ControlFlow::Continue(()),
        }
    }

    /// `on_after_send` for a request still in its frame's bytes (see
    /// [`Hook::on_received_raw`]). By default: [`Hook::on_after_send`] on
    /// the decoded request.
    fn on_after_send_raw(
        &self,
        ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        match req.decode() {
            Some(decoded) => self.on_after_send(ctx, &decoded, res),
            None => ControlFlow::Continue(()),
        }
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
