//! One hook call through the plugin ABI (the built `key-guard` library)
//! against the same logic as a built-in hook, and one `rate-limit` call, both called as the chain
//! calls them (`Arc<dyn Hook>`). The first run builds the example plugins
//! (as the tests do).
//!
//! ```text
//! cargo bench --bench plugin_call
//! ```

#[path = "../tests/support/plugins.rs"]
#[allow(dead_code)]
mod plugins;

use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use hookv::hooks::{Events, Flow, Hook, HookCtx};
use hookv::pb::{status, CommandRequest, CommandResponse};
use hookv::plugin::PluginHook;
use prost::Message;

/// key-guard's logic as a built-in hook.
struct BuiltinKeyGuard {
    max_key_len: usize,
}

impl Hook for BuiltinKeyGuard {
    fn name(&self) -> &str {
        "builtin-key-guard"
    }
    fn events(&self) -> Events {
        Events {
            received: true,
            ..Events::NONE
        }
    }
    fn on_received(&self, _ctx: &mut HookCtx, req: &CommandRequest) -> Flow {
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

fn calls(c: &mut Criterion) {
    let plugin: Arc<dyn Hook> = Arc::new(
        PluginHook::load(&plugins::plugin("key-guard"), r#"{"max_key_len": 16}"#)
            .expect("load key-guard"),
    );
    let builtin: Arc<dyn Hook> = Arc::new(BuiltinKeyGuard { max_key_len: 16 });
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let pass = CommandRequest::new_hset("bench", "key-0042", "value-0123456789".into());
    let refuse = CommandRequest::new_hset("bench", "a-key-that-is-too-long", "v".into());
    let read = CommandRequest::new_hget("bench", "key-0042");

    let mut group = c.benchmark_group("on_received");
    for (name, hook) in [("abi", &plugin), ("builtin", &builtin)] {
        for (case, req) in [
            ("hset-pass", &pass),
            ("hset-refuse", &refuse),
            ("hget", &read),
        ] {
            // As on a connection: the frame as it arrived rides along, so
            // a plugin call passes those bytes on instead of encoding.
            let mut ctx = HookCtx::new(1, peer).with_request_frame(req.encode_to_vec().into());
            group.bench_function(format!("{name}/{case}"), |b| {
                b.iter(|| black_box(hook.on_received(&mut ctx, black_box(req))))
            });
        }
    }
    // rate-limit never looks at the request: the cost of a call as such.
    let limit: Arc<dyn Hook> = Arc::new(
        PluginHook::load(
            &plugins::plugin("rate-limit"),
            r#"{"per_second": 1e12, "burst": 1000000000}"#,
        )
        .expect("load rate-limit"),
    );
    let mut ctx = HookCtx::new(1, peer).with_request_frame(pass.encode_to_vec().into());
    group.bench_function("abi/rate-limit/hset", |b| {
        b.iter(|| black_box(limit.on_received(&mut ctx, black_box(&pass))))
    });
    group.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
