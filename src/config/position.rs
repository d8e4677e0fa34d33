//! Where a key is written in `config.toml`, so that an error can name its
//! line: read again from the text only when a value turns out to be refused.

use serde::Deserialize;

/// Where the restart-only sections' keys are written: read again from the
/// text only when a value turns out to be refused, to name its line.
#[derive(Deserialize)]
struct Positions {
    #[serde(default)]
    server: Spans,
    #[serde(default)]
    storage: Spans,
    #[serde(default)]
    metrics: Spans,
}

/// Where each key of a table is written.
type Spans = std::collections::BTreeMap<String, toml::Spanned<serde::de::IgnoredAny>>;

/// `[server.tls]`, the one nested table whose keys are range-checked.
#[derive(Deserialize)]
struct TlsPositions {
    server: TlsSection,
}

#[derive(Deserialize)]
struct TlsSection {
    tls: Spans,
}

/// 1-based line and column of the value of `key` (`"server.max_connections"`,
/// `"server.tls.cert"`) in `text`, if the key is written there.
pub(super) fn position(text: &str, key: &str) -> Option<(usize, usize)> {
    let span = match key.split('.').collect::<Vec<_>>()[..] {
        ["server", "tls", name] => {
            let positions: TlsPositions = toml::from_str(text).ok()?;
            positions.server.tls.get(name)?.span()
        }
        [section, name] => {
            let positions: Positions = toml::from_str(text).ok()?;
            let table = match section {
                "server" => &positions.server,
                "storage" => &positions.storage,
                "metrics" => &positions.metrics,
                _ => return None,
            };
            table.get(name)?.span()
        }
        _ => return None,
    };
    Some(line_column(text, span.start))
}

/// 1-based line and column of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
