//! One hook call through the plugin ABI (the built `key-guard` library, at
//! ABI version 2, and the same logic exported at version 1 by `v1-guard`)
//! against the same logic as a built-in hook, and one `rate-limit` call,
//! all called as the chain calls them (`Arc<dyn Hook>`); then a whole
//! request through `Service::execute_in` with no hooks, with a chain of hooks
//! scoped to a table the request does not name, and with the same chain
//! unscoped. The first run builds the example plugins (as the tests do).
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
use hookv::hooks::rewrite::{RewriteHook, RewriteOptions};
use hookv::hooks::{Events, Flow, Hook, HookChain, HookCtx, Placement, RawRequest, Scope};
use hookv::pb::{status, CommandRequest, CommandResponse};
use hookv::plugin::PluginHook;
use hookv::{MemTable, Service, ServiceInner};
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
    let v1: Arc<dyn Hook> = Arc::new(
        PluginHook::load(&plugins::plugin("v1-guard"), r#"{"max_key_len": 16}"#)
            .expect("load v1-guard"),
    );
    let builtin: Arc<dyn Hook> = Arc::new(BuiltinKeyGuard { max_key_len: 16 });
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let pass = CommandRequest::new_hset("bench", "key-0042", "value-0123456789".into());
    let refuse = CommandRequest::new_hset("bench", "a-key-that-is-too-long", "v".into());
    let read = CommandRequest::new_hget("bench", "key-0042");

    let mut group = c.benchmark_group("on_received");
    for (name, hook) in [("abi", &plugin), ("abi-v1", &v1), ("builtin", &builtin)] {
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
    // The same calls on a request still in its bytes, as the connection
    // makes them when only such hooks see an hget or hset.
    let mut ctx = HookCtx::new(1, peer);
    for (case, req) in [
        ("hset-pass", &pass),
        ("hset-refuse", &refuse),
        ("hget", &read),
    ] {
        let frame = req.encode_to_vec();
        let raw = RawRequest::parse(&frame).expect("a plain hget or hset");
        group.bench_function(format!("abi-raw/{case}"), |b| {
            b.iter(|| black_box(plugin.on_received_raw(&mut ctx, black_box(&raw))))
        });
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
    let frame = pass.encode_to_vec();
    let raw = RawRequest::parse(&frame).expect("a plain hset");
    group.bench_function("abi-raw/rate-limit/hset", |b| {
        b.iter(|| black_box(limit.on_received_raw(&mut ctx, black_box(&raw))))
    });
    group.finish();
}

/// key-guard, rate-limit and a rewrite hook, placed as `placement` says.
fn chain(placement: &Placement) -> HookChain {
    let guard = PluginHook::load(&plugins::plugin("key-guard"), r#"{"max_key_len": 64}"#)
        .expect("load key-guard");
    let limit = PluginHook::load(
        &plugins::plugin("rate-limit"),
        r#"{"per_second": 1e12, "burst": 1000000000}"#,
    )
    .expect("load rate-limit");
    let rules: RewriteOptions =
        toml::from_str("rules = [{ table = \"secret*\", redact = \"***\" }]").expect("rules");
    let rewrite = RewriteHook::new(rules).expect("rewrite");
    let mut chain = HookChain::new();
    chain.push_placed(Arc::new(guard), placement.clone());
    chain.push_placed(Arc::new(limit), placement.clone());
    chain.push_placed(Arc::new(rewrite), placement.clone());
    chain
}

/// A request through the service: no hooks, three hooks scoped to tables
/// the request does not name (skipped without a call), the same unscoped.
fn scoping(c: &mut Criterion) {
    let scoped = Placement {
        scope: Scope::new(vec!["orders*".into(), "users".into()]),
        ..Placement::default()
    };
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let req = CommandRequest::new_hset("bench", "key-0042", "value-0123456789".into());
    let mut group = c.benchmark_group("execute");
    for (name, chain) in [
        ("no-hooks", HookChain::new()),
        ("3-hooks-scoped-away", chain(&scoped)),
        ("3-hooks", chain(&Placement::default())),
    ] {
        let service: Service = ServiceInner::new(MemTable::new()).hooks(&chain).into();
        let mut ctx = HookCtx::new(1, peer).with_request_frame(req.encode_to_vec().into());
        group.bench_function(name, |b| {
            b.iter(|| black_box(service.execute_in(&mut ctx, black_box(&req))))
        });
    }
    group.finish();
}

criterion_group!(benches, calls, scoping);
criterion_main!(benches);
