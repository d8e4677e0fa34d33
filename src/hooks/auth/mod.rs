//! `kind = "auth"`: who may do what.
//!
//! A client authenticates once per connection with an `auth` request (tag
//! 13) carrying a token. The token's SHA-256 is compared, in constant time,
//! with every user's `token_sha256`: a match makes the connection that user
//! (200); no match answers 401 and leaves the connection unauthenticated
//! (even if it was authenticated before). Tokens themselves are never stored.
//!
//! On TLS with client certificates (`[server.tls] client_ca`), a user may
//! instead (or as well) be granted by certificate: `cert_subject =
//! "CN=billing"` (or `"DNS:..."`, `"URI:..."`: see [`crate::tls::identity`])
//! grants the user to a connection whose verified certificate carries that
//! name. Such a connection needs no `auth`: its first request (any request)
//! finds it unauthenticated, matches its certificate, and runs as that user;
//! so does every request after a failed `auth` or a reload that changed
//! this hook. Users are tried in config order; the first whose
//! `cert_subject` the certificate carries is granted. An `auth` request on
//! such a connection works as on any other: a valid token makes the
//! connection the token's user from then on, a wrong one is answered 401 and
//! counted towards `max_failures`, and the certificate's user comes back at
//! the next request. A connection on a listener without client certificates
//! (plain TCP, `plaintext_listen`, TLS without `client_ca`) has no
//! certificate, so only tokens authenticate it.
//!
//! Every other request from an unauthenticated connection gets 401 and
//! executes nothing. An authenticated user may read tables matching one of
//! its `read` patterns (hget, hgetall, hmget, hexist, hmexist, hscan) and write
//! tables matching one of its `write` patterns (hset, hmset, hdel, hmdel);
//! anything else gets 403 naming the table. Patterns use `*` wildcards.
//!
//! A user who may write a table but not read it gets write answers without
//! the previous values (`values` empty, and a message saying why): writes
//! answer what they replaced, which would otherwise be a way to read.
//!
//! The principal belongs to the auth hook that set it: after a reload that
//! changes the auth hook (say, a leaked token replaced), every connection
//! must authenticate again.
//!
//! Guessing is slowed per connection: every failed `auth` is logged
//! (rate-limited; connection id and peer, never the token) and counted in
//! [`HookCtx::auth_failures`]. The failure that reaches `max_failures`
//! (default 3) is still answered 401, saying so, and the connection then
//! closes: nothing pipelined after it is read. A success does not reset the
//! count, so a client holding one valid token cannot guess another's forever
//! on one connection. (A guesser can reconnect: each new connection costs a
//! TCP handshake and is bounded by the server's connection limits.)
//!
//! Events: `on_received` (authenticate, refuse) and `on_before_send`
//! (withhold previous values).
//!
//! ```toml
//! [[hooks]]
//! kind = "auth"
//! max_failures = 3   # failed auth requests before the connection is closed (1..=1000)
//! users = [
//!   { name = "admin",  token_sha256 = "<hex>", read = ["*"], write = ["*"] },
//!   { name = "viewer", token_sha256 = "<hex>", read = ["public*"] },
//!   { name = "billing", cert_subject = "CN=billing", read = ["invoices*"], write = ["invoices*"] },
//! ]
//! ```

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use hookv_plugin::pb::command_request::RequestData;
use hookv_plugin::pb::{status, CommandRequest, CommandResponse};
use hookv_plugin::Access;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::pattern;
use super::raw::RequestRef;
use super::{Events, Flow, Hook, HookCtx, RawRequest};
use crate::tls::CertName;

mod options;
pub use options::{
    AuthOptions, AuthOptionsError, UserOptions, DEFAULT_MAX_FAILURES, MAX_FAILURES_LIMIT,
};

struct User {
    name: Arc<str>,
    /// `None`: a user granted by certificate only.
    token_sha256: Option<[u8; 32]>,
    cert_subject: Option<CertName>,
    read: Vec<String>,
    write: Vec<String>,
}

/// The auth hook.
pub struct AuthHook {
    users: Vec<User>,
    max_failures: u32,
}

/// The hex SHA-256 of `token`, as `token_sha256` expects it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl AuthHook {
    /// Checks the options: at least one user, each with a token or a
    /// certificate name (or both); unique names, hashes and certificate
    /// names; well-formed hashes and names; `max_failures` in range.
    pub fn new(options: AuthOptions) -> Result<Self, AuthOptionsError> {
        if options.users.is_empty() {
            return Err(AuthOptionsError::NoUsers);
        }
        if !(1..=MAX_FAILURES_LIMIT).contains(&options.max_failures) {
            return Err(AuthOptionsError::MaxFailures(options.max_failures));
        }
        let mut users = Vec::with_capacity(options.users.len());
        let mut by_name = HashMap::new();
        for (i, u) in options.users.into_iter().enumerate() {
            let index = i + 1;
            if u.token_sha256.is_none() && u.cert_subject.is_none() {
                return Err(AuthOptionsError::NoCredential {
                    index,
                    name: u.name,
                });
            }
            let token_sha256 = match u.token_sha256.as_deref().map(parse_hex32) {
                None => None,
                Some(Some(hash)) => Some(hash),
                Some(None) => {
                    return Err(AuthOptionsError::BadHash {
                        index,
                        name: u.name,
                    })
                }
            };
            if token_sha256.is_some()
                && users
                    .iter()
                    .any(|other: &User| other.token_sha256 == token_sha256)
            {
                return Err(AuthOptionsError::SameHash {
                    index,
                    name: u.name,
                });
            }
            let cert_subject = match u.cert_subject.as_deref().map(str::parse::<CertName>) {
                None => None,
                Some(Ok(subject)) => Some(subject),
                Some(Err(source)) => {
                    return Err(AuthOptionsError::BadCertSubject {
                        index,
                        name: u.name,
                        source,
                    })
                }
            };
            if let Some(subject) = &cert_subject {
                if users
                    .iter()
                    .any(|other| other.cert_subject.as_ref() == Some(subject))
                {
                    return Err(AuthOptionsError::SameCertSubject {
                        index,
                        name: u.name,
                        subject: subject.to_string(),
                    });
                }
            }
            let name: Arc<str> = u.name.into();
            if by_name.insert(name.clone(), users.len()).is_some() {
                return Err(AuthOptionsError::SameName { index, name });
            }
            users.push(User {
                name,
                token_sha256,
                cert_subject,
                read: u.read,
                write: u.write,
            });
        }
        Ok(Self {
            users,
            max_failures: options.max_failures,
        })
    }

    /// The user whose hash matches `token`. Every token user's hash is
    /// compared, in constant time, so timing reveals neither the hash nor
    /// which user.
    fn authenticate(&self, token: &str) -> Option<&User> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for user in &self.users {
            let Some(hash) = &user.token_sha256 else {
                continue;
            };
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(user);
            }
        }
        found
    }

    /// The first user (in config order) whose `cert_subject` the
    /// connection's verified client certificate carries.
    fn certified(&self, ctx: &HookCtx) -> Option<&User> {
        let identity = ctx.identity()?;
        self.users.iter().find(|user| {
            user.cert_subject
                .as_ref()
                .is_some_and(|subject| identity.matches(subject))
        })
    }
}

/// What `req` does to which table, per the command catalogue; `None` for
/// requests that name no table (`auth`, an unknown command).
fn access(req: RequestRef<'_>) -> Option<(Access, &str)> {
    Some((req.command()?.access(), req.table()?))
}

impl AuthHook {
    /// The user this connection authenticated as *with this hook*. The
    /// principal is the very name this hook handed out (pointer-equal), so
    /// after a reload that changed the auth hook (a new token, a removed
    /// user) every connection must authenticate again: a leaked token stops
    /// working at the reload.
    fn user_of(&self, ctx: &HookCtx) -> Option<&User> {
        let principal = ctx.principal.as_ref()?;
        self.users.iter().find(|u| Arc::ptr_eq(&u.name, principal))
    }
}

impl Hook for AuthHook {
    fn name(&self) -> &str {
        "auth"
    }

    fn events(&self) -> Events {
        Events {
            received: true,
            before_send: true,
            ..Events::NONE
        }
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn on_received(&self, ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
        if let Some(RequestData::Auth(auth)) = &req.request_data {
            return ControlFlow::Break(match self.authenticate(&auth.token) {
                Some(user) => {
                    ctx.principal = Some(user.name.clone());
                    CommandResponse {
                        message: format!("authenticated as {}", user.name),
                        ..CommandResponse::ok()
                    }
                }
                None => self.refuse_token(ctx),
            });
        }
        self.admit(ctx, RequestRef::Decoded(req))
    }

    fn on_before_send(
        &self,
        ctx: &HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.withhold(ctx, RequestRef::Decoded(req), res);
        ControlFlow::Continue(())
    }

    /// An `hget` or `hset` needs only its table and command here (an
    /// `auth` is never raw).
    fn reads_raw(&self) -> bool {
        true
    }

    fn on_received_raw(&self, ctx: &mut HookCtx, req: &RawRequest<'_>) -> Flow {
        self.admit(ctx, RequestRef::Raw(req))
    }

    fn on_before_send_raw(
        &self,
        ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.withhold(ctx, RequestRef::Raw(req), res);
        ControlFlow::Continue(())
    }
}

impl AuthHook {
    /// A request other than `auth`: refused unless the connection's user
    /// may read (or write) its table.
    fn admit(&self, ctx: &mut HookCtx, req: RequestRef<'_>) -> Flow {
        let user = match self.user_of(ctx) {
            Some(user) => user,
            // Logged in by certificate, at the first request that needs it.
            None => match self.certified(ctx) {
                Some(user) => {
                    ctx.principal = Some(user.name.clone());
                    user
                }
                None => return ControlFlow::Break(not_authenticated(ctx, req.command_name())),
            },
        };
        match access(req) {
            Some((Access::Read, table)) if !pattern::any(&user.read, table) => {
                ControlFlow::Break(CommandResponse::error(
                    status::FORBIDDEN,
                    format!(
                        "{}: user {} may not read table {table:?}",
                        req.command_name(),
                        user.name
                    ),
                ))
            }
            Some((Access::Write, table)) if !pattern::any(&user.write, table) => {
                ControlFlow::Break(CommandResponse::error(
                    status::FORBIDDEN,
                    format!(
                        "{}: user {} may not write table {table:?}",
                        req.command_name(),
                        user.name
                    ),
                ))
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The 401 for a request on a connection nobody authenticated.
fn not_authenticated(ctx: &HookCtx, command: &str) -> CommandResponse {
    let message = match ctx.identity() {
        None => format!(
            "{command}: not authenticated; send `auth` with your token first (hookv-cli --token)"
        ),
        Some(identity) => format!(
            "{}: not authenticated: no user has a cert_subject that this connection's \
             certificate ({}) carries; send `auth` with your token first (hookv-cli --token)",
            command, identity.subject
        ),
    };
    CommandResponse::error(status::UNAUTHENTICATED, message)
}

impl AuthHook {
    /// A failed `auth`: the connection is unauthenticated from now on, the
    /// failure is counted and logged, and the one that reaches
    /// `max_failures` closes the connection after its answer.
    fn refuse_token(&self, ctx: &mut HookCtx) -> CommandResponse {
        ctx.principal = None;
        let failures = ctx.add_auth_failure();
        let peer = ctx.peer_text();
        if failures < self.max_failures {
            // A guesser triggers this at will: limited. Never the token.
            crate::log_limited!(warn, conn = ctx.conn_id(), %peer, failures, "auth failed: invalid token");
            return CommandResponse::error(status::UNAUTHENTICATED, "auth: invalid token");
        }
        crate::log_limited!(
            warn,
            conn = ctx.conn_id(),
            %peer,
            failures,
            "auth failed: invalid token; too many failed attempts, closing the connection"
        );
        ctx.close_after_answer();
        CommandResponse::error(
            status::UNAUTHENTICATED,
            format!(
                "auth: invalid token; too many failed attempts ({failures}); closing the connection"
            ),
        )
    }

    /// Writes answer the previous (or removed) values; a user who may write a
    /// table but not read it must not learn them that way.
    fn withhold(&self, ctx: &HookCtx, req: RequestRef<'_>, res: &mut CommandResponse) {
        if !req.is_write() || res.values.is_empty() {
            return;
        }
        let (Some(user), Some(table)) = (self.user_of(ctx), req.table()) else {
            return;
        };
        if !pattern::any(&user.read, table) {
            res.values.clear();
            res.message = format!(
                "previous values withheld: user {} may not read table {table:?}",
                user.name
            );
        }
    }
}

#[cfg(test)]
mod tests;
