//! Builds the hook chain from the `[[hooks]]` list of `config.toml`.
//!
//! Each entry is either a built-in (`kind = "auth" | "audit" | "wal" |
//! "rewrite"`) or a plugin (`plugin = "path/to/lib.so"`); the other keys of
//! the table are that hook's options, except two that any entry may have and
//! the builder keeps for the chain ([`placement`]): `tables = [...]` (the
//! tables the hook runs for) and `on_panic = "fail_closed" | "fail_open"`.
//! Hooks run in the order listed. Any
//! problem (unknown kind, missing or unknown option, bad value, a plugin that
//! will not load) is a [`HookError`] naming the file, line, position and key.
//!
//! The builder hands each hook what it needs, resolved: the audit file's
//! path against the config's directory, the wal entry the log opened at
//! start ([`BuildEnv::wal`]). The hooks know nothing of this module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{Backend, Config, HookEntry};
use crate::hooks::audit::{AuditError, AuditHook, AuditOptions};
use crate::hooks::auth::AuthHook;
use crate::hooks::rewrite::RewriteHook;
use crate::hooks::wal::{WalHook, WalHookError};
use crate::hooks::{Hook, HookChain, OnPanic, Placement, Scope};
use crate::plugin::{BuildId, PluginError, PluginFile};
use crate::wal::{OptionsError, Wal, WalError, WalOptions};

/// A hook that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {label}: {problem}", file.display())]
pub struct HookError {
    /// The config file.
    pub file: PathBuf,
    /// Line of the hook's table.
    pub line: usize,
    /// e.g. `hooks[2] (kind = "wal")`.
    pub label: String,
    /// What is wrong, naming the key (boxed: some problems are large, and
    /// every `Result` of the builder carries this).
    pub problem: Box<EntryError>,
}

impl HookError {
    /// An error about `entry` of the config at `file`.
    pub fn new(file: &Path, entry: &HookEntry, problem: impl Into<EntryError>) -> Self {
        Self {
            file: file.to_owned(),
            line: entry.line,
            label: entry.label(),
            problem: Box::new(problem.into()),
        }
    }
}

/// What is wrong with one `[[hooks]]` entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Both `kind` and `plugin`.
    #[error("has both `kind` and `plugin`; a hook is one or the other")]
    KindAndPlugin,
    /// Neither `kind` nor `plugin`.
    #[error(
        "needs `kind = \"auth\" | \"audit\" | \"wal\" | \"rewrite\"` or `plugin = \"path/to/lib.so\"`"
    )]
    Unnamed,
    /// `kind` is not a string.
    #[error("`kind` must be a string")]
    KindNotString,
    /// `kind` names no built-in hook.
    #[error("unknown kind {0:?}; built-in hooks are auth, audit, wal, rewrite")]
    UnknownKind(String),
    /// The options do not parse: serde's words, naming the key.
    #[error("{0}")]
    Options(String),
    /// A second `kind = "wal"` entry.
    #[error("a second wal hook; there is one log per server (the first is {first})")]
    SecondWal {
        /// The label of the first.
        first: String,
    },
    /// A wal entry with `storage.backend = "redis-cluster"`.
    #[error(
        "the wal hook cannot run with storage.backend = \"redis-cluster\": the cluster keeps the \
         data, replicated, for every hookv server, and this server's local log would diverge from \
         it; remove this entry (wait_replicas in [storage] is how writes wait for copies)"
    )]
    WalWithCluster,
    /// The wal options parse but cannot be used.
    #[error(transparent)]
    WalOptions(#[from] OptionsError),
    /// The log cannot be opened or replayed (at start).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The wal entry has no log to stand for.
    #[error(transparent)]
    WalHook(#[from] WalHookError),
    /// The audit hook cannot start.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The auth hook refused its options.
    #[error("{0}")]
    Auth(String),
    /// The rewrite hook refused its options.
    #[error("{0}")]
    Rewrite(String),
    /// The plugin cannot be loaded or refused its options.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// `tables` is not a list of table patterns.
    #[error("tables = {value}: {reason}")]
    Tables {
        /// The value as written.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// `on_panic` is not one of its values.
    #[error("on_panic = {0}: must be \"fail_closed\" (the default: the request fails with 500) or \"fail_open\" (the chain goes on without the hook)")]
    OnPanic(String),
    /// `tables` on the wal entry.
    #[error(
        "tables: the wal cannot be scoped: it is a layer of the storage and logs every write, \
         whatever its table; leave `tables` out of the wal entry"
    )]
    WalScoped,
}

/// The keys any entry may have that are not its hook's options: see
/// [`placement`].
pub const PLACEMENT_KEYS: [&str; 2] = ["tables", "on_panic"];

/// The scope (`tables = ["orders*", "users"]`) and failure policy
/// (`on_panic = "fail_open"`) of `entry`, checked. Without `tables` (or with
/// a `"*"` among them) the hook runs for every request; without `on_panic`
/// a panic fails the request (`fail_closed`).
pub fn placement(entry: &HookEntry) -> Result<Placement, EntryError> {
    let tables = |reason| EntryError::Tables {
        value: entry
            .table
            .get("tables")
            .map_or_else(String::new, ToString::to_string),
        reason,
    };
    let scope = match entry.table.get("tables") {
        None => None,
        Some(toml::Value::Array(items)) if items.is_empty() => {
            return Err(tables(
                "lists no table, so the hook would run for none; list at least one pattern \
                 (`*` matches any run of characters), or leave the key out to run for every table",
            ))
        }
        Some(toml::Value::Array(items)) => {
            let mut patterns = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some("") => {
                        return Err(tables("an empty pattern matches no table name"));
                    }
                    Some(p) => patterns.push(p.to_owned()),
                    None => {
                        return Err(tables(
                            "every item must be a table pattern in quotes, e.g. \"orders*\"",
                        ))
                    }
                }
            }
            Scope::new(patterns)
        }
        Some(_) => {
            return Err(tables(
                "must be a list of table patterns, e.g. tables = [\"orders*\", \"users\"]",
            ))
        }
    };
    if entry.table.contains_key("tables") && entry.kind() == Some("wal") {
        return Err(EntryError::WalScoped);
    }
    let on_panic = match entry.table.get("on_panic") {
        None => OnPanic::default(),
        Some(value) => value
            .as_str()
            .and_then(OnPanic::parse)
            .ok_or_else(|| EntryError::OnPanic(value.to_string()))?,
    };
    Ok(Placement { scope, on_panic })
}

/// What building a hook may need besides its own options.
pub struct BuildEnv<'a> {
    /// The whole config (its file and directory name errors and resolve paths).
    pub config: &'a Config,
    /// The write-ahead log, opened (and replayed) before the service was
    /// built, since it wraps the storage (see [`wal_entry`]).
    pub wal: Option<&'a Arc<Wal>>,
}

impl BuildEnv<'_> {
    /// `path` resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_relative() {
            self.config.dir.join(path)
        } else {
            path.to_owned()
        }
    }
}

/// Builds every hook of `env.config.hooks`, in order.
pub fn build_chain(env: &BuildEnv<'_>) -> Result<HookChain, HookError> {
    Ok(rebuild(env, &[])?.built.chain)
}

/// A built chain and the entry each hook came from, so that a reload can
/// keep the hooks whose entry did not change.
#[derive(Clone, Default)]
pub struct BuiltChain {
    /// The chain, in config order.
    pub chain: HookChain,
    /// Each hook with the table it was built from, in config order.
    pub parts: Vec<Part>,
}

/// One hook and the `[[hooks]]` table it was built from.
#[derive(Clone)]
pub struct Part {
    /// 1-based position of the table in the hook list.
    pub index: usize,
    /// The table, every key included.
    pub table: toml::Table,
    /// A label for logs, e.g. `hooks[2] (kind = "audit")`.
    pub label: String,
    /// For a plugin: the build of its file that was loaded, so that another
    /// build at the same path counts as a change (and a touched or copied
    /// file of the same bytes does not).
    pub stamp: Option<BuildId>,
    /// The hook.
    pub hook: Arc<dyn Hook>,
}

/// The plugin file of `entry`, read (and hashed), if it names one.
fn plugin_file(env: &BuildEnv<'_>, entry: &HookEntry) -> Result<Option<PluginFile>, HookError> {
    // An entry with a `kind` too is refused by `build_one`, for that.
    let (None, Some(path)) = (entry.kind(), entry.plugin()) else {
        return Ok(None);
    };
    PluginFile::read(&env.resolve(Path::new(path)))
        .map(Some)
        .map_err(|e| HookError::new(&env.config.path, entry, e))
}

/// What a rebuild changed, by label.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Entries built anew that take no previous hook's place.
    pub added: Vec<String>,
    /// Entries built anew in the place of a previous hook, which leaves: the
    /// same built-in kind at the same position, or the same plugin file
    /// (anywhere in the list), with another table or, for a plugin, another
    /// build of the file. A plugin that moved reads `old label -> new label`.
    pub replaced: Vec<String>,
    /// Previous hooks no longer in the list and not replaced.
    pub removed: Vec<String>,
    /// Entries identical to a previous one: the running hook (and its state)
    /// is reused.
    pub kept: Vec<String>,
}

/// Builds the chain of `env.config.hooks`, reusing a hook of `previous`
/// wherever an entry's table is identical to the one it was built from (so
/// its state — an audit queue, rate-limit buckets — carries over) and, for a
/// plugin, its file still holds the same build (the same bytes). Nothing of `previous` is changed;
/// on error nothing new is kept either.
pub fn rebuild(env: &BuildEnv<'_>, previous: &[Part]) -> Result<Rebuilt, HookError> {
    let mut unused: Vec<Option<&Part>> = previous.iter().map(Some).collect();
    let mut built = BuiltChain::default();
    let mut changes = Changes::default();
    // Positions in `built.parts` of the entries built anew.
    let mut fresh = Vec::new();
    for entry in &env.config.hooks {
        let label = entry.label();
        let placement = placement(entry).map_err(|e| HookError::new(&env.config.path, entry, e))?;
        let file = plugin_file(env, entry)?;
        let stamp = file.as_ref().map(PluginFile::id);
        let reuse = unused
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.table == entry.table && p.stamp == stamp))
            .and_then(Option::take);
        let hook = match reuse {
            Some(part) => {
                changes.kept.push(label.clone());
                Arc::clone(&part.hook)
            }
            None => {
                fresh.push(built.parts.len());
                build_one(env, entry, file.as_ref(), placement.on_panic)?
            }
        };
        built.chain.push_placed(Arc::clone(&hook), placement);
        built.parts.push(Part {
            index: entry.index,
            table: entry.table.clone(),
            label,
            stamp,
            hook,
        });
    }
    let leaving: Vec<&Part> = unused.into_iter().flatten().collect();
    // Each entry built anew replaces the first leaving hook in its place.
    let mut unreplaced: Vec<Option<&Part>> = leaving.iter().copied().map(Some).collect();
    for new in fresh.into_iter().map(|i| &built.parts[i]) {
        let old = unreplaced
            .iter_mut()
            .find(|old| old.is_some_and(|old| same_place(env, old, new)))
            .and_then(Option::take);
        match old {
            None => changes.added.push(new.label.clone()),
            Some(old) if old.label == new.label => changes.replaced.push(new.label.clone()),
            Some(old) => changes
                .replaced
                .push(format!("{} -> {}", old.label, new.label)),
        }
    }
    changes.removed = unreplaced
        .into_iter()
        .flatten()
        .map(|old| old.label.clone())
        .collect();
    let retired = leaving.iter().map(|old| Arc::clone(&old.hook)).collect();
    Ok(Rebuilt {
        built,
        changes,
        retired,
    })
}

/// Whether `new` takes the place of `old` in the list (see
/// [`Changes::replaced`]).
fn same_place(env: &BuildEnv<'_>, old: &Part, new: &Part) -> bool {
    fn text<'a>(part: &'a Part, key: &str) -> Option<&'a str> {
        part.table.get(key).and_then(toml::Value::as_str)
    }
    match (text(old, "plugin"), text(new, "plugin")) {
        (Some(old), Some(new)) => env.resolve(Path::new(old)) == env.resolve(Path::new(new)),
        (None, None) => old.index == new.index && text(old, "kind") == text(new, "kind"),
        _ => false,
    }
}

/// The result of [`rebuild`].
pub struct Rebuilt {
    /// The new chain and its parts.
    pub built: BuiltChain,
    /// What changed.
    pub changes: Changes,
    /// Previous hooks no longer in the chain: shut them down once requests
    /// still running on the old chain end.
    pub retired: Vec<Arc<dyn Hook>>,
}

/// Builds the hook of `entry`; `file` is its plugin file, read already; a
/// plugin applies `on_panic` to its own failures (the chain does for panics
/// of the others).
fn build_one(
    env: &BuildEnv<'_>,
    entry: &HookEntry,
    file: Option<&PluginFile>,
    on_panic: OnPanic,
) -> Result<Arc<dyn Hook>, HookError> {
    let error = |problem: EntryError| HookError::new(&env.config.path, entry, problem);
    match (entry.table.get("kind"), entry.table.get("plugin")) {
        (Some(_), Some(_)) => Err(error(EntryError::KindAndPlugin)),
        (None, None) => Err(error(EntryError::Unnamed)),
        (Some(kind), None) => {
            let kind = kind
                .as_str()
                .ok_or_else(|| error(EntryError::KindNotString))?;
            let built: Result<Arc<dyn Hook>, EntryError> = match kind {
                "auth" => options(entry, "kind").and_then(|options| {
                    // `.to_string()`: a common shape until auth has a typed error.
                    let hook =
                        AuthHook::new(options).map_err(|e| EntryError::Auth(e.to_string()))?;
                    Ok(Arc::new(hook) as Arc<dyn Hook>)
                }),
                "audit" => options(entry, "kind").and_then(|options: AuditOptions| {
                    let options = AuditOptions {
                        path: env.resolve(&options.path),
                        ..options
                    };
                    Ok(Arc::new(AuditHook::new(options)?) as Arc<dyn Hook>)
                }),
                "rewrite" => options(entry, "kind").and_then(|options| {
                    // `.to_string()`: a common shape until rewrite has a typed error.
                    let hook = RewriteHook::new(options)
                        .map_err(|e| EntryError::Rewrite(e.to_string()))?;
                    Ok(Arc::new(hook) as Arc<dyn Hook>)
                }),
                "wal" => WalHook::new(env.wal)
                    .map(|hook| Arc::new(hook) as Arc<dyn Hook>)
                    .map_err(EntryError::from),
                other => Err(EntryError::UnknownKind(other.to_owned())),
            };
            built.map_err(error)
        }
        (None, Some(_)) => file
            .ok_or(PluginError::PathNotString)
            .and_then(|file| crate::plugin::build(entry, file, on_panic))
            .map_err(|e| error(e.into())),
    }
}

/// The one `kind = "wal"` entry of `config` with its options parsed and
/// checked, or `None` when the config has no wal hook. Two wal entries are
/// an error (they would be one log), and so is one with the Redis Cluster
/// backend. The log is opened from these options before the chain is
/// built, since it wraps the storage.
pub fn wal_entry(config: &Config) -> Result<Option<(&HookEntry, WalOptions)>, HookError> {
    let mut found: Option<(&HookEntry, WalOptions)> = None;
    for entry in config.hooks.iter().filter(|e| e.kind() == Some("wal")) {
        let error = |problem: EntryError| HookError::new(&config.path, entry, problem);
        if config.storage.backend == Backend::RedisCluster {
            return Err(error(EntryError::WalWithCluster));
        }
        if let Some((first, _)) = found {
            return Err(error(EntryError::SecondWal {
                first: first.label(),
            }));
        }
        placement(entry).map_err(error)?;
        let opts: WalOptions = options(entry, "kind").map_err(error)?;
        opts.check().map_err(|e| error(e.into()))?;
        found = Some((entry, opts));
    }
    Ok(found)
}

/// The entry's options as `T`, without the key (`kind` or `plugin`) that
/// names the hook and the [`PLACEMENT_KEYS`]. Unknown and missing keys are
/// errors naming the key.
pub fn options<T: DeserializeOwned>(entry: &HookEntry, naming_key: &str) -> Result<T, EntryError> {
    let mut table = entry.table.clone();
    table.remove(naming_key);
    for key in PLACEMENT_KEYS {
        table.remove(key);
    }
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| EntryError::Options(e.message().trim().replace('\n', " ")))
}
