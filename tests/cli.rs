//! The stock client against the real server binary: typed values, readable
//! output, exit statuses, `--token` and `hash-token`.

mod support;

use std::process::{Command, Output};

use hookv::hooks::auth::hash_token;
use support::Running;

const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

fn cli(addr: &str, args: &[&str]) -> Output {
    Command::new(CLI)
        .args(["--addr", addr])
        .args(args)
        .env_remove("HOOKV_TOKEN")
        .output()
        .expect("run hookv-cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn commands_values_and_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let server = Running::start(&config);
    let addr = server.addr.to_string();

    let o = cli(&addr, &["hset", "t", "n", "42", "-t", "integer"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "(nil)\n");
    assert_eq!(stdout(&cli(&addr, &["hget", "t", "n"])), "42\n");
    let o = cli(&addr, &["hmset", "t", "f", "1.5", "b", "2", "-t", "float"]);
    assert_eq!(stdout(&o), "f = (nil)\nb = (nil)\n");
    cli(&addr, &["hset", "t", "bin", "0xdeadbeef", "-t", "binary"]);
    cli(&addr, &["hset", "t", "ok", "true", "-t", "bool"]);
    assert_eq!(
        stdout(&cli(&addr, &["hgetall", "t"])),
        "b = 2.0\nbin = 0xdeadbeef\nf = 1.5\nn = 42\nok = true\n"
    );
    assert_eq!(
        stdout(&cli(&addr, &["hmexist", "t", "n", "zz"])),
        "n = true\nzz = false\n"
    );
    assert_eq!(
        stdout(&cli(&addr, &["hmget", "t", "n", "zz"])),
        "n = 42\nzz = (nil)\n"
    );
    assert_eq!(stdout(&cli(&addr, &["hdel", "t", "n"])), "42\n");
    assert_eq!(stdout(&cli(&addr, &["hexist", "t", "n"])), "false\n");

    // Non-200: exit 1, status and message on stderr.
    let o = cli(&addr, &["hget", "t", "n"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error 404: "), "{}", stderr(&o));
    // Bad usage: exit 2, nothing sent.
    let o = cli(&addr, &["hset", "t", "k", "x", "-t", "integer"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an integer"), "{}", stderr(&o));
    assert!(server.terminate().success());
}

#[test]
fn unreachable_server_exits_3() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let o = cli(&addr, &["hget", "t", "k"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn token_authenticates_and_hash_token_prints_the_config_hash() {
    let o = Command::new(CLI)
        .args(["hash-token", "s3cret"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), hash_token("s3cret"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[hooks]]\nkind = \"auth\"\nusers = [{{ name = \"me\", token_sha256 = \"{}\", read = [\"*\"], write = [\"*\"] }}]\n",
            stdout(&o).trim()
        ),
    )
    .unwrap();
    let server = Running::start(&config);
    let addr = server.addr.to_string();
    let o = cli(&addr, &["hset", "t", "k", "v"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error 401"), "{}", stderr(&o));
    let o = cli(&addr, &["--token", "s3cret", "hset", "t", "k", "v"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&addr, &["--token", "wrong", "hget", "t", "k"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid token"), "{}", stderr(&o));
    assert!(server.terminate().success());
}

#[test]
fn hscan_prints_a_page_and_the_next_cursor_and_hgetall_falls_back_to_pages() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_frame_bytes = 65536\n",
    )
    .unwrap();
    let server = Running::start(&config);
    let addr = server.addr.to_string();

    // 200 pairs of 1 KiB: about three times what one answer may carry.
    let value = "v".repeat(1024);
    let keys: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
    for chunk in keys.chunks(40) {
        let mut args = vec!["hmset", "big"];
        for k in chunk {
            args.extend([k.as_str(), value.as_str()]);
        }
        let o = cli(&addr, &args);
        assert!(o.status.success(), "{}", stderr(&o));
    }

    let o = cli(&addr, &["hscan", "big", "--count", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("k000 = {value}\nk001 = {value}\n"));
    assert_eq!(stderr(&o), "next page: --cursor \"k001\"\n");
    let o = cli(&addr, &["hscan", "big", "--cursor", "k001", "--count", "1"]);
    assert_eq!(stdout(&o), format!("k002 = {value}\n"));
    let o = cli(&addr, &["hscan", "big", "--cursor", "k198"]);
    assert_eq!(stdout(&o), format!("k199 = {value}\n"));
    assert_eq!(stderr(&o), "end of table\n");

    // The whole table: 413 in one answer, so the CLI pages through it.
    let o = cli(&addr, &["hgetall", "big"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: String = keys.iter().map(|k| format!("{k} = {value}\n")).collect();
    assert!(
        stdout(&o) == expected,
        "hgetall printed {} bytes",
        o.stdout.len()
    );
    assert!(stderr(&o).contains("hscan pages"), "{}", stderr(&o));
    assert!(server.terminate().success());
}

/// A server binary on `config_toml` (its `[server] listen` is port 0), in a
/// temp dir kept alive alongside it.
fn server_on(config_toml: &str) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{config_toml}"),
    )
    .unwrap();
    let server = Running::start(&config);
    (dir, server)
}

#[test]
fn hget_says_whether_the_table_or_the_key_is_missing() {
    for storage in ["", "[storage]\nbackend = \"sled\"\npath = \"db\"\n"] {
        let (_dir, server) = server_on(storage);
        let addr = server.addr.to_string();
        let o = cli(&addr, &["hget", "users", "alice"]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o),
            "error 404: key \"alice\" not found: table \"users\" does not exist\n",
            "{storage}"
        );
        cli(&addr, &["hset", "users", "bob", "admin"]);
        let o = cli(&addr, &["hget", "users", "alice"]);
        assert_eq!(
            stderr(&o),
            "error 404: key \"alice\" not found in table \"users\"\n",
            "{storage}"
        );
        // A table whose last key was deleted is gone again.
        cli(&addr, &["hdel", "users", "bob"]);
        let o = cli(&addr, &["hget", "users", "alice"]);
        assert!(
            stderr(&o).contains("table \"users\" does not exist"),
            "{storage}: {}",
            stderr(&o)
        );
        assert!(server.terminate().success());
    }
}
