//! The original course's API, spelled as the course spelled it, so its code
//! and tests move to hookv by changing their `use` lines (`use kv::*` →
//! `use hookv::*`). Everything here is re-exported at the crate root, beside
//! hookv's own forms, which say more and which the server itself uses:
//!
//! | the course's | hookv's own |
//! |---|---|
//! | [`dispatch`]`(cmd, &store) -> CommandResponse` | [`command::dispatch`](crate::command::dispatch)`(&cmd, &dyn Storage, max_frame_bytes) -> Result<_, Error>` |
//! | [`CommandService`]`::execute(self, &store)` on `Hget`, `Hset`, … | the same `dispatch` |
//! | [`KvError`] | [`Error`](crate::error::Error) (it is that type) |
//! | [`Notify`] / [`NotifyMut`] on `Vec<fn(&Arg)>` | [`hooks::Notify`](crate::hooks::Notify) on hook chains |
//! | `Service::execute(cmd)` | [`Service::execute_in`](crate::Service::execute_in)`(&mut ctx, &req)` |
//! | `ServiceInner::fn_received(f)` … | [`ServiceInner::on_received`](crate::ServiceInner::on_received)`(f)` … |
//! | `Storage::set(t, k, v)` (generic) | [`Storage::put`]`(t, &str, Value)` (what a backend implements) |
//!
//! The differences that remain (a fallible `get_iter`, the answers' exact
//! words, a `Storage` of your own) are listed in README.md, "Coming from the
//! course".

use hookv_plugin::pb::command_request::RequestData;
use hookv_plugin::pb::{
    CommandRequest, CommandResponse, Hdel, Hexist, Hget, Hgetall, Hmdel, Hmexist, Hmget, Hmset,
    Hset,
};

use crate::storage::Storage;

/// The course's name for the error a request ends in: hookv's
/// [`Error`](crate::error::Error), which converts into a [`CommandResponse`]
/// with its status and message as the course's `KvError` did.
pub type KvError = crate::error::Error;

/// Runs `cmd` against `store` and answers it, errors included (a missing
/// key is a 404 whose message begins "Not found"), as the course's
/// `dispatch` did. Pages of `hscan` are cut to the default frame size.
pub fn dispatch(cmd: CommandRequest, store: &impl Storage) -> CommandResponse {
    crate::command::dispatch(&cmd, store, crate::frame::DEFAULT_MAX_FRAME_BYTES)
        .unwrap_or_else(CommandResponse::from)
}

/// A command that runs itself against a store: the course's trait,
/// implemented by each of its commands' messages (`Hget`, `Hset`, …).
pub trait CommandService {
    /// Runs the command against `store` and answers it, as [`dispatch`] does.
    fn execute(self, store: &impl Storage) -> CommandResponse;
}

macro_rules! command_service {
    ($($ty:ident),*) => {$(
        impl CommandService for $ty {
            fn execute(self, store: &impl Storage) -> CommandResponse {
                dispatch(
                    CommandRequest {
                        request_data: Some(RequestData::$ty(self)),
                    },
                    store,
                )
            }
        }
    )*};
}

command_service!(Hget, Hgetall, Hmget, Hset, Hmset, Hdel, Hmdel, Hexist, Hmexist);

/// The course's event notification over a list of plain functions (an
/// immutable argument). hookv's chains are [`hooks::Notify`](crate::hooks::Notify).
pub trait Notify<Arg> {
    /// Calls every function with `arg`, in order.
    fn notify(&self, arg: &Arg);
}

/// The course's event notification over a list of plain functions (a
/// mutable argument).
pub trait NotifyMut<Arg> {
    /// Calls every function with `arg`, in order.
    fn notify(&self, arg: &mut Arg);
}

impl<Arg> Notify<Arg> for Vec<fn(&Arg)> {
    fn notify(&self, arg: &Arg) {
        for f in self {
            f(arg)
        }
    }
}

impl<Arg> NotifyMut<Arg> for Vec<fn(&mut Arg)> {
    fn notify(&self, arg: &mut Arg) {
        for f in self {
            f(arg)
        }
    }
}
