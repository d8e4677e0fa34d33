//! [`Context`]: the connection and request a plugin's hook runs for.

use std::time::Duration;

use super::log::Log;
use crate::abi::HookvContext;

/// The connection and request a hook runs for.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Unique per server process, in accept order.
    pub conn_id: u64,
    /// The client's address, e.g. `127.0.0.1:5555` or `[::1]:5555`.
    pub peer: &'a str,
    /// Who the connection authenticated as, if anyone.
    pub principal: Option<&'a str>,
    /// The server's context, for [`Context::elapsed`]; NULL in tests.
    pub(crate) raw: *const HookvContext,
    /// Reads the server's clock through `raw` (the C glue's reader; one
    /// that answers 0 in tests).
    pub(crate) elapsed_ns: fn(*const HookvContext) -> u64,
}

impl<'a> Context<'a> {
    /// A context for a plugin's own tests (its [`Context::elapsed`] is zero).
    pub fn new(conn_id: u64, peer: &'a str, principal: Option<&'a str>) -> Self {
        Self {
            conn_id,
            peer,
            principal,
            raw: std::ptr::null(),
            elapsed_ns: |_| 0,
        }
    }

    /// Time since the server read the request (reads the server's clock).
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos((self.elapsed_ns)(self.raw))
    }

    /// The server's log, about this request: each line also carries the
    /// connection (`ctx.log().warn("...")`). See [`Log`].
    pub fn log(&self) -> Log<'a> {
        Log::about(self.raw)
    }

    /// The client's IP address as text, without the port: `127.0.0.1`, `::1`.
    pub fn peer_ip(&self) -> &'a str {
        let host = self
            .peer
            .rsplit_once(':')
            .map_or(self.peer, |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ip_drops_the_port() {
        assert_eq!(Context::new(1, "127.0.0.1:80", None).peer_ip(), "127.0.0.1");
        assert_eq!(Context::new(1, "[::1]:80", None).peer_ip(), "::1");
        assert_eq!(Context::new(1, "[::1]:80", None).elapsed(), Duration::ZERO);
    }
}
