//! The sidecar end to end against librdkafka's mock cluster, through the real HTTP API:
//! delivery of every catalogue type, order per tenant, broker outages, dead letters, the
//! backlog limit and restarts.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::{murmur2_partition, DevBroker};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const PARTITIONS: i32 = 6;

/// The topic of the tenants' events in the ordering tests.
const SENT: &str = "eventzr.integration-hub.whatsapp.message.sent.v1";

fn broker() -> DevBroker {
    DevBroker::start(1, &Catalog::builtin().topics(), PARTITIONS).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_36_types_arrive_on_their_topics_with_key_headers_and_payload() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    let addr = sidecar.addr();
    let catalog = Catalog::builtin();
    let types: Vec<String> = catalog.entries().map(|e| e.event_type.clone()).collect();
    assert_eq!(types.len(), 36);
    let mut expected: HashMap<String, (String, String, Value)> = HashMap::new();
    let mut batch = Vec::new();
    for (i, event_type) in types.iter().enumerate() {
        let tenant = format!("tenant-{}", i % 5);
        let id = format!("evt-{i}");
        let body = event(event_type, &id, &tenant, i as u64);
        expected.insert(
            id.clone(),
            (event_type.clone(), tenant.clone(), body["data"].clone()),
        );
        match i % 3 {
            // Structured mode.
            0 => {
                post_ok(addr, &body).await;
            }
            // Binary mode, as the SDKs send it.
            1 => {
                let data = serde_json::to_vec(&body["data"]).unwrap();
                let answer = post_with(
                    addr,
                    &[
                        ("content-type", "application/json"),
                        ("ce-specversion", "1.0"),
                        ("ce-id", &id),
                        ("ce-source", "integration-hub-svc"),
                        ("ce-type", event_type),
                        ("ce-time", "2026-02-24T12:00:00.000Z"),
                        ("ce-subject", "tenant-uuid"),
                    ],
                    data,
                )
                .await;
                assert_eq!(answer.status, 202, "{:?}", answer.body);
            }
            // Batched mode, sent below.
            _ => batch.push(body),
        }
    }
    let answer = post(addr, BATCH, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.body["sequences"].as_array().unwrap().len(), 12);

    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &catalog.topics(),
        36,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 36, "every type arrives once");
    for message in &consumed {
        let id = &message.headers["ce_id"];
        let (event_type, tenant, data) = &expected[id];
        assert_eq!(&message.topic, event_type, "topic of {id}");
        assert_eq!(&message.key, tenant, "key of {id}");
        assert_eq!(&message.headers["ce_type"], event_type);
        assert_eq!(message.headers["ce_source"], "integration-hub-svc");
        assert_eq!(message.headers["ce_specversion"], "1.0");
        assert_eq!(message.headers["ce_time"], "2026-02-24T12:00:00.000Z");
        assert_eq!(message.headers["ce_subject"], "tenant-uuid");
        assert_eq!(message.headers["content-type"], "application/json");
        assert_eq!(&message.json(), data, "payload of {id}");
        assert_eq!(
            message.partition as u32,
            murmur2_partition(tenant.as_bytes(), PARTITIONS as u32),
            "partition of {id} matches the Java client's murmur2"
        );
    }
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_tenant_holds_across_many_batches() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.relay.batch_max_events = 7;
    let sidecar = start(config).await;
    post_tenants(sidecar.addr(), SENT, 5, 40, "order").await;
    let topic = vec![SENT.to_string()];
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &topic,
        200,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 200);
    assert_in_order(&consumed, 5, 40);
    assert!(sidecar.relay_status().lock().unwrap().batches >= 200 / 7);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_longer_than_the_delivery_timeout_loses_nothing() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.kafka.delivery_timeout = Duration::from_millis(500);
    config.relay.batch_max_events = 7;
    let sidecar = start(config).await;
    let addr = sidecar.addr();
    post_tenants(addr, SENT, 3, 10, "before").await;
    let topic = vec![SENT.to_string()];
    let first = consume_async(
        &kafka.bootstrap_servers(),
        &topic,
        30,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(first.len(), 30);

    kafka.cluster().broker_down(1).unwrap();
    // Appends keep being accepted while the broker is away.
    post_tenants(addr, SENT, 3, 10, "during").await;
    let status = sidecar.relay_status();
    wait_for(
        "a delivery timeout to be reported",
        Duration::from_secs(30),
        || {
            let status = status.clone();
            async move { status.lock().unwrap().last_errors.contains_key("retriable") }
        },
    )
    .await;
    assert!(sidecar.store().stats().backlog_events > 0);
    kafka.cluster().broker_up(1).unwrap();

    wait_store_drained(sidecar.store(), Duration::from_secs(60)).await;
    let all = consume_async(
        &kafka.bootstrap_servers(),
        &topic,
        60,
        Duration::from_secs(30),
    )
    .await;
    let ids: std::collections::HashSet<String> =
        all.iter().map(|m| m.headers["ce_id"].clone()).collect();
    for t in 0..3 {
        for n in 0..10 {
            assert!(
                ids.contains(&format!("during-{t}-{n}")),
                "during-{t}-{n} arrived"
            );
        }
    }
    // The failed batches are sent again before anything newer of their tenant, although the
    // relay reads ahead while a batch is in flight.
    let during: Vec<Consumed> = all
        .into_iter()
        .filter(|m| m.headers["ce_id"].starts_with("during-"))
        .collect();
    assert_in_order(&during, 3, 10);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_lost_while_batches_stream_out_two_at_a_time_loses_nothing_and_keeps_order() {
    // A rate limit keeps the relay streaming small batches (two in flight at a time) for
    // seconds, so that the broker goes away in the middle of the stream, not between drains.
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.kafka.delivery_timeout = Duration::from_millis(500);
    config.relay.batch_max_events = 7;
    config.relay.max_events_per_second = edge_outbox::config::Limit::PerSecond(100);
    let sidecar = start(config).await;
    post_tenants(sidecar.addr(), SENT, 3, 100, "stream").await;
    let status = sidecar.relay_status();
    wait_for(
        "a third of the backlog delivered",
        Duration::from_secs(30),
        || {
            let status = status.clone();
            async move { status.lock().unwrap().delivered_events >= 100 }
        },
    )
    .await;
    kafka.cluster().broker_down(1).unwrap();
    wait_for(
        "a delivery timeout to be reported",
        Duration::from_secs(30),
        || {
            let status = status.clone();
            async move { status.lock().unwrap().last_errors.contains_key("retriable") }
        },
    )
    .await;
    let delivered_before_the_outage_ended = status.lock().unwrap().delivered_events;
    assert!(
        delivered_before_the_outage_ended < 300,
        "the outage began before the end of the stream ({delivered_before_the_outage_ended} delivered)"
    );
    kafka.cluster().broker_up(1).unwrap();
    wait_store_drained(sidecar.store(), Duration::from_secs(60)).await;
    let topic = vec![SENT.to_string()];
    // consume reads every partition up to its high watermark, duplicates included: the backlog
    // has drained, so that is everything.
    let all = consume_async(
        &kafka.bootstrap_servers(),
        &topic,
        300,
        Duration::from_secs(30),
    )
    .await;
    assert!(all.len() >= 300, "{} messages in the topic", all.len());
    assert_first_arrivals_in_order(&all, 3, 100);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_has_taken_nothing_batches_are_small_probes() {
    let kafka = broker();
    kafka.cluster().broker_down(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.kafka.delivery_timeout = Duration::from_millis(500);
    config.relay.batch_max_events = 32;
    let sidecar = start(config).await;
    post_tenants(sidecar.addr(), SENT, 4, 16, "probe").await;
    let status = sidecar.relay_status();
    wait_for("a failed round", Duration::from_secs(30), || {
        let status = status.clone();
        async move { status.lock().unwrap().last_errors.contains_key("retriable") }
    })
    .await;
    assert!(!status.lock().unwrap().broker_confirmed);
    kafka.cluster().broker_up(1).unwrap();
    wait_store_drained(sidecar.store(), Duration::from_secs(60)).await;
    assert!(status.lock().unwrap().broker_confirmed);
    // The first batch the broker took was a probe of at most 32 / 16 = 2 events; every later
    // one was a full 32 (or the rest), so the smallest bucket that holds 2 counts exactly one.
    let text = reqwest::get(format!("http://{}/metrics", sidecar.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let small = text
        .lines()
        .find(|l| l.starts_with("edge_outbox_relay_batch_events_bucket{le=\"4.0\"}"))
        .unwrap_or_else(|| panic!("no batch size bucket in\n{text}"));
    assert!(small.ends_with(" 1"), "{small}");
    let topic = vec![SENT.to_string()];
    let all = consume_async(
        &kafka.bootstrap_servers(),
        &topic,
        64,
        Duration::from_secs(30),
    )
    .await;
    assert_in_order(&all, 4, 16);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_produce_error_parks_the_event_and_later_events_flow() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    let addr = sidecar.addr();
    let poison_type = "eventzr.integration-hub.sync.failed.v1";
    // The broker refuses the next produce request as too large, whatever it holds.
    post_poison(
        &kafka,
        &sidecar,
        &event(poison_type, "poison", "tenant-p", 0),
    )
    .await;
    let store = sidecar.store().clone();
    let dead = store.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].error.contains("too large") || dead[0].error.contains("MessageSizeTooLarge"),
        "{}",
        dead[0].error
    );
    post_ok(addr, &event(poison_type, "healthy", "tenant-p", 1)).await;
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &[poison_type.to_string()],
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 1);
    assert_eq!(consumed[0].headers["ce_id"], "healthy");
    // The dead letter can be seen, replayed and is then delivered.
    let client = reqwest::Client::new();
    let list: Value = get_json(&format!("http://{addr}/v1/dlq")).await;
    assert_eq!(list[0]["event_id"], "poison");
    let seq = list[0]["seq"].as_u64().unwrap();
    let replay = client
        .post(format!("http://{addr}/v1/dlq/{seq}/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &[poison_type.to_string()],
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 2);
    assert_eq!(consumed[1].headers["ce_id"], "poison");
    assert_eq!(store.stats().dead_letters, 0);
    let missing = client
        .post(format!("http://{addr}/v1/dlq/999/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_limit_answers_503_while_stored_events_drain() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.store.max_backlog_events = 5;
    let sidecar = start(config).await;
    let addr = sidecar.addr();
    let t = "eventzr.integration-hub.oauth.refreshed.v1";
    kafka.cluster().broker_down(1).unwrap();
    for n in 0..5 {
        post_ok(addr, &event(t, &format!("e{n}"), "tenant-b", n)).await;
    }
    let refused = post_event(addr, &event(t, "e5", "tenant-b", 5)).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.content_type, "application/problem+json");
    assert!(refused.retry_after.is_some(), "Retry-After is set");
    assert_eq!(refused.body["type"], "urn:edge-outbox:problem:backlog-full");
    assert_eq!(sidecar.store().stats().backlog_events, 5);
    kafka.cluster().broker_up(1).unwrap();
    wait_store_drained(sidecar.store(), Duration::from_secs(60)).await;
    post_ok(addr, &event(t, "e5", "tenant-b", 5)).await;
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &[t.to_string()],
        6,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 6);
    assert_in_order(&consumed, 1, 6);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_append_and_relay_delivers_everything() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let t = "eventzr.integration-hub.credential.rotated.v1";
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.relay.flush_interval = Duration::from_secs(3600);
    let sidecar = start(config).await;
    for n in 0..10 {
        post_ok(sidecar.addr(), &event(t, &format!("r{n}"), "tenant-r", n)).await;
    }
    assert_eq!(sidecar.relay_status().lock().unwrap().delivered_events, 0);
    sidecar.shutdown().await.unwrap();

    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    assert_eq!(sidecar.store().stats().backlog_events, 10);
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &[t.to_string()],
        10,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 10);
    assert_in_order(&consumed, 1, 10);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_are_published_once_per_batch_with_each_tenant_inside() {
    let kafka = broker();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.relay.publish_summaries = true;
    // 150 events of 150 tenants in one request, so one batch: one summary per tenant made
    // that 150 summaries.
    let sidecar = start(config).await;
    let t = "eventzr.integration-hub.integration.installed.v1";
    let batch: Vec<Value> = (0..150)
        .map(|n| event(t, &format!("s{n}"), &format!("tenant-{n:03}"), n))
        .collect();
    assert_eq!(
        post(sidecar.addr(), BATCH, serde_json::to_vec(&batch).unwrap())
            .await
            .status,
        202
    );
    let status = sidecar.relay_status();
    wait_for("the batch and its summary", Duration::from_secs(30), || {
        let status = status.clone();
        async move { status.lock().unwrap().delivered_events == 151 }
    })
    .await;
    let topic = edge_outbox::catalog::OUTBOX_PUBLISHED_TYPE.to_string();
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &[topic],
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 1, "one summary for the batch");
    let summary = consumed[0].json();
    assert_eq!(summary["count"], 150);
    assert_eq!(summary["tenantCount"], 150);
    let tenants = summary["tenants"].as_array().unwrap();
    assert!(tenants.iter().all(|t| t["count"] == 1));
    assert_eq!(tenants[7]["tenantId"], "tenant-007");
    assert_eq!(consumed[0].key, "edge-outbox");
    assert_eq!(consumed[0].headers["ce_source"], "edge-outbox");
    sidecar.shutdown().await.unwrap();
}

/// sled blob files of a megabyte or more under `dir`, and the bytes of all files.
fn large_blobs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        large_blobs(&path)
                    } else {
                        usize::from(
                            path.to_string_lossy().contains("blobs/")
                                && e.metadata().is_ok_and(|m| m.len() >= 1_000_000),
                        )
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_large_event_costs_its_size_once_and_nothing_after_the_purge() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    // A producer that takes megabyte messages; the broker refuses this one (post_poison).
    config.ingest.max_event_bytes = 2 * 1024 * 1024;
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "3000000".into());
    config.store.rotate_min_bytes = 2 * 1024 * 1024;
    config.store.min_free_bytes = 0;
    let sidecar = start(config).await;
    let t = "eventzr.integration-hub.provider.created.v1";
    let mut round = 0;
    let mut relay_some = |rounds: usize| {
        let addr = sidecar.addr();
        let store = sidecar.store().clone();
        let first = round;
        round += rounds;
        async move {
            for r in first..first + rounds {
                let batch: Vec<_> = (0..100)
                    .map(|n| event(t, &format!("c-{r}-{n}"), "t", n))
                    .collect();
                let answer = post(addr, BATCH, serde_json::to_vec(&batch).unwrap()).await;
                assert_eq!(answer.status, 202);
                wait_store_drained(&store, Duration::from_secs(30)).await;
            }
        }
    };
    relay_some(2).await;
    let baseline = sidecar.store().disk_bytes();
    let mut big = event(t, "big", "t", 0);
    big["data"]["blob"] = serde_json::json!("x".repeat(1_000_000));
    post_poison(&kafka, &sidecar, &big).await;
    // sled writes a leaf over 128 KiB as a blob file, again whenever it rewrites the leaf:
    // with the letter in the main tree, every few batches wrote another megabyte (6 blob
    // files after five rounds here; 57 in a sidecar that ran longer).
    for _ in 0..6 {
        relay_some(5).await;
        let blobs = large_blobs(dir.path());
        assert!(
            blobs <= 1,
            "{blobs} blob files of a megabyte for one parked event"
        );
    }
    let seq = sidecar.store().dead_letters(0, 1).unwrap()[0].seq;
    sidecar.store().purge(seq).await.unwrap();
    // The next rotation starts a fresh generation and retires the old one with its files.
    let before = *sidecar.store().generations().last().unwrap();
    for _ in 0..60 {
        relay_some(1).await;
        sidecar.store().maintain().await.unwrap();
        let generations = sidecar.store().generations();
        if generations.len() == 1 && generations[0] > before {
            break;
        }
    }
    assert!(
        sidecar.store().generations()[0] > before,
        "a rotation happened"
    );
    let purged = sidecar.store().disk_bytes();
    assert_eq!(large_blobs(dir.path()), 0, "no blob of the letter is left");
    assert!(
        purged <= baseline + 512 * 1024,
        "{purged} bytes after the purge, {baseline} before the park"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adopter_keeps_and_reports_a_store_with_dead_letters_and_removes_an_empty_one() {
    use edge_outbox::store::{Store, StoreConfig};
    let kafka = broker();
    let root = tempfile::tempdir().unwrap();
    // Two stores left behind: one with an undelivered event and a dead letter, one with an
    // undelivered event only.
    for (pod, park) in [("pod-dead", true), ("pod-plain", false)] {
        let store = Store::open(StoreConfig::new(root.path().join(pod))).unwrap();
        let t = "eventzr.integration-hub.provider.created.v1";
        let records: Vec<_> = (0..2)
            .map(|n| {
                let mut r = edge_outbox::loadgen::sample_record(&Catalog::builtin(), n);
                r.message.topic = t.into();
                r.event_id = format!("{pod}-{n}");
                r
            })
            .collect();
        let seqs: Vec<u64> = store
            .append(records)
            .await
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect();
        if park {
            store
                .park(seqs[0], "refused by the test".into())
                .await
                .unwrap();
        }
        store.close().await;
    }
    let mut config = test_config(&kafka.bootstrap_servers(), root.path());
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let settings = edge_outbox::adopt::AdoptSettings {
        root: root.path().to_path_buf(),
        scan_interval: Duration::from_millis(100),
        min_idle: Duration::ZERO,
    };
    let (sender, shutdown) = edge_outbox::shutdown::channel();
    let adopter = tokio::spawn(edge_outbox::adopt::run(config, settings, shutdown));
    let url = format!("http://127.0.0.1:{port}/v1/status");
    wait_for("both stores handled", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let Ok(response) = reqwest::get(&url).await else {
                return false;
            };
            let status: Value = response.json().await.unwrap();
            status["drained"] == 1 && status["kept"]["pod-dead"] == 1
        }
    })
    .await;
    assert!(
        !root.path().join("pod-plain").exists(),
        "the empty store is removed"
    );
    assert!(
        root.path().join("pod-dead").exists(),
        "the store with a dead letter is kept"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edge_outbox_adopter_stores_kept 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edge_outbox_adopter_stores_drained_total 1"),
        "{metrics}"
    );
    sender.stop();
    adopter.await.unwrap().unwrap();
    // The kept store still holds its letter, and nothing else.
    let store = Store::open(StoreConfig::new(root.path().join("pod-dead"))).unwrap();
    assert_eq!(store.stats().dead_letters, 1);
    assert_eq!(store.stats().backlog_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_unlimited_lifts_the_rate_limit_for_the_drain_only() {
    let kafka = broker();
    for unlimited in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
        // One event a second: 40 events cannot drain within the 3 s deadline unless unlimited.
        config.relay.max_events_per_second = "1".parse().unwrap();
        config.relay.flush_interval = Duration::from_secs(3600);
        config.shutdown.intake_grace = Duration::ZERO;
        config.shutdown.drain_timeout = Duration::from_secs(3);
        config.shutdown.drain_unlimited = unlimited;
        let sidecar = start(config).await;
        let t = "eventzr.integration-hub.provider.created.v1";
        let batch: Vec<Value> = (0..40)
            .map(|n| event(t, &format!("u{unlimited}-{n}"), "t", n))
            .collect();
        let answer = post(sidecar.addr(), BATCH, serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(answer.status, 202);
        let report = sidecar.drain(std::future::pending()).await.unwrap();
        if unlimited {
            assert_eq!(
                report.end,
                edge_outbox::sidecar::DrainEnd::Drained,
                "{report:?}"
            );
            assert_eq!(report.left.events, 0);
        } else {
            assert_eq!(
                report.end,
                edge_outbox::sidecar::DrainEnd::DeadlinePassed,
                "{report:?}"
            );
            assert!(report.left.events > 0);
            let topic = &report.left.per_topic[t];
            assert_eq!(topic.0, report.left.events, "{report:?}");
        }
    }
}
