//! `Service::execute_in` in process (no network): hset and hget on the memory
//! and sled backends, with no hooks; then, on memory, a request as a
//! connection answers it (its frame decoded, run, its answer encoded into
//! the batch's buffer) over 1k and over 100k keys, the load suite's key
//! space, where the table no longer fits in the caches.
//!
//! ```text
//! cargo bench --bench service
//! ```

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use hookv::frame::FrameCodec;
use hookv::hooks::HookCtx;
use hookv::pb::CommandRequest;
use hookv::{MemTable, Service, ServiceInner, SledDb, Storage};
use prost::Message;

fn bench_backend<S: Storage>(c: &mut Criterion, name: &str, service: Service<S>) {
    let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().expect("addr"));
    let keys: Vec<String> = (0..1024).map(|i| format!("key{i}")).collect();
    for k in &keys {
        service.execute_in(
            &mut ctx,
            &CommandRequest::new_hset("bench", k, "value-0123456789".into()),
        );
    }
    let sets: Vec<_> = keys
        .iter()
        .map(|k| CommandRequest::new_hset("bench", k, "value-0123456789".into()))
        .collect();
    let gets: Vec<_> = keys
        .iter()
        .map(|k| CommandRequest::new_hget("bench", k))
        .collect();
    let mut group = c.benchmark_group(format!("execute/{name}"));
    let mut i = 0usize;
    group.bench_function("hset", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(service.execute_in(&mut ctx, &sets[i]))
        })
    });
    group.bench_function("hget", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(service.execute_in(&mut ctx, &gets[i]))
        })
    });
    group.finish();
}

fn execute(c: &mut Criterion) {
    bench_backend(c, "memory", ServiceInner::new(MemTable::new()).into());
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = SledDb::open(dir.path()).expect("open sled");
    bench_backend(c, "sled", ServiceInner::new(sled).into());
}

/// A request's frame decoded, run through [`Service::handle`] and its
/// answer encoded, as `connection::answer` does, over `keys` keys drawn in
/// a scattered order (the loadgen's keys, `key:N`, 16-byte values).
fn bench_frames(c: &mut Criterion, keys: usize) {
    let service: Service = ServiceInner::new(MemTable::new()).into();
    let mut ctx = HookCtx::new(1, "127.0.0.1:1".parse().expect("addr"));
    let value = "v".repeat(16);
    // A multiplicative walk: each key once per lap, neighbours far apart.
    let order: Vec<usize> = (0..keys).map(|i| i * 7919 % keys).collect();
    let frames = |make: &dyn Fn(&str) -> CommandRequest| -> Vec<Bytes> {
        order
            .iter()
            .map(|&i| make(&format!("key:{i}")).encode_to_vec().into())
            .collect()
    };
    let sets = frames(&|k| CommandRequest::new_hset("bench", k, value.as_str().into()));
    let gets = frames(&|k| CommandRequest::new_hget("bench", k));
    let codec = FrameCodec::new(hookv::frame::DEFAULT_MAX_FRAME_BYTES);
    let mut out = BytesMut::with_capacity(64 * 1024);
    // Set in key order, read in the walk's: as under load, where a key's
    // neighbours in memory are not the next keys asked for.
    for i in 0..keys {
        let req = CommandRequest::new_hset("bench", format!("key:{i}"), value.as_str().into());
        service.execute_in(&mut ctx, &req);
    }
    let chain = service.hooks();
    let mut group = c.benchmark_group(format!("frame/memory/{keys}-keys"));
    for (name, frames) in [("hset", &sets), ("hget", &gets)] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                let req = CommandRequest::decode(frames[i].clone()).expect("decode");
                let res = service.handle(&chain, &mut ctx, &req);
                if out.len() > 60 * 1024 {
                    out.clear();
                }
                black_box(codec.encode_message(&res, &mut out).is_ok())
            })
        });
    }
    group.finish();
}

fn frames(c: &mut Criterion) {
    bench_frames(c, 1_000);
    bench_frames(c, 100_000);
}

criterion_group!(benches, execute, frames);
criterion_main!(benches);
