//! The built-in hooks configured from `config.toml`, through a real server:
//! auth (401/403), audit (JSON lines, refusals included), rewrite, and their
//! order.

mod support;

use std::path::Path;
use std::sync::Arc;

use hookv::config::Config;
use hookv::hooks::auth::hash_token;
use hookv::pb::{CommandRequest, Kvpair, Value};
use hookv::{Service, Storage};
use support::{bounded, TestServer};

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-9876543210";

fn auth_hook() -> String {
    format!(
        r#"
[[hooks]]
kind = "auth"
users = [
  {{ name = "admin", token_sha256 = "{}", read = ["*"], write = ["*"] }},
  {{ name = "viewer", token_sha256 = "{}", read = ["public*"], write = [] }},
]
"#,
        hash_token(ADMIN),
        hash_token(VIEWER).to_uppercase(),
    )
}

/// Loads `hooks` as a config file in `dir` and starts the server from it,
/// as the binary does.
async fn server(dir: &Path, hooks: &str) -> (TestServer, Service<Arc<dyn Storage>>, Config) {
    let path = dir.join("config.toml");
    std::fs::write(&path, hooks).unwrap();
    let config = Config::load(&path).unwrap();
    let server = TestServer::from_config(&config).await;
    let service = server.service.clone().expect("started from a config");
    (server, service, config)
}

fn all_nine() -> Vec<CommandRequest> {
    vec![
        CommandRequest::new_hget("public", "k"),
        CommandRequest::new_hgetall("public"),
        CommandRequest::new_hmget("public", vec!["k".into()]),
        CommandRequest::new_hset("public", "k", "v".into()),
        CommandRequest::new_hmset("public", vec![Kvpair::new("k", "v".into())]),
        CommandRequest::new_hdel("public", "k"),
        CommandRequest::new_hmdel("public", vec!["k".into()]),
        CommandRequest::new_hexist("public", "k"),
        CommandRequest::new_hmexist("public", vec!["k".into()]),
    ]
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_execute_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, service, _) = server(dir.path(), &auth_hook()).await;
    let mut c = server.client().await;
    for req in all_nine() {
        let res = bounded(c.send(&req)).await.unwrap();
        assert_eq!(res.status, 401, "{}: {res:?}", req.command_name());
        assert!(res.message.contains("not authenticated"), "{}", res.message);
    }
    assert!(
        service.store().tables().unwrap().is_empty(),
        "a refused write executed"
    );
    // A wrong token is 401 too, and leaves the connection unauthenticated.
    let res = bounded(c.auth("wrong")).await.unwrap();
    assert_eq!(res.status, 401);
    assert_eq!(bounded(c.hget("public", "k")).await.unwrap().status, 401);
    server.stop().await;
}

#[tokio::test]
async fn users_read_and_write_only_the_tables_their_patterns_allow() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = server(dir.path(), &auth_hook()).await;

    let mut admin = server.client().await;
    let res = bounded(admin.auth(ADMIN)).await.unwrap();
    assert_eq!(
        (res.status, res.message.as_str()),
        (200, "authenticated as admin")
    );
    for req in all_nine() {
        let res = bounded(admin.send(&req)).await.unwrap();
        assert!(
            matches!(res.status, 200 | 404),
            "{}: {res:?}",
            req.command_name()
        );
    }
    bounded(admin.hset("public_news", "k", "v")).await.unwrap();
    bounded(admin.hset("private", "k", "v")).await.unwrap();

    // The viewer's hash was configured in upper case: still matches.
    let mut viewer = server.client().await;
    assert_eq!(bounded(viewer.auth(VIEWER)).await.unwrap().status, 200);
    let res = bounded(viewer.hget("public_news", "k")).await.unwrap();
    assert_eq!(res.status, 200);
    for req in [
        CommandRequest::new_hget("private", "k"),
        CommandRequest::new_hgetall("private"),
        CommandRequest::new_hmexist("private", vec!["k".into()]),
    ] {
        let res = bounded(viewer.send(&req)).await.unwrap();
        assert_eq!(res.status, 403, "{res:?}");
        assert!(
            res.message.contains("may not read table \"private\""),
            "{}",
            res.message
        );
    }
    for req in [
        CommandRequest::new_hset("public_news", "k", "x".into()),
        CommandRequest::new_hmdel("public_news", vec!["k".into()]),
    ] {
        let res = bounded(viewer.send(&req)).await.unwrap();
        assert_eq!(res.status, 403, "{res:?}");
        assert!(
            res.message.contains("may not write table \"public_news\""),
            "{}",
            res.message
        );
    }
    // Nothing the viewer was refused changed anything.
    let res = bounded(admin.hget("public_news", "k")).await.unwrap();
    assert_eq!(res.values, vec![Value::from("v")]);
    server.stop().await;
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn audit_records_every_request_including_refusals_and_rewrite_applies_to_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{}
[[hooks]]
kind = "rewrite"
rules = [
  {{ status = 401, set_message = "please log in" }},
  {{ table = "secret*", redact = "***" }},
  {{ status = 404, prefix_message = "hookv: " }},
]

[[hooks]]
kind = "audit"
path = "logs/audit.jsonl"
"#,
        auth_hook()
    );
    let (server, service, _) = server(dir.path(), &config).await;
    let mut c = server.client().await;
    let res = bounded(c.hset("public", "k", "v")).await.unwrap();
    assert_eq!((res.status, res.message.as_str()), (401, "please log in"));
    assert_eq!(bounded(c.auth(ADMIN)).await.unwrap().status, 200);
    bounded(c.hmset(
        "secret",
        vec![Kvpair::new("a", 1i64.into()), Kvpair::new("b", "x".into())],
    ))
    .await
    .unwrap();
    let res = bounded(c.hmget("secret", &["a", "zz", "b"])).await.unwrap();
    assert_eq!(
        res.values,
        vec![Value::from("***"), Value::empty(), Value::from("***")]
    );
    // A plain hget and hset, which every hook here reads raw (answered
    // undecoded): redacted, and audited, the same.
    let res = bounded(c.hget("secret", "b")).await.unwrap();
    assert_eq!(res.values, vec![Value::from("***")]);
    let res = bounded(c.hset("secret", "b", "y")).await.unwrap();
    assert_eq!((res.status, res.values), (200, vec![Value::from("***")]));
    // A miss leaves the undecoded path after on_received: each hook still
    // sees it once (one prefix, one audit line).
    let res = bounded(c.hget("public", "nope")).await.unwrap();
    assert_eq!(res.status, 404);
    assert!(
        res.message.starts_with("hookv: Not found"),
        "{}",
        res.message
    );
    assert!(!res.message.contains("hookv: hookv:"), "{}", res.message);
    bounded(c.send_raw(&[0, 0, 0, 2, 0xff, 0xff]))
        .await
        .unwrap();
    assert_eq!(bounded(c.read_response()).await.unwrap().status, 400);
    drop(c);
    server.stop().await;
    service.hooks().shutdown();

    let lines = audit_lines(&dir.path().join("logs/audit.jsonl"));
    let summary: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["command"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("hset", 401),
        ("auth", 200),
        ("hmset", 200),
        ("hmget", 200),
        ("hget", 200),
        ("hset", 200),
        ("hget", 404),
        ("unknown", 400),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(c, s)| (c.to_string(), *s))
            .collect::<Vec<_>>()
    );
    let refused = &lines[0];
    assert!(refused["principal"].is_null());
    assert_eq!(refused["table"], "public");
    assert_eq!(refused["keys"], serde_json::json!(["k"]));
    let hmget = &lines[3];
    assert_eq!(hmget["principal"], "admin");
    assert_eq!(hmget["keys"], serde_json::json!(["a", "zz", "b"]));
    for undecoded in &lines[4..6] {
        assert_eq!(undecoded["principal"], "admin");
        assert_eq!(undecoded["table"], "secret");
        assert_eq!(undecoded["keys"], serde_json::json!(["b"]));
    }
    assert_eq!(lines[6]["keys"], serde_json::json!(["nope"]));
    for l in &lines {
        assert!(l["conn"].as_u64().unwrap() >= 1);
        assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(l["latency_us"].is_u64());
        let time = l["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }
}

#[tokio::test]
async fn a_full_audit_queue_drops_and_counts_never_silently() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[hooks]]\nkind = \"audit\"\npath = \"audit.jsonl\"\nqueue = 4\n";
    let (server, service, _) = server(dir.path(), config).await;
    let mut c = server.client().await;
    let reqs: Vec<_> = (0..2000)
        .map(|i| CommandRequest::new_hget("t", format!("k{i}")))
        .collect();
    let sent = reqs.len() as u64;
    bounded(c.pipeline(&reqs)).await.unwrap();
    drop(c);
    server.stop().await;
    service.hooks().shutdown();
    let lines = audit_lines(&dir.path().join("audit.jsonl"));
    let recorded = lines.iter().filter(|l| l.get("command").is_some()).count() as u64;
    let dropped: u64 = lines
        .iter()
        .filter(|l| l["event"] == "dropped")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        recorded + dropped,
        sent,
        "recorded {recorded} + dropped {dropped}"
    );
    assert!(
        dropped > 0,
        "2000 pipelined requests should overflow a queue of 4"
    );
}

fn config_error(hooks: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, hooks).unwrap();
    let config = Config::load(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(TestServer::try_from_config(&config)) {
        Ok(_) => panic!("a server started from a bad config: {hooks}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_hook_config_names_position_line_and_key() {
    let err = config_error(
        "[server]\n\n[[hooks]]\nkind = \"rewrite\"\nrules = []\n\n[[hooks]]\nkind = \"logger\"\n",
    );
    assert!(
        err.contains("config.toml:7:") && err.contains("hooks[2]") && err.contains("logger"),
        "{err}"
    );
    let err = config_error("[[hooks]]\nkind = \"audit\"\n");
    assert!(
        err.contains("hooks[1] (kind = \"audit\")") && err.contains("`path`"),
        "{err}"
    );
    let err = config_error("[[hooks]]\nkind = \"audit\"\npath = \"a\"\nqueu = 3\n");
    assert!(err.contains("queu"), "{err}");
    let err = config_error(
        "[[hooks]]\nkind = \"auth\"\nusers = [{ name = \"a\", token_sha256 = \"xyz\" }]\n",
    );
    assert!(err.contains("token_sha256"), "{err}");
    let err = config_error(
        "[[hooks]]\nkind = \"rewrite\"\nrules = [{ status = \"bad\", set_message = \"x\" }]\n",
    );
    assert!(err.contains("hooks[1]"), "{err}");
    let err = config_error(
        "[[hooks]]\nkind = \"rewrite\"\nrules = [{ command = \"hgett\", set_message = \"x\" }]\n",
    );
    assert!(err.contains("hgett"), "{err}");
    let err = config_error("[[hooks]]\nlimit = 3\n");
    assert!(err.contains("needs `kind"), "{err}");
}

#[tokio::test]
async fn a_writer_without_read_access_does_not_learn_previous_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[[hooks]]
kind = "auth"
users = [
  {{ name = "admin", token_sha256 = "{}", read = ["*"], write = ["*"] }},
  {{ name = "dropbox", token_sha256 = "{}", read = [], write = ["inbox"] }},
]
"#,
        hash_token(ADMIN),
        hash_token(VIEWER),
    );
    let (server, _, _) = server(dir.path(), &config).await;
    let mut admin = server.client().await;
    bounded(admin.auth(ADMIN)).await.unwrap();
    bounded(admin.hset("inbox", "k", "secret")).await.unwrap();
    let mut writer = server.client().await;
    bounded(writer.auth(VIEWER)).await.unwrap();
    for req in [
        CommandRequest::new_hset("inbox", "k", "new".into()),
        CommandRequest::new_hdel("inbox", "k"),
    ] {
        let res = bounded(writer.send(&req)).await.unwrap();
        assert_eq!(res.status, 200, "{res:?}");
        assert!(res.values.is_empty(), "previous values leaked: {res:?}");
        assert!(res.message.contains("withheld"), "{}", res.message);
    }
    // The admin, who may read, still sees them.
    let res = bounded(admin.hset("inbox", "k", "x")).await.unwrap();
    assert_eq!(res.values, vec![Value::empty()]);
    server.stop().await;
}

/// `reqs` as frames, back to back: one write, as a pipelining client sends them.
fn frames(reqs: &[CommandRequest]) -> Vec<u8> {
    use prost::Message;
    let mut out = Vec::new();
    for req in reqs {
        let body = req.encode_to_vec();
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
    }
    out
}

/// Reads until the server closes the connection, failing if it answers.
async fn closed(c: &mut hookv::client::Client) {
    match bounded(c.read_response()).await {
        Err(hookv::client::ClientError::Closed) | Err(hookv::client::ClientError::Io(_)) => {}
        other => panic!("the connection should be closed, got {other:?}"),
    }
}

#[tokio::test]
async fn max_failures_wrong_tokens_are_answered_then_the_connection_closes() {
    for (max, option) in [(3, String::new()), (5, "max_failures = 5\n".to_owned())] {
        let dir = tempfile::tempdir().unwrap();
        let config = auth_hook().replace("users = [", &format!("{option}users = ["));
        let (server, service, _) = server(dir.path(), &config).await;
        let mut c = server.client().await;
        let mut reqs: Vec<_> = (0..max)
            .map(|i| CommandRequest::new_auth(format!("guess-{i}")))
            .collect();
        // Pipelined behind the guesses: none of these may run.
        reqs.push(CommandRequest::new_auth(ADMIN));
        reqs.push(CommandRequest::new_hset("public", "k", "v".into()));
        bounded(c.send_raw(&frames(&reqs))).await.unwrap();
        for i in 1..=max {
            let res = bounded(c.read_response()).await.unwrap();
            assert_eq!(res.status, 401, "answer {i}: {res:?}");
            assert!(res.message.contains("invalid token"), "{}", res.message);
            let closes = res.message.contains("closing the connection");
            assert_eq!(closes, i == max, "answer {i} of {max}: {}", res.message);
        }
        closed(&mut c).await;
        assert!(
            service.store().tables().unwrap().is_empty(),
            "a request after the last failure executed"
        );
        // Other connections are not affected.
        let mut admin = server.client().await;
        assert_eq!(bounded(admin.auth(ADMIN)).await.unwrap().status, 200);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_right_token_after_fewer_failures_works_and_does_not_reset_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = server(dir.path(), &auth_hook()).await;
    let mut c = server.client().await;
    let answers = bounded(c.pipeline(&[
        CommandRequest::new_auth("wrong-1"),
        CommandRequest::new_auth("wrong-2"),
        CommandRequest::new_auth(ADMIN),
        CommandRequest::new_hset("public", "k", "v".into()),
    ]))
    .await
    .unwrap();
    let statuses: Vec<u32> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200, 200], "{answers:?}");
    assert_eq!(answers[2].message, "authenticated as admin");
    // The third failure on this connection closes it, success or not between.
    let res = bounded(c.auth("wrong-3")).await.unwrap();
    assert_eq!(res.status, 401);
    assert!(
        res.message.contains("too many failed attempts"),
        "{}",
        res.message
    );
    closed(&mut c).await;
    server.stop().await;
}

#[test]
fn max_failures_is_range_checked() {
    for bad in ["0", "1001"] {
        let err = config_error(&format!(
            "[[hooks]]\nkind = \"auth\"\nmax_failures = {bad}\nusers = [{{ name = \"a\", token_sha256 = \"{}\" }}]\n",
            hash_token("t")
        ));
        assert!(
            err.contains("config.toml:1:")
                && err.contains("hooks[1] (kind = \"auth\")")
                && err.contains(&format!("max_failures = {bad}: must be between 1 and 1000")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn failed_auth_is_logged_rate_limited_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", auth_hook()),
    )
    .unwrap();
    let server = support::Running::start(&config);
    const SECRET_GUESS: &str = "guessed-token-XYZZY";
    let started = std::time::Instant::now();
    // 100 connections, each closed after its third wrong token: 300 failures.
    let guesses: Vec<_> = (0..3)
        .map(|_| CommandRequest::new_auth(SECRET_GUESS))
        .collect();
    for _ in 0..100 {
        let mut c = server.client().await;
        bounded(c.send_raw(&frames(&guesses))).await.unwrap();
        for _ in 0..3 {
            assert_eq!(bounded(c.read_response()).await.unwrap().status, 401);
        }
        closed(&mut c).await;
    }
    let first = server.wait_for_log("auth failed");
    assert!(
        first.contains("conn=") && first.contains("peer=127.0.0.1:"),
        "{first}"
    );
    // A line stands for those left out since the last one: keep failing
    // until one says how many (the budget refills once a second).
    let summary = loop {
        let line = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("auth failed") && l.contains("suppressed="))
            .cloned();
        if let Some(line) = line {
            break line;
        }
        assert!(started.elapsed() < support::LIMIT, "no suppressed= line");
        let mut c = server.client().await;
        assert_eq!(bounded(c.auth(SECRET_GUESS)).await.unwrap().status, 401);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(summary.contains("conn="), "{summary}");
    let log = server.log_text();
    assert!(!log.contains(SECRET_GUESS), "the token was logged:\n{log}");
    // Two call sites (a failure, the failure that closes), each with a
    // budget of BURST lines plus one a second.
    let lines = log.lines().filter(|l| l.contains("auth failed")).count();
    let budget = 2 * (hookv::log_limit::BURST as usize + started.elapsed().as_secs() as usize + 1);
    assert!(
        lines <= budget,
        "{lines} lines for 300+ failures (budget {budget})"
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn hscan_is_a_read_for_auth_and_a_command_rewrite_rules_can_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[[hooks]]\nkind = \"rewrite\"\nrules = [{{ command = \"hscan\", redact = \"***\" }}]\n",
        auth_hook()
    );
    let (server, _, _) = server(dir.path(), &config).await;
    let mut anonymous = server.client().await;
    let res = bounded(anonymous.hscan("public", None, 0)).await.unwrap();
    assert_eq!(res.status, 401, "{res:?}");
    assert!(
        res.message.starts_with("hscan: not authenticated"),
        "{}",
        res.message
    );

    let mut admin = server.client().await;
    bounded(admin.auth(ADMIN)).await.unwrap();
    for table in ["public", "private"] {
        bounded(admin.hset(table, "k", "v")).await.unwrap();
    }
    let mut viewer = server.client().await;
    bounded(viewer.auth(VIEWER)).await.unwrap();
    let res = bounded(viewer.hscan("public", None, 0)).await.unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.pairs, vec![Kvpair::new("k", "***".into())]);
    let res = bounded(viewer.hscan("private", None, 0)).await.unwrap();
    assert_eq!(res.status, 403, "{res:?}");
    assert!(
        res.message
            .contains("hscan: user viewer may not read table \"private\""),
        "{}",
        res.message
    );
    assert!(res.pairs.is_empty());
    server.stop().await;
}

/// Sends `n` hgets, pipelined 100 at a time; returns how many were answered.
async fn load(c: &mut hookv::client::Client, n: usize) -> u64 {
    let reqs: Vec<_> = (0..n)
        .map(|i| CommandRequest::new_hget("t", format!("k{i}")))
        .collect();
    let mut answered = 0;
    for batch in reqs.chunks(100) {
        answered += bounded(c.pipeline(batch)).await.unwrap().len() as u64;
    }
    answered
}

/// The audit file on a full disk: the real server runs under a file-size
/// limit (`ulimit -f`, with SIGXFSZ ignored so that a write past it fails
/// with EFBIG, part way through a batch of lines), is loaded, gets its space
/// back (`prlimit`), is loaded again and stopped. Every line of the file is
/// JSON, and the records in it plus the counts of those dropped or lost are
/// the requests sent.
#[tokio::test]
async fn audit_on_a_full_disk_counts_what_it_lost_and_leaves_no_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[[hooks]]\nkind = \"audit\"\npath = \"audit.jsonl\"\n",
    )
    .unwrap();
    // dash counts 512-byte blocks: 32 KiB, about 200 records. A soft limit,
    // which the process's owner may raise again (a hard one needs privileges).
    let server = support::Running::spawn(
        std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' XFSZ; ulimit -S -f 64; exec \"$0\" \"$@\"",
                support::SERVER,
                "--config",
            ])
            .arg(&config)
            .args(["--log", "info"]),
    );
    let mut c = server.client().await;
    let mut sent = load(&mut c, 3000).await;
    server.wait_for_log("audit write failed");
    let space_back = std::process::Command::new("prlimit")
        .args(["--pid", &server.child.id().to_string(), "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(space_back.success());
    sent += load(&mut c, 500).await;
    drop(c);
    assert!(server.terminate().success());

    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let mut recorded = 0;
    let mut counted = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        if v.get("command").is_some() {
            recorded += 1;
        } else {
            assert!(v["event"] == "lost" || v["event"] == "dropped", "{v}");
            counted += v["count"].as_u64().unwrap();
        }
    }
    assert!(counted > 0, "the full disk lost nothing?");
    assert_eq!(
        recorded + counted,
        sent,
        "recorded {recorded} + counted as lost or dropped {counted}"
    );
}
