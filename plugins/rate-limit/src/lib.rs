//! `rate-limit`: a hookv plugin that gives each client a token bucket and
//! answers 429 when it is empty; the request is not executed.
//!
//! A client is its authenticated principal if it has one, else its IP
//! address (every connection from one address shares a bucket). A bucket
//! holds up to `burst` requests and refills at `per_second` requests per
//! second.
//!
//! ```toml
//! [[hooks]]
//! plugin = "target/release/librate_limit.so"
//! per_second = 100.0   # sustained rate; above 0
//! burst = 20           # requests at once; at least 1 (default 1)
//! ```
//!
//! A refusal reads `rate limit for 127.0.0.1: at most 100 requests a second,
//! 20 at once; retry in 7 ms`.
//!
//! It talks back to the server (plugin ABI version 2): at start it logs its
//! limits (`plugin=rate-limit limits per_second=100 burst=20 per client`),
//! and it counts its refusals in `hookv_plugin_refused_total{plugin="rate-limit"}`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Instant;

use hookv_plugin::pb::{status, CommandResponse};
use hookv_plugin::{Context, Counter, Events, Flow, Log, Options, Plugin, Request};

/// Buckets past this many are pruned of the full ones (a full bucket is
/// the same as no bucket), so the map does not grow with every client seen.
const PRUNE_AT: usize = 10_000;

/// The limits and one bucket per client.
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    /// One lock for all clients: held for a few arithmetic operations.
    /// foldhash (its `quality` variant: the keys are addresses clients
    /// partly choose), seeded per process: SipHash (the default) was a
    /// fifth of the plugin's time per request.
    buckets: Mutex<HashMap<String, Bucket, foldhash::quality::RandomState>>,
    /// Requests refused (429), in the server's metrics.
    refused: Counter,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    /// Takes a token from `who`'s bucket; `Err(seconds)` until one is there.
    fn take(&self, who: &str) -> Result<(), f64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get_mut(who) else {
            // First request from `who`: a full bucket, less this request.
            if buckets.len() >= PRUNE_AT {
                let (rate, burst) = (self.per_second, self.burst);
                buckets.retain(|_, b| {
                    b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
                });
            }
            let tokens = self.burst - 1.0;
            buckets.insert(
                who.to_owned(),
                Bucket {
                    tokens,
                    updated: now,
                },
            );
            return Ok(());
        };
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / self.per_second)
        }
    }
}

impl Plugin for RateLimit {
    const EVENTS: Events = Events::RECEIVED;

    fn init(options: &Options) -> Result<Self, String> {
        options.only(&["per_second", "burst"])?;
        let per_second: f64 = options.require("per_second")?;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "per_second = {per_second}: must be a number above 0 (requests a second, per client)"
            ));
        }
        let burst: u32 = options.get("burst")?.unwrap_or(1);
        if burst == 0 {
            return Err("burst = 0: must be at least 1 (requests at once, per client)".to_owned());
        }
        Log::plugin().info(format!(
            "limits per_second={per_second} burst={burst} per client (its user once \
             authenticated, else its IP address)"
        ));
        Ok(Self {
            per_second,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::default()),
            refused: Counter::with_help(
                "refused_total",
                "Requests the rate-limit plugin refused with 429.",
            ),
        })
    }

    fn on_received(&self, ctx: &Context<'_>, _req: &Request<'_>) -> Flow {
        let who = ctx.principal.unwrap_or_else(|| ctx.peer_ip());
        match self.take(who) {
            Ok(()) => ControlFlow::Continue(()),
            Err(wait) => {
                self.refused.increment(1);
                ControlFlow::Break(CommandResponse::error(
                    status::TOO_MANY_REQUESTS,
                    format!(
                        "rate limit for {who}: at most {} a second, {} at once; retry in {} ms",
                        requests(self.per_second),
                        self.burst,
                        (wait * 1000.0).ceil()
                    ),
                ))
            }
        }
    }
}

/// `1 request`, `2 requests`, `0.5 requests`.
fn requests(n: f64) -> String {
    if n == 1.0 {
        "1 request".to_owned()
    } else {
        format!("{n} requests")
    }
}

hookv_plugin::export_plugin!(RateLimit);
