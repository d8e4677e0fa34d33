//! What `[[hooks]] kind = "wal"` configures: where the log lives, when it is
//! fsync'd, and when it is compacted.

use std::path::PathBuf;

use serde::Deserialize;

/// `[[hooks]] kind = "wal"`: the options of the write-ahead log.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WalOptions {
    /// Directory of the log's segments and snapshot. A relative path is
    /// relative to the config file's directory. Default `data/wal`.
    pub path: PathBuf,
    /// When the log is fsync'd. Default `everysec`.
    pub fsync: Fsync,
    /// Compact (rewrite the log as a snapshot of the current data) once the
    /// log written since the last snapshot is larger than this and than that
    /// snapshot. At least 1. Default 64 MiB.
    pub compact_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/wal"),
            fsync: Fsync::default(),
            compact_bytes: 64 << 20,
        }
    }
}

impl WalOptions {
    /// Checks values serde cannot: the error names the key.
    pub fn check(&self) -> Result<(), OptionsError> {
        if self.compact_bytes == 0 {
            return Err(OptionsError::NoCompactBytes);
        }
        if self.path.as_os_str().is_empty() {
            return Err(OptionsError::NoPath);
        }
        Ok(())
    }
}

/// A value of [`WalOptions`] that parses but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `compact_bytes = 0`.
    #[error("compact_bytes = 0: must be at least 1 (a large value compacts rarely)")]
    NoCompactBytes,
    /// `path = ""`.
    #[error("path = \"\": the log needs a directory")]
    NoPath,
}

/// `fsync = "always" | "everysec" | "no"`: see the module docs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fsync before answering (group commit shares it between writers).
    Always,
    /// fsync in the background once a second.
    #[default]
    Everysec,
    /// Never fsync explicitly (only on rotation and shutdown).
    No,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let o: WalOptions = toml::from_str("").unwrap();
        assert_eq!(o, WalOptions::default());
        let o: WalOptions =
            toml::from_str("path = \"x\"\nfsync = \"always\"\ncompact_bytes = 4096").unwrap();
        assert_eq!((o.fsync, o.compact_bytes), (Fsync::Always, 4096));
        let e = toml::from_str::<WalOptions>("fsync = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = toml::from_str::<WalOptions>("fsynk = \"no\"").unwrap_err();
        assert!(e.to_string().contains("fsynk"), "{e}");
        let o: WalOptions = toml::from_str("compact_bytes = 0").unwrap();
        assert!(o.check().unwrap_err().to_string().contains("compact_bytes"));
    }
}
