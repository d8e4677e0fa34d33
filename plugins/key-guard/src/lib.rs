//! `key-guard`: a hookv plugin that refuses writes (hset, hmset, hdel,
//! hmdel) naming a key longer than `max_key_len` bytes, with a 400; the
//! write never reaches storage.
//!
//! ```toml
//! [[hooks]]
//! plugin = "target/release/libkey_guard.so"
//! max_key_len = 64          # bytes; default 256
//! ```

use std::ops::ControlFlow;

use hookv_plugin::pb::{status, CommandResponse};
use hookv_plugin::{Context, Events, Flow, Options, Plugin, Request};

/// The plugin's state: just its limit.
pub struct KeyGuard {
    max_key_len: usize,
}

impl Plugin for KeyGuard {
    const EVENTS: Events = Events::RECEIVED;

    fn init(options: &Options) -> Result<Self, String> {
        options.only(&["max_key_len"])?;
        let max_key_len: u32 = options.get("max_key_len")?.unwrap_or(256);
        Ok(Self {
            max_key_len: max_key_len as usize,
        })
    }

    fn on_received(&self, _ctx: &Context<'_>, req: &Request<'_>) -> Flow {
        if !req.is_write() {
            return ControlFlow::Continue(());
        }
        match req.keys().into_iter().find(|k| k.len() > self.max_key_len) {
            Some(key) => ControlFlow::Break(CommandResponse::error(
                status::BAD_REQUEST,
                format!(
                    "key of {} bytes is longer than the limit of {} (key-guard max_key_len)",
                    key.len(),
                    self.max_key_len
                ),
            )),
            None => ControlFlow::Continue(()),
        }
    }
}

hookv_plugin::export_plugin!(KeyGuard);
