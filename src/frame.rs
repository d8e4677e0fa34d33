//! Framing: a 4-byte big-endian length, then that many bytes of protobuf.
//!
//! This is `async-prost`'s framing, so clients written with that crate work
//! unchanged. [`FrameCodec`] wraps `tokio-util`'s [`LengthDelimitedCodec`] and
//! checks each header before the inner codec sees it:
//!
//! - a length over `max_frame_bytes` is refused before anything is allocated
//!   for it ([`FrameError::TooLarge`], 413);
//! - a header with bit 31 set is the original course's "gzip body" flag, which
//!   hookv does not speak: it is refused as such ([`FrameError::Compressed`],
//!   400), never read as a 2 GiB length.
//!
//! After either error the byte stream cannot be resynchronised, so the
//! connection answers once and closes. So it does when a frame, once begun,
//! does not arrive whole in time ([`FrameError::Timeout`], 408): the
//! connection keeps that clock, since only it knows how long it waited.

use bytes::{BufMut, Bytes, BytesMut};
use hookv_plugin::pb::status;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// The header bit the original course used to flag a gzip-compressed body.
pub const COMPRESSED_BIT: u32 = 1 << 31;
/// The default `max_frame_bytes`: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// HTTP's 408 Request Timeout: a frame began but did not arrive whole in time.
pub const REQUEST_TIMEOUT: u32 = 408;

/// A frame that cannot be accepted.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header claims more bytes than the configured maximum.
    #[error("frame of {len} bytes exceeds max_frame_bytes ({max}); closing the connection")]
    TooLarge {
        /// The length the header claims.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The header has bit 31 set: a compressed body, which hookv does not accept.
    #[error(
        "frame header {header:#010x} has bit 31 set (a gzip-compressed body): hookv accepts \
         only uncompressed frames; closing the connection"
    )]
    Compressed {
        /// The raw header.
        header: u32,
    },
    /// The peer closed the connection part-way through a frame.
    #[error("connection closed mid-frame: {have} bytes of a frame were received")]
    Truncated {
        /// Bytes received of the unfinished frame (header included).
        have: usize,
    },
    /// A frame began but did not arrive whole within `frame_timeout_secs`.
    #[error(
        "request not received whole within frame_timeout_secs ({secs} s): {have} bytes of it \
         arrived; closing the connection"
    )]
    Timeout {
        /// The configured limit.
        secs: u64,
        /// Bytes received of the unfinished frame (header included).
        have: usize,
    },
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The status a client sees for this error.
    pub fn status(&self) -> u32 {
        match self {
            FrameError::TooLarge { .. } => status::TOO_LARGE,
            FrameError::Compressed { .. } | FrameError::Truncated { .. } => status::BAD_REQUEST,
            FrameError::Timeout { .. } => REQUEST_TIMEOUT,
            FrameError::Io(_) => status::INTERNAL,
        }
    }
}

/// Decodes request frames into their payload bytes and encodes messages into
/// frames, enforcing the maximum frame size in both directions.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// True once the inner codec has consumed a header and waits for its body:
    /// then the buffer starts with body bytes, not a header to check.
    in_body: bool,
}

impl FrameCodec {
    /// A codec accepting frames of at most `max` payload bytes.
    pub fn new(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_type::<u32>()
            .max_frame_length(max)
            .new_codec();
        Self {
            inner,
            max,
            in_body: false,
        }
    }

    /// The maximum payload size.
    pub fn max_frame_bytes(&self) -> usize {
        self.max
    }

    /// Encodes `msg` as one frame appended to `dst`, or says it is too large.
    pub fn encode_message<M: Message>(&self, msg: &M, dst: &mut BytesMut) -> Result<(), usize> {
        let len = msg.encoded_len();
        if len > self.max {
            return Err(len);
        }
        dst.reserve(HEADER_LEN + len);
        // `len <= max`, and max is a usize the config limits well below 2 GiB.
        dst.put_u32(len as u32);
        msg.encode_raw(dst);
        Ok(())
    }

    /// True when no frame is partly received (nothing of one in `src`).
    pub fn is_idle(&self, src: &BytesMut) -> bool {
        src.is_empty() && !self.in_body
    }

    /// At end of input: an error if a frame was left unfinished in `src`.
    pub fn check_eof(&self, src: &BytesMut) -> Result<(), FrameError> {
        if self.is_idle(src) {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                have: self.received(src),
            })
        }
    }

    /// Bytes received of the frame partly in `src` (header included).
    pub fn received(&self, src: &BytesMut) -> usize {
        src.len() + if self.in_body { HEADER_LEN } else { 0 }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if !self.in_body {
            if let Some(head) = src.first_chunk::<HEADER_LEN>() {
                let header = u32::from_be_bytes(*head);
                if header & COMPRESSED_BIT != 0 {
                    return Err(FrameError::Compressed { header });
                }
                if header as usize > self.max {
                    return Err(FrameError::TooLarge {
                        len: header.into(),
                        max: self.max,
                    });
                }
            }
        }
        let before = src.len();
        match self.inner.decode(src)? {
            Some(frame) => {
                self.in_body = false;
                Ok(Some(frame.freeze()))
            }
            None => {
                // The inner codec consumes a header as soon as it has one.
                if src.len() < before {
                    self.in_body = true;
                }
                Ok(None)
            }
        }
    }
}

impl<M: Message> Encoder<&M> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &M, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_message(msg, dst)
            .map_err(|len| FrameError::TooLarge {
                len: len as u64,
                max: self.max,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
        b
    }

    #[test]
    fn decodes_whole_and_split_frames() {
        let mut codec = FrameCodec::new(16);
        let mut buf = frame(b"hello");
        buf.extend_from_slice(&frame(b"world")[..6]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(codec.check_eof(&buf).is_err());
        buf.extend_from_slice(b"rld");
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"world"[..])
        );
        assert!(codec.check_eof(&buf).is_ok());
    }

    #[test]
    fn refuses_oversized_and_compressed_headers_without_allocating() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        let cap = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: 0x7fff_ffff,
                ..
            })
        ));
        assert_eq!(buf.capacity(), cap);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Compressed { .. })
        ));
        let mut buf = frame(&[0; 17]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { len: 17, .. })
        ));
    }

    #[test]
    fn encode_refuses_messages_over_the_maximum() {
        let mut codec = FrameCodec::new(4);
        let big = hookv_plugin::pb::CommandResponse::error(500, "longer than four bytes");
        let mut dst = BytesMut::new();
        assert!(codec.encode(&big, &mut dst).is_err());
        assert!(dst.is_empty());
    }
}
