//! [`migrate`]: every course record into hookv's layout, in sled batches
//! between a marker tree set first and dropped last (see the parent
//! module's docs).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use sled::IVec;

use super::report::{Ambiguous, Conflict, Migration, Outcome, Refusal, Unreadable};
use super::{classify, interrupted, show_raw, Kind};
use crate::storage::sled_store::record_key;

/// What [`migrate`] may do beyond a database the course alone wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    /// Move the course's records even when records in hookv's layout are
    /// there too (still refused if one names a pair hookv's layout holds).
    pub merge: bool,
    /// Records per sled batch; `None`: [`CHUNK_RECORDS`]. (For tests.)
    #[doc(hidden)]
    pub chunk_records: Option<usize>,
}

/// Why [`migrate`] could not look at or change the database.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No sled database at the path.
    #[error("{}: no sled database here (no `db` file)", .0.display())]
    NoDatabase(PathBuf),
    /// sled cannot open it (a server using it holds its lock).
    #[error("{}: cannot open the sled database: {source} (a server using it must be stopped first)", path.display())]
    Open {
        /// The database.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// Reading, applying the batch or flushing failed.
    #[error("{}: {what}: {source}", path.display())]
    Sled {
        /// The database.
        path: PathBuf,
        /// What was being done (after the batch: whether it reached the
        /// disk is unknown, and running again tells).
        what: &'static str,
        /// sled's error.
        source: sled::Error,
    },
}

/// The tree whose presence says a migration has started and not finished:
/// the server refuses the database, and [`migrate`] finishes the job.
pub const MIGRATING_TREE: &str = "hookv:migrating-from-course";

/// Records moved per sled batch, at most. sled keeps what a batch writes
/// to its log in memory until the batch ends: one batch of a million small
/// records peaked at 7.8 GB, batches of this many at 0.35 GB.
pub const CHUNK_RECORDS: usize = 10_000;

/// Bytes of keys and values moved per sled batch, at most (for large values).
pub const CHUNK_BYTES: usize = 16 << 20;

/// Moves every course record of the sled database at `path` into hookv's
/// layout, or says why not (see the module docs). The server must be
/// stopped: sled lets one process open a database.
pub fn migrate(path: &Path, options: MigrateOptions) -> Result<Migration, MigrateError> {
    // Opening a directory with no database would create one.
    if !path.join("db").is_file() {
        return Err(MigrateError::NoDatabase(path.to_owned()));
    }
    let db = sled::Config::new()
        .path(path)
        .open()
        .map_err(|source| MigrateError::Open {
            path: path.to_owned(),
            source,
        })?;
    let failed = |what| {
        move |source| MigrateError::Sled {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let resumed = interrupted(&db);
    let mut migration = survey(&db, path).map_err(failed("cannot read the database"))?;
    migration.resumed = resumed;
    migration.outcome = if !migration.unreadable.is_empty() {
        Outcome::Refused(Refusal::Unreadable)
    } else if migration.course_records() == 0 && !resumed {
        Outcome::NothingToDo
    } else if migration.hookv_records > 0 && !options.merge && !resumed {
        // (A migration under way was asked for with the records there.)
        Outcome::Refused(Refusal::Mixed)
    } else if !migration.conflicts.is_empty() {
        Outcome::Refused(Refusal::Conflicts)
    } else {
        Outcome::Migrated
    };
    if migration.outcome != Outcome::Migrated {
        return Ok(migration);
    }
    let chunk = options.chunk_records.unwrap_or(CHUNK_RECORDS).max(1);
    move_records(&db, chunk).map_err(failed(
        "the migration stopped part way (the database says so: run again to finish it)",
    ))?;
    Ok(migration)
}
/// Every record read and sorted out; nothing changed.
fn survey(db: &sled::Db, path: &Path) -> Result<Migration, sled::Error> {
    let mut migration = Migration {
        path: path.to_owned(),
        hookv_records: 0,
        tables: BTreeMap::new(),
        ambiguous: Vec::new(),
        unreadable: Vec::new(),
        conflicts: Vec::new(),
        resumed: false,
        outcome: Outcome::NothingToDo,
    };
    for item in db.iter() {
        let (raw_key, raw_value) = item?;
        match classify(&raw_key, &raw_value) {
            Kind::Hookv => migration.hookv_records += 1,
            Kind::Unreadable(why) => migration.unreadable.push(Unreadable {
                key: show_raw(&raw_key),
                why,
            }),
            Kind::Course { table, key } => {
                let raw = String::from_utf8_lossy(&raw_key).into_owned();
                if db.contains_key(record_key(&table, &key))? {
                    migration.conflicts.push(Conflict {
                        raw: raw.clone(),
                        table: table.clone(),
                        key: key.clone(),
                    });
                }
                if key.contains(':') {
                    migration.ambiguous.push(Ambiguous {
                        raw,
                        table: table.clone(),
                        key,
                    });
                }
                *migration.tables.entry(table).or_default() += 1;
            }
        }
    }
    Ok(migration)
}

/// Moves the course records in sled batches of at most `chunk` records
/// and [`CHUNK_BYTES`], between a marker tree created (and flushed) first
/// and dropped (and flushed) last. Each batch inserts its records' new
/// keys and removes their old ones, and sled recovers a batch whole or not
/// at all, so after a crash every record is there once, in one layout or
/// the other, and the marker says the job is not done.
fn move_records(db: &sled::Db, chunk: usize) -> Result<(), sled::Error> {
    db.open_tree(MIGRATING_TREE)?
        .insert("started", &b"hookv-cli migrate-course-sled"[..])?;
    db.flush()?;
    let mut cursor: Option<IVec> = None;
    loop {
        let records = match cursor.take() {
            None => db.range::<&[u8], _>(..),
            Some(after) => db.range((Bound::Excluded(after), Bound::Unbounded)),
        };
        let mut batch = sled::Batch::default();
        let (mut moved, mut bytes) = (0, 0);
        for item in records {
            let (raw_key, raw_value) = item?;
            // The new keys are hookv's: skipped when the scan meets them.
            let Kind::Course { table, key } = classify(&raw_key, &raw_value) else {
                continue;
            };
            moved += 1;
            bytes += raw_key.len() + raw_value.len();
            // No course key parses as hookv's, so no insert here
            // overwrites a removal (a batch keeps one write per key).
            batch.insert(record_key(&table, &key), raw_value);
            batch.remove(raw_key.clone());
            if moved == chunk || bytes >= CHUNK_BYTES {
                cursor = Some(raw_key);
                break;
            }
        }
        if moved > 0 {
            db.apply_batch(batch)?;
        }
        if cursor.is_none() {
            break;
        }
    }
    db.flush()?;
    db.drop_tree(MIGRATING_TREE)?;
    db.flush()?;
    Ok(())
}
