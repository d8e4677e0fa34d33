//! [`Codec`]: one connection's requests out and responses judged, in
//! hookv's frames or Redis's RESP2.

use bytes::BytesMut;
use hookv::frame::FrameCodec;
use hookv::pb::command_request::RequestData;
use hookv::pb::{status, CommandRequest, CommandResponse};
use prost::Message;
use tokio_util::codec::Decoder;

use crate::resp::{parse_resp, resp_array, Reply};
use crate::{BoxError, Protocol, Workload, MAX_RESPONSE_BYTES};

/// What one request was, to judge its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Set,
    Get,
}

/// How a response went.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ok,
    /// An `hget` of a key not set (yet): a success.
    Miss,
    /// Anything else: the status or error text.
    Error(String),
}

/// Per-connection request encoding and response parsing. One per connection,
/// never moved in the hot loop, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Codec {
    Hookv {
        frames: FrameCodec,
        /// Templates whose key is overwritten in place, so nothing is
        /// allocated per request.
        hset: CommandRequest,
        hget: CommandRequest,
    },
    Resp,
}

impl Codec {
    pub(crate) fn new(w: &Workload) -> Self {
        match w.protocol {
            Protocol::Hookv => Codec::Hookv {
                frames: FrameCodec::new(MAX_RESPONSE_BYTES),
                hset: CommandRequest::new_hset(w.tables[0].as_str(), "", w.value.as_str().into()),
                hget: CommandRequest::new_hget(w.tables[0].as_str(), ""),
            },
            Protocol::Resp => Codec::Resp,
        }
    }

    /// Appends one request for `op` on `key` of `table` to `out`.
    pub(crate) fn encode(
        &mut self,
        w: &Workload,
        op: Op,
        table: &str,
        key: &str,
        out: &mut BytesMut,
    ) {
        match self {
            Codec::Hookv { hset, hget, .. } => {
                let req = match op {
                    Op::Set => hset,
                    Op::Get => hget,
                };
                if w.tables.len() > 1 {
                    set_table(req, table);
                }
                set_key(req, key);
                let len = req.encoded_len();
                out.reserve(4 + len);
                // Requests here are a few dozen bytes plus --value-size.
                out.extend_from_slice(&(len as u32).to_be_bytes());
                req.encode_raw(out);
            }
            Codec::Resp => match op {
                Op::Set => resp_array(&["HSET", table, key, &w.value], out),
                Op::Get => resp_array(&["HGET", table, key], out),
            },
        }
    }

    /// Parses the next complete response in `buf`, if there is one.
    pub(crate) fn decode(
        &mut self,
        op: Op,
        buf: &mut BytesMut,
    ) -> Result<Option<Outcome>, BoxError> {
        match self {
            Codec::Hookv { frames, .. } => {
                let Some(frame) = frames
                    .decode(buf)
                    .map_err(|e| format!("bad frame from server: {e}"))?
                else {
                    return Ok(None);
                };
                let res = CommandResponse::decode(frame)
                    .map_err(|e| format!("bad CommandResponse from server: {e}"))?;
                Ok(Some(match (res.status, op) {
                    (status::OK, _) => Outcome::Ok,
                    (status::NOT_FOUND, Op::Get) => Outcome::Miss,
                    (s, _) => Outcome::Error(format!("status {s}: {}", res.message)),
                }))
            }
            Codec::Resp => {
                let Some(reply) = parse_resp(buf)? else {
                    return Ok(None);
                };
                Ok(Some(match (reply, op) {
                    (Reply::Error(e), _) => Outcome::Error(e),
                    (Reply::Nil, Op::Get) => Outcome::Miss,
                    (Reply::Nil, Op::Set) => Outcome::Error("nil reply to HSET".into()),
                    (Reply::Integer | Reply::Simple | Reply::Bulk, _) => Outcome::Ok,
                }))
            }
        }
    }
}

/// Overwrites the table of an `hset`/`hget` template.
fn set_table(req: &mut CommandRequest, table: &str) {
    let slot = match &mut req.request_data {
        Some(RequestData::Hset(h)) => &mut h.table,
        Some(RequestData::Hget(h)) => &mut h.table,
        _ => return,
    };
    slot.clear();
    slot.push_str(table);
}

/// Overwrites the key of an `hset`/`hget` template.
pub(crate) fn set_key(req: &mut CommandRequest, key: &str) {
    let slot = match &mut req.request_data {
        Some(RequestData::Hset(h)) => h.pair.as_mut().map(|p| &mut p.key),
        Some(RequestData::Hget(h)) => Some(&mut h.key),
        _ => None,
    };
    if let Some(slot) = slot {
        slot.clear();
        slot.push_str(key);
    }
}
