//! `[metrics]`: where the Prometheus text is served.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[metrics]`. The figures are counted whether or not it is there (the
/// `stats` request reads them); `listen` adds the Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (Prometheus text) on this address. Default
    /// none: no endpoint. Must differ from `[server] listen` and
    /// `[server.tls] plaintext_listen`.
    pub listen: Option<SocketAddr>,
}
