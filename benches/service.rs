//! `Service::execute` in process (no network): hset and hget on the memory
//! and sled backends, with no hooks.
//!
//! ```text
//! cargo bench --bench service
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hookv::hooks::HookCtx;
use hookv::pb::CommandRequest;
use hookv::{MemTable, Service, ServiceInner, SledDb, Storage};

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

criterion_group!(benches, execute);
criterion_main!(benches);
