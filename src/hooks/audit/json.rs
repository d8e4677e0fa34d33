//! The audit trail's JSON: one line per record, formatted by hand (no
//! allocation per record; a cached calendar second; a line's start, time
//! to principal, formatted once per run of pipelined requests) from a
//! queued batch.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookv_plugin::pb::CommandRequest;

use super::queue::Batch;
use crate::hooks::raw::RequestRef;
use crate::hooks::HookCtx;

/// Formatted lines are written once about this many bytes are ready, so
/// the writer never holds much more than this (escaping can make a line
/// six times its request's size).
pub(super) const CHUNK_BYTES: usize = 4 << 20;

/// Appends the JSON line of every record in `batch` to `out`, handing `out`
/// to `full` whenever it holds [`CHUNK_BYTES`] or more.
///
/// A line starts `{"time":..,"conn":..,"peer":..,"principal":..`, which
/// depends only on the record's arrival time, connection, peer and
/// principal. Pipelined requests of one connection share all four and
/// queue one after another, so that start is formatted once per run and
/// copied for the rest of it.
pub(super) fn format_batch(out: &mut Vec<u8>, batch: &Batch, mut full: impl FnMut(&mut Vec<u8>)) {
    let mut text = batch.text.as_slice();
    // The previous line's start, and what it was formatted from.
    let mut prefix = Vec::with_capacity(128);
    let mut prefix_of = None;
    for record in &batch.records {
        let principal = record.principal.map(|len| take(&mut text, len));
        let of = Some((record.conn, record.arrived, record.peer, principal));
        if of == prefix_of {
            out.extend_from_slice(&prefix);
        } else {
            let start = out.len();
            out.extend_from_slice(b"{\"time\":");
            push_time(out, record.arrived);
            out.extend_from_slice(b",\"conn\":");
            push_u64(out, record.conn);
            out.extend_from_slice(b",\"peer\":\"");
            push_addr(out, &record.peer);
            out.extend_from_slice(b"\",\"principal\":");
            match principal {
                Some(principal) => push_str(out, principal),
                None => out.extend_from_slice(b"null"),
            }
            prefix.clear();
            prefix.extend_from_slice(&out[start..]);
            prefix_of = of;
        }
        out.extend_from_slice(b",\"command\":\"");
        out.extend_from_slice(record.command.as_bytes());
        out.extend_from_slice(b"\",\"table\":");
        match record.table {
            Some(len) => push_str(out, take(&mut text, len)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"keys\":[");
        for i in 0..record.keys {
            if i > 0 {
                out.push(b',');
            }
            let len = take(&mut text, 4);
            let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4]));
            push_str(out, take(&mut text, len));
        }
        out.extend_from_slice(b"],\"status\":");
        push_status(out, record.status);
        out.extend_from_slice(b",\"latency_us\":");
        push_u64(out, record.latency_us);
        out.extend_from_slice(b"}\n");
        if out.len() >= CHUNK_BYTES {
            full(out);
        }
    }
}

/// Takes the next `len` bytes of the records' strings off `text`. Inline:
/// left to itself the compiler made it a call per string.
#[inline]
fn take<'a>(text: &mut &'a [u8], len: u32) -> &'a [u8] {
    let (head, rest) = text.split_at((len as usize).min(text.len()));
    *text = rest;
    head
}

/// A JSON string literal: quotes, and escapes for `"`, `\\` and control characters.
pub(super) fn push_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // Most strings need no escape: a look at every byte without a branch
    // per byte, then one copy.
    let plain = !bytes.iter().fold(false, |escape, &b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
    } else {
        push_escaped(out, bytes);
    }
    out.push(b'"');
}

/// `bytes` with escapes for `"`, `\\` and control characters.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An answer's status: three digits for every HTTP status (hookv answers
/// nothing else), without a loop; anything else as any number.
fn push_status(out: &mut Vec<u8>, status: u32) {
    if (100..1000).contains(&status) {
        let digit = |n: u32| b'0' + (n % 10) as u8;
        out.extend_from_slice(&[digit(status / 100), digit(status / 10), digit(status)]);
    } else {
        push_u64(out, status.into());
    }
}

pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(super) fn push_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*octet));
            }
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        // Rare enough on the hot path to use the standard formatter.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

thread_local! {
    /// The last second formatted as `"YYYY-MM-DDTHH:MM:SS`, per thread:
    /// calendar arithmetic once a second instead of once a record.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with microseconds, quoted: `"2026-11-24T17:03:17.759497Z"`.
pub(super) fn push_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
            // "YYYY-MM-DDTHH:MM:SSZ" without the Z.
            cached.1 = text.trim_end_matches('Z').to_owned();
            cached.0 = secs;
        }
        out.push(b'"');
        out.extend_from_slice(cached.1.as_bytes());
    });
    let micros = since.subsec_micros();
    out.push(b'.');
    let mut digits = [b'0'; 6];
    let mut n = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.extend_from_slice(b"Z\"");
}

/// For `benches/audit_format.rs` only (not an API): a batch of `records`
/// records as the writer thread takes it under load, and a closure that
/// formats it all (as the writer does) and returns the bytes formatted.
///
/// The batch: runs of 16 pipelined requests (one arrival time, connection,
/// peer and principal `"bench"` per run) from 50 connections in turn,
/// alternately `hget` (a fifth of them 404) and `hset` on table `"t"`,
/// keys `key:N` of 8 to 16 bytes, latencies of tens of microseconds.
#[doc(hidden)]
pub fn bench_format(records: usize) -> impl FnMut() -> usize {
    const RUN: usize = 16;
    const CONNS: usize = 50;
    let started = std::time::Instant::now();
    let base = UNIX_EPOCH + Duration::from_micros(1_764_003_797_759_497);
    let mut conns: Vec<HookCtx> = (0..CONNS)
        .map(|c| {
            let peer = SocketAddr::from(([127, 0, 0, 1], 40_000 + c as u16));
            let mut ctx = HookCtx::new(c as u64 + 1, peer);
            ctx.principal = Some("bench".into());
            ctx
        })
        .collect();
    let mut batch = Batch::default();
    for i in 0..records {
        let run = i / RUN;
        // Connections answer in a scattered order, each several times a batch.
        let ctx = &mut conns[run * 7 % CONNS];
        if i % RUN == 0 {
            let after = Duration::from_micros(run as u64 * 13);
            ctx.arrive_at(started + after, base + after);
        }
        ctx.answered_at(ctx.started() + Duration::from_micros(20 + (i % RUN) as u64 * 3));
        let key = format!("key:{:0width$}", i * 7919 % 100_000, width = 4 + i % 9);
        let (req, status) = if i % 2 == 0 {
            let status = if i % 5 == 0 { 404 } else { 200 };
            (CommandRequest::new_hget("t", key), status)
        } else {
            let value = "value-0123456789".into();
            (CommandRequest::new_hset("t", key, value), 200)
        };
        batch.push(ctx, RequestRef::Decoded(&req), status);
    }
    let mut out = Vec::with_capacity(records * 256);
    move || {
        out.clear();
        format_batch(&mut out, &batch, Vec::clear);
        out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::audit::queue::Batch;
    use crate::hooks::HookCtx;
    use hookv_plugin::pb::CommandRequest;

    #[test]
    fn queued_records_format_to_one_json_line_each() {
        let mut queue = Batch::default();
        let mut ctx = HookCtx::new(7, "10.1.2.3:4567".parse().unwrap());
        ctx.arrive_at(
            ctx.started(),
            UNIX_EPOCH + Duration::from_micros(1_764_003_797_759_497),
        );
        ctx.answered_at(ctx.started() + Duration::from_micros(41));
        queue.push(
            &ctx,
            RequestRef::Decoded(&CommandRequest::new_hget("t\"1", "k")),
            404,
        );
        ctx.principal = Some("admin".into());
        queue.push(
            &ctx,
            RequestRef::Decoded(&CommandRequest::new_hmget(
                "users",
                vec!["a".into(), String::new(), "ünï\n".into()],
            )),
            200,
        );
        queue.push(
            &ctx,
            RequestRef::Decoded(&CommandRequest::new_auth("secret")),
            401,
        );
        queue.push(&ctx, RequestRef::Decoded(&CommandRequest::default()), 400);
        let mut out = Vec::new();
        format_batch(&mut out, &queue, |_| panic!("a small batch is one chunk"));
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            serde_json::json!({"time": "2025-11-24T17:03:17.759497Z", "conn": 7,
                "peer": "10.1.2.3:4567", "principal": null, "command": "hget",
                "table": "t\"1", "keys": ["k"], "status": 404, "latency_us": 41})
        );
        assert_eq!(lines[1]["principal"], "admin");
        assert_eq!(lines[1]["keys"], serde_json::json!(["a", "", "ünï\n"]));
        assert_eq!(lines[1]["table"], "users");
        // No token in the trail, and no table for an auth request.
        assert_eq!(lines[2]["command"], "auth");
        assert_eq!(lines[2]["table"], serde_json::Value::Null);
        assert_eq!(lines[2]["keys"], serde_json::json!([]));
        assert_eq!(lines[3]["command"], "unknown");
        assert_eq!(lines[3]["status"], 400);
    }

    /// Each record differs from the one before it in one part of a line's
    /// start (or in none, a run): its line must be what formatting it
    /// alone gives, whether that start was formatted or copied.
    #[test]
    fn a_line_is_the_same_whether_its_start_is_formatted_or_copied() {
        let t0 = 1_764_003_797_759_497;
        let a = "10.0.0.1:1000";
        let b = "10.0.0.2:1000";
        // (conn, peer, arrived in µs since the epoch, principal)
        let steps: &[(u64, &str, u64, Option<&str>)] = &[
            (1, a, t0, None),
            (1, a, t0, None),
            // auth mid-run: the principal appears, changes bytes at the
            // same length, needs escaping, goes away again
            (1, a, t0, Some("alice")),
            (1, a, t0, Some("alice")),
            (1, a, t0, Some("bobby")),
            (1, a, t0, Some("b\"by\n")),
            (1, a, t0, None),
            (1, a, t0, Some("bobby")),
            // the next arrival: a microsecond later, then a second later
            (1, a, t0 + 1, Some("bobby")),
            (1, a, t0 + 1_000_001, Some("bobby")),
            // a hook changes the peer
            (1, b, t0 + 1_000_001, Some("bobby")),
            (1, "[::1]:1000", t0 + 1_000_001, Some("bobby")),
            (1, b, t0 + 1_000_001, Some("bobby")),
            // another connection, the same in all else
            (2, b, t0 + 1_000_001, Some("bobby")),
            (2, b, t0 + 1_000_001, Some("bobby")),
            (1, b, t0 + 1_000_001, Some("bobby")),
        ];
        let mut conns = [1, 2].map(|id| HookCtx::new(id, a.parse().unwrap()));
        let mut batch = Batch::default();
        let mut alone = Vec::new();
        for (i, &(conn, peer, micros, principal)) in steps.iter().enumerate() {
            let ctx = &mut conns[conn as usize - 1];
            ctx.peer = peer.parse().unwrap();
            ctx.principal = principal.map(Into::into);
            ctx.arrive_at(ctx.started(), UNIX_EPOCH + Duration::from_micros(micros));
            ctx.answered_at(ctx.started() + Duration::from_micros(i as u64));
            let req = CommandRequest::new_hget("t", format!("k{i}"));
            batch.push(ctx, RequestRef::Decoded(&req), 200);
            let mut own = Batch::default();
            own.push(ctx, RequestRef::Decoded(&req), 200);
            format_batch(&mut alone, &own, |_| panic!("one chunk"));
        }
        let mut out = Vec::new();
        format_batch(&mut out, &batch, |_| panic!("one chunk"));
        let out = String::from_utf8(out).unwrap();
        let alone = String::from_utf8(alone).unwrap();
        assert_eq!(out.lines().count(), steps.len());
        for (i, (line, want)) in out.lines().zip(alone.lines()).enumerate() {
            assert_eq!(line, want, "line {i}");
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (conn, peer, micros, principal) = steps[i];
            assert_eq!(v["conn"], conn, "line {i}");
            assert_eq!(v["peer"], peer, "line {i}");
            let mut time = Vec::new();
            push_time(&mut time, UNIX_EPOCH + Duration::from_micros(micros));
            assert_eq!(v["time"], serde_json::from_slice::<String>(&time).unwrap());
            assert_eq!(v["principal"].as_str(), principal, "line {i}");
            assert_eq!(v["keys"][0], format!("k{i}"), "line {i}");
        }
        assert_eq!(out, alone);
    }

    #[test]
    fn a_large_batch_goes_out_in_chunks_of_whole_lines() {
        let mut queue = Batch::default();
        let ctx = HookCtx::new(1, "10.0.0.1:1".parse().unwrap());
        // Control bytes escape to six bytes each: 8 x 1 MiB of them is 48 MiB of JSON.
        let key = "\u{1}".repeat(1 << 20);
        for _ in 0..8 {
            queue.push(
                &ctx,
                RequestRef::Decoded(&CommandRequest::new_hget("t", key.clone())),
                404,
            );
        }
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        format_batch(&mut out, &queue, |chunk| {
            chunks.push(std::mem::take(chunk));
        });
        chunks.push(out);
        let mut lines = 0;
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            assert!(chunk.len() < CHUNK_BYTES + (7 << 20), "{}", chunk.len());
            assert_eq!(chunk.last(), Some(&b'\n'), "a chunk ends on a line");
            for line in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert_eq!(v["keys"][0].as_str().unwrap().len(), 1 << 20);
                lines += 1;
            }
        }
        assert_eq!(lines, 8);
        assert!(chunks.len() >= 8, "written as it was formatted");
    }

    #[test]
    fn strings_are_valid_json_whatever_they_hold() {
        for s in [
            "plain",
            "",
            "quote\" back\\slash",
            "nl\n cr\r tab\t nul\0 bell\x07",
            "ünï 表 🎉",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s.as_bytes());
            let parsed: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed, s);
        }
        // Every character below 0x80 (each one that must be escaped among
        // them), at either end or inside a string that is otherwise plain.
        for c in (0..0x80u8).map(char::from) {
            for s in [
                format!("{c}"),
                format!("{c}key:0042"),
                format!("key:{c}0042"),
                format!("key:0042{c}"),
            ] {
                let mut out = Vec::new();
                push_str(&mut out, s.as_bytes());
                let parsed: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(parsed, s, "{out:?}");
            }
        }
    }

    #[test]
    fn time_is_rfc3339_with_micros() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_003_797_759_497);
        let mut out = Vec::new();
        push_time(&mut out, t);
        assert_eq!(out, b"\"2025-11-24T17:03:17.759497Z\"");
        let mut out = Vec::new();
        push_time(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(1_764_003_798_000_001),
        );
        assert_eq!(out, b"\"2025-11-24T17:03:18.000001Z\"");
    }

    #[test]
    fn numbers_and_addresses() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        out.push(b' ');
        push_addr(&mut out, &"10.0.0.255:65535".parse().unwrap());
        out.push(b' ');
        push_addr(&mut out, &"[::1]:80".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 18446744073709551615 10.0.0.255:65535 [::1]:80"
        );
        for status in [0, 7, 99, 100, 200, 404, 999, 1000, u32::MAX] {
            let mut out = Vec::new();
            push_status(&mut out, status);
            assert_eq!(out, status.to_string().as_bytes());
        }
    }

    /// A request answered from its bytes is recorded as it would be decoded.
    #[test]
    fn a_raw_request_makes_the_record_its_decoded_form_makes() {
        let ctx = HookCtx::new(3, "10.0.0.1:99".parse().unwrap());
        for req in [
            CommandRequest::new_hset("users", "al\"ice", "v".into()),
            CommandRequest::new_hget("", "k"),
        ] {
            let frame = prost::Message::encode_to_vec(&req);
            let raw = crate::hooks::RawRequest::parse(&frame).unwrap();
            let (mut decoded, mut undecoded) = (Batch::default(), Batch::default());
            decoded.push(&ctx, RequestRef::Decoded(&req), 200);
            undecoded.push(&ctx, RequestRef::Raw(&raw), 200);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            format_batch(&mut a, &decoded, |_| {});
            format_batch(&mut b, &undecoded, |_| {});
            assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        }
    }
}
