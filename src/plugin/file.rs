//! A plugin's file: its bytes read once ([`PluginFile`], identified by
//! their SHA-256, a [`BuildId`]) and the one library each build is loaded
//! as, from a private copy, for the life of the process (at most
//! [`MAX_BUILDS`]; see the module docs of `crate::plugin`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::ffi::Library;
use super::PluginError;

/// Most plugin builds (files of different bytes) one process loads; see
/// the module docs.
pub const MAX_BUILDS: usize = 64;

/// What identifies a build of a plugin: the SHA-256 of the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuildId([u8; 32]);

/// A plugin file read into memory, with its [`BuildId`]. What is loaded is
/// these bytes, so the build is the one identified even if the file changes
/// meanwhile.
pub struct PluginFile {
    path: PathBuf,
    bytes: Vec<u8>,
    id: BuildId,
}

impl std::fmt::Debug for PluginFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginFile")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl PluginFile {
    /// Reads the library at `path` (a regular file, or a link to one).
    pub fn read(path: &Path) -> Result<Self, PluginError> {
        let failed = |source| PluginError::Read {
            path: path.to_owned(),
            source,
        };
        // Not a device or a pipe: reading one might never end.
        if !std::fs::metadata(path).map_err(failed)?.is_file() {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let bytes = std::fs::read(path).map_err(failed)?;
        let id = BuildId(Sha256::digest(&bytes).into());
        Ok(Self {
            path: path.to_owned(),
            bytes,
            id,
        })
    }

    /// The build these bytes are.
    pub fn id(&self) -> BuildId {
        self.id
    }

    /// Where they were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every build this process has loaded: libraries are never unloaded, so
/// a build seen before is reused, and this list bounds how many there are.
/// A `Vec`: at most [`MAX_BUILDS`] entries, searched once per load. The
/// lock is held while a new build loads, so two loads of one build cannot
/// both map it.
static LOADED: Mutex<Vec<(BuildId, Arc<Library>)>> = Mutex::new(Vec::new());

/// The library of `file`'s build: the loaded one, or a new one (see the
/// module docs).
pub(super) fn library(file: &PluginFile) -> Result<Arc<Library>, PluginError> {
    // The list is whole after any panic (a push is its only change).
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, library)) = loaded.iter().find(|(id, _)| *id == file.id) {
        return Ok(Arc::clone(library));
    }
    if loaded.len() >= MAX_BUILDS {
        return Err(PluginError::TooManyBuilds {
            path: file.path.clone(),
        });
    }
    let library = open_copy(file)?;
    // Kept even if it turns out not to be a usable plugin: it is mapped
    // for good all the same.
    loaded.push((file.id, Arc::clone(&library)));
    Ok(library)
}

/// Loads a private copy of `file`'s bytes, removing the copy once it is
/// mapped.
fn open_copy(file: &PluginFile) -> Result<Arc<Library>, PluginError> {
    static COPIES: AtomicU64 = AtomicU64::new(0);
    let path = file.path();
    let file_name = path
        .file_name()
        .map_or_else(|| "plugin".into(), |n| n.to_string_lossy().into_owned());
    let n = COPIES.fetch_add(1, Ordering::Relaxed);
    // A fresh directory with a random name, readable only by us (0700), per
    // load: nobody else can plant a file or link where the copy goes, or
    // swap the copy before it is opened.
    let dir = tempfile::Builder::new()
        .prefix("hookv-plugin-")
        .tempdir()
        .map_err(|source| PluginError::Copy {
            path: path.to_owned(),
            copy: std::env::temp_dir(),
            source,
        })?;
    let copy = dir.path().join(format!("{n}-{file_name}"));
    std::fs::write(&copy, &file.bytes).map_err(|source| PluginError::Copy {
        path: path.to_owned(),
        copy: copy.clone(),
        source,
    })?;
    let opened = Library::open(&copy);
    // Removes the copy and the directory; the mapping stays valid.
    drop(dir);
    opened.map_err(|e| PluginError::Open {
        path: path.to_owned(),
        // The loader names the copy; name the file the user configured.
        reason: e
            .to_string()
            .replace(&copy.display().to_string(), &path.display().to_string()),
    })
}
