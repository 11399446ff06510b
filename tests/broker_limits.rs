//! Broker-side limits as MSK sets them, on Apache Kafka: a topic's `max.message.bytes` (1 MiB)
//! refuses an event just over it, which goes to the dead letters with the broker's error while
//! the rest flows; a produce quota (`producer_byte_rate`) slows the relay without errors or loss.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn config_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\n\
             retry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_topics_limit_is_parked_with_the_brokers_error() {
    let broker = Kafka::start();
    let topic = "eventzr.integration-hub.sync.failed.v1";
    broker.create_topic_with(topic, 3, &[("max.message.bytes", "1048576")]);
    let dir = tempfile::tempdir().unwrap();
    // A producer that sends up to 2 MB, so that the broker is the one to refuse.
    let config = config_file(
        dir.path(),
        "[ingest]\nmax_event_bytes = 2097152\n[kafka]\ncompression = \"none\"\n\
         [kafka.properties]\n\"message.max.bytes\" = \"3000000\"\n",
    );
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    post_ok(sidecar.addr(), &event(topic, "before", "t", 0)).await;
    post_ok(sidecar.addr(), &oversized_event(topic)).await;
    post_ok(sidecar.addr(), &event(topic, "after", "t", 2)).await;
    assert_only_the_oversized_event_parked(&sidecar, &broker.bootstrap(), topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_quota_slows_the_relay_without_errors_or_loss() {
    let broker = Kafka::start();
    let topic = "eventzr.integration-hub.sync.started.v1";
    broker.create_topics(&[topic.to_string()], 3);
    // 100 KB/s for every client, as MSK limits a partition's ingress.
    broker.configs(&[
        "--alter",
        "--add-config",
        "producer_byte_rate=102400",
        "--entity-type",
        "clients",
        "--entity-default",
    ]);
    // The broker applies it from its metadata, not at once: wait until describe lists it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !broker
        .configs(&["--describe", "--entity-type", "clients", "--entity-default"])
        .contains("producer_byte_rate=102400")
    {
        assert!(
            Instant::now() < deadline,
            "the quota never reached the broker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempfile::tempdir().unwrap();
    // Batches of 100 (about 100 KB): a quota delays the requests after the one that went over
    // it, so a drain in one or two large requests would not show it.
    let config = config_file(
        dir.path(),
        "batch_max_events = 100\n[kafka]\ncompression = \"none\"\n",
    );
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    // About 1.5 MB: the quota's window lets a first burst through, then throttles. Timed from
    // the first post: the relay sends while the posts go on (every 100 ms).
    let started = Instant::now();
    let mut acked = Vec::new();
    for start in (0..1_500u64).step_by(100) {
        let batch: Vec<serde_json::Value> = (start..start + 100)
            .map(|n| {
                let mut e = event(topic, &format!("q-{n}"), &format!("t{}", n % 3), n);
                e["data"]["pad"] = serde_json::json!("p".repeat(900));
                e
            })
            .collect();
        let answer = post(sidecar.addr(), BATCH, serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(answer.status, 202);
        acked.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    }
    sidecar.wait_drained(Duration::from_secs(120)).await;
    let took = started.elapsed();
    let status = sidecar.status().await;
    assert_eq!(
        status["relay"]["last_errors"],
        serde_json::json!({}),
        "{status}"
    );
    assert_eq!(status["store"]["dead_letters"], 0);
    // Unthrottled, posting and delivering take well under a second on this machine.
    assert!(took > Duration::from_secs(2), "throttled: {took:?}");
    let consumed = assert_all_delivered(&broker.bootstrap(), topic, &acked).await;
    assert_eq!(consumed.len(), acked.len());
    eprintln!("1.5 MB under a 100 KB/s quota posted and delivered in {took:?}");
}
