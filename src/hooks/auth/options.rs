//! The auth hook's options as `config.toml` gives them, and why they can be
//! refused.

use std::sync::Arc;

use serde::Deserialize;

use crate::tls::identity::BadCertName;

/// The hook's options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthOptions {
    /// Who may connect.
    pub users: Vec<UserOptions>,
    /// Failed `auth` requests a connection may make; the one that reaches
    /// this number is answered, then the connection is closed.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
}

/// The default of [`AuthOptions::max_failures`].
pub const DEFAULT_MAX_FAILURES: u32 = 3;
/// The largest accepted [`AuthOptions::max_failures`].
pub const MAX_FAILURES_LIMIT: u32 = 1000;

fn default_max_failures() -> u32 {
    DEFAULT_MAX_FAILURES
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOptions {
    /// The principal's name (in audit records and messages).
    pub name: String,
    /// Lower- or upper-case hex SHA-256 of the user's token
    /// (`hookv-cli hash-token TOKEN` prints it). A user has a token, a
    /// `cert_subject`, or both.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A name the client certificate must carry to be granted this user
    /// without a token: `CN=...`, `DNS:...` or `URI:...` (see
    /// [`crate::tls::identity`]). Needs `[server.tls] client_ca`.
    #[serde(default)]
    pub cert_subject: Option<String>,
    /// Table patterns this user may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Table patterns this user may write.
    #[serde(default)]
    pub write: Vec<String>,
}

/// Why [`AuthHook::new`](super::AuthHook::new) refused its options; `users[N]` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum AuthOptionsError {
    /// No user: nobody could connect.
    #[error("users: at least one user is needed (nobody could connect)")]
    NoUsers,
    /// `max_failures` outside `1..=MAX_FAILURES_LIMIT`.
    #[error(
        "max_failures = {0}: must be between 1 and {MAX_FAILURES_LIMIT} (failed auth \
         requests a connection may make before it is closed)"
    )]
    MaxFailures(u32),
    /// A `token_sha256` that is not 64 hex digits.
    #[error(
        "users[{index}] ({name}): token_sha256 must be 64 hex digits (the SHA-256 of the token; \
         `hookv-cli hash-token TOKEN` prints it)"
    )]
    BadHash {
        /// Which user, from 1.
        index: usize,
        /// The user's name.
        name: String,
    },
    /// Two users with one token.
    #[error("users[{index}] ({name}): token_sha256 is the same as another user's")]
    SameHash {
        /// The second user, from 1.
        index: usize,
        /// Its name.
        name: String,
    },
    /// A user with neither a token nor a certificate name.
    #[error("users[{index}] ({name}): needs token_sha256, cert_subject, or both (nothing would grant this user)")]
    NoCredential {
        /// Which user, from 1.
        index: usize,
        /// The user's name.
        name: String,
    },
    /// A `cert_subject` that is not a certificate name.
    #[error("users[{index}] ({name}): cert_subject {source}")]
    BadCertSubject {
        /// Which user, from 1.
        index: usize,
        /// The user's name.
        name: String,
        /// What is wrong with it.
        source: BadCertName,
    },
    /// Two users with one certificate name: which one a certificate
    /// grants would depend on their order.
    #[error("users[{index}] ({name}): cert_subject {subject:?} is the same as another user's")]
    SameCertSubject {
        /// The second user, from 1.
        index: usize,
        /// Its name.
        name: String,
        /// The name, as parsed.
        subject: String,
    },
    /// Two users with one name.
    #[error("users[{index}]: the name {name:?} is used twice")]
    SameName {
        /// The second user, from 1.
        index: usize,
        /// The name.
        name: Arc<str>,
    },
}
