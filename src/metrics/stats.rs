//! The `stats` request's answer: the figures as `pairs`, for a person
//! (`hookv-cli stats`) and for scripts.
//!
//! Each pair's key is `section.name` (sections as in Redis `INFO`), in a
//! fixed order, section by section; the value is an integer, but for
//! `server.version` (a string) and `usec_per_call` (a float). A key's
//! suffix gives its unit: `_bytes`, `_seconds`, `_usec` (microseconds);
//! anything else is a count. Keys with a count of zero that only say "this
//! never happened" (a command never called, a status never answered) are
//! left out; the rest are always there.
//!
//! | section | keys |
//! |---|---|
//! | `server` | `version`, `uptime_seconds` |
//! | `clients` | `connected`, `unauthenticated`, `accepted` |
//! | `stats` | `requests`, `frame_errors_<reason>` for each reason of `hookv_frame_errors_total` |
//! | `commandstats` | per command called: `<command>.calls`, `.usec`, `.usec_per_call`, `.status_<code>` per status answered (`status_other` for one outside the usual set) |
//! | `errorstats` | `status_<code>`: answers with that (non-200) status, over all commands |
//! | `persistence` | `wal_bytes`, `wal_fsyncs`, `wal_fsync_usec`, `wal_compactions` |
//! | `audit` | `queue_records`, `dropped`, `lost` |
//! | `reloads` | `ok`, `failed` |
//! | `storage` | `errors`, `cluster_round_trips`, `cluster_errors` |
//! | `hookstats` | per hook and event built (`<hook>:<event>`, e.g. `auth:on_received`): `.calls`, `.panics`, `.status_<code>` per status it answered a `Break` with |
//! | `pluginstats` | per plugin loaded: `<plugin>.panics`, `<plugin>.errors` |
//!
//! The time inside a hook is sampled, and metrics a plugin registers go to
//! the Prometheus recorder only: both are at `/metrics`, not here.

use hookv_plugin::pb::{CommandResponse, Kvpair, Value};

use super::{command_name, figures, Snapshot, FRAME_REASONS, STATUS_LABELS};

/// The table an auth hook treats `stats` as reading: a user may send
/// `stats` if one of its `read` patterns matches this name.
pub const STATS_TABLE: &str = hookv_plugin::catalogue::STATS_TABLE;

/// The answer to `stats`: the figures now.
pub fn answer() -> CommandResponse {
    CommandResponse {
        pairs: pairs(&figures().snapshot()),
        ..CommandResponse::ok()
    }
}

fn pair(key: impl Into<String>, value: impl Into<Value>) -> Kvpair {
    Kvpair {
        key: key.into(),
        value: Some(value.into()),
    }
}

fn int(n: u64) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

fn usec(ns: u64) -> u64 {
    ns / 1_000
}

/// The pairs of a snapshot, in the documented order.
fn pairs(s: &Snapshot) -> Vec<Kvpair> {
    let mut out = vec![
        pair("server.version", env!("CARGO_PKG_VERSION")),
        pair("server.uptime_seconds", int(s.uptime.as_secs())),
        pair("clients.connected", int(s.connections_open)),
        pair("clients.unauthenticated", int(s.unauthenticated)),
        pair("clients.accepted", int(s.connections_accepted)),
    ];
    let total: u64 = s.requests.iter().flatten().sum();
    out.push(pair("stats.requests", int(total)));
    for (reason, &n) in FRAME_REASONS.iter().zip(&s.frame_errors) {
        out.push(pair(format!("stats.frame_errors_{reason}"), int(n)));
    }
    for (slot, by_status) in s.requests.iter().enumerate() {
        let calls: u64 = by_status.iter().sum();
        if calls == 0 {
            continue;
        }
        let name = command_name(slot);
        let ns = s.latency_ns[slot];
        out.push(pair(format!("commandstats.{name}.calls"), int(calls)));
        out.push(pair(format!("commandstats.{name}.usec"), int(usec(ns))));
        let per_call = ns as f64 / 1_000.0 / calls as f64;
        out.push(pair(format!("commandstats.{name}.usec_per_call"), per_call));
        for (status, &n) in by_status.iter().enumerate() {
            if n > 0 {
                let label = STATUS_LABELS[status];
                out.push(pair(format!("commandstats.{name}.status_{label}"), int(n)));
            }
        }
    }
    // Status slot 0 is 200: not an error.
    for (status, label) in STATUS_LABELS.iter().enumerate().skip(1) {
        let n: u64 = s.requests.iter().map(|by_status| by_status[status]).sum();
        if n > 0 {
            out.push(pair(format!("errorstats.status_{label}"), int(n)));
        }
    }
    out.extend([
        pair("persistence.wal_bytes", int(s.wal_bytes)),
        pair("persistence.wal_fsyncs", int(s.wal_fsyncs)),
        pair("persistence.wal_fsync_usec", int(usec(s.wal_fsync_ns))),
        pair("persistence.wal_compactions", int(s.wal_compactions)),
        pair("audit.queue_records", int(s.audit_queue)),
        pair("audit.dropped", int(s.audit_dropped)),
        pair("audit.lost", int(s.audit_lost)),
        pair("reloads.ok", int(s.reloads[0])),
        pair("reloads.failed", int(s.reloads[1])),
        pair("storage.errors", int(s.storage_errors)),
        pair("storage.cluster_round_trips", int(s.cluster_round_trips)),
        pair("storage.cluster_errors", int(s.cluster_errors)),
    ]);
    for row in &s.hooks {
        let name = format!("hookstats.{}:{}", row.hook, row.event);
        out.push(pair(format!("{name}.calls"), int(row.calls)));
        out.push(pair(format!("{name}.panics"), int(row.panics)));
        for (status, &n) in row.breaks.iter().enumerate() {
            if n > 0 {
                let label = STATUS_LABELS[status];
                out.push(pair(format!("{name}.status_{label}"), int(n)));
            }
        }
    }
    for row in &s.plugins {
        out.push(pair(
            format!("pluginstats.{}.panics", row.plugin),
            int(row.panics),
        ));
        out.push(pair(
            format!("pluginstats.{}.errors", row.plugin),
            int(row.errors),
        ));
    }
    out
}

/// A `stats` answer for a person, grouped like Redis `INFO`: a `# Section`
/// heading, then `name: value` lines, values in human units (`1.5 MiB`,
/// `4.2 µs`, `2h 03m 04s`, counts with thousands separators); each
/// command's figures on one line (`hget: calls=1,234 time=5.1 ms
/// per_call=4.2 µs 200=1,200 404=34`), and so each hook's and plugin's
/// (`auth:on_received: calls=8 panics=0 403=7`).
pub fn human(pairs: &[Kvpair]) -> String {
    let mut out = String::new();
    let mut section = "";
    let mut command: Option<&str> = None;
    for pair in pairs {
        let Some((this, name)) = pair.key.split_once('.') else {
            continue;
        };
        if this != section {
            if command.take().is_some() {
                out.push('\n');
            }
            if !section.is_empty() {
                out.push('\n');
            }
            section = this;
            let mut title = this.chars();
            if let Some(first) = title.next() {
                out.push_str("# ");
                out.extend(first.to_uppercase());
                out.push_str(title.as_str());
                out.push('\n');
            }
        }
        let value = pair.value.clone().unwrap_or_default();
        // <section>.<item>.<figure>: one line per command, hook or plugin.
        let per_item = matches!(this, "commandstats" | "hookstats" | "pluginstats");
        if let (true, Some((cmd, figure))) = (per_item, name.rsplit_once('.')) {
            if command != Some(cmd) {
                if command.is_some() {
                    out.push('\n');
                }
                out.push_str(cmd);
                out.push(':');
                command = Some(cmd);
            }
            let (label, shown) = match figure {
                "usec" => ("time", show(&value, "_usec")),
                "usec_per_call" => ("per_call", show(&value, "_usec")),
                status => (status.trim_start_matches("status_"), show(&value, "")),
            };
            out.push_str(&format!(" {label}={shown}"));
            continue;
        }
        out.push_str(&format!("{name}: {}\n", show(&value, name)));
    }
    if command.is_some() {
        out.push('\n');
    }
    out
}

/// `value` in the unit `name`'s suffix gives.
fn show(value: &Value, name: &str) -> String {
    use hookv_plugin::pb::value::Value as V;
    let number = match &value.value {
        Some(V::Integer(n)) => *n as f64,
        Some(V::Float(x)) => *x,
        _ => return value.to_string(),
    };
    if name.ends_with("_bytes") {
        bytes(number)
    } else if name.ends_with("_usec") {
        micros(number)
    } else if name.ends_with("_seconds") {
        seconds(number as u64)
    } else if let Some(V::Integer(n)) = &value.value {
        thousands(*n)
    } else {
        format!("{number:.2}")
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{value} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

fn micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

fn seconds(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h:02}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_reads_sections_units_and_one_line_per_command() {
        let pairs = vec![
            pair("server.version", "0.1.0"),
            pair("server.uptime_seconds", Value::from(3_723i64)),
            pair("clients.connected", Value::from(3i64)),
            pair("commandstats.hget.calls", Value::from(1_234i64)),
            pair("commandstats.hget.usec", Value::from(5_100i64)),
            pair("commandstats.hget.usec_per_call", Value::from(4.2)),
            pair("commandstats.hget.status_200", Value::from(1_200i64)),
            pair("commandstats.hget.status_404", Value::from(34i64)),
            pair("commandstats.hset.calls", Value::from(1i64)),
            pair("persistence.wal_bytes", Value::from(1_572_864i64)),
            pair("persistence.wal_fsync_usec", Value::from(250i64)),
        ];
        assert_eq!(
            human(&pairs),
            "# Server\nversion: 0.1.0\nuptime_seconds: 1h 02m 03s\n\n\
             # Clients\nconnected: 3\n\n\
             # Commandstats\n\
             hget: calls=1,234 time=5.1 ms per_call=4.2 µs 200=1,200 404=34\n\
             hset: calls=1\n\n\
             # Persistence\nwal_bytes: 1.5 MiB\nwal_fsync_usec: 250.0 µs\n"
        );
    }

    #[test]
    fn a_person_reads_one_line_per_hook_and_per_plugin() {
        let pairs = vec![
            pair("hookstats.auth:on_received.calls", Value::from(8i64)),
            pair("hookstats.auth:on_received.panics", Value::from(0i64)),
            pair("hookstats.auth:on_received.status_403", Value::from(7i64)),
            pair("pluginstats.rate-limit.panics", Value::from(0i64)),
            pair("pluginstats.rate-limit.errors", Value::from(1i64)),
        ];
        assert_eq!(
            human(&pairs),
            "# Hookstats\nauth:on_received: calls=8 panics=0 403=7\n\n\
             # Pluginstats\nrate-limit: panics=0 errors=1\n"
        );
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(seconds(59), "59s");
        assert_eq!(seconds(90_000), "1d 01h 00m");
    }
}
