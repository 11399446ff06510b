//! Leader failover under load on a three-broker Apache Kafka cluster (replication 3,
//! `min.insync.replicas` 2, as on MSK): the leader of a busy partition is SIGKILLed during the
//! drain and started again later, then a broker is SIGSTOPped for longer than the request
//! timeout and continued. Every acknowledged event is delivered once, in order per tenant. And
//! the sidecar SIGKILLed twenty times against the cluster.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

const TOPIC: &str = "eventzr.integration-hub.sync.completed.v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_and_a_hung_broker_lose_nothing_and_keep_order() {
    let mut cluster = Kafka::cluster(3);
    cluster.create_topics(&[TOPIC.to_string()], 3);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-outbox.toml");
    std::fs::write(
        &config,
        "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\nbatch_max_events = 200\n\
         retry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n\
         [kafka.properties]\n\"request.timeout.ms\" = \"5000\"\n\"metadata.max.age.ms\" = \"2000\"\n",
    )
    .unwrap();
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &cluster.bootstrap()).await;
    let addr = sidecar.addr();
    // Five tenants post 300 events each, one after the other, while the brokers fail.
    let clients: Vec<_> = (0..5u64)
        .map(|t| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..300u64 {
                    let id = format!("f-{t}-{n}");
                    post_ok(addr, &event(TOPIC, &id, &format!("tenant-{t}"), n)).await;
                    acked.push(id);
                    if n % 50 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                acked
            })
        })
        .collect();
    let delivered = |at_least: u64| {
        let sidecar = &sidecar;
        async move {
            wait_for("deliveries", Duration::from_secs(120), || async {
                sidecar.status().await["relay"]["delivered_events"].as_u64() >= Some(at_least)
            })
            .await
        }
    };
    delivered(200).await;
    let leader = cluster.leader_of(TOPIC, 0);
    cluster.kill_node(leader);
    delivered(600).await;
    cluster.start_node(leader);
    let hung = cluster.leader_of(TOPIC, 1);
    cluster.signal_node(hung, "STOP");
    // Longer than request.timeout.ms (5 s): the relay must wait for a new leader or the broker.
    let stopped = std::time::Instant::now();
    delivered(900).await;
    if stopped.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_secs(6) - stopped.elapsed()).await;
    }
    cluster.signal_node(hung, "CONT");
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    sidecar.wait_drained(Duration::from_secs(120)).await;
    let consumed = assert_all_delivered(&cluster.bootstrap(), TOPIC, &acked).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &consumed {
        *counts.entry(m.headers["ce_id"].as_str()).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "failover: {} acknowledged, {} read, {duplicates} duplicates",
        acked.len(),
        consumed.len()
    );
    // The idempotent producer keeps retries to a partition exactly once.
    assert_eq!(duplicates, 0);
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut by_offset = consumed.clone();
    by_offset.sort_by_key(|m| (m.partition, m.offset));
    for m in &by_offset {
        let n = m.json()["n"].as_u64().unwrap();
        if let Some(previous) = last.insert(m.key.clone(), n) {
            assert!(previous < n, "{}: {n} after {previous}", m.key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_twenty_times_against_the_cluster_loses_no_acknowledged_event() {
    let cluster = Kafka::cluster(3);
    cluster.create_topics(&[common::crash_loop::TOPIC.to_string()], 4);
    let report = common::crash_loop::run(&cluster.bootstrap(), 20, 6, 50).await;
    eprintln!("crash loop against a three-broker Apache Kafka cluster: {report:?}");
    assert_eq!(report.cycles, 20);
}
