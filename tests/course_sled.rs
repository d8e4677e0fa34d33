//! A sled database written by the course's `SledDb` (`"{table}:{key}"`
//! keys): the server refuses it with one line saying what it is,
//! `hookv-cli migrate-course-sled` moves it into hookv's layout, and the
//! server then serves every pair with its type.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hookv::pb::{Kvpair, Value};
use hookv::{SledDb, Storage};
use prost::Message;
use rustix::fs::FlockOperation;
use support::{bounded, fails_with, Running, LIMIT, SERVER};

const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

/// Drops `handle` (sled's `Db`, or hookv's store over one) and waits until
/// sled's lock on the database at `path` is free. sled writes its last
/// buffers on pool threads that hold the database file, and with it the
/// lock, a moment after the handle is gone: an open right after it, here or
/// by the CLI or the server, could find the database locked.
fn close<T>(handle: T, path: &Path) {
    drop(handle);
    unlocked(path);
}

/// Waits until nothing holds sled's lock (`flock`) on the database at `path`.
fn unlocked(path: &Path) {
    let file = std::fs::File::open(path.join("db")).unwrap();
    let deadline = Instant::now() + LIMIT;
    while rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        assert!(Instant::now() < deadline, "{} stays locked", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `pairs` as the course's `SledDb::set` does: key
/// `format!("{}:{}", table, key)`, value the protobuf encoding of `Value`,
/// in sled's default tree of `sled::open(path)`.
fn course_writes(path: &Path, pairs: &[(&str, &str, Value)]) {
    let db = sled::open(path).unwrap();
    for (table, key, value) in pairs {
        let name = format!("{}:{}", table, key);
        let data: Vec<u8> = value.encode_to_vec();
        db.insert(name, data).unwrap();
    }
    db.flush().unwrap();
    close(db, path);
}

/// Every record of the database, as raw bytes.
fn dump(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sled::open(path).unwrap();
    let records = db
        .iter()
        .map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    close(db, path);
    records
}

/// A config serving the sled database at `db`.
fn config_for(dir: &Path, db: &Path) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbackend = \"sled\"\npath = {:?}\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    config
}

fn migrate(db: &Path, extra: &[&str]) -> Output {
    Command::new(CLI)
        .arg("migrate-course-sled")
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The server's one line when it refuses to start on `config`.
fn refused_start(config: &Path) -> String {
    fails_with(Command::new(SERVER).arg("--config").arg(config))
}

#[tokio::test]
async fn a_course_database_is_refused_then_migrated_and_served_with_its_types() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvserver");
    let writes: Vec<(&str, &str, Value)> = vec![
        ("user", "alice", "admin".into()),
        ("user", "blob", Value::from(vec![0u8, 0xff, 7])),
        ("user", "age", 42i64.into()),
        ("user", "score", (-1.5f64).into()),
        ("user", "active", true.into()),
        ("user", "banned", false.into()),
        ("user", "id:42", "a key with a colon".into()),
        // The course's collision: both are record "a:b:c", the second wins.
        ("a", "b:c", "first".into()),
        ("a:b", "c", "second".into()),
        ("", "k", "the empty table".into()),
        ("t", "", 0i64.into()),
    ];
    course_writes(&db, &writes);
    let before = dump(&db);
    assert_eq!(before.len(), 10, "the collision pair is one record");
    let config = config_for(dir.path(), &db);

    let line = refused_start(&config);
    let path = db.display().to_string();
    assert!(line.contains(&path), "{line}");
    assert!(
        line.contains("this looks like a database written by the course's SledDb (10 records)"),
        "{line}"
    );
    assert!(
        line.contains(&format!("hookv-cli migrate-course-sled {path}")),
        "{line}"
    );
    assert_eq!(dump(&db), before, "a refused start changes nothing");

    let out = migrate(&db, &[]);
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(
        report.contains("migrated 10 records into hookv's layout"),
        "{report}"
    );
    assert!(
        report.contains(r#"course tables: "" (1), "a" (1), "t" (1), "user" (7)"#),
        "{report}"
    );
    // The collision, and how the record was split.
    assert!(
        report.contains(
            r#""a:b:c" -> table "a" key "b:c"; not table "a:b" key "c" (the course could not tell them apart); the course's hgetall listed it as key "b""#
        ),
        "{report}"
    );
    assert!(
        report
            .contains(r#""user:id:42" -> table "user" key "id:42"; not table "user:id" key "42""#),
        "{report}"
    );

    // A second run finds nothing to do and changes nothing.
    let migrated = dump(&db);
    let again = migrate(&db, &[]);
    assert!(again.status.success(), "{}", stdout(&again));
    assert!(
        stdout(&again).contains("0 records in the course's layout, 10 records in hookv's"),
        "{}",
        stdout(&again)
    );
    assert!(stdout(&again).contains("nothing to migrate"));
    assert_eq!(dump(&db), migrated);

    let server = Running::start(&config);
    let mut c = server.client().await;
    for (table, key, value) in &writes {
        if (*table, *key) == ("a", "b:c") || (*table, *key) == ("a:b", "c") {
            continue;
        }
        let r = bounded(c.hget(table, key)).await.unwrap();
        assert_eq!(r.status, 200, "{table:?} {key:?}: {}", r.message);
        assert_eq!(r.values, vec![value.clone()], "{table:?} {key:?}");
    }
    // The collision record is table "a", key "b:c", with the value written last.
    let r = bounded(c.hget("a", "b:c")).await.unwrap();
    assert_eq!(r.values, vec![Value::from("second")]);
    assert_eq!(bounded(c.hget("a:b", "c")).await.unwrap().status, 404);
    let r = bounded(c.hgetall("a")).await.unwrap();
    assert_eq!(r.pairs, vec![Kvpair::new("b:c", "second".into())]);
    let r = bounded(c.hgetall("user")).await.unwrap();
    let keys: Vec<&str> = r.pairs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["active", "age", "alice", "banned", "blob", "id:42", "score"]
    );
    drop(c);
    server.stop_cleanly();
}

#[test]
fn an_undecodable_course_value_is_refused_named_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvserver");
    course_writes(&db, &[("t", "good", "v".into()), ("u", "x", 1i64.into())]);
    {
        let raw = sled::open(&db).unwrap();
        raw.insert("t:bad", &b"\xff\xff\xff"[..]).unwrap();
        raw.flush().unwrap();
        close(raw, &db);
    }
    let before = dump(&db);
    let config = config_for(dir.path(), &db);

    let line = refused_start(&config);
    assert!(
        line.contains("this looks like a database written by the course's SledDb (2 records)"),
        "{line}"
    );
    assert!(
        line.contains(
            r#"1 record that cannot be read (the first: key "t:bad": its value does not decode"#
        ),
        "{line}"
    );

    let out = migrate(&db, &[]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains(r#"key "t:bad": its value does not decode as a Value"#),
        "{report}"
    );
    assert!(
        report.contains("refused, nothing changed: migrating would lose 1 record"),
        "{report}"
    );
    assert_eq!(dump(&db), before, "nothing changed");
}

#[test]
fn a_mixed_database_is_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    // hookv wrote first (it saw the course's database as empty), then the course.
    let write_both = |db: &Path, course: &[(&str, &str, Value)]| {
        let store = SledDb::open(db).unwrap();
        store.put("t", "k", "hookv's".into()).unwrap();
        store.flush().unwrap();
        close(store, db);
        course_writes(db, course);
    };
    let db = dir.path().join("conflict");
    write_both(
        &db,
        &[("t", "k", "the course's".into()), ("old", "y", 2i64.into())],
    );
    let before = dump(&db);
    let line = refused_start(&config_for(dir.path(), &db));
    assert!(
        line.contains("(2 records), mixed with records in hookv's layout")
            && line.contains("--merge"),
        "{line}"
    );

    let out = migrate(&db, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("2 records in the course's layout, 1 record in hookv's"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("refused, nothing changed: records in hookv's layout are there too"),
        "{}",
        stdout(&out)
    );
    let out = migrate(&db, &["--merge"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(r#""t:k" and hookv's table "t" key "k""#),
        "{}",
        stdout(&out)
    );
    assert_eq!(dump(&db), before, "nothing changed");

    // Without a conflict, --merge moves the course's records next to hookv's.
    let db = dir.path().join("disjoint");
    write_both(&db, &[("old", "y", 2i64.into())]);
    let out = migrate(&db, &["--merge"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let store = SledDb::open(&db).unwrap();
    assert_eq!(store.get("t", "k").unwrap(), Some("hookv's".into()));
    assert_eq!(store.get("old", "y").unwrap(), Some(2i64.into()));
}

#[test]
fn migration_needs_the_server_stopped_and_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = SledDb::open(&db).unwrap();
    store.flush().unwrap();
    close(store, &db);
    let server = Running::start(&config_for(dir.path(), &db));
    let out = migrate(&db, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("must be stopped first"),
        "{}",
        stderr(&out)
    );
    server.stop_cleanly();

    let nowhere = dir.path().join("nowhere");
    let out = migrate(&nowhere, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no sled database here"),
        "{}",
        stderr(&out)
    );
    assert!(!nowhere.exists(), "no database is created");
}

/// hookv's record key: `u32 BE len(table) | table | key`.
fn hookv_key(table: &str, key: &str) -> Vec<u8> {
    let mut k = (table.len() as u32).to_be_bytes().to_vec();
    k.extend_from_slice(table.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

#[tokio::test]
async fn a_migration_stopped_part_way_is_refused_then_finished() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvserver");
    let writes: Vec<(String, String, Value)> = (0..6)
        .map(|i| {
            (
                format!("t{}", i % 2),
                format!("k{i}"),
                Value::from(i as i64),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str, Value)> = writes
        .iter()
        .map(|(t, k, v)| (t.as_str(), k.as_str(), v.clone()))
        .collect();
    course_writes(&db, &pairs);
    // What a crash after the first batch leaves: the marker, two records
    // moved (each batch moves a record whole: new key in, old key out),
    // four still in the course's layout.
    {
        let raw = sled::open(&db).unwrap();
        raw.open_tree(hookv::storage::course_sled::MIGRATING_TREE)
            .unwrap()
            .insert("started", "x")
            .unwrap();
        for (table, key, _) in &pairs[..2] {
            let old = format!("{table}:{key}");
            let value = raw.remove(&old).unwrap().unwrap();
            raw.insert(hookv_key(table, key), value).unwrap();
        }
        raw.flush().unwrap();
        close(raw, &db);
    }
    let config = config_for(dir.path(), &db);
    let line = refused_start(&config);
    assert!(
        line.contains(
            "a migration from the course's SledDb layout stopped part way (4 records left to move)"
        ) && line.contains(&format!("hookv-cli migrate-course-sled {}", db.display())),
        "{line}"
    );

    // No --merge needed: the records in hookv's layout are the moved ones.
    let out = migrate(&db, &[]);
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(
        report.contains(
            "migrated 4 records into hookv's layout, finishing a migration that had stopped part way"
        ),
        "{report}"
    );
    let out = migrate(&db, &[]);
    assert!(
        stdout(&out).contains("nothing to migrate"),
        "{}",
        stdout(&out)
    );

    let server = Running::start(&config);
    let mut c = server.client().await;
    for (table, key, value) in &pairs {
        let r = bounded(c.hget(table, key)).await.unwrap();
        assert_eq!(
            r.values,
            vec![value.clone()],
            "{table} {key}: {}",
            r.message
        );
    }
    drop(c);
    server.stop_cleanly();
}

#[test]
fn records_move_in_batches_and_every_one_arrives() {
    use hookv::storage::course_sled::{self, MigrateOptions, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvserver");
    // hookv's records first, so the batches' scan starts among them.
    let store = SledDb::open(&db).unwrap();
    store.put("h", "kept", "hookv's".into()).unwrap();
    store.flush().unwrap();
    close(store, &db);
    let keys: Vec<String> = (0..11).map(|i| format!("k{i:02}")).collect();
    let pairs: Vec<(&str, &str, Value)> = keys
        .iter()
        .map(|k| ("t", k.as_str(), Value::from(k.as_str())))
        .chain([("a", "b:c", Value::from(1i64))])
        .collect();
    course_writes(&db, &pairs);

    let options = MigrateOptions {
        merge: true,
        chunk_records: Some(3),
    };
    let migration = course_sled::migrate(&db, options).unwrap();
    unlocked(&db);
    assert_eq!(migration.outcome, Outcome::Migrated, "{migration}");
    assert_eq!(migration.course_records(), 12);
    assert_eq!(migration.ambiguous.len(), 1);

    let raw = dump(&db);
    assert_eq!(raw.len(), 13, "every record once");
    assert!(
        raw.iter().all(|(k, _)| k[0] == 0),
        "no key left in the course's layout"
    );
    // It opens: the marker of a migration under way is gone.
    let store = SledDb::open(&db).unwrap();
    assert_eq!(store.tables().unwrap(), ["a", "h", "t"]);
    assert_eq!(store.get("h", "kept").unwrap(), Some("hookv's".into()));
    assert_eq!(store.get("a", "b:c").unwrap(), Some(1i64.into()));
    let expected: Vec<Kvpair> = keys
        .iter()
        .map(|k| Kvpair::new(k, k.as_str().into()))
        .collect();
    assert_eq!(store.get_all("t").unwrap(), expected);
}
