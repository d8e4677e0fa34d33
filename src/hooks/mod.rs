//! Hooks: code that runs on the four events of every request.
//!
//! | event            | a hook sees                         | `Break` means                                   |
//! |------------------|-------------------------------------|-------------------------------------------------|
//! | `on_received`    | `&mut HookCtx`, the request         | answer with this response; storage not touched  |
//! | `on_executed`    | the context, request, response      | answer with this response instead               |
//! | `on_before_send` | the context, request, `&mut` response | stop the rest of this chain (the edit stays)  |
//! | `on_after_send`  | the context, request, response (sent) | stop the rest of this chain                   |
//!
//! A `Break` skips the rest of its own chain and any execution still ahead,
//! but the response always passes `on_before_send` → write → `on_after_send`,
//! so a refused request can still be rewritten and audited.
//!
//! A hook is anything implementing [`Hook`] (the built-ins, plugins), or a
//! closure given to the `ServiceInner` builder. Hooks are shared by every
//! connection and called concurrently, so state lives behind atomics or locks
//! inside the hook.
//!
//! One noun per file: [`HookCtx`] (`ctx.rs`: what a hook may read and set of
//! its connection), the [`Hook`] trait (`hook.rs`), [`HookChain`]
//! (`chain.rs`: one ordered list per event), the [`RawRequest`] that hooks
//! able to decide from a frame's bytes are given on the fast path
//! (`raw.rs`), an entry's [`Placement`] in it
//! (`scope.rs`: `tables = [...]` and `on_panic`), the
//! [`WriteBarrier`] a connection awaits before answering writes
//! (`barrier.rs`); beside them the built-in hooks and `build.rs` (config →
//! chain).

pub mod audit;
pub mod auth;
mod barrier;
pub mod build;
mod chain;
mod ctx;
mod hook;
pub mod pattern;
mod raw;
pub mod rewrite;
mod scope;
pub mod wal;

pub use barrier::{BarrierError, BothBarriers, WriteBarrier};
pub use chain::{AfterSend, BeforeSend, Executed, HookChain, Notify, NotifyMut, Received};
pub use ctx::HookCtx;
pub use hook::{Flow, Hook};
/// Which events a hook takes part in (so chains skip the rest). The same
/// type plugins declare theirs with.
pub use hookv_plugin::Events;
pub use raw::RawRequest;
pub use scope::{OnPanic, Placement, Scope};
