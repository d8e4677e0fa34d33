//! A real Redis Cluster on loopback: Debian's `redis-server` processes, each
//! in its own temporary directory, joined by `redis-cli --cluster create`.
//!
//! - [`Cluster::shared`]: one 3-master, 3-replica cluster per test binary,
//!   for tests that do not disturb it (each uses its own key prefix).
//! - [`Cluster::start`]: a cluster of one's own (for killing nodes).
//!
//! Nodes listen on free ports below 55536 whose cluster bus port (+10000)
//! is free too. Every node dies with its cluster (`Drop`), and a watchdog
//! process kills them if the test process dies without dropping it (a
//! crash, or the shared cluster, which lives in a `static` and is never
//! dropped): it polls the test process and `kill -9`s the nodes once it is
//! gone.
//!
//! No `redis-server` on the machine is a failure, not a skip:
//! `scripts/test.sh` installs it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long starting a cluster (or any wait on one) may take.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Ports handed out in this process (a node's and its bus port), so two
/// clusters started at once never pick the same.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A key prefix no other test (of any test binary running now) uses:
/// `tag`, the process id and a counter.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Node {
    pub port: u16,
    child: Mutex<Child>,
    dir: PathBuf,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    watchdog: Mutex<Child>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The cluster shared by the tests of this binary: 3 masters, 3
    /// replicas, cluster-node-timeout 2000 ms.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(3, 1, 2000))
    }

    /// Starts `masters` masters with `replicas` replicas each; returns once
    /// every node says the cluster is ok and every replica is in sync.
    pub fn start(masters: usize, replicas: usize, node_timeout_ms: u64) -> Cluster {
        require_redis();
        let dir = tempfile::tempdir().expect("tempdir");
        let count = masters * (1 + replicas);
        let nodes: Vec<Node> = (0..count)
            .map(|i| start_node(&dir.path().join(format!("node{i}")), node_timeout_ms))
            .collect();
        let watchdog = watchdog(&nodes);
        let cluster = Cluster {
            nodes,
            watchdog: Mutex::new(watchdog),
            _dir: dir,
        };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes");
        let out = run_bounded(&mut create, START_LIMIT);
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until(
            START_LIMIT,
            "the cluster to be ok with every replica in sync",
            |c| {
                c.nodes.iter().all(|n| {
                    let info = c.cli(n.port, &["cluster", "info"]);
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{count}"))
                }) && c.masters().len() == masters
                    && c.replicas_in_sync() == masters * replicas
            },
        );
        cluster
    }

    /// `host:port` of every node, as seeds.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// Runs `redis-cli -p PORT ARGS...` (bounded), returning its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = run_bounded(
            Command::new("redis-cli")
                .arg("-p")
                .arg(port.to_string())
                .args(args),
            Duration::from_secs(5),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The live masters and the slot ranges each serves, from a live node's
    /// `CLUSTER NODES`.
    pub fn masters(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let Some(port) = self.live_ports().into_iter().next() else {
            return Vec::new();
        };
        self.cli(port, &["cluster", "nodes"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let port = fields
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                let ranges = fields
                    .iter()
                    .skip(8)
                    .filter(|r| !r.starts_with('['))
                    .filter_map(|r| match r.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => r.parse().ok().map(|s| (s, s)),
                    })
                    .collect::<Vec<(u16, u16)>>();
                (!ranges.is_empty()).then_some((port, ranges))
            })
            .collect()
    }

    /// The port of the master serving `slot`, if any is.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        self.masters()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|(port, _)| port)
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        self.cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// Replicas whose link to their master is up.
    fn replicas_in_sync(&self) -> usize {
        self.live_ports()
            .into_iter()
            .filter(|&port| {
                let info = self.cli(port, &["info", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            })
            .count()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.lock().unwrap().try_wait().ok().flatten().is_none())
            .map(|n| n.port)
            .collect()
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// `kill -9` of the node on `port`.
    pub fn kill(&self, port: u16) {
        let mut child = self.node(port).child.lock().unwrap();
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the node on `port`.
    pub fn signal(&self, port: u16, signal: &str) {
        let pid = self.node(port).child.lock().unwrap().id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Polls `ready` until it holds, failing after `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, ready: impl Fn(&Cluster) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            if start.elapsed() > limit {
                let logs: String = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let log = std::fs::read_to_string(n.dir.join("log")).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(8).collect();
                        format!(
                            "--- node {}:\n{}\n",
                            n.port,
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!("gave up waiting for {what} after {limit:?}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The watchdog first, so it never outlives the nodes it may kill.
        if let Ok(mut watchdog) = self.watchdog.lock() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        for node in &self.nodes {
            if let Ok(mut child) = node.child.lock() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Fails the test, saying how to fix it, when redis-server is missing.
fn require_redis() {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is not installed: the Redis Cluster tests need Debian's redis-server 7.x \
             (run the tests with scripts/test.sh, which installs it, or apt-get install redis-server)"
        );
    }
}

/// A free port below 55536 whose bus port (+10000) is free too.
fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if port >= 55536 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
            continue;
        }
        let mut taken = TAKEN.lock().unwrap();
        let taken = taken.get_or_insert_with(HashSet::new);
        if taken.contains(&port) || taken.contains(&(port + 10000)) {
            continue;
        }
        taken.insert(port);
        taken.insert(port + 10000);
        return port;
    }
    panic!("no free port pair below 55536");
}

/// Starts one cluster-enabled redis-server in `dir`, on a free port;
/// tries other ports if another process took the one picked.
fn start_node(dir: &Path, node_timeout_ms: u64) -> Node {
    std::fs::create_dir_all(dir).expect("node dir");
    for _ in 0..5 {
        let port = free_port();
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n\
                 dir {}\nlogfile log\nsave \"\"\nappendonly no\n\
                 cluster-enabled yes\ncluster-config-file nodes.conf\n\
                 cluster-node-timeout {node_timeout_ms}\n\
                 cluster-allow-replica-migration no\n\
                 repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n",
                dir.display()
            ),
        )
        .expect("write redis.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let node = Node {
            port,
            child: Mutex::new(child),
            dir: dir.to_owned(),
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = node.child.lock().unwrap().try_wait() {
                break; // it exited: the port was taken after all
            }
            let pong = run_bounded(
                Command::new("redis-cli")
                    .arg("-p")
                    .arg(port.to_string())
                    .arg("ping"),
                Duration::from_secs(2),
            );
            if String::from_utf8_lossy(&pong.stdout).trim() == "PONG" {
                return node;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = node.child.lock().unwrap().kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server did not start in {}", dir.display());
}

/// A process that `kill -9`s the nodes once this test process is gone.
fn watchdog(nodes: &[Node]) -> Child {
    let pids: Vec<String> = nodes
        .iter()
        .map(|n| n.child.lock().unwrap().id().to_string())
        .collect();
    // Gone: no /proc entry, or a zombie (exited, not yet reaped).
    let script = format!(
        "while [ -e /proc/{test} ] && ! grep -q '^State:[[:space:]]*Z' /proc/{test}/status 2>/dev/null; \
         do sleep 0.2; done; \
         for p in {pids}; do grep -q redis-server /proc/$p/cmdline 2>/dev/null && kill -9 $p; done",
        test = std::process::id(),
        pids = pids.join(" ")
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the watchdog")
}

/// Runs `cmd`, killing it and failing after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
