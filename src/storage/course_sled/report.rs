//! What [`migrate`](super::migrate) found and did, and the report
//! `hookv-cli migrate-course-sled` prints from it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::records;

/// A course record whose key holds a `:` beyond the table separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguous {
    /// The course's record key, `table:key`.
    pub raw: String,
    /// The table it became (the text before the first `:`).
    pub table: String,
    /// The key it became (everything after the first `:`).
    pub key: String,
}

impl Ambiguous {
    /// The other (table, key) pairs the course would have written as the
    /// same record: one per `:` in the key.
    pub fn other_readings(&self) -> Vec<(String, String)> {
        self.raw
            .match_indices(':')
            .skip(1)
            .map(|(at, _)| (self.raw[..at].to_owned(), self.raw[at + 1..].to_owned()))
            .collect()
    }

    /// The key the course's `hgetall` showed for it (`ivec_to_key`: the
    /// second piece of a split at every `:`).
    pub fn course_listed_as(&self) -> &str {
        self.key.split(':').next().unwrap_or_default()
    }
}

/// A record the migration cannot read, kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Its key, quoted (or hex when not UTF-8).
    pub key: String,
    /// Why it cannot be read.
    pub why: String,
}

/// A course record naming a pair that hookv's layout holds too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The course's record key.
    pub raw: String,
    /// The pair it names.
    pub table: String,
    /// The pair it names.
    pub key: String,
}

/// Why [`migrate`](super::migrate) changed nothing although there was something to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A record cannot be read: migrating around it would lose it.
    Unreadable,
    /// Records in hookv's layout are there too, and `merge` was not asked.
    Mixed,
    /// A course record names a pair hookv's layout holds.
    Conflicts,
}

/// What [`migrate`](super::migrate) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every course record is now in hookv's layout, flushed.
    Migrated,
    /// No course record (and nothing unreadable): nothing changed.
    NothingToDo,
    /// Nothing changed, for this reason.
    Refused(Refusal),
}

/// What [`migrate`](super::migrate) found and did; its `Display` is the report
/// `hookv-cli migrate-course-sled` prints.
#[derive(Debug)]
pub struct Migration {
    /// The database.
    pub path: PathBuf,
    /// Records already in hookv's layout.
    pub hookv_records: u64,
    /// Course records, by the table they become.
    pub tables: BTreeMap<String, u64>,
    /// Course records whose key holds a `:` beyond the separator.
    pub ambiguous: Vec<Ambiguous>,
    /// Records that cannot be read, kept as they are.
    pub unreadable: Vec<Unreadable>,
    /// Course records naming a pair hookv's layout holds.
    pub conflicts: Vec<Conflict>,
    /// Whether a migration that had stopped part way was found (and is
    /// finished, if [`Outcome::Migrated`]).
    pub resumed: bool,
    /// What was done.
    pub outcome: Outcome,
}

impl Migration {
    /// Course records found (and moved, if [`Outcome::Migrated`]).
    pub fn course_records(&self) -> u64 {
        self.tables.values().sum()
    }
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.outcome == Outcome::Migrated;
        writeln!(
            f,
            "{}: {} in the course's layout, {} in hookv's, {} unreadable",
            self.path.display(),
            records(self.course_records()),
            records(self.hookv_records),
            records(self.unreadable.len() as u64),
        )?;
        if !self.tables.is_empty() {
            let tables: Vec<String> = self
                .tables
                .iter()
                .map(|(table, n)| format!("{table:?} ({n})"))
                .collect();
            writeln!(f, "course tables: {}", tables.join(", "))?;
        }
        if !self.ambiguous.is_empty() {
            writeln!(
                f,
                "keys with a ':' beyond the table separator ({}split at the first ':'):",
                if done { "" } else { "to be " }
            )?;
            for a in &self.ambiguous {
                let others: Vec<String> = a
                    .other_readings()
                    .iter()
                    .map(|(t, k)| format!("table {t:?} key {k:?}"))
                    .collect();
                writeln!(
                    f,
                    "  {:?} -> table {:?} key {:?}; not {} (the course could not tell them apart); the course's hgetall listed it as key {:?}",
                    a.raw,
                    a.table,
                    a.key,
                    others.join(" or "),
                    a.course_listed_as()
                )?;
            }
        }
        if !self.unreadable.is_empty() {
            writeln!(f, "unreadable records, kept as they are:")?;
            for u in &self.unreadable {
                writeln!(f, "  key {}: {}", u.key, u.why)?;
            }
        }
        if !self.conflicts.is_empty() {
            writeln!(f, "course records naming a pair hookv's layout holds too:")?;
            for c in &self.conflicts {
                writeln!(
                    f,
                    "  {:?} and hookv's table {:?} key {:?}",
                    c.raw, c.table, c.key
                )?;
            }
        }
        match self.outcome {
            Outcome::Migrated => writeln!(
                f,
                "migrated {} into hookv's layout{}, flushed",
                records(self.course_records()),
                if self.resumed {
                    ", finishing a migration that had stopped part way"
                } else {
                    ""
                }
            ),
            Outcome::NothingToDo => writeln!(f, "nothing to migrate; nothing changed"),
            Outcome::Refused(Refusal::Unreadable) => writeln!(
                f,
                "refused, nothing changed: migrating would lose {}; fix or remove {} with the program that wrote {}, then run again",
                records(self.unreadable.len() as u64),
                if self.unreadable.len() == 1 { "it" } else { "them" },
                if self.unreadable.len() == 1 { "it" } else { "them" },
            ),
            Outcome::Refused(Refusal::Mixed) => writeln!(
                f,
                "refused, nothing changed: records in hookv's layout are there too; --merge moves the course's next to them (refused if one names a pair hookv's holds)"
            ),
            Outcome::Refused(Refusal::Conflicts) => writeln!(
                f,
                "refused, nothing changed: which of two values for one pair is right cannot be known; remove the course's with the course's server (hdel; to keep its value, set it again through hookv after the migration), then run again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_keys_name_every_reading() {
        let a = Ambiguous {
            raw: "a:b:c:d".into(),
            table: "a".into(),
            key: "b:c:d".into(),
        };
        assert_eq!(
            a.other_readings(),
            vec![
                ("a:b".to_owned(), "c:d".to_owned()),
                ("a:b:c".to_owned(), "d".to_owned())
            ]
        );
        assert_eq!(a.course_listed_as(), "b");
    }
}
