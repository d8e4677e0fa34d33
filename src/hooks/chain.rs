//! [`HookChain`]: the ordered hooks of a service, one list per event, in
//! config order; running a list stops at the first `Break`.
//!
//! Each hook sits in the chain with its [`Placement`]: a hook whose scope
//! (`tables = [...]`) does not admit the request's table is skipped without
//! a call, and a panic inside a hook is caught here and follows the entry's
//! [`OnPanic`]: `fail_closed` answers that request 500, `fail_open` goes on
//! as if the hook had said continue. Calls, breaks, sampled durations and
//! panics are counted per hook (`crate::metrics`: the figures are found
//! when the chain is built, and the calls are tallied per batch in the
//! connection's context).

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use hookv_plugin::pb::{status, CommandRequest, CommandResponse};

use super::ctx::HookCtx;
use super::hook::{Flow, Hook};
use super::raw::RawRequest;
use super::scope::{OnPanic, Placement, Scope};
use crate::metrics::{hook_figures, HookFigures};

/// Runs an event's chain where hooks read the exchange and may answer early.
pub trait Notify<Arg: ?Sized> {
    /// Runs the chain in order; the first `Break` stops it and is returned.
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, arg: &Arg) -> Flow;
}

/// Runs an event's chain where hooks may change the response.
pub trait NotifyMut<Arg: ?Sized> {
    /// Runs the chain in order; the first `Break` stops it.
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, arg: &mut Arg) -> ControlFlow<()>;
}

/// The ordered hooks of a service, one list per event, in the order they were
/// added (config order).
#[derive(Clone, Default)]
pub struct HookChain {
    all: Vec<Arc<dyn Hook>>,
    /// The placement of each of `all`.
    placements: Vec<Placement>,
    /// Whether each of `all` can be given raw requests
    /// ([`Hook::reads_raw`]).
    raw: Vec<bool>,
    /// The figures of each hook on each event, by place.
    figures: Vec<Arc<HookFigures>>,
    pub(crate) received: Received,
    pub(crate) executed: Executed,
    pub(crate) before_send: BeforeSend,
    pub(crate) after_send: AfterSend,
}

/// The `on_received` chain.
#[derive(Clone, Default)]
pub struct Received(Slots);
/// The `on_executed` chain.
#[derive(Clone, Default)]
pub struct Executed(Slots);
/// The `on_before_send` chain.
#[derive(Clone, Default)]
pub struct BeforeSend(Slots);
/// The `on_after_send` chain.
#[derive(Clone, Default)]
pub struct AfterSend(Slots);

/// One event's hooks, in order.
#[derive(Clone, Default)]
struct Slots {
    slots: Vec<Slot>,
    /// Some hook here has a scope: the request's table must be read.
    scoped: bool,
    /// The chain's figures, by place (shared by its four events).
    figures: Arc<[Arc<HookFigures>]>,
}

/// A hook in one event's list.
#[derive(Clone)]
struct Slot {
    hook: Arc<dyn Hook>,
    scope: Option<Scope>,
    on_panic: OnPanic,
    /// Its figures' place in the chain's `figures`.
    place: usize,
    stats: Arc<HookFigures>,
}

/// A hook's call panicked (caught, logged and counted).
struct Panicked;

impl Slots {
    /// The slots a request to `table()` reaches, in order (the table is
    /// read only when some hook here is scoped; nothing at all is read when
    /// the list is empty).
    #[inline]
    fn reached_by<'a>(
        &'a self,
        ctx: &mut HookCtx,
        table: impl FnOnce() -> Option<&'a str>,
    ) -> impl Iterator<Item = &'a Slot> + 'a {
        if !self.slots.is_empty() {
            ctx.tally().hooks().enter(&self.figures);
        }
        let table = if self.scoped { table() } else { None };
        self.slots
            .iter()
            .filter(move |s| s.scope.as_ref().is_none_or(|scope| scope.admits(table)))
    }
}

impl Slots {
    /// Calls the hooks `req` reaches through `call`, in order, until one
    /// refuses it (its answer, counted as a break) or fails under
    /// `fail_closed` (a 500); `on_received` and `on_executed` alike.
    #[inline]
    fn until_refused<'a>(
        &'a self,
        ctx: &mut HookCtx,
        table: impl FnOnce() -> Option<&'a str>,
        call: impl Fn(&dyn Hook, &mut HookCtx) -> Flow,
    ) -> Flow {
        for slot in self.reached_by(ctx, table) {
            match slot.call(ctx, &call) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(res)) => {
                    slot.stats.broke(res.status);
                    return ControlFlow::Break(res);
                }
                Err(Panicked) if slot.on_panic == OnPanic::FailOpen => {}
                Err(Panicked) => {
                    slot.stats.broke(status::INTERNAL);
                    return ControlFlow::Break(slot.failure());
                }
            }
        }
        ControlFlow::Continue(())
    }
}

impl Slot {
    /// Calls the hook through `f`: counted, timed if sampled, and with a
    /// panic caught.
    #[inline]
    fn call<B>(
        &self,
        ctx: &mut HookCtx,
        f: impl FnOnce(&dyn Hook, &mut HookCtx) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, Panicked> {
        let timed = ctx.tally().hooks().call(self.place).then(Instant::now);
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&*self.hook, ctx)));
        if let Some(start) = timed {
            self.stats.timed(start.elapsed());
        }
        outcome.map_err(|payload| self.panicked(ctx, payload.as_ref()))
    }

    #[cold]
    fn panicked(&self, ctx: &HookCtx, payload: &(dyn std::any::Any + Send)) -> Panicked {
        self.stats.panicked();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string payload");
        let policy = self.on_panic.describe();
        // A client may trigger it on every request: limited.
        crate::log_limited!(
            error,
            hook = self.stats.hook(),
            event = self.stats.event(),
            conn = ctx.conn_id(),
            panic = message,
            on_panic = policy,
            "hook panicked"
        );
        Panicked
    }

    /// The answer to a request whose hook panicked under `fail_closed`.
    fn failure(&self) -> CommandResponse {
        CommandResponse::error(
            status::INTERNAL,
            format!(
                "hook {:?} failed on this request (see the server log)",
                self.stats.hook()
            ),
        )
    }
}

impl Notify<()> for Received {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, _: &()) -> Flow {
        self.0
            .until_refused(ctx, || req.table(), |h, ctx| h.on_received(ctx, req))
    }
}

impl Received {
    /// Runs the chain on a request still in its bytes: only for a request
    /// every hook in reach of which takes raw requests
    /// ([`HookChain::needs_decoded`] is false for its table).
    #[inline]
    pub(crate) fn notify_raw(&self, ctx: &mut HookCtx, req: &RawRequest<'_>) -> Flow {
        self.0.until_refused(
            ctx,
            || Some(req.table()),
            |h, ctx| h.on_received_raw(ctx, req),
        )
    }
}

impl Notify<CommandResponse> for Executed {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        self.0
            .until_refused(ctx, || req.table(), |h, ctx| h.on_executed(ctx, req, res))
    }
}

impl Slots {
    /// Shows the hooks `table()` reaches the response through `call`, in
    /// order, each free to change it, until one stops the chain; a panic
    /// under `fail_closed` replaces the response with a 500 (later hooks
    /// still see it: a rewrite may word it, audit records it).
    #[inline]
    fn rewrite<'a>(
        &'a self,
        ctx: &mut HookCtx,
        table: impl FnOnce() -> Option<&'a str>,
        res: &mut CommandResponse,
        call: impl Fn(&dyn Hook, &HookCtx, &mut CommandResponse) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        for slot in self.reached_by(ctx, table) {
            match slot.call(ctx, |h, ctx| call(h, ctx, res)) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => {
                    slot.stats.broke(res.status);
                    return ControlFlow::Break(());
                }
                Err(Panicked) if slot.on_panic == OnPanic::FailOpen => {}
                Err(Panicked) => {
                    slot.stats.broke(status::INTERNAL);
                    *res = slot.failure();
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Shows the hooks `table()` reaches the sent response through `call`,
    /// in order, until one stops the chain. The answer is sent: a panic is
    /// logged and counted, and the chain goes on whatever the policy.
    #[inline]
    fn shown<'a>(
        &'a self,
        ctx: &mut HookCtx,
        table: impl FnOnce() -> Option<&'a str>,
        res: &CommandResponse,
        call: impl Fn(&dyn Hook, &HookCtx) -> ControlFlow<()>,
    ) {
        for slot in self.reached_by(ctx, table) {
            match slot.call(ctx, |h, ctx| call(h, ctx)) {
                Ok(ControlFlow::Continue(())) | Err(Panicked) => {}
                Ok(ControlFlow::Break(())) => {
                    slot.stats.broke(res.status);
                    break;
                }
            }
        }
    }
}

impl NotifyMut<CommandResponse> for BeforeSend {
    fn notify(
        &self,
        ctx: &mut HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.0.rewrite(
            ctx,
            || req.table(),
            res,
            |h, ctx, res| h.on_before_send(ctx, req, res),
        )
    }
}

impl Notify<CommandResponse> for AfterSend {
    fn notify(&self, ctx: &mut HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        self.0.shown(
            ctx,
            || req.table(),
            res,
            |h, ctx| h.on_after_send(ctx, req, res),
        );
        ControlFlow::Continue(())
    }
}

impl Executed {
    /// [`Received::notify_raw`] for `on_executed`.
    #[inline]
    pub(crate) fn notify_raw(
        &self,
        ctx: &mut HookCtx,
        req: &RawRequest<'_>,
        res: &CommandResponse,
    ) -> Flow {
        self.0.until_refused(
            ctx,
            || Some(req.table()),
            |h, ctx| h.on_executed_raw(ctx, req, res),
        )
    }
}

impl BeforeSend {
    /// [`Received::notify_raw`] for `on_before_send`.
    #[inline]
    pub(crate) fn notify_raw(
        &self,
        ctx: &mut HookCtx,
        req: &RawRequest<'_>,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.0.rewrite(
            ctx,
            || Some(req.table()),
            res,
            |h, ctx, res| h.on_before_send_raw(ctx, req, res),
        )
    }
}

impl AfterSend {
    /// [`Received::notify_raw`] for `on_after_send`.
    #[inline]
    pub(crate) fn notify_raw(
        &self,
        ctx: &mut HookCtx,
        req: &RawRequest<'_>,
        res: &CommandResponse,
    ) {
        self.0.shown(
            ctx,
            || Some(req.table()),
            res,
            |h, ctx| h.on_after_send_raw(ctx, req, res),
        );
    }
}

impl HookChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `hook`, for every request and failing closed, to the chain
    /// of every event it handles.
    pub fn push(&mut self, hook: Arc<dyn Hook>) {
        self.push_placed(hook, Placement::default());
    }

    /// Appends `hook` to the chain of every event it handles, placed as
    /// `placement` says (its scope and failure policy).
    pub fn push_placed(&mut self, hook: Arc<dyn Hook>, placement: Placement) {
        let events = hook.events();
        for (handles, slots, event) in [
            (events.received, &mut self.received.0, "on_received"),
            (events.executed, &mut self.executed.0, "on_executed"),
            (
                events.before_send,
                &mut self.before_send.0,
                "on_before_send",
            ),
            (events.after_send, &mut self.after_send.0, "on_after_send"),
        ] {
            if !handles {
                continue;
            }
            let stats = hook_figures(hook.name(), event);
            slots.scoped |= placement.scope.is_some();
            slots.slots.push(Slot {
                hook: Arc::clone(&hook),
                scope: placement.scope.clone(),
                on_panic: placement.on_panic,
                place: self.figures.len(),
                stats: Arc::clone(&stats),
            });
            self.figures.push(stats);
        }
        // Every event shares the one list of figures, so that a connection
        // tallies all four against the same chain.
        let figures: Arc<[Arc<HookFigures>]> = self.figures.clone().into();
        for slots in [
            &mut self.received.0,
            &mut self.executed.0,
            &mut self.before_send.0,
            &mut self.after_send.0,
        ] {
            slots.figures = Arc::clone(&figures);
        }
        self.raw.push(hook.reads_raw());
        self.all.push(hook);
        self.placements.push(placement);
    }

    /// Appends every hook of `other`, in order, each placed as it is there.
    pub fn append(&mut self, other: &HookChain) {
        for (hook, placement) in other.all.iter().zip(&other.placements) {
            self.push_placed(Arc::clone(hook), placement.clone());
        }
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
    /// ([`Hook::authenticates`]) for every table. A scoped one guards only
    /// its tables, so it does not make every connection authenticate.
    pub fn authenticates(&self) -> bool {
        self.all
            .iter()
            .zip(&self.placements)
            .any(|(h, p)| p.scope.is_none() && h.authenticates())
    }

    /// True when some request may be answered from its bytes: every hook
    /// either takes raw requests or is scoped to tables (which a request
    /// may avoid). True for an empty chain.
    pub(crate) fn may_read_raw(&self) -> bool {
        self.placements
            .iter()
            .zip(&self.raw)
            .all(|(p, &raw)| raw || p.scope.is_some())
    }

    /// Whether a request to `table` reaches a hook that needs it decoded
    /// (one that does not take raw requests).
    pub(crate) fn needs_decoded(&self, table: &str) -> bool {
        self.placements
            .iter()
            .zip(&self.raw)
            .any(|(p, &raw)| !raw && p.scope.as_ref().is_none_or(|s| s.admits(Some(table))))
    }

    /// True when some hook runs after the response is sent (so the
    /// connection must keep each request until then).
    pub fn has_after_send(&self) -> bool {
        !self.after_send.0.slots.is_empty()
    }
}

impl std::fmt::Debug for HookChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|h| h.name()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Events;

    struct Named;

    impl Hook for Named {
        fn name(&self) -> &str {
            "named"
        }
        fn events(&self) -> Events {
            Events::RECEIVED
        }
    }

    fn scoped(patterns: &[&str]) -> Placement {
        Placement {
            scope: Scope::new(patterns.iter().map(|p| p.to_string()).collect()),
            ..Placement::default()
        }
    }

    /// A hook that takes raw requests, on `events`.
    struct Raw(Events);

    impl Hook for Raw {
        fn name(&self) -> &str {
            "raw"
        }
        fn events(&self) -> Events {
            self.0
        }
        fn reads_raw(&self) -> bool {
            true
        }
    }

    /// What lets the connection answer a request without decoding it: no
    /// hook, or only hooks scoped away from its table.
    #[test]
    fn a_request_reaches_the_hooks_whose_tables_it_names() {
        let mut chain = HookChain::new();
        assert!(chain.may_read_raw());
        assert!(!chain.needs_decoded("users"));
        chain.push_placed(Arc::new(Named), scoped(&["orders*"]));
        chain.push_placed(Arc::new(Named), scoped(&["audit"]));
        assert!(chain.may_read_raw());
        assert!(chain.needs_decoded("orders1"));
        assert!(chain.needs_decoded("audit"));
        assert!(!chain.needs_decoded("users"));
        assert!(!chain.needs_decoded(""));
        // `tables = ["*"]` is no scope: every request reaches it.
        chain.push_placed(Arc::new(Named), scoped(&["*"]));
        assert!(!chain.may_read_raw());
        assert!(chain.needs_decoded("users"));
    }

    /// Hooks that take raw requests leave a request undecoded, on every
    /// event; one that does not, unless scoped away, does not.
    #[test]
    fn hooks_that_read_raw_leave_a_request_undecoded() {
        let mut chain = HookChain::new();
        chain.push(Arc::new(Raw(Events::RECEIVED)));
        chain.push(Arc::new(Raw(Events::ALL)));
        assert!(chain.may_read_raw());
        assert!(!chain.needs_decoded("users"));
        chain.push_placed(Arc::new(Named), scoped(&["orders*"]));
        assert!(chain.may_read_raw());
        assert!(!chain.needs_decoded("users"));
        assert!(chain.needs_decoded("orders"));
        chain.push(Arc::new(Named));
        assert!(!chain.may_read_raw());
        assert!(chain.needs_decoded("users"));
    }

    /// Says it reads raw requests but implements only the decoded
    /// `on_before_send`.
    struct HalfRaw;

    impl Hook for HalfRaw {
        fn name(&self) -> &str {
            "half-raw"
        }
        fn events(&self) -> Events {
            Events {
                before_send: true,
                ..Events::NONE
            }
        }
        fn reads_raw(&self) -> bool {
            true
        }
        fn on_before_send(
            &self,
            _ctx: &HookCtx,
            req: &CommandRequest,
            res: &mut CommandResponse,
        ) -> ControlFlow<()> {
            res.message = format!("seen {}", req.command_name());
            ControlFlow::Continue(())
        }
    }

    /// A raw form a hook does not implement decodes the request and calls
    /// the decoded one: saying `reads_raw` never skips an event.
    #[test]
    fn a_raw_form_left_out_runs_the_decoded_one() {
        let mut chain = HookChain::new();
        chain.push(Arc::new(HalfRaw));
        assert!(!chain.needs_decoded("t"));
        let frame = prost::Message::encode_to_vec(&CommandRequest::new_hget("t", "k"));
        let raw = RawRequest::parse(&frame).unwrap();
        let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().unwrap());
        let mut res = CommandResponse::ok();
        let _ = chain.before_send.notify_raw(&mut ctx, &raw, &mut res);
        assert_eq!(res.message, "seen hget");
    }
}
