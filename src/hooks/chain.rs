//! [`HookChain`]: the ordered hooks of a service, one list per event, in
//! config order; running a list stops at the first `Break`.

use std::ops::ControlFlow;
use std::sync::Arc;

use hookv_plugin::pb::{CommandRequest, CommandResponse};

use super::ctx::HookCtx;
use super::hook::{Flow, Hook};

/// Runs an event's chain where hooks read the exchange and may answer early.
pub trait Notify<Arg: ?Sized> {
    /// Runs the chain in order; the first `Break` stops it and is returned.
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, arg: &Arg) -> Flow;
}

/// Runs an event's chain where hooks may change the response.
pub trait NotifyMut<Arg: ?Sized> {
    /// Runs the chain in order; the first `Break` stops it.
    fn notify(&self, ctx: &HookCtx, req: &CommandRequest, arg: &mut Arg) -> ControlFlow<()>;
}

/// The ordered hooks of a service, one list per event, in the order they were
/// added (config order).
#[derive(Clone, Default)]
pub struct HookChain {
    all: Vec<Arc<dyn Hook>>,
    pub(crate) received: Received,
    pub(crate) executed: Executed,
    pub(crate) before_send: BeforeSend,
    pub(crate) after_send: AfterSend,
}

/// The `on_received` chain.
#[derive(Clone, Default)]
pub struct Received(Vec<Arc<dyn Hook>>);
/// The `on_executed` chain.
#[derive(Clone, Default)]
pub struct Executed(Vec<Arc<dyn Hook>>);
/// The `on_before_send` chain.
#[derive(Clone, Default)]
pub struct BeforeSend(Vec<Arc<dyn Hook>>);
/// The `on_after_send` chain.
#[derive(Clone, Default)]
pub struct AfterSend(Vec<Arc<dyn Hook>>);

impl Notify<()> for Received {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, _: &()) -> Flow {
        self.0.iter().try_for_each(|h| h.on_received(ctx, req))
    }
}

impl Notify<CommandResponse> for Executed {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        self.0.iter().try_for_each(|h| h.on_executed(ctx, req, res))
    }
}

impl NotifyMut<CommandResponse> for BeforeSend {
    fn notify(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.0
            .iter()
            .try_for_each(|h| h.on_before_send(ctx, req, res))
    }
}

impl Notify<CommandResponse> for AfterSend {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        for h in &self.0 {
            if h.on_after_send(ctx, req, res).is_break() {
                break;
            }
        }
        ControlFlow::Continue(())
    }
}

impl HookChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `hook` to the chain of every event it handles.
    pub fn push(&mut self, hook: Arc<dyn Hook>) {
        let events = hook.events();
        if events.received {
            self.received.0.push(hook.clone());
        }
        if events.executed {
            self.executed.0.push(hook.clone());
        }
        if events.before_send {
            self.before_send.0.push(hook.clone());
        }
        if events.after_send {
            self.after_send.0.push(hook.clone());
        }
        self.all.push(hook);
    }

    /// Every hook, in the order added.
    pub fn hooks(&self) -> &[Arc<dyn Hook>] {
        &self.all
    }

    /// Calls [`Hook::shutdown`] on every hook, in order.
    pub fn shutdown(&self) {
        for hook in &self.all {
            hook.shutdown();
        }
    }

    /// True when some hook in the chain authenticates connections
    /// ([`Hook::authenticates`]).
    pub fn authenticates(&self) -> bool {
        self.all.iter().any(|h| h.authenticates())
    }

    /// True when some hook runs after the response is sent (so the
    /// connection must keep each request until then).
    pub fn has_after_send(&self) -> bool {
        !self.after_send.0.is_empty()
    }
}

impl std::fmt::Debug for HookChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|h| h.name()))
            .finish()
    }
}
