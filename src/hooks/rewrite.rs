//! `kind = "rewrite"`: change responses by rules.
//!
//! Each rule matches on any of `command`, `table` (a pattern with `*`) and
//! `status` (a number or a list); a rule with no match key matches every
//! response. Every matching rule applies, in order, with any of these actions:
//!
//! - `set_message = "..."`: replace the message;
//! - `prefix_message = "..."`: put text before the message;
//! - `set_status = 404`: replace the status (e.g. hide 403 as 404);
//! - `redact = "..."`: replace every returned value (in `values` and
//!   `pairs`) with this string; empty values ("no value") stay empty, so
//!   the client still sees which keys exist.
//!
//! ```toml
//! [[hooks]]
//! kind = "rewrite"
//! rules = [
//!   { status = 401, set_message = "log in first: hookv-cli --token ..." },
//!   { table = "secret*", redact = "***" },
//!   { status = [403, 404], prefix_message = "hookv: " },
//! ]
//! ```
//!
//! Event: `on_before_send`, so it also rewrites refusals by earlier hooks.

use std::ops::ControlFlow;

use hookv_plugin::catalogue::{self, Command};
use hookv_plugin::pb::{CommandRequest, CommandResponse, Value};
use serde::Deserialize;

use super::pattern;
use super::raw::RequestRef;
use super::{Events, Hook, HookCtx, RawRequest};

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// Any of these.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn any(&self, mut f: impl FnMut(&T) -> bool) -> bool {
        match self {
            OneOrMany::One(v) => f(v),
            OneOrMany::Many(vs) => vs.iter().any(f),
        }
    }
}

/// The hook's options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteOptions {
    /// The rules, applied in order.
    pub rules: Vec<Rule>,
}

/// One rule: what it matches and what it changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Command name(s): hget, hset, ..., hscan, auth, or "unknown" for malformed requests.
    pub command: Option<OneOrMany<String>>,
    /// Table pattern (`*` wildcards). Requests without a table never match it.
    pub table: Option<String>,
    /// Status code(s).
    pub status: Option<OneOrMany<u32>>,
    /// Replace the message.
    pub set_message: Option<String>,
    /// Prefix the message.
    pub prefix_message: Option<String>,
    /// Replace the status.
    pub set_status: Option<u32>,
    /// Replace every non-empty returned value with this string.
    pub redact: Option<String>,
}

/// The rewrite hook.
pub struct RewriteHook {
    rules: Vec<Rule>,
}

/// Why [`RewriteHook::new`] refused its rules; `rules[N]` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum RewriteOptionsError {
    /// A rule that changes nothing.
    #[error("rules[{rule}]: no action; give set_message, prefix_message, set_status or redact")]
    NoAction {
        /// Which rule, from 1.
        rule: usize,
    },
    /// A `command` that is no command's name.
    #[error("rules[{rule}]: command {command:?} is not one of {}", command_names())]
    UnknownCommand {
        /// Which rule, from 1.
        rule: usize,
        /// The name given.
        command: String,
    },
    /// A `set_status` outside 100..=599.
    #[error("rules[{rule}]: set_status = {status} is not an HTTP status")]
    BadStatus {
        /// Which rule, from 1.
        rule: usize,
        /// The status given.
        status: u32,
    },
}

/// True for a name a rule's `command` may give: a command of the catalogue,
/// or `"unknown"` for requests that name none.
fn is_command_name(name: &str) -> bool {
    name == catalogue::UNKNOWN || Command::from_name(name).is_some()
}

/// Every name a rule's `command` may give, for a message.
fn command_names() -> String {
    let mut names: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
    names.push(catalogue::UNKNOWN);
    names.join(", ")
}

impl RewriteHook {
    /// Checks the rules: known command names, at least one action each,
    /// statuses in the HTTP range.
    pub fn new(options: RewriteOptions) -> Result<Self, RewriteOptionsError> {
        for (i, rule) in options.rules.iter().enumerate() {
            let n = i + 1;
            if rule.set_message.is_none()
                && rule.prefix_message.is_none()
                && rule.set_status.is_none()
                && rule.redact.is_none()
            {
                return Err(RewriteOptionsError::NoAction { rule: n });
            }
            let commands: Vec<&String> = match &rule.command {
                None => vec![],
                Some(OneOrMany::One(c)) => vec![c],
                Some(OneOrMany::Many(cs)) => cs.iter().collect(),
            };
            if let Some(bad) = commands.iter().find(|c| !is_command_name(c)) {
                return Err(RewriteOptionsError::UnknownCommand {
                    rule: n,
                    command: bad.to_string(),
                });
            }
            if let Some(status) = rule.set_status {
                if !(100..=599).contains(&status) {
                    return Err(RewriteOptionsError::BadStatus { rule: n, status });
                }
            }
        }
        Ok(Self {
            rules: options.rules,
        })
    }
}

impl Rule {
    fn matches(&self, req: RequestRef<'_>, res: &CommandResponse) -> bool {
        let command = req.command_name();
        self.command
            .as_ref()
            .is_none_or(|c| c.any(|c| c == command))
            && self
                .table
                .as_ref()
                .is_none_or(|p| req.table().is_some_and(|t| pattern::matches(p, t)))
            && self
                .status
                .as_ref()
                .is_none_or(|s| s.any(|&s| s == res.status))
    }

    fn apply(&self, res: &mut CommandResponse) {
        if let Some(message) = &self.set_message {
            res.message.clone_from(message);
        }
        if let Some(prefix) = &self.prefix_message {
            res.message.insert_str(0, prefix);
        }
        if let Some(status) = self.set_status {
            res.status = status;
        }
        if let Some(mask) = &self.redact {
            let redact = |v: &mut Value| {
                if !v.is_empty() {
                    *v = Value::from(mask.as_str());
                }
            };
            res.values.iter_mut().for_each(redact);
            res.pairs
                .iter_mut()
                .filter_map(|p| p.value.as_mut())
                .for_each(redact);
        }
    }
}

impl Hook for RewriteHook {
    fn name(&self) -> &str {
        "rewrite"
    }

    fn events(&self) -> Events {
        Events {
            before_send: true,
            ..Events::NONE
        }
    }

    fn on_before_send(
        &self,
        _ctx: &HookCtx,
        req: &CommandRequest,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.rewrite(RequestRef::Decoded(req), res);
        ControlFlow::Continue(())
    }

    /// Rules read only the command and the table.
    fn reads_raw(&self) -> bool {
        true
    }

    fn on_before_send_raw(
        &self,
        _ctx: &HookCtx,
        req: &RawRequest<'_>,
        res: &mut CommandResponse,
    ) -> ControlFlow<()> {
        self.rewrite(RequestRef::Raw(req), res);
        ControlFlow::Continue(())
    }
}

impl RewriteHook {
    /// Applies every rule that matches, in order.
    fn rewrite(&self, req: RequestRef<'_>, res: &mut CommandResponse) {
        for rule in &self.rules {
            if rule.matches(req, res) {
                rule.apply(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(command: &str) -> Rule {
        Rule {
            command: Some(OneOrMany::One(command.into())),
            table: None,
            status: None,
            set_message: Some("m".into()),
            prefix_message: None,
            set_status: None,
            redact: None,
        }
    }

    #[test]
    fn a_rule_naming_no_command_is_refused_with_the_catalogue_names() {
        assert!(RewriteHook::new(RewriteOptions {
            rules: vec![rule("hscan"), rule("auth"), rule("unknown")],
        })
        .is_ok());
        let err = RewriteHook::new(RewriteOptions {
            rules: vec![rule("hget"), rule("hgett")],
        })
        .err()
        .unwrap();
        assert!(
            matches!(&err, RewriteOptionsError::UnknownCommand { rule: 2, command } if command == "hgett"),
            "{err:?}"
        );
        assert!(
            err.to_string().ends_with(
                "is not one of hget, hgetall, hmget, hset, hmset, hdel, hmdel, hexist, \
                 hmexist, auth, stats, hscan, unknown"
            ),
            "{err}"
        );
    }
}
