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
    let mut chain = HookChain::new();
    for entry in &env.config.hooks {
        chain.push(build_one(env, entry)?);
    }
    Ok(chain)
}

fn build_one(env: &BuildEnv<'_>, entry: &HookEntry) -> Result<Arc<dyn Hook>, HookError> {
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
                "wal" => env.wal.map(|wal| wal.hook()).ok_or_else(|| {
                    error("the write-ahead log was not opened before the hook chain was built (Wal::open)".into())
                }),
                other => Err(error(format!(
                    "unknown kind {other:?}; built-in hooks are auth, audit, wal, rewrite"
                ))),
            }
        }
        (None, Some(_)) => Err(error("plugins are not supported yet".into())),
    }
}

/// The entry's options as `T`, without the key (`kind` or `plugin`) that
/// names the hook. Unknown and missing keys are errors naming the key.
pub fn options<T: DeserializeOwned>(entry: &HookEntry, naming_key: &str) -> Result<T, String> {
    let mut table = entry.table.clone();
    table.remove(naming_key);
    T::deserialize(toml::Value::Table(table)).map_err(|e| e.message().trim().replace('\n', " "))
}
