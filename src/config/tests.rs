//! The config's own checks: what parses, what is refused and how it is named.

use std::net::SocketAddr;
use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("config.toml"))
}

#[test]
fn hooks_keep_their_order_and_lines() {
    let c =
        parse("[[hooks]]\nkind = \"auth\"\n\n[[hooks]]\nplugin = \"x.so\"\nlimit = 3\n").unwrap();
    assert_eq!(c.hooks.len(), 2);
    assert_eq!((c.hooks[0].index, c.hooks[0].kind()), (1, Some("auth")));
    assert_eq!(c.hooks[1].plugin(), Some("x.so"));
    assert_eq!(c.hooks[1].line, 4);
    assert_eq!(c.hooks[1].label(), "hooks[2] (plugin = \"x.so\")");
}

#[test]
fn empty_file_is_the_defaults() {
    let c = parse("").unwrap();
    let d = Config::default();
    assert_eq!((c.server, c.storage, c.log), (d.server, d.storage, d.log));
    assert!(c.hooks.is_empty());
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("config.toml:3:1:"), "{msg}");
    assert!(msg.contains("listn"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn sled_sync_defaults_to_always() {
    let c = parse("[storage]\nbackend = \"sled\"\n").unwrap();
    assert_eq!(c.storage.sync, SyncPolicy::Always);
    let c = parse("[storage]\nsync = \"everysec\"\n").unwrap();
    assert_eq!(c.storage.sync, SyncPolicy::Everysec);
}

#[test]
fn bad_values_are_refused() {
    let msg = parse("[server]\nlisten = \"nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("config.toml:2:"), "{msg}");
    let msg = parse("[storage]\nbackend = \"redis\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("redis"), "{msg}");
    let msg = parse("[server]\nmax_frame_bytes = 0\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("server.max_frame_bytes"), "{msg}");
    let msg = parse("[storage]\nbackend = \"sled\"\nsync = \"sometimes\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("config.toml:3:"), "{msg}");
    assert!(
        msg.contains("storage.sync") && msg.contains("everysec"),
        "{msg}"
    );
    let msg = parse("[server]\nmax_frame_bytes = 4294967295\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("server.max_frame_bytes"), "{msg}");
}

#[test]
fn out_of_range_numbers_name_file_line_and_key_in_one_line() {
    let msg = parse("[server]\nlisten = \"127.0.0.1:1\"\nworker_threads = 100000\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(
            "config.toml:3:18: server.worker_threads = 100000: must be between 0 and 1024"
        ),
        "{msg}"
    );
    for (line, max) in [
        ("max_frame_bytes = 255", "1073741824"),
        ("max_connections = 1000001", "1000000"),
        ("max_unauthenticated = 0", "1024"),
        ("idle_timeout_secs = 18446744073709551615", "604800"),
        ("frame_timeout_secs = 0", "3600"),
        ("auth_timeout_secs = 3601", "3600"),
        ("write_timeout_secs = 0", "3600"),
        ("max_unsent_bytes = 1048576", "1099511627776"),
        ("shutdown_grace_secs = 86400", "3600"),
        ("worker_threads = 1025", "1024"),
    ] {
        let key = line.split(' ').next().unwrap();
        let msg = parse(&format!("# limits\n[server]\n\n{line}\n"))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("config.toml:4:"), "{line}: {msg}");
        assert!(msg.contains(&format!("server.{key} = ")), "{line}: {msg}");
        assert!(msg.contains(&format!("and {max}")), "{line}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn redis_cluster_keys_parse_with_defaults() {
    let c = parse(
        "[storage]\nbackend = \"redis-cluster\"\nnodes = [\"127.0.0.1:7000\", \"[::1]:7001\", \"redis-0.local:6379\"]\n",
    )
    .unwrap();
    assert_eq!(c.storage.backend, Backend::RedisCluster);
    assert_eq!(c.storage.nodes.len(), 3);
    assert_eq!(c.storage.key_prefix, "hookv:");
    assert_eq!((c.storage.timeout_ms, c.storage.wait_replicas), (2000, 0));
    assert_eq!((c.storage.username, c.storage.password_env), (None, None));
    let c = parse(
        "[storage]\nbackend = \"redis-cluster\"\nnodes = [\"h:1\"]\nkey_prefix = \"app/\"\n\
         username = \"hookv\"\ntimeout_ms = 10\nwait_replicas = 16\n",
    )
    .unwrap();
    assert_eq!(c.storage.key_prefix, "app/");
    assert_eq!(c.storage.username.as_deref(), Some("hookv"));
    // The other backends ignore the cluster's keys (but not their ranges).
    parse("[storage]\nbackend = \"sled\"\nnodes = []\n").unwrap();
}

#[test]
fn redis_cluster_mistakes_name_file_line_and_key_in_one_line() {
    let cluster = "[storage]\nbackend = \"redis-cluster\"\n";
    for (rest, line, key) in [
        // No nodes at all: the backend's line is the one to fix.
        ("", 2, "storage.nodes = []"),
        ("nodes = []\n", 3, "storage.nodes = []"),
        (
            "nodes = [\"127.0.0.1\"]\n",
            3,
            "storage.nodes = \"127.0.0.1\": must be host:port",
        ),
        ("nodes = [\"h:0\"]\n", 3, "storage.nodes = \"h:0\""),
        ("nodes = [\"::1:7000\"]\n", 3, "in brackets"),
        ("nodes = [\"redis://h:1\"]\n", 3, "storage.nodes"),
        (
            "nodes = [\"h:1\"]\nkey_prefix = \"\"\n",
            4,
            "storage.key_prefix",
        ),
        ("nodes = [\"h:1\"]\nkey_prefix = \"a{b}\"\n", 4, "hash tag"),
        (
            "nodes = [\"h:1\"]\nusername = \"\"\n",
            4,
            "storage.username",
        ),
        (
            "nodes = [\"h:1\"]\ntimeout_ms = 0\n",
            4,
            "storage.timeout_ms = 0: must be between 10 and 60000",
        ),
        (
            "nodes = [\"h:1\"]\ntimeout_ms = 60001\n",
            4,
            "storage.timeout_ms",
        ),
        (
            "nodes = [\"h:1\"]\nwait_replicas = 17\n",
            4,
            "storage.wait_replicas = 17: must be between 0 and 16",
        ),
        (
            "nodes = [\"h:1\"]\npassword = \"secret\"\n",
            4,
            "unknown field `password`",
        ),
        (
            "nodes = [\"h:1\"]\npassword_env = \"\"\n",
            4,
            "storage.password_env",
        ),
        (
            "nodes = [\"h:1\"]\npassword_env = \"HOOKV_TEST_UNSET_PASSWORD_VARIABLE\"\n",
            4,
            "HOOKV_TEST_UNSET_PASSWORD_VARIABLE is not set",
        ),
    ] {
        let msg = parse(&format!("{cluster}{rest}")).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("config.toml:{line}:")),
            "{rest}: {msg}"
        );
        assert!(msg.contains(key), "{rest}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // A variable that is set: accepted, and its value is not in the config.
    let c = parse(&format!(
        "{cluster}nodes = [\"h:1\"]\npassword_env = \"PATH\"\n"
    ))
    .unwrap();
    assert_eq!(c.storage.password_env.as_deref(), Some("PATH"));
}

#[test]
fn limits_that_follow_other_keys_are_checked_against_them() {
    // At most max_connections connections can be unauthenticated.
    let msg = parse("[server]\nmax_connections = 10\nmax_unauthenticated = 11\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(
            "config.toml:3:23: server.max_unauthenticated = 11: must be between 1 and 10"
        ),
        "{msg}"
    );
    let c = parse("[server]\nmax_connections = 10\n").unwrap();
    assert_eq!(c.server.max_unauthenticated(), 2);
    assert_eq!(parse("").unwrap().server.max_unauthenticated(), 256);
    // Raising max_frame_bytes past what the default max_unsent_bytes
    // can hold points at the key that was changed.
    let msg = parse("[server]\nmax_frame_bytes = 1073741824\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(
            "config.toml:2:19: server.max_frame_bytes = 1073741824: must be between 2151677952"
        ),
        "{msg}"
    );
    parse("[server]\nmax_frame_bytes = 1073741824\nmax_unsent_bytes = 2151677952\n").unwrap();
}

const TLS: &str = "[server]\nlisten = \"127.0.0.1:9527\"\n\n[server.tls]\n\
                   cert = \"certs/server.pem\"\nkey = \"/etc/hookv/server.key\"\n";

#[test]
fn server_tls_paths_are_relative_to_the_config_file() {
    let text = format!("{TLS}client_ca = \"clients.pem\"\nplaintext_listen = \"127.0.0.1:9528\"\n");
    let mut c = parse(&text).unwrap();
    c.resolve_paths(PathBuf::from("/srv/hookv"));
    let tls = c.server.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/srv/hookv/certs/server.pem"));
    assert_eq!(tls.key, Path::new("/etc/hookv/server.key"));
    assert_eq!(tls.client_ca.unwrap(), Path::new("/srv/hookv/clients.pem"));
    assert_eq!(
        tls.plaintext_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9528)))
    );
    assert_eq!(parse("").unwrap().server.tls, None);
}

#[test]
fn server_tls_mistakes_name_file_line_and_key() {
    let one_line = |text: &str| {
        let msg = parse(text).unwrap_err().to_string();
        assert!(!msg.contains('\n'), "{msg}");
        msg
    };
    let msg = one_line("[server.tls]\ncert = \"c.pem\"\n");
    assert!(msg.starts_with("config.toml:1:"), "{msg}");
    assert!(msg.contains("missing field `key`"), "{msg}");
    let msg = one_line(&format!("{TLS}ca = \"clients.pem\"\n"));
    assert!(msg.starts_with("config.toml:7:1:"), "{msg}");
    assert!(msg.contains("unknown field `ca`"), "{msg}");
    let msg = one_line("[server.tls]\ncert = \"c.pem\"\nkey = \"\"\n");
    assert_eq!(msg, "config.toml:3:7: server.tls.key = \"\": needs a file");
    let msg = one_line(&format!("{TLS}plaintext_listen = \"127.0.0.1:9527\"\n"));
    assert!(
        msg.starts_with(
            "config.toml:7:20: server.tls.plaintext_listen = \"127.0.0.1:9527\": must differ"
        ),
        "{msg}"
    );
    // Two listeners on port 0 get two ports.
    parse("[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"c\"\nkey = \"k\"\nplaintext_listen = \"127.0.0.1:0\"\n").unwrap();
}

#[test]
fn a_server_without_a_tls_listener_refuses_server_tls_rather_than_serve_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, TLS).unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:4:", path.display())), "{msg}");
    assert!(
        msg.contains("server.tls: this hookv-server cannot serve TLS yet"),
        "{msg}"
    );
    std::fs::write(&path, "[server]\n").unwrap();
    Config::load(&path).unwrap();
}

#[test]
fn the_checked_in_server_tls_example_parses_once_uncommented() {
    let text = include_str!("../../config.toml");
    let start = text.find("# [server.tls]\n").unwrap();
    let block: String = text[start..]
        .lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    let tls = parse(&block).unwrap().server.tls.unwrap();
    assert_eq!(tls.client_ca, Some(PathBuf::from("certs/ca.pem")));
    assert!(tls.plaintext_listen.is_some());
}

#[test]
fn metrics_listen_is_off_by_default_and_its_mistakes_name_file_line_and_key() {
    assert_eq!(parse("").unwrap().metrics.listen, None);
    let c = parse("[metrics]\nlisten = \"127.0.0.1:9100\"\n").unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
    let msg = parse("[metrics]\nlisten = \"127.0.0.1:9527\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(
            "config.toml:2:10: metrics.listen = \"127.0.0.1:9527\": must differ from server.listen"
        ),
        "{msg}"
    );
    let msg = parse("[metrics]\nlisen = \"127.0.0.1:9100\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("config.toml:2:1:"), "{msg}");
    assert!(msg.contains("unknown field `lisen`"), "{msg}");
    let msg = parse("[metrics]\nlisten = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("config.toml:2:10:"), "{msg}");
    // Both on port 0: two free ports.
    parse("[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n").unwrap();
}

#[test]
fn the_checked_in_metrics_example_parses_once_uncommented() {
    let text = include_str!("../../config.toml");
    let start = text.find("# [metrics]\n").unwrap();
    let block: String = text[start..]
        .lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# "))
        .map(|line| format!("{line}\n"))
        .collect();
    let listen = parse(&block).unwrap().metrics.listen;
    assert_eq!(listen, Some("127.0.0.1:9100".parse().unwrap()));
}
