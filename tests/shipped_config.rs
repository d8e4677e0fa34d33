//! The checked-in `config.toml` with its commented-out hooks turned on the
//! way its comments say (uncomment the block, fill in what it asks for),
//! through the real server and the real `hookv-cli`: what a newcomer sees.
//!
//! Only the listen address (port 0) and the plugin's path (the test build
//! of the example, not `target/release`) differ from the file.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use hookv::hooks::auth::hash_token;
use support::plugins::plugin;
use support::Running;

const CLI: &str = env!("CARGO_BIN_EXE_hookv-cli");

/// The checked-in file, listening on port 0.
fn checked_in() -> String {
    let text = std::fs::read_to_string(support::plugins::workspace().join("config.toml")).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:9527\""));
    text.replace("listen = \"127.0.0.1:9527\"", "listen = \"127.0.0.1:0\"")
}

/// `text` with the commented-out `[[hooks]]` block whose second line is
/// `# {second}` uncommented in place (up to the first line that is not a
/// `# ` comment).
fn uncomment(text: &str, second: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .windows(2)
        .position(|w| w[0] == "# [[hooks]]" && w[1] == format!("# {second}"))
        .unwrap_or_else(|| panic!("config.toml has no commented-out block `# {second}`"));
    let mut out = Vec::with_capacity(lines.len());
    out.extend_from_slice(&lines[..start]);
    let mut rest = lines[start..].iter();
    for line in rest.by_ref() {
        match line.strip_prefix("# ") {
            Some(code) => out.push(code),
            None => {
                out.push(line);
                break;
            }
        }
    }
    out.extend(rest);
    out.join("\n") + "\n"
}

/// Starts the server on `text`, written to a temp dir (its data and logs
/// land there).
fn start(text: &str) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let server = Running::start(&config);
    (dir, server)
}

fn cli(server: &Running, args: &[&str]) -> Output {
    Command::new(CLI)
        .args(["--addr", &server.addr.to_string()])
        .args(args)
        .env_remove("HOOKV_TOKEN")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn with_auth_on_a_wrong_token_and_no_token_read_differently() {
    let token = "my-long-random-token";
    let text = uncomment(&checked_in(), "kind = \"auth\"")
        .replacen(
            "token_sha256 = \"<64 hex digits>\"",
            &format!("token_sha256 = {:?}", hash_token(token)),
            1,
        )
        .replacen(
            "token_sha256 = \"<64 hex digits>\"",
            &format!("token_sha256 = {:?}", hash_token("the viewer's token")),
            1,
        );
    let (_dir, server) = start(&text);

    let o = cli(&server, &["--token", "wrong", "hget", "users", "alice"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error 401: auth: invalid token\n");
    let o = cli(&server, &["hget", "users", "alice"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error 401: not authenticated: connect with hookv-cli --token TOKEN\n"
    );
    let o = cli(
        &server,
        &["--token", token, "hset", "users", "alice", "admin"],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // README.md's session (auth, "Built-in hooks"), typed as at a terminal.
    let page = std::fs::read_to_string(support::plugins::workspace().join("README.md")).unwrap();
    let session = page
        .split("```text auth-session\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md shows an auth session");
    let mut got = String::new();
    for line in session.lines() {
        let Some(args) = line.strip_prefix("$ hookv-cli ") else {
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let o = cli(&server, &[&["--no-raw"], &args[..]].concat());
        got.push_str(&format!(
            "{line}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        ));
    }
    assert_eq!(got, session, "README.md's auth session differs");
    assert!(server.terminate().success());
}

#[test]
fn the_rate_limit_as_shipped_answers_429_to_the_documented_loop() {
    let library = plugin("rate-limit");
    let text = uncomment(
        &checked_in(),
        "plugin = \"target/release/librate_limit.so\"",
    )
    .replace(
        "plugin = \"target/release/librate_limit.so\"",
        &format!("plugin = {:?}", library.display().to_string()),
    );
    let (_dir, server) = start(&text);

    // The loop the comment gives, run as written.
    let loop_line = text
        .lines()
        .find_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("for i in"))
        .map(|rest| format!("for i in{rest}"))
        .expect("config.toml shows a loop that makes the rate limit answer 429");
    let cli_dir = Path::new(CLI).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(cli_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let o = Command::new("sh")
        .args(["-c", &loop_line])
        .env("PATH", path)
        .env("HOOKV_ADDR", server.addr.to_string())
        .env_remove("HOOKV_TOKEN")
        .output()
        .unwrap();
    let said = stderr(&o);
    let lines: Vec<&str> = said.lines().collect();
    // The burst (5) passes: the table is missing, so 404s.
    assert_eq!(lines.len(), 10, "{said}");
    assert!(
        lines[..5].iter().all(|l| l.starts_with("error 404: ")),
        "{said}"
    );
    assert!(
        lines[5].starts_with(
            "error 429: rate limit for 127.0.0.1: at most 1 request a second, 5 at once; retry in "
        ),
        "{said}"
    );
    assert!(server.terminate().success());
}
