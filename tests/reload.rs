//! Reloading the hook chain on SIGHUP under load: no request fails, each sees
//! the old or the new chain in full, the change takes effect, and a stateful
//! hook (audit) hands over without losing or doubling a record.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookv::pb::CommandRequest;
use support::{bounded, Running};

const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\n";

/// Chain A: two rewrite hooks; every answer's message becomes "A2;A1;".
const CHAIN_A: &str = r#"
[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "A1;" }]

[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "A2;" }]
"#;

/// Chain B: rewrite, audit, rewrite; messages "B2;B1;", every request audited.
const CHAIN_B: &str = r#"
[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "B1;" }]

[[hooks]]
kind = "audit"
path = "audit.jsonl"

[[hooks]]
kind = "rewrite"
rules = [{ prefix_message = "B2;" }]
"#;

/// Replaces the config atomically, as an editor or deploy tool would.
fn write_config(path: &Path, hooks: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{SERVER}{hooks}")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[derive(Default, Debug)]
struct Seen {
    a: u64,
    b: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_load_fails_nothing_and_hands_over_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_config(&config, CHAIN_A);
    let server = Running::start(&config);
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for conn in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut c = bounded(hookv::client::Client::connect(addr)).await.unwrap();
            let mut seen = Seen::default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..8)
                    .map(|j| CommandRequest::new_hset("t", format!("c{conn}k{j}"), (i + j) as i64))
                    .collect();
                for res in bounded(c.pipeline(&batch))
                    .await
                    .expect("request failed during reload")
                {
                    assert_eq!(res.status, 200, "{res:?}");
                    match res.message.as_str() {
                        "A2;A1;" => seen.a += 1,
                        "B2;B1;" => seen.b += 1,
                        other => panic!("a request saw a mixed or partial chain: {other:?}"),
                    }
                }
                i += 8;
            }
            seen
        }));
    }

    // Twenty reloads, alternating, while the clients run.
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        write_config(&config, if round % 2 == 0 { CHAIN_B } else { CHAIN_A });
        server.signal("HUP");
    }
    // End on chain B, and let it serve a while.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Seen::default();
    for c in clients {
        let seen = bounded(c).await.unwrap();
        total.a += seen.a;
        total.b += seen.b;
    }
    server.wait_for_log("hook chain reloaded");
    assert!(
        total.a > 0 && total.b > 0,
        "both chains must have served: {total:?}"
    );

    let log = server.log.clone();
    assert!(server.terminate().success());
    let log = log.lock().unwrap();
    assert!(
        !log.iter().any(|l| l.contains("reload failed")),
        "{}",
        log.join("\n")
    );
    // Every request answered on chain B is in the audit log exactly once,
    // across ten audit hooks that came and went on the same file.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(
        audit.lines().count() as u64,
        total.b,
        "audit lines vs chain-B answers"
    );
}

#[tokio::test]
async fn a_bad_config_on_reload_keeps_the_running_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_config(&config, CHAIN_A);
    let server = Running::start(&config);
    let mut c = bounded(hookv::client::Client::connect(server.addr))
        .await
        .unwrap();

    for (bad, reason) in [
        (
            "[[hooks]]\nkind = \"rewrite\"\nrules = [{ status = 401 }]\n",
            "no action",
        ),
        ("[[hooks]]\nkind = \"nope\"\n", "unknown kind"),
        ("[[hooks]\n", "config.toml:"),
    ] {
        write_config(&config, bad);
        server.signal("HUP");
        let line = server.wait_for_log(reason);
        assert!(line.contains("reload failed"), "{line}");
        let res = bounded(c.hset("t", "k", "v")).await.unwrap();
        assert_eq!(res.message, "A2;A1;", "the running chain must stay");
    }

    // A change to [server] is reported as needing a restart; hooks still reload.
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:1\"\n{CHAIN_B}"),
    )
    .unwrap();
    server.signal("HUP");
    let line = server.wait_for_log("take effect only on restart");
    assert!(line.contains("server"), "{line}");
    let res = bounded(c.hset("t", "k", "v")).await.unwrap();
    assert_eq!(res.message, "B2;B1;");
    drop(c);
    assert!(server.terminate().success());
}
