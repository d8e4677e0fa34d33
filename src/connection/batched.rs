//! A batch for the Redis Cluster
//! ([`Reach::Batched`](crate::storage::Reach::Batched)): the frames
//! buffered go through `on_received` in order, then to the cluster as one
//! awaited call, then through `on_executed` and `on_before_send` in order
//! (see `crate::service`, "Two ways through a batch").
//!
//! A batch holds at most [`MAX_REQUESTS`] requests, or about
//! [`MAX_REQUEST_BYTES`] of them (at least one), and at most one
//! whole-table read (`hgetall`): their answers are all in memory before the
//! first is written. That bounds what one connection holds by its requests:
//! one table, plus, for the other requests, the values their keys name
//! (each at most a frame, since it was written in one). The inline path
//! cuts at about 1 MiB of answers instead, which it can see as it goes.
//! What is left buffered is the next batch, before anything more is read.
//!
//! A hook that asks to close the connection (`close_after_answer`, e.g. the
//! auth hook's last failed attempt) ends the batch at its request: the
//! requests after it are neither received nor executed, as on the inline
//! path.

use bytes::Bytes;
use hookv_plugin::pb::command_request::RequestData;
use hookv_plugin::pb::{CommandRequest, CommandResponse};
use prost::Message;

use super::end::End;
use super::{After, Batch, Handler, Transport};
use crate::command::batched;
use crate::error::Error;
use crate::hooks::{HookChain, HookCtx};
use crate::service::{self, Received};
use crate::storage::{Backend, RedisCluster};

/// Requests in one batch, at most.
pub(super) const MAX_REQUESTS: usize = 128;

/// Request bytes in one batch, at most (but for its first request).
pub(super) const MAX_REQUEST_BYTES: usize = 1 << 20;

impl<S: Backend, T: Transport> Handler<'_, S, T> {
    /// Answers the whole frames buffered, up to the batch's bounds, with
    /// one call to `cluster` for all of them; `ending` closes the
    /// connection after them.
    pub(super) async fn answer_batched(
        &mut self,
        cluster: &RedisCluster,
        chain: &HookChain,
        mut ending: Option<End>,
    ) -> Batch {
        let mut received = Vec::new();
        let mut bytes = 0;
        let mut cut = false;
        let end = loop {
            if received.len() >= MAX_REQUESTS || bytes >= MAX_REQUEST_BYTES {
                // The frames still buffered are the next batch.
                cut = true;
                break None;
            }
            match self.conn.next_frame() {
                Ok(Some(frame)) => {
                    bytes += frame.len();
                    let request = receive(chain, &mut self.ctx, frame);
                    let whole_table = request.answered.is_none()
                        && matches!(request.req.request_data, Some(RequestData::Hgetall(_)));
                    received.push(request);
                    // Nothing after this request is read: the connection ends.
                    if self.ctx.close_requested() {
                        break Some(ending.take().unwrap_or(End::Requested));
                    }
                    // One whole table a batch: the rest waits for the next.
                    if whole_table {
                        cut = true;
                        break None;
                    }
                }
                Ok(None) => break ending.take(),
                // The stream cannot be resynchronised: answer, then close.
                Err(e) => break Some(self.conn.refused(e)),
            }
        };
        let results = batched::execute(cluster, &received, self.ctx.max_frame_bytes()).await;
        let keep = chain.has_after_send();
        let mut wrote = false;
        let mut results = results.into_iter();
        for mut request in received {
            let result = match request.answered {
                Some(_) => None,
                None => results.next(),
            };
            // The request's hooks count into the connection's tally (its
            // context's own is a fresh, empty one): added once per batch.
            std::mem::swap(self.ctx.tally(), request.ctx.tally());
            let res = service::answer(chain, &mut request, result);
            std::mem::swap(self.ctx.tally(), request.ctx.tally());
            wrote |= request.ctx.wrote();
            self.ctx.tally().add(&request.req, res.status);
            self.conn.push_answer(request.req, res, keep);
        }
        if cut {
            let after = After::More(ending);
            return Batch { wrote, after };
        }
        self.end_batch(chain, end, wrote)
    }
}

/// Decodes one frame and runs its `on_received` hooks (step 1); a frame
/// that is not a request is answered here, as on the inline path.
fn receive(chain: &HookChain, ctx: &mut HookCtx, frame: Bytes) -> Received {
    // A cheap reference-counted clone, for plugins.
    ctx.set_request_frame(Some(frame.clone()));
    let received = match CommandRequest::decode(frame) {
        Ok(req) => service::receive(chain, ctx, req),
        Err(e) => {
            crate::metrics::malformed_frame();
            ctx.set_wrote(false);
            let e = Error::Decode(e);
            let res = CommandResponse::error(e.status(), e.to_string());
            Received::answered(CommandRequest::default(), ctx, res)
        }
    };
    ctx.set_request_frame(None);
    received
}
