//! [`Answers`]: the answers of one batch, encoded for one write, and what
//! `on_after_send` hooks will be shown of them once it is written.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use prost::Message;

use crate::error::Error;
use crate::frame::{FrameCodec, HEADER_LEN};
use crate::hooks::HookCtx;

/// The answers of one batch encoded for one write, and what `on_after_send`
/// hooks will be shown of them once it is written.
#[derive(Debug)]
pub(super) struct Answers {
    buf: BytesMut,
    /// Each request and its answer; kept only while the chain has
    /// `on_after_send` hooks.
    sent: Vec<(Kept, Sent)>,
    /// Encoded size of the answers in `sent` kept decoded: about the memory
    /// they hold.
    decoded: usize,
}

/// A request as `on_after_send` will see it.
#[derive(Debug)]
pub(super) enum Kept {
    /// Decoded, as its hooks saw it.
    Decoded(CommandRequest),
    /// Still in its frame's bytes (answered undecoded: see
    /// [`crate::hooks::RawRequest`]).
    Raw(Bytes),
}

/// An answer as `on_after_send` will see it.
#[derive(Debug)]
enum Sent {
    /// A small answer stays decoded: decoding it again would cost more.
    Decoded(CommandResponse),
    /// A large answer is kept only as its bytes in the write buffer (the
    /// message, after the frame header), and decoded again once written.
    Encoded(Range<usize>),
}

/// An answer larger than this, kept for `on_after_send`, is kept only as its
/// bytes (see [`Sent`]).
const KEEP_DECODED_MAX: usize = 64 * 1024;

impl Answers {
    /// No answers, with room for `capacity` bytes of them.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            sent: Vec::new(),
            decoded: 0,
        }
    }

    /// The bytes to write.
    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends the answer to `req`; keeps both for `on_after_send` if `keep`.
    #[inline]
    pub(super) fn push(&mut self, codec: &FrameCodec, req: Kept, res: CommandResponse, keep: bool) {
        let start = self.buf.len();
        let res = encode(codec, res, &mut self.buf);
        if !keep {
            return;
        }
        let len = self.buf.len() - start;
        let sent = if len > KEEP_DECODED_MAX {
            Sent::Encoded(start + HEADER_LEN..self.buf.len())
        } else {
            self.decoded += len;
            Sent::Decoded(res)
        };
        self.sent.push((req, sent));
    }

    /// Appends an answer no `on_after_send` hook will see.
    #[inline]
    pub(super) fn push_response(&mut self, codec: &FrameCodec, res: CommandResponse) {
        encode(codec, res, &mut self.buf);
    }

    /// The memory the batch holds while it waits for its peer.
    pub(super) fn held(&self) -> usize {
        self.buf.capacity() + self.decoded
    }

    /// Once the batch is written: shows `hook` (`on_after_send`) every
    /// request and its answer as the client got it, in order, then empties
    /// the batch for the next one.
    pub(super) fn written(
        &mut self,
        ctx: &mut HookCtx,
        mut hook: impl FnMut(&mut HookCtx, &Kept, &CommandResponse),
    ) {
        for (req, sent) in self.sent.drain(..) {
            let res = match sent {
                Sent::Decoded(res) => res,
                Sent::Encoded(range) => match CommandResponse::decode(&self.buf[range]) {
                    Ok(res) => res,
                    // Cannot happen: these bytes were encoded from a response.
                    Err(e) => {
                        crate::log_limited!(error, conn = ctx.conn_id(), error = %e, "an answer written could not be decoded for on_after_send");
                        CommandResponse::error(
                            status::INTERNAL,
                            format!("answer not decodable: {e}"),
                        )
                    }
                },
            };
            hook(ctx, &req, &res);
        }
        self.buf.clear();
        self.decoded = 0;
    }

    /// Frees buffers a large batch made grow past `above` (call when
    /// empty), starting again at `to`.
    pub(super) fn shrink(&mut self, above: usize, to: usize) {
        if self.buf.capacity() > above {
            self.buf = BytesMut::with_capacity(to);
        }
        if self.sent.capacity() > above / 64 {
            self.sent = Vec::new();
        }
    }
}

/// Appends `res` to `wbuf` and returns the answer sent: `res`, or a 413 in
/// its place when it is too large for a frame (`on_after_send` hooks see
/// what the client got).
fn encode(codec: &FrameCodec, res: CommandResponse, wbuf: &mut BytesMut) -> CommandResponse {
    let Err(len) = codec.encode_message(&res, wbuf) else {
        return res;
    };
    let too_large = CommandResponse::from(Error::ResponseTooLarge {
        len,
        max: codec.max_frame_bytes(),
    });
    // A bare error message fits any accepted maximum (256 bytes at least);
    // were it not to, the peer would get nothing rather than a broken frame.
    let _ = codec.encode_message(&too_large, wbuf);
    too_large
}
