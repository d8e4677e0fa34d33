//! Builds the hook chain from the `[[hooks]]` list of `config.toml`.
//!
//! Each entry is either a built-in (`kind = "auth" | "audit" | "wal" |
//! "rewrite"`) or a plugin (`plugin = "path/to/lib.so"`); the other keys of
//! the table are that hook's options. Hooks run in the order listed. Any
//! problem (unknown kind, missing or unknown option, bad value, a plugin that
//! will not load) is a [`HookError`] naming the file, line, position and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{Config, HookEntry};
use crate::hooks::wal::Wal;
use crate::hooks::{Hook, HookChain};
use crate::plugin::{BuildId, PluginError, PluginFile};

/// A hook that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {label}: {message}")]
pub struct HookError {
    /// The config file.
    pub file: PathBuf,
    /// Line of the hook's table.
    pub line: usize,
    /// e.g. `hooks[2] (kind = "wal")`.
    pub label: String,
    /// What is wrong, naming the key.
    pub message: String,
}

impl HookError {
    /// An error about `entry` of the config at `file`.
    pub fn new(file: &Path, entry: &HookEntry, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: entry.line,
            label: entry.label(),
            message: message.into(),
        }
    }
}

/// What building a hook may need besides its own options.
pub struct BuildEnv<'a> {
    /// The whole config (its file and directory name errors and resolve paths).
    pub config: &'a Config,
    /// The write-ahead log, opened (and replayed) before the service was
    /// built, since it wraps the storage; see `hooks::wal::find_in_config`.
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
        .map_err(|e| HookError::new(&env.config.path, entry, e.to_string()))
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
                build_one(env, entry, file.as_ref())?
            }
        };
        built.chain.push(Arc::clone(&hook));
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

/// Builds the hook of `entry`; `file` is its plugin file, read already.
fn build_one(
    env: &BuildEnv<'_>,
    entry: &HookEntry,
    file: Option<&PluginFile>,
) -> Result<Arc<dyn Hook>, HookError> {
    let error = |message: String| HookError::new(&env.config.path, entry, message);
    match (entry.table.get("kind"), entry.table.get("plugin")) {
        (Some(_), Some(_)) => Err(error(
            "has both `kind` and `plugin`; a hook is one or the other".into(),
        )),
        (None, None) => Err(error(
            "needs `kind = \"auth\" | \"audit\" | \"wal\" | \"rewrite\"` or `plugin = \"path/to/lib.so\"`"
                .into(),
        )),
        (Some(kind), None) => {
            let kind = kind
                .as_str()
                .ok_or_else(|| error("`kind` must be a string".into()))?;
            match kind {
                "auth" => {
                    let options = options(entry, "kind").map_err(error)?;
                    Ok(Arc::new(super::auth::AuthHook::new(options).map_err(|e| error(e.to_string()))?))
                }
                "audit" => {
                    let options = options(entry, "kind").map_err(error)?;
                    Ok(Arc::new(super::audit::AuditHook::new(options, env).map_err(error)?))
                }
                "rewrite" => {
                    let options = options(entry, "kind").map_err(error)?;
                    Ok(Arc::new(super::rewrite::RewriteHook::new(options).map_err(|e| error(e.to_string()))?))
                }
                "wal" => env.wal.map(|wal| wal.hook()).ok_or_else(|| {
                    error("the write-ahead log was not opened before the hook chain was built (Wal::open)".into())
                }),
                other => Err(error(format!(
                    "unknown kind {other:?}; built-in hooks are auth, audit, wal, rewrite"
                ))),
            }
        }
        (None, Some(_)) => file
            .ok_or(PluginError::PathNotString)
            .and_then(|file| crate::plugin::build(entry, file))
            .map_err(|e| error(e.to_string())),
    }
}

/// The entry's options as `T`, without the key (`kind` or `plugin`) that
/// names the hook. Unknown and missing keys are errors naming the key.
pub fn options<T: DeserializeOwned>(entry: &HookEntry, naming_key: &str) -> Result<T, String> {
    let mut table = entry.table.clone();
    table.remove(naming_key);
    T::deserialize(toml::Value::Table(table)).map_err(|e| e.message().trim().replace('\n', " "))
}
