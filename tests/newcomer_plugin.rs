//! `README.md`, followed as a newcomer would: its code blocks
//! become a fresh crate outside the workspace, built with
//! `cargo build --release`, loaded by the real server through the documented
//! `[[hooks]]` entry, and the documented client session must print what the
//! page says it prints.
//!
//! Blocks are found by their info string: ```` ```toml file=Cargo.toml ````,
//! ```` ```rust file=src/lib.rs ````, ```` ```toml file=hookv.toml ````, the
//! session ```` ```text cli ```` (`$ hookv-cli ARGS` lines, each followed by
//! its output) and the error line ```` ```text start-error ````.
//!
//! Two things differ from a newcomer's machine, neither touching the page's
//! instructions: the SDK path is made absolute (the crate lives in a temp
//! dir), and the build shares a target directory and the workspace's
//! `Cargo.lock` (same versions, so it reuses compiled dependencies and needs
//! no registry index: it works offline once the workspace has built).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use support::plugins::{cargo, run, target_dir, workspace};

const SERVER: &str = env!("CARGO_BIN_EXE_hookv-server");
const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

/// The page's fenced blocks, by info string (`"toml file=Cargo.toml"`).
fn blocks(page: &str) -> HashMap<String, String> {
    let mut found = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in page.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => {
                let (info, body) = current.take().unwrap();
                found.insert(info, body);
            }
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

fn block<'a>(blocks: &'a HashMap<String, String>, info: &str) -> &'a str {
    blocks
        .get(info)
        .unwrap_or_else(|| panic!("README.md has no ```{info} block"))
}

/// A server binary started on `config`, and the address it listens on.
struct Running(Child, String);

impl Running {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(SERVER)
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
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
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(addr)) => return Self(child, addr),
                Ok(Err(_other_line)) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("the server did not start on the documented config");
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

#[test]
fn the_write_a_plugin_guide_works_as_written() {
    let page = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let blocks = blocks(&page);

    // Steps 1-3: the crate, outside the workspace.
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("deny-prefix");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let sdk = workspace().join("plugins/sdk");
    let manifest = block(&blocks, "toml file=Cargo.toml");
    assert!(
        manifest.contains("path = \"../hookv/plugins/sdk\""),
        "{manifest}"
    );
    let manifest = manifest.replace(
        "path = \"../hookv/plugins/sdk\"",
        &format!("path = {:?}", sdk.display().to_string()),
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(
        krate.join("src/lib.rs"),
        block(&blocks, "rust file=src/lib.rs"),
    )
    .unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    // Step 4: cargo build --release.
    let target = target_dir();
    let mut build = cargo();
    build
        .current_dir(&krate)
        .args(["build", "--release"])
        .env("CARGO_TARGET_DIR", &target);
    run(build);
    let built = target.join("release").join(format!(
        "{}deny_prefix{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(built.is_file(), "{} was not built", built.display());
    // The documented relative path, as the newcomer's own build lays it out.
    let documented = krate.join("target/release");
    std::fs::create_dir_all(&documented).unwrap();
    std::fs::copy(&built, documented.join(built.file_name().unwrap())).unwrap();

    // Step 5: the [[hooks]] entry, and the documented session.
    let config = krate.join("hookv.toml");
    std::fs::write(&config, block(&blocks, "toml file=hookv.toml")).unwrap();
    let server = Running::start(&config);
    let session = block(&blocks, "text cli");
    let mut expected = String::new();
    let mut got = String::new();
    for line in session.lines() {
        let Some(args) = line.strip_prefix("$ hookv-cli ") else {
            expected.push_str(line);
            expected.push('\n');
            continue;
        };
        expected.push_str(line);
        expected.push('\n');
        got.push_str(line);
        got.push('\n');
        let out = Command::new(CLI)
            .args(["--addr", &server.1])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&out.stdout));
        got.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(got, expected, "the documented session differs");
    drop(server);

    // The documented start error, when the option is missing.
    let without_prefix = block(&blocks, "toml file=hookv.toml")
        .lines()
        .filter(|l| !l.starts_with("prefix"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, without_prefix).unwrap();
    let out = Command::new(SERVER)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let documented = block(&blocks, "text start-error");
    let tail = |s: &str| {
        s.split("failed to start:")
            .nth(1)
            .map(str::trim)
            .map(str::to_owned)
    };
    assert!(tail(documented).is_some(), "{documented}");
    assert_eq!(tail(&stderr), tail(documented), "{stderr}");
}
