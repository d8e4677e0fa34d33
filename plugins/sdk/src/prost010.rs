//! The wire messages as prost 0.10 `Message`s too (feature `prost-0_10`),
//! so the original course's framing, `async-prost` 0.4's
//! `AsyncProstStream::<_, CommandRequest, CommandResponse, _>`, carries
//! hookv's own types: the course's `examples/client.rs` and `server.rs`
//! build against hookv by their `use` lines (see `compat/course-26kv`).
//!
//! Each impl hands the work to the prost 0.14 code generated for the
//! message: the encoding is the same protobuf, only the trait differs.

use bytes::{Buf, BufMut};
use prost010::encoding::{DecodeContext, WireType};
use prost010::DecodeError;

use crate::pb::*;

/// prost 0.14's error, in prost 0.10's type (its words kept).
fn decode_error(e: prost::DecodeError) -> DecodeError {
    DecodeError::new(e.to_string())
}

macro_rules! prost_0_10 {
    ($($ty:ty),*) => {$(
        impl prost010::Message for $ty {
            fn encode_raw<B: BufMut>(&self, buf: &mut B) {
                prost::Message::encode_raw(self, buf)
            }

            fn merge_field<B: Buf>(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut B,
                _ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                let wire_type = prost::encoding::WireType::try_from(wire_type as u64)
                    .map_err(decode_error)?;
                prost::Message::merge_field(
                    self,
                    tag,
                    wire_type,
                    buf,
                    prost::encoding::DecodeContext::default(),
                )
                .map_err(decode_error)
            }

            /// The whole message through prost 0.14 (what `decode` calls).
            fn merge<B: Buf>(&mut self, buf: B) -> Result<(), DecodeError> {
                prost::Message::merge(self, buf).map_err(decode_error)
            }

            fn encoded_len(&self) -> usize {
                prost::Message::encoded_len(self)
            }

            fn clear(&mut self) {
                prost::Message::clear(self)
            }
        }
    )*};
}

prost_0_10!(
    CommandRequest,
    CommandResponse,
    Value,
    Kvpair,
    Hget,
    Hgetall,
    Hmget,
    Hset,
    Hmset,
    Hdel,
    Hmdel,
    Hexist,
    Hmexist,
    Hscan,
    Auth,
    Stats
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_traits_write_and_read_the_same_bytes() {
        let req = CommandRequest::new_hmset("t", vec![Kvpair::new("k", 1.5.into())]);
        let new = prost::Message::encode_to_vec(&req);
        let old = prost010::Message::encode_to_vec(&req);
        assert_eq!(new, old);
        let back: CommandRequest = prost010::Message::decode(old.as_slice()).unwrap();
        assert_eq!(back, req);
        let bad: Result<CommandRequest, _> = prost010::Message::decode(&b"\xff"[..]);
        assert!(bad.is_err());
    }
}
