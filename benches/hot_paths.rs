//! Criterion benches of the hot paths: CloudEvents parsing and validation in each HTTP mode,
//! record encoding and decoding, store appends (group commit, fsync on) with 1, 16 and 64
//! concurrent appenders, the relay's preparation of a Kafka message, and the relay's reads of a
//! backlog (in append order, and fair: tenants held to their shares, batches in flight passed
//! over).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use edge_outbox::catalog::Catalog;
use edge_outbox::event::http::{parse_request, BATCH, STRUCTURED};
use edge_outbox::event::kafka::{to_message, KafkaMode};
use edge_outbox::event::DEFAULT_KEY_ORDER;
use edge_outbox::loadgen::sample_event;
use edge_outbox::store::{record, Record, Store, StoreConfig};
use std::sync::atomic::{AtomicU64, Ordering};

fn sample_record(n: u64) -> Record {
    edge_outbox::loadgen::sample_record(&Catalog::builtin(), n)
}

fn parsing(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let one = serde_json::to_vec(&sample_event(&catalog, 1, 1000, 1024)).unwrap();
    let batch: Vec<_> = (0..100)
        .map(|n| sample_event(&catalog, n, 1000, 1024))
        .collect();
    let batch = serde_json::to_vec(&batch).unwrap();
    let data = serde_json::to_vec(&sample_event(&catalog, 1, 1000, 1024)["data"]).unwrap();
    let headers: Vec<(&str, &[u8])> = vec![
        ("content-type", b"application/json"),
        ("ce-specversion", b"1.0"),
        ("ce-id", b"evt-550e8400-e29b-41d4-a716-446655440000"),
        ("ce-source", b"integration-hub-svc"),
        ("ce-type", b"eventzr.integration-hub.execution.completed.v1"),
        ("ce-time", b"2026-02-24T12:00:00.000Z"),
        ("ce-subject", b"tenant%20uuid"),
    ];
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("structured_1KiB", |b| {
        b.iter(|| parse_request(Some(STRUCTURED), std::iter::empty(), &one).unwrap())
    });
    group.bench_function("binary_1KiB", |b| {
        b.iter(|| parse_request(Some("application/json"), headers.iter().copied(), &data).unwrap())
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100x1KiB", |b| {
        b.iter(|| parse_request(Some(BATCH), std::iter::empty(), &batch).unwrap())
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    let r = sample_record(7);
    let bytes = record::encode(&r);
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| record::encode(&r)));
    group.bench_function("decode", |b| {
        b.iter(|| record::decode::<Record>(&bytes).unwrap())
    });
    group.finish();
}

fn relay_preparation(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let event = edge_outbox::event::http::from_json(sample_event(&catalog, 3, 1000, 1024)).unwrap();
    let r = sample_record(3);
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));
    group.bench_function("to_kafka_message", |b| {
        b.iter(|| {
            let key = event.tenant_key(&DEFAULT_KEY_ORDER).unwrap();
            to_message(&event, &event.event_type, &key, KafkaMode::Binary)
        })
    });
    group.bench_function("headers_for_produce", |b| {
        b.iter(|| edge_outbox::kafka_client::owned_headers(&r.message.headers))
    });
    group.finish();
}

/// A store in `dir` with no backlog or free-space limits.
fn unbounded_store(dir: &std::path::Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.min_free_bytes = 0;
    config.max_backlog_events = u64::MAX;
    config.max_backlog_bytes = u64::MAX;
    Store::open(config).unwrap()
}

fn store_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let template = sample_record(0);
    let mut group = c.benchmark_group("store_append_fsync");
    group.sample_size(10);
    for appenders in [1u64, 16, 64] {
        let per_task = 64u64;
        group.throughput(Throughput::Elements(appenders * per_task));
        group.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &appenders| {
                let dir = tempfile::tempdir().unwrap();
                let store = unbounded_store(dir.path());
                let counter = std::sync::Arc::new(AtomicU64::new(0));
                b.iter_batched(
                    || (),
                    |_| {
                        runtime.block_on(async {
                            let mut tasks = Vec::new();
                            for _ in 0..appenders {
                                let (store, counter, template) =
                                    (store.clone(), counter.clone(), template.clone());
                                tasks.push(tokio::spawn(async move {
                                    for _ in 0..per_task {
                                        let mut r = template.clone();
                                        r.event_id =
                                            counter.fetch_add(1, Ordering::Relaxed).to_string();
                                        store.append(vec![r]).await.unwrap();
                                    }
                                }));
                            }
                            for t in tasks {
                                t.await.unwrap();
                            }
                        })
                    },
                    BatchSize::PerIteration,
                );
            },
        );
    }
    group.finish();
}

/// Reads a stored backlog of 100,000 events of 1,000 tenants (in the load tool's order) in
/// batches of 10,000 as the relay does, with nothing confirmed: in append order, each read
/// going on after the last; and fair, each read passing over the records read before it and,
/// when shares left records behind, starting again where it started.
fn relay_read(c: &mut Criterion) {
    const EVENTS: u64 = 100_000;
    const BATCH: usize = 10_000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = unbounded_store(dir.path());
    runtime.block_on(async {
        for first in (0..EVENTS).step_by(100) {
            let records = (first..first + 100).map(sample_record).collect();
            store.append(records).await.unwrap();
        }
    });
    let mut group = c.benchmark_group("relay_read");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("append_order_100k", |b| {
        b.iter(|| {
            let (mut from, mut read) = (0, 0);
            while read < EVENTS {
                let batch = store
                    .read_batch(from, BATCH, u64::MAX, |_, _| false)
                    .unwrap();
                from = batch.records.last().unwrap().seq + 1;
                read += batch.records.len() as u64;
            }
        })
    });
    group.bench_function("fair_100k", |b| {
        b.iter(|| {
            let (mut from, mut read) = (0, 0);
            // Everything read before stands in for the batches in flight and those the relay
            // would have confirmed (which the index would no longer name).
            let mut exclude: Vec<u64> = Vec::new();
            while read < EVENTS {
                let batch = store
                    .read_fair_batch_with(from, BATCH, u64::MAX, &exclude, |_, _| Some(()))
                    .unwrap();
                let seqs = batch.records.iter().map(|r| r.seq);
                if batch.deferred == 0 {
                    from = seqs.clone().max().unwrap() + 1;
                }
                read += batch.records.len() as u64;
                exclude.extend(seqs);
                exclude.sort_unstable();
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    parsing,
    records,
    relay_preparation,
    store_append,
    relay_read
);
criterion_main!(benches);
