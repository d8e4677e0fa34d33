//! [`End`]: why a connection ended, and the one log line that says so (a
//! frame error is counted there too: `hookv_frame_errors_total`).

use tracing::debug;

use super::limits::Refusal;
use crate::frame::FrameError;
use crate::hooks::HookCtx;

/// Why a connection ended, for the log.
#[derive(Debug)]
pub(super) enum End {
    PeerClosed,
    Idle,
    Shutdown,
    /// A frame that cannot be read past (or not in time): answered, closed.
    Refused(FrameError),
    /// A limit of the server: answered, closed.
    Limit(Refusal),
    NotDurable,
    /// The peer did not read its answers within the write timeout.
    Stalled,
    /// The peer is not reading and its answers would need more of
    /// `max_unsent_bytes` than is left.
    OverBudget {
        /// Bytes the connection would have held.
        held: usize,
    },
    /// A hook asked for the connection to close ([`HookCtx::close_after_answer`]).
    Requested,
}

impl End {
    /// Logs why the connection ended. Anything a client can cause at will
    /// (one connection after another) is rate-limited.
    pub(super) fn log(&self, ctx: &HookCtx) {
        let (conn, peer) = (ctx.conn_id(), &ctx.peer);
        match self {
            End::Refused(e) => {
                crate::metrics::frame_error(e);
                crate::log_limited!(warn, conn, %peer, error = %e, "connection closed")
            }
            End::Limit(refusal) => {
                crate::log_limited!(warn, conn, %peer, reason = %refusal, "connection refused")
            }
            End::OverBudget { held } => crate::log_limited!(
                warn,
                conn,
                %peer,
                held,
                "peer is not reading its answers and max_unsent_bytes is used up; closed"
            ),
            End::Stalled => crate::log_limited!(
                info,
                conn,
                %peer,
                "peer did not read its answers within write_timeout_secs; closed"
            ),
            End::Idle => {
                crate::log_limited!(info, conn, %peer, "connection idle too long, closed")
            }
            End::Requested => debug!(conn, %peer, "a hook closed the connection"),
            End::Shutdown | End::PeerClosed | End::NotDurable => {
                debug!(conn, %peer, reason = ?self, "connection closed")
            }
        }
    }
}
