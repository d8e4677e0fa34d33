//! [`Transport`]: what a connection reads and writes, plain TCP or TLS over
//! it. The connection is generic over it, so the plaintext path is compiled
//! for `TcpStream` itself: no dispatch and no extra copy between the socket
//! and the connection's own buffers, exactly as before TLS existed.
//!
//! What a generic `AsyncRead + AsyncWrite` does not say, and the
//! connection needs:
//!
//! - [`Transport::try_write`]: write what the stream takes *now*, without
//!   waiting (answers a peer reads at once never touch the server's budget
//!   for unread answers);
//! - [`Transport::holds_output`]: whether bytes already taken are still
//!   inside the transport (TLS records rustls made but the socket has not
//!   taken yet), so a flush must wait for them;
//! - [`Transport::close_now`]: the polite end of a session that has one
//!   (TLS's `close_notify`, so a client reads a clean end of stream rather
//!   than "closed without close_notify"), never waiting for a peer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A connection's byte stream; see the module docs.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes as much of `buf` as the stream takes without waiting;
    /// `WouldBlock` when it takes nothing now.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// True when bytes written are still held inside the transport, not
    /// yet handed to the socket.
    fn holds_output(&self) -> bool;

    /// Ends the session politely if that costs no waiting; the socket
    /// closes when the transport is dropped.
    fn close_now(&mut self);
}

impl Transport for TcpStream {
    #[inline]
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    #[inline]
    fn holds_output(&self) -> bool {
        false
    }

    /// Nothing: closing the socket says it all.
    #[inline]
    fn close_now(&mut self) {}
}

/// TLS: rustls encrypts into its own buffer (bounded: 64 KiB of records by
/// default) and tokio-rustls writes that to the socket. Polling with a
/// waker that does nothing is how "now" is asked of a poll-based stream:
/// a `Pending` leaves only that no-op waker registered, and the next real
/// poll (the flush that waits) registers its own.
impl Transport for TlsStream<TcpStream> {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut now = Context::from_waker(Waker::noop());
        match Pin::new(self).poll_write(&mut now, buf) {
            Poll::Ready(written) => written,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn holds_output(&self) -> bool {
        self.get_ref().1.wants_write()
    }

    /// Sends `close_notify` if the socket takes it at once; a peer that
    /// is not reading does not get to hold the task.
    fn close_now(&mut self) {
        let mut now = Context::from_waker(Waker::noop());
        let _ = Pin::new(self).poll_shutdown(&mut now);
    }
}
