//! Helpers shared by the integration tests: a sidecar on a free loopback port, a mock Kafka
//! cluster, HTTP posting, consuming topics back, and awaiting conditions (never fixed sleeps).
#![allow(dead_code)]

use edge_outbox::config::Config;
use edge_outbox::Sidecar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub mod files;
#[allow(unused_imports)]
pub use files::{copy_dir, flip_bytes};

pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";

/// A configuration for tests: loopback on a free port, fast relay.
pub fn test_config(brokers: &str, dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.kafka.brokers = brokers.to_string();
    config.relay.flush_interval = Duration::from_millis(100);
    config.relay.retry_backoff_min = Duration::from_millis(50);
    config.relay.retry_backoff_max = Duration::from_millis(500);
    config.relay.pause_retry = Duration::from_millis(500);
    config.relay.publish_summaries = false;
    config.log.level = "warn".into();
    config
}

pub async fn start(config: Config) -> Sidecar {
    Sidecar::start(config).await.expect("the sidecar starts")
}

/// An integration-hub event of `event_type` for `tenant`.
pub fn event(event_type: &str, id: &str, tenant: &str, n: u64) -> Value {
    json!({
        "specversion": "1.0",
        "type": event_type,
        "source": "integration-hub-svc",
        "id": id,
        "time": "2026-02-24T12:00:00.000Z",
        "datacontenttype": "application/json",
        "subject": "tenant-uuid",
        "data": {"tenantId": tenant, "n": n, "status": "SUCCESS"}
    })
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    /// The `x-edge-outbox-duplicates` header of a 202.
    pub duplicates: Option<String>,
    pub body: Value,
}

pub async fn post(addr: SocketAddr, content_type: &str, body: Vec<u8>) -> Answer {
    post_with(addr, &[("content-type", content_type)], body).await
}

pub async fn post_with(addr: SocketAddr, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("http://{addr}/v1/events")).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the request is answered");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let duplicates = response
        .headers()
        .get("x-edge-outbox-duplicates")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        retry_after,
        duplicates,
        body,
    }
}

pub async fn post_event(addr: SocketAddr, event: &Value) -> Answer {
    post(addr, STRUCTURED, serde_json::to_vec(event).unwrap()).await
}

/// Posts one structured event and insists on `202`.
pub async fn post_ok(addr: SocketAddr, event: &Value) -> Answer {
    let answer = post_event(addr, event).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    answer
}

/// GET `url` and parse the JSON answer.
pub async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Posts `event` while the mock broker refuses the next produce request as too large, and
/// waits until the sidecar has parked it.
pub async fn post_poison(
    kafka: &edge_outbox::kafka_client::DevBroker,
    sidecar: &Sidecar,
    event: &Value,
) {
    kafka.cluster().request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let parked = sidecar.store().stats().dead_letters + 1;
    post_ok(sidecar.addr(), event).await;
    let store = sidecar.store();
    wait_for(
        "the poison event to be parked",
        Duration::from_secs(30),
        || async move { store.stats().dead_letters == parked },
    )
    .await;
}

/// Consumes `topic` and checks that every id of `acked` is there; returns what was read.
pub async fn assert_all_delivered(brokers: &str, topic: &str, acked: &[String]) -> Vec<Consumed> {
    let consumed = consume_async(
        brokers,
        &[topic.to_string()],
        acked.len(),
        Duration::from_secs(60),
    )
    .await;
    let ids: std::collections::HashSet<&String> =
        consumed.iter().map(|m| &m.headers["ce_id"]).collect();
    for id in acked {
        assert!(ids.contains(id), "{id} lost");
    }
    consumed
}

/// Waits until an in-process sidecar's store has no undelivered event.
pub async fn wait_store_drained(store: &edge_outbox::store::Store, timeout: Duration) {
    wait_for("the backlog to drain", timeout, || async move {
        store.stats().backlog_events == 0
    })
    .await;
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl Consumed {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Reads every partition of `topics` from the beginning, with an independent consumer, until
/// at least `expected` messages are read and every partition is read up to the high watermark
/// it had when reading started (or `timeout` passes).
pub fn consume(
    brokers: &str,
    topics: &[String],
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut assignment = TopicPartitionList::new();
    // (topic, partition) -> (offset to read next, high watermark at the start)
    let mut progress: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        for t in metadata.topics() {
            for p in t.partitions() {
                // A topic created a moment ago may still be electing its leaders.
                let (low, high) = loop {
                    match consumer.fetch_watermarks(t.name(), p.id(), Duration::from_secs(10)) {
                        Ok(marks) => break marks,
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("watermarks of {}/{}: {e}; asking again", t.name(), p.id());
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => panic!("watermarks of {}/{}: {e}", t.name(), p.id()),
                    }
                };
                progress.insert((t.name().to_string(), p.id()), (low, high));
                assignment
                    .add_partition_offset(t.name(), p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let done = |out: &Vec<Consumed>, progress: &HashMap<(String, i32), (i64, i64)>| {
        out.len() >= expected && progress.values().all(|(next, high)| next >= high)
    };
    while !done(&out, &progress) && Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            let m = match result {
                // At the end of a partition the position has passed what no message shows:
                // the markers of transactions (exactly-once) and their aborted records.
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                    for p in consumer.position().unwrap().elements() {
                        let key = (p.topic().to_string(), p.partition());
                        if let (Some(entry), Some(at)) =
                            (progress.get_mut(&key), p.offset().to_raw())
                        {
                            entry.0 = entry.0.max(at);
                        }
                    }
                    continue;
                }
                // A broker restarted a moment ago: librdkafka says so and retries by itself.
                Err(e @ rdkafka::error::KafkaError::MessageConsumption(_)) => {
                    eprintln!("consume: {e}; librdkafka retries");
                    continue;
                }
                result => result.unwrap(),
            };
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(entry) = progress.get_mut(&(m.topic().to_string(), m.partition())) {
                entry.0 = entry.0.max(m.offset() + 1);
            }
            out.push(Consumed {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).to_string(),
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    out
}

/// `consume` on a blocking thread.
pub async fn consume_async(
    brokers: &str,
    topics: &[String],
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let brokers = brokers.to_string();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || consume(&brokers, &topics, expected, timeout))
        .await
        .unwrap()
}

/// An event of `topic` with id `big` of about 1.05 MB: over the 1 MiB `max.message.bytes` that
/// MSK gives a topic, so that a producer set to send more has it refused by the broker.
pub fn oversized_event(topic: &str) -> Value {
    let mut big = event(topic, "big", "t", 1);
    big["data"]["blob"] = json!("x".repeat(1_050_000));
    big
}

/// Once `sidecar` has drained `before`, [`oversized_event`] and `after` of `topic`: `big` is its
/// one dead letter, with the broker's `MessageSizeTooLarge`, and the topic holds `before` and
/// `after`, each once (read committed), in order: the same tenant's next event flows.
pub async fn assert_only_the_oversized_event_parked(
    sidecar: &process::SidecarProcess,
    brokers: &str,
    topic: &str,
) {
    sidecar.wait_drained(Duration::from_secs(60)).await;
    let status = sidecar.status().await;
    assert_eq!(status["store"]["dead_letters"], 1, "{status}");
    let dlq = get_json(&format!("{}/v1/dlq", sidecar.url())).await;
    assert_eq!(dlq[0]["event_id"], "big");
    let error = dlq[0]["error"].as_str().unwrap();
    assert!(error.contains("MessageSizeTooLarge"), "{error}");
    let consumed = consume_async(brokers, &[topic.to_string()], 2, Duration::from_secs(30)).await;
    let ids: Vec<&str> = consumed
        .iter()
        .map(|m| m.headers["ce_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["before", "after"],
        "the same tenant's next event flows"
    );
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `edge-outbox` binary as a command, with no `EDGE_OUTBOX_*` or AWS settings from the
/// caller's environment and an AWS credential chain that finds nothing (no files, no instance
/// metadata).
pub fn cli() -> std::process::Command {
    without_caller_settings(std::process::Command::new(env!(
        "CARGO_BIN_EXE_edge-outbox"
    )))
}

/// `command` without the caller's `EDGE_OUTBOX_*` and AWS settings (as [`cli`]), for a program
/// that runs the binary itself (strace, say).
pub fn without_caller_settings(mut command: std::process::Command) -> std::process::Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("EDGE_OUTBOX_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        );
    command
}

/// `edge-outbox dev` on `port` with its store in `data`; returns the process and the embedded
/// broker's bootstrap address, read from the banner it prints once it serves. Its standard
/// output keeps being read, so that the pipe stays open.
pub fn dev_process(data: &Path, port: u16) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cli()
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--flush-interval", "100ms", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    std::thread::spawn(move || for _ in stdout.lines() {});
    let bootstrap = banner
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no bootstrap address in {banner:?}"))
        .to_string();
    (child, bootstrap)
}

/// SIGTERM to `child`, then its exit status, awaited on a blocking thread.
pub async fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// `args` run with `env` added; the output of a run that must succeed.
pub fn cli_stdout(args: &[&str], env: &[(&str, &str)]) -> String {
    stdout_ok(cli().args(args).envs(env.iter().copied()).output().unwrap())
}

/// The standard output of a command that must have succeeded (else its stderr is shown).
pub fn stdout_ok(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub mod crash_loop;
pub mod kafka;
pub mod process;

/// Flips two bytes in the middle of the stored record `seq` of a stopped store, behind the
/// store's back (where `inspect` locates it), for the tests that prove corruption is found.
pub fn flip_record_bytes(dir: &Path, seq: u64) {
    let inspector = edge_outbox::store::inspect::Inspector::open(dir).unwrap();
    let at = inspector.locate(seq).unwrap();
    drop(inspector);
    flip_bytes(&at.file, at.offset + u64::from(at.len) / 2);
}

/// Posts `per_tenant` events of `topic` for each tenant (`tenant-<t>`, `n` = 0, 1, ...), each
/// tenant from its own client in order; every one must be answered 202.
pub async fn post_tenants(
    addr: SocketAddr,
    topic: &str,
    tenants: usize,
    per_tenant: u64,
    prefix: &str,
) {
    let mut clients = Vec::new();
    for t in 0..tenants {
        let (prefix, topic) = (prefix.to_string(), topic.to_string());
        clients.push(tokio::spawn(async move {
            for n in 0..per_tenant {
                let e = event(
                    &topic,
                    &format!("{prefix}-{t}-{n}"),
                    &format!("tenant-{t}"),
                    n,
                );
                let answer = post_event(addr, &e).await;
                assert_eq!(answer.status, 202, "{:?}", answer.body);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
}

/// Each tenant's `n` values, in the order they arrived; `tenants` of them.
pub fn values_per_tenant(consumed: &[Consumed], tenants: usize) -> HashMap<String, Vec<u64>> {
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for m in consumed {
        seen.entry(m.key.clone())
            .or_default()
            .push(m.json()["n"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), tenants);
    seen
}

/// Checks that each tenant's `n` values arrive strictly in order, with none missing.
pub fn assert_in_order(consumed: &[Consumed], tenants: usize, per_tenant: u64) {
    for (tenant, ns) in values_per_tenant(consumed, tenants) {
        let mut dedup = ns.clone();
        dedup.dedup();
        assert_eq!(
            dedup,
            (0..per_tenant).collect::<Vec<_>>(),
            "order of {tenant} (duplicates removed): {ns:?}"
        );
    }
}

/// Checks that each tenant's `n` values first arrive in order, with none missing: a batch sent
/// again after a failure may repeat values already delivered (at-least-once).
pub fn assert_first_arrivals_in_order(consumed: &[Consumed], tenants: usize, per_tenant: u64) {
    for (tenant, ns) in values_per_tenant(consumed, tenants) {
        let mut first = Vec::new();
        for n in ns {
            if !first.contains(&n) {
                first.push(n);
            }
        }
        assert_eq!(
            first,
            (0..per_tenant).collect::<Vec<_>>(),
            "first arrivals of {tenant}"
        );
    }
}
