//! The audit writer's formatting (`format_batch`): a batch of 2048 records
//! as the writer thread takes it under load (runs of 16 pipelined requests
//! from 50 connections, principal `"bench"`, `hget`/`hset` on table `"t"`,
//! 8 to 16 byte keys) turned into JSON lines. Criterion times the batch;
//! its throughput line is records per second, and the time divided by 2048
//! is the cost of one record.
//!
//! ```text
//! cargo bench --bench audit_format
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Records per batch: the writer wakes when this many have queued up.
const RECORDS: usize = 2048;

fn format(c: &mut Criterion) {
    let mut format = hookv::hooks::audit::bench_format(RECORDS);
    let mut group = c.benchmark_group("audit_format");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("batch-2048", |b| b.iter(|| black_box(format())));
    group.finish();
}

criterion_group!(benches, format);
criterion_main!(benches);
