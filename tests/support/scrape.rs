//! `/metrics` seen from outside: a server binary with `[metrics] listen`,
//! an HTTP GET, and a real Prometheus text parser (`prometheus-parse`).

use std::net::SocketAddr;
use std::path::Path;

use prometheus_parse::{LineInfo, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{bounded, Running};

/// Starts the server binary on `config` (written to a file in `dir`);
/// returns it and its `/metrics` address, read from its log.
pub fn start(dir: &Path, config: &str) -> (Running, SocketAddr) {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let server = Running::start(&path);
    let line = server.wait_for_log("serving /metrics");
    let addr = line
        .split("metrics=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    (server, addr)
}

/// `GET path` over HTTP/1.1: the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = bounded(TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let mut response = String::new();
    bounded(stream.read_to_string(&mut response)).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Scrapes `/metrics`, checks every line is one the Prometheus text format
/// allows, and parses it.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    for line in body.lines() {
        match LineInfo::parse(line) {
            LineInfo::Sample { value, .. } => {
                assert!(
                    value.parse::<f64>().is_ok() || value == "+Inf",
                    "not a number: {line}"
                )
            }
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Empty => {}
            LineInfo::Ignored => panic!("not Prometheus text: {line:?}\n{body}"),
        }
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample `metric{labels}` (labels given must match;
/// others may be present), if there is one.
pub fn sample(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric}: not a number: {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{metric}{labels:?}: {found:?}");
    found.first().copied()
}

/// Like [`sample`], for a sample that must be there.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sample(scrape, metric, labels)
        .unwrap_or_else(|| panic!("no sample {metric}{labels:?} in {:#?}", scrape.samples))
}
