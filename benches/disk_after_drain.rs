//! Disk use of the store after appending and draining a large backlog (issue: bounded disk).
//! Appends `EVENTS` (default 1,000,000) events of about 1 KiB with 16 concurrent appenders of
//! 100 events each (fsync on, as the sidecar does), records the peak disk use, then delivers
//! everything the way the relay does (read a batch, confirm it), lets the store rotate, and
//! compares the disk use with the data still live: backlog, dead letters and the
//! de-duplication entries kept for the window. Prints one JSON line;
//! `scripts/perf-report` puts it into docs/PERFORMANCE.md.
//!
//!   cargo bench --bench disk_after_drain            # EVENTS=200000 for a quicker run

use edge_outbox::catalog::Catalog;
use edge_outbox::loadgen::sample_record;
use edge_outbox::store::{inspect::Inspector, Record, Store, StoreConfig};
use std::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments of its own.
    let events: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.max_backlog_events = u64::MAX;
    config.max_backlog_bytes = u64::MAX;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(config.clone()).unwrap();
    let started = Instant::now();
    let catalog = Catalog::builtin();
    let mut peak = 0u64;
    runtime.block_on(async {
        let per_round = 16 * 100;
        let mut n = 0;
        while n < events {
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let batch: Vec<Record> = (n..(n + 100).min(events))
                    .map(|i| sample_record(&catalog, i))
                    .collect();
                n = (n + 100).min(events);
                let store = store.clone();
                tasks.push(tokio::spawn(
                    async move { store.append(batch).await.unwrap() },
                ));
            }
            for t in tasks {
                t.await.unwrap();
            }
            if n % (per_round * 50) == 0 {
                peak = peak.max(store.disk_bytes());
            }
        }
    });
    let appended_s = started.elapsed().as_secs_f64();
    let stored_bytes = store.stats().backlog_bytes;
    peak = peak.max(store.disk_bytes());
    let drain_started = Instant::now();
    runtime.block_on(async {
        loop {
            let batch = store.read_batch(0, 10_000, 16 << 20, |_, _| false).unwrap();
            if batch.records.is_empty() {
                break;
            }
            store
                .confirm(batch.records.iter().map(|r| r.seq).collect())
                .await
                .unwrap();
            peak = peak.max(store.disk_bytes());
        }
        store.maintain().await.unwrap();
        store.maintain().await.unwrap();
    });
    let drained_s = drain_started.elapsed().as_secs_f64();
    let after = store.disk_bytes();
    let generations = store.generations();
    runtime.block_on(store.close());
    drop(store);
    let summary = Inspector::open(dir.path()).unwrap().summary().unwrap();
    // What the store must keep: the backlog (none), dead letters (none) and the
    // de-duplication entries of the window, as stored.
    let live = summary.backlog_bytes + summary.dedup_bytes;
    let line = serde_json::json!({
        "events": events,
        "stored_bytes": stored_bytes,
        "append_seconds": appended_s,
        "drain_seconds": drained_s,
        "peak_disk_bytes": peak,
        "disk_bytes_after_drain": after,
        "live_bytes_after_drain": live,
        "ratio_after_drain": after as f64 / live.max(1) as f64,
        "generations": generations,
    });
    println!("{line}");
    if std::env::var("KEEP_DIR").is_ok() {
        eprintln!("kept {}", dir.keep().display());
    }
}
