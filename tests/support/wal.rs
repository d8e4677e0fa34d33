//! Helpers for the write-ahead log's tests (`tests/wal*.rs`): configs,
//! starting a server with a log in process, reading the log's files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hookv::config::Config;
use hookv::pb::{value, Value};
use hookv::wal::{Fsync, Wal, WalOptions};

use super::TestServer;

/// A config for a memory server on a free port with the wal hook; the log
/// lives in `wal/` next to the config.
pub fn write_config(dir: &Path, fsync: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"memory\"\n\
             [[hooks]]\nkind = \"wal\"\npath = \"wal\"\nfsync = \"{fsync}\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    files.sort();
    files
}

pub fn int(v: &Value) -> i64 {
    match v.value {
        Some(value::Value::Integer(i)) => i,
        ref other => panic!("expected an integer, got {other:?}"),
    }
}

/// Where each record of a log file starts (the file must end in a whole record).
pub fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        at += 8 + len as usize;
    }
    assert_eq!(at, bytes.len(), "the log ends in a torn record");
    offsets
}

/// A memory server with a wal hook of `options` (an absolute path), started
/// from its config as the binary starts it.
pub async fn wal_server(options: WalOptions) -> (Arc<Wal>, TestServer) {
    let fsync = match options.fsync {
        Fsync::Always => "always",
        Fsync::Everysec => "everysec",
        Fsync::No => "no",
    };
    let toml = format!(
        "[[hooks]]\nkind = \"wal\"\npath = {:?}\nfsync = \"{fsync}\"\ncompact_bytes = {}\n",
        options.path.display().to_string(),
        options.compact_bytes
    );
    let config = Config::parse(&toml, Path::new("/test.toml")).unwrap();
    let server = TestServer::from_config(&config).await;
    let wal = server.wal.clone().expect("the config has a wal hook");
    (wal, server)
}
