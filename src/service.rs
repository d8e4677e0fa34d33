//! [`Service`]: one request's trip through the hooks and storage.
//!
//! ```text
//! Service::handle:  on_received ─Break─────────────┐
//!                   dispatch → Storage             │
//!                   on_executed ─Break──────────┐  │
//!                   on_before_send  <───────────┴──┘   (always runs)
//! connection:       write frame
//! Service::after_send: on_after_send                   (always runs)
//! ```
//!
//! Build one with the original course's builder. The `on_*` closures see
//! the connection's context and may stop a request ([`ControlFlow`]); the
//! course's `fn_*` closures see only the request or response and never stop
//! anything:
//!
//! ```
//! use std::ops::ControlFlow;
//! use hookv::{CommandRequest, MemTable, Service, ServiceInner};
//!
//! let service: Service = ServiceInner::new(MemTable::new())
//!     .on_received(|_ctx, req| {
//!         tracing::info!(command = req.command_name(), "received");
//!         ControlFlow::Continue(())
//!     })
//!     .on_before_send(|_ctx, _req, res| {
//!         res.message = "altered".into();
//!         ControlFlow::Continue(())
//!     })
//!     .fn_before_send(|res| res.status = 201) // the course's form
//!     .into();
//! let res = service.execute(CommandRequest::new_hget("t", "k"));
//! assert_eq!((res.status, res.message.as_str()), (201, "altered"));
//! ```
//!
//! Closures may hold state (`Fn + Send + Sync`: keep it behind an atomic or a
//! lock), since every connection calls them concurrently.
//!
//! The hook chain sits behind an `ArcSwap`: reading it per batch is lock-free,
//! and [`Service::replace_hooks`] swaps a new chain in atomically. A batch of
//! requests runs, start to finish, on the chain it loaded.
//!
//! # Two ways through a batch
//!
//! A connection answers its pipelined requests a batch at a time, and how
//! depends on the store's [`Reach`]:
//!
//! - **Inline** (every [`Storage`]: memory, sled, your own): each request
//!   goes all the way through [`Service::handle`] before the next begins.
//!   Nothing is boxed or awaited per request.
//! - **Batched** ([`RedisCluster`](crate::storage::RedisCluster)): the batch
//!   goes through in three steps. (1) `on_received` for each request in
//!   order (a refusal stops that request there, as always); (2) the storage
//!   work of every request left, as one
//!   [`RedisCluster::execute`](crate::storage::RedisCluster::execute),
//!   awaited (one pipeline per master touched, one round trip for the batch);
//!   (3) `on_executed` and `on_before_send` for each request in order. Each
//!   request's own hooks see the context as its `on_received` hooks left it
//!   (its principal, its peer), so a login later in the batch does not
//!   change how an earlier request's answer is treated. The one difference a
//!   hook can see: within one batch, a later request's `on_received` runs
//!   before an earlier request's `on_executed` (received₁ received₂ …
//!   executed₁ before_send₁ executed₂ …), so a hook that keeps its own state
//!   across requests sees them in that order.

use std::ops::ControlFlow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hookv_plugin::pb::{CommandRequest, CommandResponse};

use crate::command::dispatch;
use crate::error::Error;
use crate::hooks::{Events, Flow, Hook, HookChain, HookCtx, Notify, NotifyMut, WriteBarrier};
use crate::storage::{Backend, MemTable, Reach, Storage, StorageError};

/// A cheaply clonable handle to the storage and hook chain shared by all
/// connections.
pub struct Service<Store = MemTable> {
    inner: Arc<ServiceInner<Store>>,
}

impl<Store> Clone for Service<Store> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// The storage and hooks behind a [`Service`], and its builder.
pub struct ServiceInner<Store> {
    store: Store,
    hooks: ArcSwap<HookChain>,
    /// Awaited before answers to writes are sent (the WAL's durability).
    barrier: Option<Arc<dyn WriteBarrier>>,
}

impl<Store: Backend> ServiceInner<Store> {
    /// A service over `store` with no hooks.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            hooks: ArcSwap::from_pointee(HookChain::new()),
            barrier: None,
        }
    }

    /// Sets the barrier connections await before answering writes.
    pub fn write_barrier(mut self, barrier: Arc<dyn WriteBarrier>) -> Self {
        self.barrier = Some(barrier);
        self
    }

    fn push(self, hook: Arc<dyn Hook>) -> Self {
        let mut chain = HookChain::clone(&self.hooks.load());
        chain.push(hook);
        self.hooks.store(Arc::new(chain));
        self
    }

    /// Adds a hook implementing [`Hook`] to every event it handles.
    pub fn hook(self, hook: Arc<dyn Hook>) -> Self {
        self.push(hook)
    }

    /// Adds every hook of `chain`, in order, each with its placement
    /// (scope, failure policy).
    pub fn hooks(self, chain: &HookChain) -> Self {
        let mut all = HookChain::clone(&self.hooks.load());
        all.append(chain);
        self.hooks.store(Arc::new(all));
        self
    }

    /// Adds a closure called with each request as it is received, the
    /// original course's `fn_received` (it cannot refuse the request: use
    /// [`ServiceInner::on_received`], which sees the context and returns a
    /// [`ControlFlow`], for that).
    pub fn fn_received<F>(self, f: F) -> Self
    where
        F: Fn(&CommandRequest) + Send + Sync + 'static,
    {
        self.on_received(move |_ctx, req| {
            f(req);
            ControlFlow::Continue(())
        })
    }

    /// Adds a closure called with each response once storage ran the
    /// request, the original course's `fn_executed` (see
    /// [`ServiceInner::on_executed`] for the form that may replace it).
    pub fn fn_executed<F>(self, f: F) -> Self
    where
        F: Fn(&CommandResponse) + Send + Sync + 'static,
    {
        self.on_executed(move |_ctx, _req, res| {
            f(res);
            ControlFlow::Continue(())
        })
    }

    /// Adds a closure that may change each response before it is sent, the
    /// original course's `fn_before_send` (see
    /// [`ServiceInner::on_before_send`] for the form that sees the request).
    pub fn fn_before_send<F>(self, f: F) -> Self
    where
        F: Fn(&mut CommandResponse) + Send + Sync + 'static,
    {
        self.on_before_send(move |_ctx, _req, res| {
            f(res);
            ControlFlow::Continue(())
        })
    }

    /// Adds a closure called once each response has been written, the
    /// original course's `fn_after_send` (a connection runs it; the
    /// course's [`Service::execute`] sends nothing, so does not).
    pub fn fn_after_send<F>(self, f: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.on_after_send(move |_ctx, _req, _res| {
            f();
            ControlFlow::Continue(())
        })
    }

    /// Adds an `on_received` closure.
    pub fn on_received<F>(self, f: F) -> Self
    where
        F: Fn(&mut HookCtx, &CommandRequest) -> Flow + Send + Sync + 'static,
    {
        self.push(Arc::new(ReceivedFn(f)))
    }

    /// Adds an `on_executed` closure.
    pub fn on_executed<F>(self, f: F) -> Self
    where
        F: Fn(&HookCtx, &CommandRequest, &CommandResponse) -> Flow + Send + Sync + 'static,
    {
        self.push(Arc::new(ExecutedFn(f)))
    }

    /// Adds an `on_before_send` closure.
    pub fn on_before_send<F>(self, f: F) -> Self
    where
        F: Fn(&HookCtx, &CommandRequest, &mut CommandResponse) -> ControlFlow<()>
            + Send
            + Sync
            + 'static,
    {
        self.push(Arc::new(BeforeSendFn(f)))
    }

    /// Adds an `on_after_send` closure.
    pub fn on_after_send<F>(self, f: F) -> Self
    where
        F: Fn(&HookCtx, &CommandRequest, &CommandResponse) -> ControlFlow<()>
            + Send
            + Sync
            + 'static,
    {
        self.push(Arc::new(AfterSendFn(f)))
    }
}

impl<Store: Backend> From<ServiceInner<Store>> for Service<Store> {
    fn from(inner: ServiceInner<Store>) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl<Store: Backend> Service<Store> {
    /// The storage backend.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The barrier to await before sending answers to writes, if any.
    pub fn barrier(&self) -> Option<&dyn WriteBarrier> {
        self.inner.barrier.as_deref()
    }

    /// The current hook chain. Hold it for a whole request (or batch) so the
    /// request runs on one chain even if a reload swaps it meanwhile.
    pub fn hooks(&self) -> Arc<HookChain> {
        self.inner.hooks.load_full()
    }

    /// Swaps in a new hook chain; requests already holding the old one finish
    /// on it. Returns the old chain.
    pub fn replace_hooks(&self, chain: HookChain) -> Arc<HookChain> {
        self.inner.hooks.swap(Arc::new(chain))
    }

    /// Runs the `on_after_send` chain once `res` has been written.
    pub fn after_send(
        &self,
        chain: &HookChain,
        ctx: &mut HookCtx,
        req: &CommandRequest,
        res: &CommandResponse,
    ) {
        let _ = chain.after_send.notify(ctx, req, res);
    }

    /// Makes everything written so far durable, as the server stops: a
    /// synchronous store's [`Storage::flush`]. (The cluster has every
    /// answered write already: nothing is held here.)
    pub fn flush(&self) -> Result<(), StorageError> {
        match self.inner.store.reach() {
            Reach::Inline(store) => store.flush(),
            Reach::Batched(_) => Ok(()),
        }
    }
}

impl<Store: Storage> Service<Store> {
    /// Runs `cmd` as the original course's `Service::execute` did: on the
    /// current chain (received → dispatch → executed → before_send), with
    /// an anonymous context (no peer, no login: an auth hook refuses what
    /// needs one). [`Service::execute_in`] runs it with a context of yours.
    pub fn execute(&self, cmd: CommandRequest) -> CommandResponse {
        let mut ctx = HookCtx::new(0, std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        self.execute_in(&mut ctx, &cmd)
    }

    /// Runs `req` on the current chain: on_received → dispatch → on_executed
    /// → on_before_send. For in-process use; a connection uses
    /// [`Service::handle`] with the chain it holds, then [`Service::after_send`].
    pub fn execute_in(&self, ctx: &mut HookCtx, req: &CommandRequest) -> CommandResponse {
        ctx.arrive();
        let res = self.handle(&self.inner.hooks.load(), ctx, req);
        ctx.flush_hook_calls();
        res
    }

    /// Runs `req` through `chain` and storage, up to the point of sending.
    /// The request's arrival is whatever `ctx` last marked (a connection
    /// marks it when the request's bytes arrive; [`Service::execute_in`] when
    /// it is called).
    pub fn handle(
        &self,
        chain: &HookChain,
        ctx: &mut HookCtx,
        req: &CommandRequest,
    ) -> CommandResponse {
        handle(&self.inner.store, chain, ctx, req)
    }
}

/// [`Service::handle`] over any synchronous store: what a connection runs
/// for each request when its store is [`Reach::Inline`].
#[inline]
pub(crate) fn handle(
    store: &dyn Storage,
    chain: &HookChain,
    ctx: &mut HookCtx,
    req: &CommandRequest,
) -> CommandResponse {
    ctx.set_wrote(false);
    match chain.received.notify(ctx, req, &()) {
        ControlFlow::Break(mut refusal) => {
            let _ = chain.before_send.notify(ctx, req, &mut refusal);
            refusal
        }
        ControlFlow::Continue(()) => handle_received(store, chain, ctx, req),
    }
}

/// [`handle`] for a request whose `on_received` hooks already ran and let
/// it through (on its bytes: see [`crate::hooks::RawRequest`]): storage,
/// `on_executed`, `on_before_send`.
#[inline]
pub(crate) fn handle_received(
    store: &dyn Storage,
    chain: &HookChain,
    ctx: &mut HookCtx,
    req: &CommandRequest,
) -> CommandResponse {
    let result = dispatch(req, store, ctx.max_frame_bytes());
    let mut res = executed(chain, ctx, req, result);
    let _ = chain.before_send.notify(ctx, req, &mut res);
    res
}

/// A request's result once storage ran it (or refused it), through the
/// `on_executed` chain; marks the context `wrote` if it changed storage.
#[inline]
fn executed(
    chain: &HookChain,
    ctx: &mut HookCtx,
    req: &CommandRequest,
    result: Result<CommandResponse, Error>,
) -> CommandResponse {
    let res = result.unwrap_or_else(|e| failed(ctx, req.command_name(), e));
    ctx.set_wrote(req.is_write() && res.is_ok());
    match chain.executed.notify(ctx, req, &res) {
        ControlFlow::Break(replacement) => replacement,
        ControlFlow::Continue(()) => res,
    }
}

/// The answer to a `command` that failed with `e`, counted and (for a
/// server-side failure) logged.
pub(crate) fn failed(ctx: &HookCtx, command: &str, e: Error) -> CommandResponse {
    if matches!(e, Error::Storage(_)) {
        crate::metrics::storage_error();
    }
    if e.status() >= 500 {
        // A failing disk, or a cluster down, fails every request: limited.
        crate::log_limited!(error, conn = ctx.conn_id(), command = command, error = %e, "request failed");
    }
    CommandResponse::from(e)
}

/// A request of a batch bound for a batched store ([`Reach::Batched`]),
/// between its `on_received` hooks and its execution (see the module docs).
#[derive(Debug)]
pub(crate) struct Received {
    /// The request (the default, empty one for a frame that was none).
    pub(crate) req: CommandRequest,
    /// The connection's context as this request's `on_received` hooks left
    /// it: the request's later hooks see this one, as they would in
    /// [`Service::handle`], whatever the requests after it change.
    pub(crate) ctx: HookCtx,
    /// Its answer already, storage untouched: refused by an `on_received`
    /// hook, or a frame that was not a request.
    pub(crate) answered: Option<CommandResponse>,
}

impl Received {
    /// A request answered before storage: `res` goes through
    /// `on_before_send` only.
    pub(crate) fn answered(req: CommandRequest, ctx: &HookCtx, res: CommandResponse) -> Self {
        Self {
            req,
            ctx: ctx.clone(),
            answered: Some(res),
        }
    }
}

/// The batched path, step 1, for one request: its `on_received` hooks.
pub(crate) fn receive(chain: &HookChain, ctx: &mut HookCtx, req: CommandRequest) -> Received {
    ctx.set_wrote(false);
    let answered = match chain.received.notify(ctx, &req, &()) {
        ControlFlow::Break(refusal) => Some(refusal),
        ControlFlow::Continue(()) => None,
    };
    Received {
        req,
        ctx: ctx.clone(),
        answered,
    }
}

/// The batched path, step 3, for one request: the result storage gave it
/// (`None` for one answered in step 1) through `on_executed`, then
/// `on_before_send`, with the request's own context.
pub(crate) fn answer(
    chain: &HookChain,
    received: &mut Received,
    result: Option<Result<CommandResponse, Error>>,
) -> CommandResponse {
    let Received { req, ctx, answered } = received;
    let mut res = match (answered.take(), result) {
        (Some(res), _) => res,
        (None, Some(result)) => executed(chain, ctx, req, result),
        // Step 2 answers every request it was given; were one missing, it
        // was not executed.
        (None, None) => CommandResponse::error(
            hookv_plugin::pb::status::INTERNAL,
            "storage gave no answer for this request; it was not executed",
        ),
    };
    let _ = chain.before_send.notify(ctx, req, &mut res);
    res
}

struct ReceivedFn<F>(F);
struct ExecutedFn<F>(F);
struct BeforeSendFn<F>(F);
struct AfterSendFn<F>(F);

impl<F> Hook for ReceivedFn<F>
where
    F: Fn(&mut HookCtx, &CommandRequest) -> Flow + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "fn_received"
    }
    fn events(&self) -> Events {
        Events {
            received: true,
            ..Events::NONE
        }
    }
    fn on_received(&self, ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        (self.0)(ctx, req)
    }
}

impl<F> Hook for ExecutedFn<F>
where
    F: Fn(&HookCtx, &CommandRequest, &CommandResponse) -> Flow + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "fn_executed"
    }
    fn events(&self) -> Events {
        Events {
            executed: true,
            ..Events::NONE
        }
    }
    fn on_executed(&self, ctx: &HookCtx, req: &CommandRequest, res: &CommandResponse) -> Flow {
        (self.0)(ctx, req, res)
    }
}

impl<F> Hook for BeforeSendFn<F>
where
    F: Fn(&HookCtx, &CommandRequest, &mut CommandResponse) -> ControlFlow<()>
        + Send
        + Sync
        + 'static,
{
    fn name(&self) -> &str {
        "fn_before_send"
    }
    fn events(&self) -> Events {
        Events {
            before_send: true,
            ..Events::NONE
        }
    }
    fn on_before_send(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        (self.0)(ctx, req, res)
    }
}

impl<F> Hook for AfterSendFn<F>
where
    F: Fn(&HookCtx, &CommandRequest, &CommandResponse) -> ControlFlow<()> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "fn_after_send"
    }
    fn events(&self) -> Events {
        Events {
            after_send: true,
            ..Events::NONE
        }
    }
    fn on_after_send(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &CommandResponse,
    ) -> ControlFlow<()> {
        (self.0)(ctx, req, res)
    }
}

/// Compile-time checks that the shared types can cross threads.
#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Service<MemTable>>();
    is::<Service<crate::storage::SledDb>>();
    is::<Service<Box<dyn Storage>>>();
    is::<Service<crate::storage::RedisCluster>>();
    is::<Arc<dyn Hook>>();
    is::<HookChain>();
}
