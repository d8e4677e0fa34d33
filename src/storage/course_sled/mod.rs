//! A sled database written by the course's `SledDb` (`tyrchen/geektime-rust`,
//! `26_kv/src/storage/sleddb.rs`): telling it from hookv's, and moving it
//! into hookv's layout.
//!
//! # The two layouts
//!
//! Both keep every pair in sled's default tree, the value being the protobuf
//! encoding of `abi.Value` (the same message, the same field numbers). They
//! differ in the key:
//!
//! ```text
//! hookv:  u32 BE len(table) | table | key     (see sled_store.rs)
//! course: "{table}:{key}"   as UTF-8
//! ```
//!
//! The course's key cannot be read back for sure: table `a` with key `b:c`
//! and table `a:b` with key `c` are the same record `a:b:c`, so writing one
//! overwrites the other. Its own reader (`ivec_to_key`) splits the record
//! key at every `:` and keeps the second piece, so `hgetall` of `a` (prefix
//! `a:`) listed `a:b:c` as key `b`, and so did `hgetall` of `a:b`.
//!
//! # How a record is told apart
//!
//! A record whose key parses in hookv's layout (the length prefix fits, the
//! table and key are UTF-8) is hookv's. Otherwise it is the course's if its
//! key is UTF-8 holding a `:` and its value decodes as a `Value` with a
//! type; a record that is neither is *unreadable* (its key is not UTF-8,
//! has no `:`, or its value does not decode or has no type, which hookv
//! cannot serve). hookv's reading wins: a hookv key that happens to be
//! UTF-8 with a `:` (table `a:b` is `\0\0\0\x03a:b…`) stays hookv's, and a
//! course key can only parse as hookv's if it begins with the NUL character.
//!
//! # At open: refuse, do not guess
//!
//! [`SledDb::open`](super::SledDb::open) refuses a database holding any
//! record outside hookv's layout, with one line that says what they are
//! ("this looks like a database written by the course's SledDb (N
//! records)") and what to run. It does not read the course's layout in
//! place: that would serve its ambiguous keys as one reading and keep the
//! collision alive for every later write. The check costs one seek on a
//! database in hookv's layout: hookv's keys begin with a zero byte (a table
//! name shorter than 16 MiB), the course's with the table's text, so only
//! the records from byte `0x01` on are read. (A course table whose name
//! begins with the NUL character sorts among hookv's records and is only
//! found by the migration, which reads everything.)
//!
//! # The migration
//!
//! [`migrate`] (`hookv-cli migrate-course-sled PATH`, server stopped: sled
//! lets one process open a database) reads every record, then rewrites
//! each course record as `table` = the text before the first `:`, `key` =
//! all after it (insert the new record, remove the old), and flushes.
//!
//! Not in one batch: sled keeps every page a batch touches until the batch
//! ends, and one batch of 200,000 small records peaked at 1.5 GB of memory
//! (batches of [`CHUNK_RECORDS`]: 0.16 GB). So the records move in batches
//! of at most [`CHUNK_RECORDS`] records and [`CHUNK_BYTES`] bytes, between
//! a marker tree ([`MIGRATING_TREE`]) created and flushed before the first
//! batch and dropped after the last one is flushed. sled recovers a batch
//! whole or not at all (the batch's log entry says where it ends, and
//! recovery stops before a batch whose end is not on disk), so after a
//! crash every record is there exactly once, in one layout or the other;
//! the marker makes the server refuse the database ("stopped part way")
//! and the next run finish the job. Never half of a record, never a record
//! lost, never a half-migrated database served.
//!
//! Why the first `:`: the course's `hgetall` of that table (prefix `a:`)
//! listed the record whichever reading its writer meant, while the longer
//! readings' tables (`a:b`) only list it under theirs; and the course's own
//! reader already cut every such key short (`ivec_to_key` showed `a:b:c`
//! as key `b`, in table `a` and in table `a:b` alike), so no reading can be
//! recovered from it. The other readings (`a:b` + `c`) no longer find the
//! record; the report lists every key with a `:` beyond the separator, how
//! it was split, the readings it was not given, and what the course's
//! `hgetall` called it.
//!
//! It refuses, changing nothing, when a record is unreadable (nothing is
//! dropped: fix or remove it with the program that wrote it), and when the
//! database also holds records in hookv's layout unless `--merge` says to
//! move the course's next to them; even then a course record naming a pair
//! hookv's layout holds is a conflict nobody can settle for the user, and
//! refuses. A database with no course record is left alone, so a second run
//! changes nothing.

mod migration;
mod report;

use std::fmt;
use std::path::{Path, PathBuf};

use hookv_plugin::pb::Value;
use prost::Message;

use super::sled_store::split_record_key;
use super::StorageError;

pub use migration::{
    migrate, MigrateError, MigrateOptions, CHUNK_BYTES, CHUNK_RECORDS, MIGRATING_TREE,
};
pub use report::{Ambiguous, Conflict, Migration, Outcome, Refusal, Unreadable};

/// What one record of the default tree is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// In hookv's layout (its value is hookv's business).
    Hookv,
    /// Written by the course: `table` is the text before the first `:`.
    Course { table: String, key: String },
    /// Neither: why.
    Unreadable(String),
}

fn classify(raw_key: &[u8], raw_value: &[u8]) -> Kind {
    if split_record_key(raw_key).is_ok() {
        return Kind::Hookv;
    }
    let Ok(text) = std::str::from_utf8(raw_key) else {
        return Kind::Unreadable("its key is neither in hookv's layout nor UTF-8".to_owned());
    };
    let Some((table, key)) = text.split_once(':') else {
        return Kind::Unreadable("its key is neither in hookv's layout nor `table:key`".to_owned());
    };
    match Value::decode(raw_value) {
        Ok(value) if !value.is_empty() => Kind::Course {
            table: table.to_owned(),
            key: key.to_owned(),
        },
        Ok(_) => Kind::Unreadable(
            "its value is a Value with no type, which hookv cannot serve".to_owned(),
        ),
        Err(e) => Kind::Unreadable(format!("its value does not decode as a Value ({e})")),
    }
}

/// A record key as a person reads it: quoted text, or hex if not UTF-8.
fn show_raw(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(text) => format!("{text:?}"),
        Err(_) => {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// "1 record", "2 records".
fn records(n: u64) -> String {
    if n == 1 {
        "1 record".to_owned()
    } else {
        format!("{n} records")
    }
}

/// Records outside hookv's layout, found when opening a database: the
/// reason it is not opened.
#[derive(Debug)]
pub struct ForeignRecords {
    path: PathBuf,
    /// Records the course's `SledDb` could have written.
    course: u64,
    /// Records that cannot be read, and the first of them (key, why).
    unreadable: u64,
    first_unreadable: Option<(String, String)>,
    /// Whether records in hookv's layout are there too.
    hookv: bool,
    /// Whether a migration started and did not finish.
    interrupted: bool,
}

impl fmt::Display for ForeignRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = format!("hookv-cli migrate-course-sled {}", self.path.display());
        if self.interrupted {
            return write!(
                f,
                "a migration from the course's SledDb layout stopped part way ({} left to move); run `{command}` (server stopped) again to finish it",
                records(self.course)
            );
        }
        if self.course > 0 {
            write!(
                f,
                "this looks like a database written by the course's SledDb ({})",
                records(self.course)
            )?;
            if self.hookv {
                f.write_str(", mixed with records in hookv's layout")?;
            }
        }
        if let Some((key, why)) = &self.first_unreadable {
            if self.course > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} that cannot be read (the first: key {key}: {why})",
                records(self.unreadable)
            )?;
        }
        match (self.unreadable > 0, self.hookv) {
            (true, _) => write!(
                f,
                "; hookv does not serve it: `{command}` (server stopped) lists what it cannot convert"
            ),
            (false, true) => write!(
                f,
                "; hookv does not serve it: `{command} --merge` (server stopped) moves the course's records next to hookv's unless one names a pair hookv's holds"
            ),
            (false, false) => write!(
                f,
                "; hookv stores tables differently and does not serve it: convert it with `{command}` (server stopped), then start again"
            ),
        }
    }
}

impl std::error::Error for ForeignRecords {}

/// Refuses a database holding records outside hookv's layout: one seek
/// when there are none (see the module docs).
pub(super) fn check_layout(db: &sled::Db, path: &Path) -> Result<(), StorageError> {
    let mut found = ForeignRecords {
        path: path.to_owned(),
        course: 0,
        unreadable: 0,
        first_unreadable: None,
        hookv: false,
        interrupted: interrupted(db),
    };
    for item in db.range([1u8].as_slice()..) {
        let (raw_key, raw_value) = item?;
        match classify(&raw_key, &raw_value) {
            // A table name of 16 MiB or more.
            Kind::Hookv => found.hookv = true,
            Kind::Course { .. } => found.course += 1,
            Kind::Unreadable(why) => {
                found.unreadable += 1;
                found
                    .first_unreadable
                    .get_or_insert_with(|| (show_raw(&raw_key), why));
            }
        }
    }
    if found.course == 0 && found.unreadable == 0 && !found.interrupted {
        return Ok(());
    }
    if let Some((raw_key, _)) = db.first()? {
        found.hookv |= split_record_key(&raw_key).is_ok();
    }
    Err(StorageError::ForeignLayout(Box::new(found)))
}

/// Whether a migration started and did not finish.
fn interrupted(db: &sled::Db) -> bool {
    db.tree_names()
        .iter()
        .any(|name| name.as_ref() == MIGRATING_TREE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sled_store::record_key;

    fn value(v: impl Into<Value>) -> Vec<u8> {
        v.into().encode_to_vec()
    }

    #[test]
    fn records_are_told_apart() {
        let v = value("x");
        // hookv's keys, even those that are UTF-8 with a ':'.
        assert_eq!(classify(&record_key("t", "k"), &v), Kind::Hookv);
        assert_eq!(classify(&record_key("a:b", "c"), &v), Kind::Hookv);
        assert_eq!(classify(&record_key("", ""), b"\xff"), Kind::Hookv);
        // The course's: split at the first ':'.
        assert_eq!(
            classify(b"a:b:c", &v),
            Kind::Course {
                table: "a".into(),
                key: "b:c".into()
            }
        );
        assert_eq!(
            classify(b":", &value(1i64)),
            Kind::Course {
                table: String::new(),
                key: String::new()
            }
        );
        // Neither.
        for (key, raw_value, why) in [
            (&b"t:k"[..], &b"\xff\xff"[..], "does not decode"),
            (b"t:k", b"", "no type"),
            (b"nocolon", &v, "table:key"),
            (b"\xff:k", &v, "UTF-8"),
        ] {
            match classify(key, raw_value) {
                Kind::Unreadable(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn raw_keys_show_as_text_or_hex() {
        assert_eq!(show_raw(b"t:k"), "\"t:k\"");
        assert_eq!(show_raw(b"\xff\x00"), "0xff00");
    }
}
