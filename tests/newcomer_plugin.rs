//! `README.md`'s "Write your own plugin", followed as a newcomer would, in
//! the order the page gives: its shell blocks are run as written by `sh`
//! (from a directory laid out as the page's tree: `hookv/` and, made by
//! step 1, `deny-prefix/`), its file blocks written where the shell
//! stands, the plugin built with `cargo build --release` and loaded by the
//! real server through the documented `[[hooks]]` entry, and the documented
//! client session must print what the page says it prints.
//!
//! Blocks are found by their info string: ```` ```sh ```` (a block that
//! runs `hookv-server` is the server, started in the background), ```` ```toml
//! file=Cargo.toml ````, ```` ```rust file=src/lib.rs ````, ```` ```toml
//! file=hookv.toml ````, the session ```` ```text cli ```` (`$ hookv-cli
//! ARGS` lines, each followed by its output) and the error line ```` ```text
//! start-error ````.
//!
//! What differs from a newcomer's machine, none of it in the page's
//! commands:
//! - `hookv/` holds links to this checkout's files, and `PATH` starts with
//!   this build's `hookv-server` and `hookv-cli` (the page has them
//!   installed) and the `cargo` running the tests;
//! - the plugin's `target/` is a link to a build directory the tests share,
//!   and the workspace's `Cargo.lock` is copied in (the same versions: the
//!   build reuses compiled dependencies and needs no registry index);
//! - the server listens on port 0, not `hookv.toml`'s 9528, and the session
//!   talks to the port it got; the CLI is given `--no-raw`, since the page
//!   shows a terminal's output and the test's stdout is a pipe.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use support::plugins::{target_dir, workspace};

const SERVER: &str = env!("CARGO_BIN_EXE_hookv-server");
const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

/// The port `hookv.toml` is documented with.
const DOCUMENTED_ADDR: &str = "127.0.0.1:9528";

/// The fenced blocks of the section titled `title` (up to the next `## `
/// heading), in order, as (info string, body).
fn section_blocks(page: &str, title: &str) -> Vec<(String, String)> {
    let start = page
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {title:?}"));
    let section = &page[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut found = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in section[..end].lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => found.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

/// `PATH` with the directories of this build's binaries and of the `cargo`
/// running the tests first.
fn test_path() -> std::ffi::OsString {
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let mut dirs = vec![Path::new(SERVER).parent().unwrap().to_owned()];
    dirs.extend(
        cargo
            .parent()
            .filter(|d| d.is_absolute())
            .map(Path::to_owned),
    );
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// The shell of the page's terminal: `sh` in `cwd`, with the test `PATH`
/// and no build directory of the outer build.
fn shell(cwd: &Path) -> Command {
    let mut sh = Command::new("sh");
    sh.current_dir(cwd)
        .env("PWD", cwd)
        .env("PATH", test_path())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("HOOKV_ADDR")
        .env_remove("HOOKV_TOKEN");
    sh
}

/// The one command of the server block (comments and blank lines aside).
fn server_command(block: &str) -> &str {
    let commands: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands.len(),
        1,
        "the server block is one command: {block}"
    );
    commands[0]
}

/// Runs a shell block in `cwd` as one script that stops at the first
/// failing command; returns the directory it ends in (its `cd`s).
fn run_block(cwd: &Path, block: &str) -> PathBuf {
    let ends_in = cwd.join(".pwd-after-block");
    let script = format!("set -e\n{block}pwd > {:?}\n", ends_in.display().to_string());
    let out = shell(cwd).args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "the block\n{block}failed in {}:\n{}{}",
        cwd.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::fs::read_to_string(&ends_in).unwrap();
    std::fs::remove_file(&ends_in).unwrap();
    PathBuf::from(dir.trim_end())
}

/// The server block, started in `cwd` as written (the shell `exec`s it) and
/// the address it reports.
struct Running(Child, String);

impl Running {
    fn start(cwd: &Path, block: &str) -> Self {
        let mut child = shell(cwd)
            .args(["-c", &format!("exec {} --log info", server_command(block))])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = line.split("addr=").nth(1);
                let _ = tx.send(addr.map_or(Err(line.clone()), |a| {
                    Ok(a.split_whitespace().next().unwrap_or("").to_owned())
                }));
            }
        });
        let deadline = Instant::now() + support::LIMIT;
        let mut said = String::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(addr)) => return Self(child, addr),
                Ok(Err(line)) => said.push_str(&(line + "\n")),
                Err(_) => {
                    let _ = child.kill();
                    panic!("the server did not start on the documented config:\n{said}");
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory laid out as the page's tree: `work/hookv/` holds links to
/// every top-level entry of this checkout but its build output.
fn work_dir(tmp: &Path) -> PathBuf {
    let hookv = tmp.join("work").join("hookv");
    std::fs::create_dir_all(&hookv).unwrap();
    for entry in std::fs::read_dir(workspace()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), hookv.join(&name)).unwrap();
    }
    hookv
}

#[test]
fn the_write_a_plugin_guide_works_as_written() {
    let page = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let blocks = section_blocks(&page, "Write your own plugin");
    let tmp = tempfile::tempdir().unwrap();
    let mut cwd = work_dir(tmp.path());

    let mut server: Option<Running> = None;
    let mut ran = Vec::new();
    for (info, body) in &blocks {
        match info.as_str() {
            "sh" if body.contains("hookv-server") => {
                server = Some(Running::start(&cwd, body));
                ran.push("server");
            }
            "sh" => {
                // Before the build: the shared target dir and lock file.
                if body.contains("cargo build") {
                    // It may not exist yet: a link to it must not dangle.
                    std::fs::create_dir_all(target_dir()).unwrap();
                    std::os::unix::fs::symlink(target_dir(), cwd.join("target")).unwrap();
                    std::fs::copy(workspace().join("Cargo.lock"), cwd.join("Cargo.lock")).unwrap();
                }
                cwd = run_block(&cwd, body);
                ran.push("sh");
            }
            file if file.contains(" file=") => {
                let name = file.split(" file=").nth(1).unwrap();
                let mut text = body.clone();
                if name == "hookv.toml" {
                    assert!(
                        text.contains(&format!("listen = \"{DOCUMENTED_ADDR}\"")),
                        "{text}"
                    );
                    text = text.replace(DOCUMENTED_ADDR, "127.0.0.1:0");
                }
                let path = cwd.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
                ran.push("file");
            }
            "text cli" => {
                let running = server.as_ref().expect("the session follows the server");
                assert_session(body, &running.1);
                ran.push("cli");
            }
            "text start-error" => {
                server = None; // stopped
                assert_start_error(&cwd, &blocks, body);
                ran.push("start-error");
            }
            _ => {}
        }
    }
    assert_eq!(
        ran,
        [
            "sh",
            "file",
            "file",
            "sh",
            "file",
            "server",
            "cli",
            "start-error"
        ],
        "the section's steps, in order"
    );
    let built = cwd.join("target/release").join(format!(
        "{}deny_prefix{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(built.is_file(), "{} was not built", built.display());
    assert!(
        cwd.ends_with("work/deny-prefix"),
        "the crate sits next to the checkout: {}",
        cwd.display()
    );
    drop(server);
}

/// Runs each `$ hookv-cli ARGS` line of `session` (documented address
/// replaced by `addr`) and compares what it prints with the page.
fn assert_session(session: &str, addr: &str) {
    let mut expected = String::new();
    let mut got = String::new();
    for line in session.lines() {
        expected.push_str(line);
        expected.push('\n');
        let Some(args) = line.strip_prefix("$ hookv-cli ") else {
            continue;
        };
        got.push_str(line);
        got.push('\n');
        let args = args.replace(DOCUMENTED_ADDR, addr);
        let out = Command::new(CLI)
            .arg("--no-raw")
            .args(args.split_whitespace())
            .env_remove("HOOKV_ADDR")
            .env_remove("HOOKV_TOKEN")
            .output()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&out.stdout));
        got.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        session.contains(&format!("--addr {DOCUMENTED_ADDR}")),
        "the session talks to the plugin's server, not 9527"
    );
    assert_eq!(got, expected, "the documented session differs");
}

/// The documented start error: the server block run in `cwd` on
/// `hookv.toml` without its `prefix` line.
fn assert_start_error(cwd: &Path, blocks: &[(String, String)], documented: &str) {
    let config = &blocks
        .iter()
        .find(|(info, _)| info == "toml file=hookv.toml")
        .expect("a hookv.toml block")
        .1;
    let without_prefix: String = config
        .lines()
        .filter(|l| !l.starts_with("prefix"))
        .map(|l| l.replace(DOCUMENTED_ADDR, "127.0.0.1:0") + "\n")
        .collect();
    std::fs::write(cwd.join("hookv.toml"), without_prefix).unwrap();
    let server_block = &blocks
        .iter()
        .find(|(info, body)| info == "sh" && body.contains("hookv-server"))
        .expect("a server block")
        .1;
    let out = shell(cwd)
        .args(["-c", &format!("exec {}", server_command(server_block))])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), documented);
}
