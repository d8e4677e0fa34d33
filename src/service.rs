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
//! Build one with the original course's builder:
//!
//! ```
//! use std::ops::ControlFlow;
//! use hookv::{MemTable, Service, ServiceInner};
//!
//! let service: Service = ServiceInner::new(MemTable::new())
//!     .fn_received(|_ctx, req| {
//!         tracing::info!(command = req.command_name(), "received");
//!         ControlFlow::Continue(())
//!     })
//!     .fn_before_send(|_ctx, _req, res| {
//!         res.message = "altered".into();
//!         ControlFlow::Continue(())
//!     })
//!     .into();
//! # let _ = service;
//! ```
//!
//! Closures may hold state (`Fn + Send + Sync`: keep it behind an atomic or a
//! lock), since every connection calls them concurrently.
//!
//! The hook chain sits behind an `ArcSwap`: reading it per batch is lock-free,
//! and [`Service::replace_hooks`] swaps a new chain in atomically. A batch of
//! requests runs, start to finish, on the chain it loaded.

use std::ops::ControlFlow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hookv_plugin::pb::{CommandRequest, CommandResponse};

use crate::command::dispatch;
use crate::hooks::{Events, Flow, Hook, HookChain, HookCtx, Notify, NotifyMut, WriteBarrier};
use crate::storage::{MemTable, Storage};

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

impl<Store: Storage> ServiceInner<Store> {
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

    /// Adds an `on_received` closure.
    pub fn fn_received<F>(self, f: F) -> Self
    where
        F: Fn(&mut HookCtx, &CommandRequest) -> Flow + Send + Sync + 'static,
    {
        self.push(Arc::new(ReceivedFn(f)))
    }

    /// Adds an `on_executed` closure.
    pub fn fn_executed<F>(self, f: F) -> Self
    where
        F: Fn(&HookCtx, &CommandRequest, &CommandResponse) -> Flow + Send + Sync + 'static,
    {
        self.push(Arc::new(ExecutedFn(f)))
    }

    /// Adds an `on_before_send` closure.
    pub fn fn_before_send<F>(self, f: F) -> Self
    where
        F: Fn(&HookCtx, &CommandRequest, &mut CommandResponse) -> ControlFlow<()>
            + Send
            + Sync
            + 'static,
    {
        self.push(Arc::new(BeforeSendFn(f)))
    }

    /// Adds an `on_after_send` closure.
    pub fn fn_after_send<F>(self, f: F) -> Self
    where
        F: Fn(&HookCtx, &CommandRequest, &CommandResponse) -> ControlFlow<()>
            + Send
            + Sync
            + 'static,
    {
        self.push(Arc::new(AfterSendFn(f)))
    }
}

impl<Store: Storage> From<ServiceInner<Store>> for Service<Store> {
    fn from(inner: ServiceInner<Store>) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl<Store: Storage> Service<Store> {
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

    /// Runs `req` on the current chain: on_received → dispatch → on_executed
    /// → on_before_send. For in-process use; a connection uses
    /// [`Service::handle`] with the chain it holds, then [`Service::after_send`].
    pub fn execute(&self, ctx: &mut HookCtx, req: &CommandRequest) -> CommandResponse {
        ctx.arrive();
        let res = self.handle(&self.inner.hooks.load(), ctx, req);
        ctx.flush_hook_calls();
        res
    }

    /// Runs `req` through `chain` and storage, up to the point of sending.
    /// The request's arrival is whatever `ctx` last marked (a connection
    /// marks it when the request's bytes arrive; [`Service::execute`] when
    /// it is called).
    pub fn handle(
        &self,
        chain: &HookChain,
        ctx: &mut HookCtx,
        req: &CommandRequest,
    ) -> CommandResponse {
        ctx.set_wrote(false);
        let mut res = match chain.received.notify(ctx, req, &()) {
            ControlFlow::Break(refusal) => refusal,
            ControlFlow::Continue(()) => {
                let res = dispatch(req, &self.inner.store, ctx.max_frame_bytes()).unwrap_or_else(|e| {
                    if matches!(e, crate::error::Error::Storage(_)) {
                        crate::metrics::storage_error();
                    }
                    if e.status() >= 500 {
                        // A failing disk fails every request: limited.
                        crate::log_limited!(error, conn = ctx.conn_id(), command = req.command_name(), error = %e, "request failed");
                    }
                    CommandResponse::from(e)
                });
                ctx.set_wrote(req.is_write() && res.is_ok());
                match chain.executed.notify(ctx, req, &res) {
                    ControlFlow::Break(replacement) => replacement,
                    ControlFlow::Continue(()) => res,
                }
            }
        };
        let _ = chain.before_send.notify(ctx, req, &mut res);
        res
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
    is::<Arc<dyn Hook>>();
    is::<HookChain>();
}
