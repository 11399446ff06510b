//! `/metrics` after a scripted run: N events appended and delivered, one repeat, one refusal,
//! one event the broker refuses permanently (parked).

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::DevBroker;
use std::collections::HashMap;
use std::time::Duration;

/// `name{labels} value` lines of the exposition, keyed by everything before the value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_values_after_a_scripted_run() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    let addr = sidecar.addr();
    let t = "eventzr.integration-hub.marketplace.published.v1";
    const N: u64 = 5;
    for n in 0..N {
        post_ok(addr, &event(t, &format!("m-{n}"), "tenant-m", n)).await;
    }
    wait_store_drained(sidecar.store(), Duration::from_secs(30)).await;
    post_poison(&kafka, &sidecar, &event(t, "poison", "tenant-m", 99)).await;
    post_ok(addr, &event(t, "m-0", "tenant-m", 0)).await; // a repeat
    let mut invalid = event(t, "bad", "tenant-m", 0);
    invalid["time"] = serde_json::json!("never");
    assert_eq!(post_event(addr, &invalid).await.status, 400);

    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let m = samples(&text);
    let get = |key: &str| *m.get(key).unwrap_or_else(|| panic!("no {key} in\n{text}"));
    let topic = format!("{{topic=\"{t}\"}}");
    assert_eq!(get("edge_outbox_appended_events_total"), (N + 1) as f64);
    assert_eq!(get("edge_outbox_duplicate_events_total"), 1.0);
    assert_eq!(
        get("edge_outbox_refused_requests_total{reason=\"invalid-event\"}"),
        1.0
    );
    assert_eq!(
        get(&format!("edge_outbox_published_events_total{topic}")),
        N as f64
    );
    assert!(get(&format!("edge_outbox_published_bytes_total{topic}")) > (N * 100) as f64);
    assert_eq!(
        get("edge_outbox_produce_errors_total{class=\"permanent\"}"),
        1.0
    );
    assert_eq!(get("edge_outbox_dead_letters"), 1.0);
    assert_eq!(get("edge_outbox_backlog_events"), 0.0);
    assert_eq!(get("edge_outbox_backlog_bytes"), 0.0);
    assert_eq!(get("edge_outbox_oldest_event_age_seconds"), 0.0);
    assert!(get("edge_outbox_store_disk_bytes") > 0.0);
    assert!(get("edge_outbox_relay_batch_events_count") >= 1.0);
    assert_eq!(get("edge_outbox_relay_batch_events_sum"), N as f64);
    // One flush per commit group at least: N appends, the repeat, the park, the confirms.
    assert!(get("edge_outbox_flush_duration_seconds_count") >= (N + 3) as f64);
    assert_eq!(get("edge_outbox_broker_reachable"), 1.0);
    assert_eq!(get("edge_outbox_rate_limiter_wait_seconds_total"), 0.0);
    sidecar.shutdown().await.unwrap();
}
