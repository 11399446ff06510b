//! The load tool (`edge-outbox bench`) against a sidecar and librdkafka's mock cluster: what it
//! reports matches what the sidecar counted, and its drain and baseline figures are filled in.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::DevBroker;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_ingest_drain_and_both_baselines() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    let url = format!("http://{}", sidecar.addr());
    let brokers = kafka.bootstrap_servers();
    let report = bench(&[
        "--url",
        &url,
        "--clients",
        "4",
        "--batch",
        "10",
        "--events",
        "2000",
        "--drain",
        "--baseline-brokers",
        &brokers,
        "--baseline-fresh",
    ])
    .await;
    assert_eq!(report["events"], 2000, "{report}");
    assert_eq!(report["refused"], 0, "{report}");
    let stats = sidecar.store().stats();
    // Sequence numbers start at 1.
    assert_eq!(
        stats.next_seq, 2001,
        "every event the tool sent was stored once"
    );
    assert_eq!(stats.backlog_events, 0, "the tool waited for the drain");
    let relay = sidecar.relay_status().lock().unwrap().clone();
    assert_eq!(relay.delivered_events, 2000);
    for field in [
        "events_per_second",
        "latency_ms_p50",
        "latency_ms_p99",
        "drain_seconds",
        "relay_events_per_second",
        "baseline_events_per_second",
        "fresh_baseline_events_per_second",
        "relay_to_baseline_ratio",
        "relay_to_fresh_baseline_ratio",
    ] {
        let value = report[field].as_f64();
        assert!(value.is_some_and(|v| v > 0.0), "{field} in {report}");
    }
    assert!(report["latency_ms_p50"].as_f64() <= report["latency_ms_p99"].as_f64());

    // Single-event mode (structured, one event a request) over the same kind of connections.
    let report = bench(&[
        "--url",
        &url,
        "--clients",
        "8",
        "--batch",
        "1",
        "--events",
        "300",
    ])
    .await;
    assert_eq!(
        (report["events"].as_u64(), report["refused"].as_u64()),
        (Some(300), Some(0)),
        "{report}"
    );
    assert_eq!(
        sidecar.store().stats().next_seq,
        2301,
        "300 more events stored once each"
    );
    sidecar.shutdown().await.unwrap();
}

/// Runs `edge-outbox bench ARGS --json` and returns its report.
async fn bench(args: &[&str]) -> Value {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.insert(0, "bench".into());
    args.push("--json".into());
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_stdout(&args, &[])
    })
    .await
    .unwrap();
    serde_json::from_str(&output).unwrap()
}
