//! The example plugins as shared libraries, built once per test binary.
//!
//! `cargo test` builds workspace members as test harnesses, not as the
//! `cdylib`s the server loads, so the first test that needs a plugin runs
//! `cargo build --release` for them, in its own target directory
//! (`<target>/plugin-tests`, kept between runs: later runs find it up to
//! date in a second). Not the outer build's directory: cargo 1.95 releases
//! that one's lock before running tests (checked), but older cargos held it
//! for the whole run, and a nested build there would wait forever.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory the plugin builds share (kept between runs).
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("plugin-tests")
}

/// A `cargo` command for a nested build: the one running us if known.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Our own target dir, whatever the outer build used.
    cmd.env_remove("CARGO_TARGET_DIR").arg("--quiet");
    cmd
}

/// Runs `cmd`, panicking with its output if it fails.
pub fn run(mut cmd: Command) {
    let out = cmd.output().expect("cannot run cargo");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `target/plugin-tests/release`, with the example plugins built in it.
fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = target_dir();
        let mut cmd = cargo();
        cmd.arg("build")
            .arg("--release")
            .arg("--manifest-path")
            .arg(workspace().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .args([
                "-p",
                "key-guard",
                "-p",
                "rate-limit",
                "-p",
                "panic-test",
                "-p",
                "v1-guard",
            ])
            .args(["--lib", "--examples"]);
        run(cmd);
        target.join("release")
    })
}

fn library_file(name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// The library of a plugin package (`"key-guard"` → `.../libkey_guard.so`).
pub fn plugin(package: &str) -> PathBuf {
    built().join(library_file(package))
}

/// A library built from an example of `panic-test` (`"no-symbol"`).
pub fn example(name: &str) -> PathBuf {
    built().join("examples").join(library_file(name))
}

/// Writes `library` to `to` with `tag` appended: the same code in a file of
/// other bytes, as a rebuild makes (the loader reads what the ELF headers
/// point at and ignores the rest).
pub fn rebuilt(library: &Path, to: &Path, tag: &str) {
    let mut bytes = std::fs::read(library).unwrap();
    bytes.extend_from_slice(tag.as_bytes());
    // Through a temporary name, as a linker or deploy tool replaces it.
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Builds `tests/c_plugin/deny.c` (against `plugins/hookv_plugin.h` only)
/// into the library `to` with the C compiler (`$CC`, else `cc`).
pub fn build_c_plugin(to: &Path) {
    build_c("deny.c", to);
}

/// Builds `tests/c_plugin/NAME` (against `plugins/hookv_plugin.h` only)
/// into the library `to` with the C compiler (`$CC`, else `cc`).
pub fn build_c(name: &str, to: &Path) {
    let root = workspace();
    let mut cmd = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
    cmd.args([
        "-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
    ])
    .arg("-I")
    .arg(root.join("plugins"))
    .arg(root.join("tests/c_plugin").join(name))
    .arg("-o")
    .arg(to);
    run(cmd);
}

/// How many distinct copies of a library whose file name ends in `name`
/// process `pid` has mapped (each load maps a private copy, named
/// `<n>-<file name>`; see `hookv::plugin`).
pub fn mapped_copies(pid: u32, name: &str) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let copies: std::collections::BTreeSet<&str> = maps
        .lines()
        // The 6th field on is the path; " (deleted)" once the copy is removed.
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.ends_with(name))
        .collect();
    copies.len()
}
