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
    // Typed, the pages print typed, and the end adds nothing.
    let o = cli(&addr, &["--no-raw", "hgetall", "big"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: String = keys
        .iter()
        .map(|k| format!("{k:?} = {value:?}\n"))
        .collect();
    assert!(
        stdout(&o) == expected,
        "typed hgetall printed {} bytes, ending {:?}",
        o.stdout.len(),
        &stdout(&o)[o.stdout.len().saturating_sub(40)..]
    );
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
fn typed_output_tells_types_and_emptiness_apart() {
    let (_dir, server) = server_on("");
    let addr = server.addr.to_string();
    let typed = |args: &[&str]| {
        let o = cli(&addr, &[&["--no-raw"], args].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    // Look-alikes in the plain form, told apart by type.
    assert_eq!(typed(&["hset", "t", "s", "42"]), "(nil)\n");
    typed(&["hset", "t", "n", "42", "-t", "integer"]);
    typed(&["hset", "t", "hex", "0xdeadbeef"]);
    typed(&["hset", "t", "bin", "0xdeadbeef", "-t", "binary"]);
    typed(&["hset", "t", "f", "2", "-t", "float"]);
    typed(&["hset", "t", "yes", "true", "-t", "bool"]);
    typed(&["hset", "t", "e", ""]);
    typed(&["hset", "t", "no bytes", "", "-t", "binary"]);
    typed(&["hset", "t", "odd \"key\"", "two\nlines"]);
    assert_eq!(typed(&["hget", "t", "s"]), "\"42\"\n");
    assert_eq!(typed(&["hget", "t", "n"]), "(integer) 42\n");
    assert_eq!(typed(&["hget", "t", "bin"]), "(binary) 0xdeadbeef\n");
    assert_eq!(typed(&["hget", "t", "hex"]), "\"0xdeadbeef\"\n");
    assert_eq!(typed(&["hget", "t", "e"]), "\"\"\n");
    // The previous value of a set, typed too.
    assert_eq!(
        typed(&["hset", "t", "f", "2.5", "-t", "float"]),
        "(float) 2.0\n"
    );
    assert_eq!(
        typed(&["hgetall", "t"]),
        "\"bin\" = (binary) 0xdeadbeef\n\"e\" = \"\"\n\"f\" = (float) 2.5\n\
         \"hex\" = \"0xdeadbeef\"\n\"n\" = (integer) 42\n\"no bytes\" = (binary) 0x\n\
         \"odd \\\"key\\\"\" = \"two\\nlines\"\n\"s\" = \"42\"\n\"yes\" = (bool) true\n"
    );
    // Multi-key answers: one line per key asked, in order, (nil) for none.
    assert_eq!(
        typed(&["hmget", "t", "n", "zz", "s"]),
        "\"n\" = (integer) 42\n\"zz\" = (nil)\n\"s\" = \"42\"\n"
    );
    assert_eq!(
        typed(&["hmexist", "t", "n", "zz"]),
        "\"n\" = (bool) true\n\"zz\" = (bool) false\n"
    );
    assert_eq!(
        typed(&["hmset", "t", "n", "7", "new", "8", "-t", "integer"]),
        "\"n\" = (integer) 42\n\"new\" = (nil)\n"
    );
    assert_eq!(typed(&["hdel", "t", "new"]), "(integer) 8\n");
    assert_eq!(typed(&["hdel", "t", "new"]), "(nil)\n");
    assert_eq!(
        typed(&["hmdel", "t", "yes", "zz"]),
        "\"yes\" = (bool) true\n\"zz\" = (nil)\n"
    );
    assert_eq!(typed(&["hexist", "t", "yes"]), "(bool) false\n");
    // hscan pages, and empty answers.
    let o = cli(&addr, &["--no-raw", "hscan", "t", "--count", "2"]);
    assert_eq!(stdout(&o), "\"bin\" = (binary) 0xdeadbeef\n\"e\" = \"\"\n");
    assert_eq!(stderr(&o), "next page: --cursor \"e\"\n");
    assert_eq!(typed(&["hgetall", "missing"]), "(empty table)\n");
    typed(&["hset", "emptied", "k", "v"]);
    typed(&["hdel", "emptied", "k"]);
    assert_eq!(typed(&["hgetall", "emptied"]), "(empty table)\n");
    assert_eq!(typed(&["hscan", "t", "--cursor", "zzz"]), "(empty page)\n");

    // The plain form, for scripts: the default off a terminal, or --raw.
    for raw in [&[][..], &["--raw"][..]] {
        let plain = |args: &[&str]| stdout(&cli(&addr, &[raw, args].concat()));
        assert_eq!(plain(&["hget", "t", "s"]), "42\n");
        assert_eq!(plain(&["hget", "t", "n"]), "7\n");
        assert_eq!(plain(&["hget", "t", "bin"]), "0xdeadbeef\n");
        assert_eq!(plain(&["hmget", "t", "n", "zz"]), "n = 7\nzz = (nil)\n");
        assert_eq!(plain(&["hgetall", "missing"]), "");
        assert_eq!(plain(&["hscan", "t", "--cursor", "zzz"]), "");
    }
    // Both at once is bad usage; a refusal exits 1 in either form.
    let o = cli(&addr, &["--raw", "--no-raw", "hget", "t", "s"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = cli(&addr, &["--no-raw", "hget", "t", "zz"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert!(server.terminate().success());
}

#[test]
fn binary_values_come_from_a_file_or_stdin() {
    let (dir, server) = server_on("");
    let addr = server.addr.to_string();
    // 200 KiB: as hex, an argument of 400 KiB, past what the kernel takes
    // (128 KiB per argument).
    let bytes: Vec<u8> = (0..200 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.path().join("blob.bin");
    std::fs::write(&path, &bytes).unwrap();
    let path = path.to_str().unwrap();

    let o = cli(
        &addr,
        &["hset", "t", "file", "-t", "binary", "--file", path],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = Command::new(CLI)
        .args([
            "--addr", &addr, "hset", "t", "stdin", "-t", "binary", "--file", "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for key in ["file", "stdin"] {
        assert_eq!(
            stdout(&cli(&addr, &["hget", "t", key])),
            format!("0x{hex}\n"),
            "{key}"
        );
    }
    // A file's text is a string (or a number, trimmed) without -t binary.
    let text = dir.path().join("n.txt");
    std::fs::write(&text, "42\n").unwrap();
    let text = text.to_str().unwrap();
    cli(&addr, &["hset", "t", "n", "-t", "integer", "--file", text]);
    cli(&addr, &["hset", "t", "s", "--file", text]);
    assert_eq!(
        stdout(&cli(&addr, &["--no-raw", "hmget", "t", "n", "s"])),
        "\"n\" = (integer) 42\n\"s\" = \"42\\n\"\n"
    );
    // Bad usage, nothing sent: no such file, not text, VALUE and --file.
    let missing = dir.path().join("missing").display().to_string();
    let o = cli(&addr, &["hset", "t", "x", "--file", &missing]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&missing), "{}", stderr(&o));
    let o = cli(&addr, &["hset", "t", "x", "--file", path]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-t binary"), "{}", stderr(&o));
    let o = cli(&addr, &["hset", "t", "x", "v", "--file", path]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stdout(&cli(&addr, &["hexist", "t", "x"])),
        "false\n",
        "nothing was set"
    );
    assert!(server.terminate().success());
}

#[test]
fn hget_says_whether_the_table_or_the_key_is_missing() {
    for storage in [
        "",
        "[storage]\nbackend = \"sled\"\npath = \"db\"\n",
        "[[hooks]]\nkind = \"wal\"\npath = \"wal\"\n",
    ] {
        let (_dir, server) = server_on(storage);
        let addr = server.addr.to_string();
        let o = cli(&addr, &["hget", "users", "alice"]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o),
            "error 404: Not found for table: \"users\", key: \"alice\" (table \"users\" does not exist)\n",
            "{storage}"
        );
        cli(&addr, &["hset", "users", "bob", "admin"]);
        let o = cli(&addr, &["hget", "users", "alice"]);
        assert_eq!(
            stderr(&o),
            "error 404: Not found for table: \"users\", key: \"alice\"\n",
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
