//! End to end against Apache Kafka itself (a separately started KRaft broker), driving the
//! real `edge-outbox` binary over HTTP: delivery of every catalogue type, order per tenant,
//! a broker killed and restarted on its storage, the sidecar killed in a loop, a full data
//! volume, and a corrupted record on disk.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::murmur2_partition;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

const PARTITIONS: u32 = 4;

fn config_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\nretry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\npause_retry = \"500ms\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// An Apache Kafka broker with `topics` created, and the real sidecar binary against it with the test
/// configuration plus `extra`. Dropping them stops both.
async fn setup(topics: &[String], extra: &str) -> (Kafka, tempfile::TempDir, SidecarProcess) {
    let broker = Kafka::start();
    if !topics.is_empty() {
        broker.create_topics(topics, PARTITIONS);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), extra);
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    (broker, dir, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_36_types_arrive_on_the_java_partition_with_headers_and_payload() {
    let catalog = Catalog::builtin();
    let (broker, _dir, sidecar) = setup(&catalog.topics(), "").await;
    let mut expected = HashMap::new();
    for (i, entry) in catalog.entries().enumerate() {
        let tenant = format!("a000000{}-0000-0000-0000-00000000000{}", i % 7, i % 7);
        let id = format!("e2e-{i}");
        let e = event(&entry.event_type, &id, &tenant, i as u64);
        post_ok(sidecar.addr(), &e).await;
        expected.insert(id, (entry.topic.clone(), tenant, e["data"].clone()));
    }
    let consumed = consume_async(
        &broker.bootstrap(),
        &catalog.topics(),
        36,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(consumed.len(), 36);
    for m in &consumed {
        let id = &m.headers["ce_id"];
        let (topic, tenant, data) = &expected[id];
        assert_eq!(&m.topic, topic);
        assert_eq!(&m.key, tenant);
        assert_eq!(&m.json(), data);
        assert_eq!(m.headers["ce_type"], *topic);
        assert_eq!(m.headers["ce_source"], "integration-hub-svc");
        assert_eq!(m.headers["ce_specversion"], "1.0");
        assert_eq!(m.headers["content-type"], "application/json");
        assert_eq!(
            m.partition as u32,
            murmur2_partition(tenant.as_bytes(), PARTITIONS),
            "partition of {id}"
        );
    }
    // Kafka's own Java producer, run for real, puts each tenant on the same partition.
    let scratch = "java-partitioner-check".to_string();
    broker.create_topics(std::slice::from_ref(&scratch), PARTITIONS);
    let tenants: Vec<String> = consumed
        .iter()
        .map(|m| m.key.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let java = broker.java_partitions(&scratch, &tenants);
    assert_eq!(java.len(), tenants.len());
    for m in &consumed {
        assert_eq!(
            m.partition, java[&m.key],
            "tenant {} (Java vs sidecar)",
            m.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_tenant_holds_across_batches() {
    let topic = "eventzr.integration-hub.whatsapp.message.delivered.v1".to_string();
    let (broker, _dir, sidecar) =
        setup(std::slice::from_ref(&topic), "batch_max_events = 7\n").await;
    post_tenants(sidecar.addr(), &topic, 5, 40, "o").await;
    let consumed = consume_async(
        &broker.bootstrap(),
        std::slice::from_ref(&topic),
        200,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(consumed.len(), 200, "each event once");
    assert_in_order(&consumed, 5, 40);
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    for m in &consumed {
        partitions
            .entry(m.key.clone())
            .or_default()
            .insert(m.partition);
    }
    for (tenant, partitions) in partitions {
        assert_eq!(partitions.len(), 1, "{tenant} stays on one partition");
    }
    assert!(sidecar.status().await["relay"]["batches"].as_u64().unwrap() >= 200 / 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_longer_than_the_delivery_timeout_then_restarted_loses_nothing() {
    let topic = "eventzr.integration-hub.execution.failed.v1".to_string();
    let (mut broker, _dir, sidecar) = setup(
        std::slice::from_ref(&topic),
        "[kafka]\ndelivery_timeout = \"1s\"\n",
    )
    .await;
    let addr = sidecar.addr();
    let mut acked = Vec::new();
    for n in 0..20u64 {
        let id = format!("before-{n}");
        post_ok(addr, &event(&topic, &id, &format!("tenant-{}", n % 3), n)).await;
        acked.push(id);
    }
    sidecar.wait_drained(Duration::from_secs(60)).await;
    broker.kill();
    // Appends keep succeeding while the broker is gone, for longer than the delivery timeout.
    for n in 20..60u64 {
        let id = format!("during-{n}");
        post_ok(addr, &event(&topic, &id, &format!("tenant-{}", n % 3), n)).await;
        acked.push(id);
    }
    wait_for(
        "a delivery failure to be reported",
        Duration::from_secs(60),
        || {
            let sidecar = &sidecar;
            async move { sidecar.status().await["relay"]["last_errors"]["retriable"].is_object() }
        },
    )
    .await;
    assert!(
        sidecar.status().await["store"]["backlog_events"]
            .as_u64()
            .unwrap()
            > 0
    );
    broker.restart();
    sidecar.wait_drained(Duration::from_secs(120)).await;
    let consumed = assert_all_delivered(&broker.bootstrap(), &topic, &acked).await;
    eprintln!(
        "broker outage: {} acknowledged, {} delivered, {} duplicates",
        acked.len(),
        consumed.len(),
        consumed.len() - acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_pauses_only_itself() {
    let present = "eventzr.integration-hub.oauth.connected.v1".to_string();
    let missing = "eventzr.integration-hub.oauth.expired.v1".to_string();
    let (broker, _dir, sidecar) = setup(std::slice::from_ref(&present), "").await;
    post_ok(sidecar.addr(), &event(&missing, "m-1", "tenant-m", 0)).await;
    post_ok(sidecar.addr(), &event(&present, "p-1", "tenant-m", 1)).await;
    let consumed = consume_async(
        &broker.bootstrap(),
        std::slice::from_ref(&present),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 1, "the present topic flows");
    wait_for(
        "the missing topic to be reported",
        Duration::from_secs(30),
        || {
            let (sidecar, missing) = (&sidecar, &missing);
            async move {
                let status = sidecar.status().await;
                status["relay"]["paused_topics"][missing.as_str()]
                    .as_str()
                    .is_some_and(|e| e.contains("does not exist"))
            }
        },
    )
    .await;
    assert_eq!(
        sidecar.status().await["store"]["backlog_events"],
        1,
        "its event is kept"
    );
    // Once the topic exists, the paused event is delivered.
    broker.create_topics(std::slice::from_ref(&missing), PARTITIONS);
    sidecar.wait_drained(Duration::from_secs(60)).await;
    let consumed = consume_async(&broker.bootstrap(), &[missing], 1, Duration::from_secs(30)).await;
    assert_eq!(consumed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_setting_provisions_the_catalogue_at_start() {
    let (broker, _dir, sidecar) =
        setup(&[], "[kafka]\ncreate_topics = true\ntopic_partitions = 2\n").await;
    let topic = "eventzr.integration-hub.budget.threshold-reached.v1".to_string();
    post_ok(sidecar.addr(), &event(&topic, "b-1", "tenant-b", 0)).await;
    // Delivered only once the topic exists; reading before would find no partition to read.
    sidecar.wait_drained(Duration::from_secs(60)).await;
    let consumed = consume_async(
        &broker.bootstrap(),
        std::slice::from_ref(&topic),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(consumed.len(), 1);
    // Running the command again leaves existing topics alone.
    let output = cli()
        .args(["topics", "create", "--brokers", &broker.bootstrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("exists")).count(),
        36,
        "{text}"
    );
}

/// A size-limited tmpfs for the data directory, unmounted on drop.
struct SmallVolume {
    dir: tempfile::TempDir,
}

impl SmallVolume {
    fn mount(megabytes: u64) -> Option<SmallVolume> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallVolume { dir })
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_answers_503_while_stored_events_drain_and_recovers() {
    let mut broker = Kafka::start();
    let topic = "eventzr.integration-hub.sync.completed.v1".to_string();
    broker.create_topics(std::slice::from_ref(&topic), PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let volume = SmallVolume::mount(48);
    // Where mounting is not allowed, the backlog byte limit stands in for the full disk.
    let (data, extra) = match &volume {
        Some(v) => (
            v.dir.path().join("data"),
            "[store]\nmin_free_bytes = 8388608\n".to_string(),
        ),
        None => (
            dir.path().join("data"),
            "[store]\nmax_backlog_bytes = 200000\n".to_string(),
        ),
    };
    eprintln!(
        "full volume test on {}",
        if volume.is_some() {
            "a 48 MiB tmpfs"
        } else {
            "the backlog limit"
        }
    );
    let sidecar =
        SidecarProcess::start(&config_file(dir.path(), &extra), &data, &broker.bootstrap()).await;
    let addr = sidecar.addr();
    broker.kill();
    // Fill the volume until the sidecar refuses, leaving its reserve free.
    let filler = volume.as_ref().map(|v| v.dir.path().join("filler"));
    if let Some(filler) = &filler {
        let free = edge_outbox::store::disk::free_bytes(filler.parent().unwrap()).unwrap();
        let file = std::fs::File::create(filler).unwrap();
        std::io::Write::write_all(&mut &file, &vec![0u8; (free - 12 * 1024 * 1024) as usize])
            .unwrap();
    }
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..10_000u64 {
        let mut e = event(&topic, &format!("f-{n}"), &format!("tenant-{}", n % 4), n);
        e["data"]["pad"] = serde_json::json!("p".repeat(1000));
        let answer = post_event(addr, &e).await;
        match answer.status {
            202 => acked.push(format!("f-{n}")),
            503 => {
                refused = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    let refused = refused.expect("the sidecar refused once the volume was full");
    assert!(refused.retry_after.is_some());
    assert_eq!(refused.content_type, "application/problem+json");
    let slug = if volume.is_some() {
        "disk-full"
    } else {
        "backlog-full"
    };
    assert_eq!(
        refused.body["type"],
        format!("urn:edge-outbox:problem:{slug}")
    );
    assert!(!acked.is_empty());
    // The stored events drain once the broker is back.
    broker.restart();
    sidecar.wait_drained(Duration::from_secs(120)).await;
    assert_all_delivered(&broker.bootstrap(), &topic, &acked).await;
    // Space comes back: appends are accepted again.
    if let Some(filler) = &filler {
        std::fs::remove_file(filler).unwrap();
    }
    post_ok(addr, &event(&topic, "after", "tenant-0", 0)).await;
    assert_eq!(sidecar.status().await["writable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_record_is_quarantined_and_the_rest_delivered() {
    let broker = Kafka::start();
    let topic = "eventzr.integration-hub.compliance.violation.v1".to_string();
    broker.create_topics(std::slice::from_ref(&topic), PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("data");
    let config = config_file(dir.path(), "");
    // Store ten events while no broker is reachable, then stop cleanly.
    let mut sidecar = SidecarProcess::start(&config, &original, "127.0.0.1:9").await;
    for n in 0..10u64 {
        post_ok(
            sidecar.addr(),
            &event(&topic, &format!("c-{n}"), "tenant-c", n),
        )
        .await;
    }
    // The broker is away, so the drain cannot finish: a second SIGTERM stops it at once,
    // with the exit code that says events are left, and the store closed cleanly.
    let status = sidecar.terminate_twice().await;
    assert_eq!(status.code(), Some(3), "{}", sidecar.log_text());
    // Flip bytes of record 5 in a copy of the store.
    let copy = dir.path().join("copy");
    copy_dir(&original, &copy);
    flip_record_bytes(&copy, 5);
    let sidecar = SidecarProcess::start(&config, &copy, &broker.bootstrap()).await;
    sidecar.wait_drained(Duration::from_secs(60)).await;
    let status = sidecar.status().await;
    assert_eq!(status["store"]["dead_letters"], 1, "{status}");
    let consumed = consume_async(
        &broker.bootstrap(),
        std::slice::from_ref(&topic),
        9,
        Duration::from_secs(60),
    )
    .await;
    let mut ns: Vec<u64> = consumed
        .iter()
        .map(|m| m.json()["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        vec![0, 1, 2, 3, 5, 6, 7, 8, 9],
        "all but the corrupt record (seq 5 = n 4)"
    );
    let dlq: serde_json::Value = get_json(&format!("{}/v1/dlq", sidecar.url())).await;
    assert_eq!(dlq[0]["seq"], 5);
    assert!(
        dlq[0]["error"].as_str().unwrap().contains("corrupt"),
        "{dlq}"
    );
}
