//! Where a `[[hooks]]` entry stands in the chain besides its position: the
//! tables it is attached to ([`Scope`], `tables = [...]`) and what a panic in
//! it does to the request ([`OnPanic`], `on_panic = ...`). Together they are
//! an entry's [`Placement`], read from its table by `hooks::build` (the two
//! keys never reach the hook's own options).
//!
//! ```toml
//! [[hooks]]
//! plugin = "target/release/librate_limit.so"
//! tables = ["orders*", "users"]   # runs only for requests to these tables
//! on_panic = "fail_open"          # a failure lets the request through
//! per_second = 100.0
//! ```
//!
//! # Requests that name no table
//!
//! A scope narrows the requests that name a table. A request that names none
//! (`auth`, and a frame that is not a request at all) meets every hook,
//! scoped or not: a scoped auth hook must still see the logins, and a scoped
//! audit still records them. So a scope never opens a hole that the
//! unscoped hook would close, except for the tables it leaves out.

use std::sync::Arc;

use super::pattern;

/// The tables an entry is attached to: the patterns of its `tables` key
/// (`*` matches any run of characters). An entry without the key (or with a
/// pattern that is just `*`) has no scope and runs for every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    patterns: Arc<[String]>,
}

impl Scope {
    /// The scope of `patterns`; `None` when one of them is `*` (every table).
    pub fn new(patterns: Vec<String>) -> Option<Self> {
        if patterns.iter().any(|p| p == "*") {
            return None;
        }
        Some(Self {
            patterns: patterns.into(),
        })
    }

    /// Whether a request to `table` (`None`: it names none) reaches the hook.
    #[inline]
    pub fn admits(&self, table: Option<&str>) -> bool {
        match table {
            Some(table) => pattern::any(&self.patterns, table),
            None => true,
        }
    }

    /// The patterns, as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// What a panic inside a hook (or, for a plugin, any failure: a panic its
/// SDK caught, an error verdict, an answer that does not decode) does to
/// the request it ran for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnPanic {
    /// The request is answered 500 (in `on_before_send`: its response
    /// becomes that 500); the server carries on. The default.
    #[default]
    FailClosed,
    /// The chain goes on as if the hook had said "continue": the request is
    /// served without the hook's check. The failure is logged and counted.
    /// The risk: a hook that guards something (auth, a rate limit, a key
    /// check) lets through what it would have refused while it fails.
    FailOpen,
}

impl OnPanic {
    /// The value of `on_panic = "..."`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "fail_closed" => Some(OnPanic::FailClosed),
            "fail_open" => Some(OnPanic::FailOpen),
            _ => None,
        }
    }

    /// The policy and what it does, for the log line of a failure.
    pub fn describe(self) -> &'static str {
        match self {
            OnPanic::FailClosed => "fail_closed: the request fails",
            OnPanic::FailOpen => "fail_open: the chain goes on without it",
        }
    }
}

/// An entry's scope and failure policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// `tables = [...]`; `None`: every request.
    pub scope: Option<Scope>,
    /// `on_panic = "..."`.
    pub on_panic: OnPanic,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(patterns: &[&str]) -> Option<Scope> {
        Scope::new(patterns.iter().map(|p| (*p).to_owned()).collect())
    }

    #[test]
    fn a_scope_admits_its_tables_and_requests_without_one() {
        let s = scope(&["orders*", "users"]).unwrap();
        assert!(s.admits(Some("orders")));
        assert!(s.admits(Some("orders-2026")));
        assert!(s.admits(Some("users")));
        assert!(!s.admits(Some("users2")));
        assert!(!s.admits(Some("bench")));
        assert!(s.admits(None));
    }

    #[test]
    fn a_star_is_no_scope() {
        assert_eq!(scope(&["orders", "*"]), None);
    }

    #[test]
    fn on_panic_values() {
        assert_eq!(OnPanic::parse("fail_open"), Some(OnPanic::FailOpen));
        assert_eq!(OnPanic::parse("fail_closed"), Some(OnPanic::FailClosed));
        assert_eq!(OnPanic::parse("open"), None);
        assert_eq!(OnPanic::default(), OnPanic::FailClosed);
    }
}
