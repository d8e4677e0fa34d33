//! The client side of Redis's RESP2: commands as arrays of bulk strings
//! out, the replies `HSET` and `HGET` can produce in.

use std::fmt::Write as _;

use bytes::{Buf, BytesMut};

use crate::{BoxError, MAX_RESPONSE_BYTES};

/// Appends a RESP array of bulk strings.
pub(crate) fn resp_array(args: &[&str], out: &mut BytesMut) {
    let mut head = String::with_capacity(16);
    let _ = write!(head, "*{}\r\n", args.len());
    out.extend_from_slice(head.as_bytes());
    for arg in args {
        head.clear();
        let _ = write!(head, "${}\r\n", arg.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The RESP2 replies HSET and HGET can produce (contents are not needed).
#[derive(Debug)]
pub(crate) enum Reply {
    /// `:n`
    Integer,
    /// `+OK`
    Simple,
    /// `$n\r\n...`
    Bulk,
    /// `$-1`
    Nil,
    /// `-ERR ...`
    Error(String),
}

/// Parses one reply from the front of `buf`, consuming it; `None` if
/// incomplete (nothing consumed).
pub(crate) fn parse_resp(buf: &mut BytesMut) -> Result<Option<Reply>, BoxError> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err("RESP line without CRLF longer than 16 MiB".into());
        }
        return Ok(None);
    };
    let Some((&kind, rest)) = buf[..nl].split_first() else {
        return Err("empty RESP line from server".into());
    };
    let line = std::str::from_utf8(rest)
        .map_err(|_| "RESP reply line is not UTF-8".to_owned())?
        .to_owned();
    let line_len = nl + 2;
    let reply = match kind {
        b'+' => Reply::Simple,
        b'-' => Reply::Error(line),
        b':' => {
            line.parse::<i64>()
                .map_err(|e| format!("RESP integer {line:?}: {e}"))?;
            Reply::Integer
        }
        b'$' => {
            let n: i64 = line
                .parse()
                .map_err(|e| format!("RESP bulk length {line:?}: {e}"))?;
            if n == -1 {
                Reply::Nil
            } else {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_RESPONSE_BYTES)
                    .ok_or_else(|| format!("RESP bulk length {n} out of range"))?;
                let total = line_len + n + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                if &buf[total - 2..total] != b"\r\n" {
                    return Err("RESP bulk string not followed by CRLF".into());
                }
                buf.advance(total);
                return Ok(Some(Reply::Bulk));
            }
        }
        other => {
            return Err(format!(
                "unexpected RESP reply type {:?} (line {line:?})",
                char::from(other)
            )
            .into())
        }
    };
    buf.advance(line_len);
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies() {
        let mut buf = BytesMut::from(&b":1\r\n$3\r\nabc\r\n$-1\r\n+OK\r\n-ERR x\r\n$5\r\nab"[..]);
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Integer))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Bulk))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Nil))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Simple))));
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Error(e))) if e == "ERR x"));
        assert!(matches!(parse_resp(&mut buf), Ok(None)));
        buf.extend_from_slice(b"cde\r\n");
        assert!(matches!(parse_resp(&mut buf), Ok(Some(Reply::Bulk))));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&b"*2\r\n"[..]);
        assert!(parse_resp(&mut bad).is_err());
    }
}
