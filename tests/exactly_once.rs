//! Exactly-once into Apache Kafka (`relay.delivery = "exactly-once"`), with the real binary: a
//! `read_committed` consumer sees every acknowledged event once, in order per tenant, whatever
//! the sidecar is killed in (a transaction open, committed but not confirmed in the store, the
//! fence step, twenty SIGKILLs under load), when the leader of the checkpoint topic dies, and
//! when a copy of the store is started beside the original (the copy fences it, and it stops).

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "eventzr.integration-hub.webhook.dispatched.v1";
const CHECKPOINTS: &str = "edge-outbox.checkpoints";
const CRASH_AT: &str = "EDGE_OUTBOX_TEST_CRASH_AT";

fn config_file(dir: &Path) -> std::path::PathBuf {
    config_file_with(dir, "", "")
}

/// The tests' exactly-once configuration, with `relay` lines added to `[relay]` and `kafka`
/// lines as `[kafka.properties]`.
fn config_file_with(dir: &Path, relay: &str, kafka: &str) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\ndelivery = \"exactly-once\"\nflush_interval = \"50ms\"\nbatch_max_events = 40\n\
             publish_summaries = false\nretry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n\
             {relay}\n[kafka.properties]\n{kafka}\n"
        ),
    )
    .unwrap();
    path
}

/// Waits until the sidecar has delivered at least `events`.
async fn delivered(sidecar: &SidecarProcess, events: u64) {
    wait_for("deliveries", Duration::from_secs(120), || async {
        sidecar.status().await["relay"]["delivered_events"].as_u64() >= Some(events)
    })
    .await
}

/// `edge-outbox topics create` in exactly-once mode: the catalogue and the checkpoint topic.
fn provision(broker: &Kafka, config: &Path) {
    let output = cli()
        .args(["topics", "create", "--brokers", &broker.bootstrap()])
        .arg("--config")
        .arg(config)
        .args(["--replication", "-1"])
        .output()
        .unwrap();
    let text = stdout_ok(output);
    assert!(text.contains(&format!("created  {CHECKPOINTS}")), "{text}");
    let described = broker.configs(&[
        "--describe",
        "--entity-type",
        "topics",
        "--entity-name",
        CHECKPOINTS,
    ]);
    assert!(described.contains("cleanup.policy=compact"), "{described}");
}

/// Posts up to `per_tenant` events for each of the `tenants` (ids `{prefix}-{t}-{n}`, tenant
/// `tenant-{t}`), round robin, until done or the sidecar is gone; returns the acknowledged ids.
async fn post_some(
    addr: std::net::SocketAddr,
    prefix: &str,
    tenants: std::ops::Range<u64>,
    per_tenant: u64,
) -> Vec<String> {
    post_until_gone(addr, prefix, tenants, per_tenant).await.0
}

/// [`post_some`], and the id of the request in flight when the sidecar went away (it may have
/// been stored, unanswered).
async fn post_until_gone(
    addr: std::net::SocketAddr,
    prefix: &str,
    tenants: std::ops::Range<u64>,
    per_tenant: u64,
) -> (Vec<String>, Option<String>) {
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for n in 0..per_tenant {
        for t in tenants.clone() {
            let id = format!("{prefix}-{t}-{n}");
            let body = event(TOPIC, &id, &format!("tenant-{t}"), n);
            let sent = client
                .post(format!("http://{addr}/v1/events"))
                .header("content-type", STRUCTURED)
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().as_u16() == 202 => acked.push(id),
                Ok(answer) => panic!("{id}: {}", answer.status()),
                Err(_) => return (acked, Some(id)),
            }
        }
    }
    (acked, None)
}

/// Reads the topic (read_committed, librdkafka's default) and checks that every acknowledged
/// id is there exactly once, and each tenant's in the order posted (prefixes are posted in
/// alphabetical order); returns how many were read.
async fn assert_exactly_once(brokers: &str, acked: &[String]) -> usize {
    let consumed = consume_async(
        brokers,
        &[TOPIC.to_string()],
        acked.len(),
        Duration::from_secs(60),
    )
    .await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for m in &consumed {
        *copies.entry(m.headers["ce_id"].as_str()).or_default() += 1;
    }
    for id in acked {
        assert!(copies.contains_key(id.as_str()), "{id} lost");
    }
    let repeated: Vec<(&&str, &usize)> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "sent twice: {:?}",
        &repeated[..repeated.len().min(10)]
    );
    let mut by_offset = consumed.clone();
    by_offset.sort_by_key(|m| (m.partition, m.offset));
    let mut last: HashMap<String, (String, u64)> = HashMap::new();
    for m in &by_offset {
        let id = &m.headers["ce_id"];
        let prefix = id.split('-').next().unwrap().to_string();
        let n = m.json()["n"].as_u64().unwrap();
        if let Some(before) = last.insert(m.key.clone(), (prefix.clone(), n)) {
            assert!(before < (prefix, n), "{}: {id} after {before:?}", m.key);
        }
    }
    consumed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_a_transaction_sends_nothing_twice() {
    let broker = Kafka::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    provision(&broker, &config);
    let data = dir.path().join("data");
    let mut acked = Vec::new();
    // Requests in flight at a kill: stored or not, never answered.
    let mut unanswered: Vec<String> = Vec::new();
    // Killed right after a commit, before the store confirms it: the restart must take the
    // checkpoint's word for it.
    let mut sidecar = SidecarProcess::start_with_env(
        &config,
        &data,
        &broker.bootstrap(),
        &[(CRASH_AT, "committed")],
    )
    .await;
    let (posted, in_flight) = post_until_gone(sidecar.addr(), "a", 0..4, 100).await;
    acked.extend(posted);
    unanswered.extend(in_flight);
    let status = sidecar.wait_exit();
    assert!(!status.success(), "killed at the commit: {status:?}");
    assert!(!acked.is_empty());
    // Killed in the fence step of the restart (the relay's first step, here once a full batch
    // waits), with that commit still unconfirmed in the store.
    let mut sidecar = SidecarProcess::start_with_env(
        &config,
        &data,
        &broker.bootstrap(),
        &[
            (CRASH_AT, "fenced"),
            ("EDGE_OUTBOX__RELAY__FLUSH_INTERVAL", "1h"),
        ],
    )
    .await;
    let (posted, in_flight) = post_until_gone(sidecar.addr(), "b", 0..4, 100).await;
    acked.extend(posted);
    unanswered.extend(in_flight);
    sidecar.wait_exit();
    assert!(sidecar.log_text().contains("fenced: killing the process"));
    // Killed with a transaction open: produced, not committed.
    let mut sidecar = SidecarProcess::start_with_env(
        &config,
        &data,
        &broker.bootstrap(),
        &[(CRASH_AT, "transaction-open")],
    )
    .await;
    let (posted, in_flight) = post_until_gone(sidecar.addr(), "c", 0..4, 100).await;
    acked.extend(posted);
    unanswered.extend(in_flight);
    sidecar.wait_exit();
    assert!(sidecar
        .log_text()
        .contains("transaction-open: killing the process"));
    let sidecar = SidecarProcess::start(&config, &data, &broker.bootstrap()).await;
    let more = post_some(sidecar.addr(), "d", 0..4, 5).await;
    assert_eq!(more.len(), 20);
    acked.extend(more);
    sidecar.wait_drained(Duration::from_secs(60)).await;
    let read = assert_exactly_once(&broker.bootstrap(), &acked).await;
    assert!(
        (acked.len()..=acked.len() + unanswered.len()).contains(&read),
        "{read} read, {} acknowledged, unanswered {unanswered:?}",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_under_load_send_nothing_twice_where_at_least_once_does() {
    let broker = Kafka::start();
    let dir = tempfile::tempdir().unwrap();
    provision(&broker, &config_file(dir.path()));
    let exactly_once = common::crash_loop::run_with(
        &broker.bootstrap(),
        20,
        6,
        50,
        "delivery = \"exactly-once\"",
        TOPIC,
    )
    .await;
    eprintln!("exactly-once crash loop against Apache Kafka: {exactly_once:?}");
    // The same loop on the same broker, at least once, to another topic: its duplicates are
    // what exactly-once saves consumers from (docs/GUARANTEES.md).
    let at_least_once = common::crash_loop::run_with(
        &broker.bootstrap(),
        20,
        6,
        50,
        "",
        "eventzr.integration-hub.sync.completed.v1",
    )
    .await;
    eprintln!("at-least-once crash loop against Apache Kafka: {at_least_once:?}");
    assert_eq!(exactly_once.duplicates, 0, "{exactly_once:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_topic_losing_its_leader_mid_run_sends_nothing_twice() {
    let mut cluster = Kafka::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file_with(
        dir.path(),
        "",
        "\"request.timeout.ms\" = \"5000\"\n\"metadata.max.age.ms\" = \"2000\"",
    );
    provision(&cluster, &config);
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &cluster.bootstrap()).await;
    let addr = sidecar.addr();
    // Five tenants post 200 events each, one after the other, while the leader is away.
    let clients: Vec<_> = (0..5u64)
        .map(|t| tokio::spawn(async move { post_some(addr, "k", t..t + 1, 200).await }))
        .collect();
    delivered(&sidecar, 150).await;
    let leader = cluster.leader_of(CHECKPOINTS, 0);
    cluster.kill_node(leader);
    delivered(&sidecar, 500).await;
    cluster.start_node(leader);
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert_eq!(acked.len(), 1000);
    sidecar.wait_drained(Duration::from_secs(120)).await;
    let read = assert_exactly_once(&cluster.bootstrap(), &acked).await;
    assert_eq!(read, acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_store_started_beside_it_fences_the_original_which_stops() {
    let broker = Kafka::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    provision(&broker, &config);
    let (original, copy) = (dir.path().join("original"), dir.path().join("copy"));
    let mut first = SidecarProcess::start(&config, &original, &broker.bootstrap()).await;
    let mut acked = post_some(first.addr(), "a", 0..2, 10).await;
    first.wait_drained(Duration::from_secs(60)).await;
    assert!(first.terminate_and_wait().0.success());
    common::files::copy_dir(&original, &copy);

    let mut first = SidecarProcess::start(&config, &original, &broker.bootstrap()).await;
    let second = SidecarProcess::start(&config, &copy, &broker.bootstrap()).await;
    // Once the copy has delivered, it has fenced the original's producer.
    acked.extend(post_some(second.addr(), "b", 0..2, 5).await);
    second.wait_drained(Duration::from_secs(60)).await;
    // The original still stores what it is given (202), then finds itself fenced and stops.
    // In one request: the original may find itself fenced as soon as it holds an event to
    // send, and then takes no more.
    let kept: Vec<String> = (0..5)
        .flat_map(|n| (0..2).map(move |t| format!("c-{t}-{n}")))
        .collect();
    let batch: Vec<_> = (kept.iter().enumerate())
        .map(|(i, id)| event(TOPIC, id, &format!("tenant-{}", i % 2), i as u64 / 2))
        .collect();
    let answer = post(first.addr(), BATCH, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let status = first.wait_exit();
    assert_eq!(status.code(), Some(4), "{}", first.log_text());
    let log = first.log_text();
    assert!(
        log.contains("another producer took this store's transactional id"),
        "{log}"
    );
    // Its events stay in its store, for an operator to decide about.
    let backlog = cli()
        .args(["inspect", "--export", "backlog", "--data-dir"])
        .arg(&original)
        .output()
        .unwrap();
    let backlog = stdout_ok(backlog);
    for id in &kept {
        assert!(backlog.contains(&format!("\"{id}\"")), "{id} not kept");
    }
    // The copy goes on delivering; nothing reached Kafka twice, nothing of the fenced one.
    acked.extend(post_some(second.addr(), "d", 0..2, 5).await);
    second.wait_drained(Duration::from_secs(60)).await;
    let read = assert_exactly_once(&broker.bootstrap(), &acked).await;
    assert_eq!(read, acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_checks_the_checkpoint_topic_and_transactions() {
    let broker = Kafka::start();
    broker.create_topics(&edge_outbox::catalog::Catalog::builtin().topics(), 1);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let check = || {
        let output = cli()
            .args(["check-config", "--connect", "--timeout", "10s", "--config"])
            .arg(&config)
            .args(["--brokers", &broker.bootstrap()])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), report)
    };
    let (ok, report) = check();
    assert!(!ok, "{report}");
    assert!(report.contains("FAIL  checkpoints"), "{report}");
    assert!(report.contains("edge-outbox topics create"), "{report}");
    // Not compacted: refused, with why.
    broker.create_topic_with(CHECKPOINTS, 1, &[]);
    let (ok, report) = check();
    assert!(!ok, "{report}");
    assert!(report.contains("must be compacted"), "{report}");
    broker.configs(&[
        "--alter",
        "--entity-type",
        "topics",
        "--entity-name",
        CHECKPOINTS,
        "--add-config",
        "cleanup.policy=compact",
    ]);
    let (ok, report) = check();
    assert!(ok, "{report}");
    assert!(report.contains("ok    transactions"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_hung_past_the_transaction_timeout_sends_nothing_twice_and_the_relay_goes_on() {
    // librdkafka's known transaction pitfalls sit on this path: a transaction the coordinator
    // timed out (INVALID_TXN_STATE, librdkafka issue 3297), begin_transaction after a fatal
    // error (4420), fencing after a disconnect (3928). The relay makes a new producer instead.
    let broker = Kafka::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file_with(
        dir.path(),
        "max_events_per_second = 200",
        "\"transaction.timeout.ms\" = \"4000\"\n\"request.timeout.ms\" = \"1500\"",
    );
    provision(&broker, &config);
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    let addr = sidecar.addr();
    // Three tenants keep posting while the broker hangs; the rate limit keeps transactions open
    // for a while, so that the hang catches one under way.
    let clients: Vec<_> = (0..3u64)
        .map(|t| tokio::spawn(async move { post_some(addr, "h", t..t + 1, 300).await }))
        .collect();
    delivered(&sidecar, 100).await;
    broker.signal_node(1, "STOP");
    // Past transaction.timeout.ms (4 s): the coordinator aborts what was open when it wakes.
    tokio::time::sleep(Duration::from_secs(7)).await;
    broker.signal_node(1, "CONT");
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert_eq!(acked.len(), 900);
    sidecar.wait_drained(Duration::from_secs(120)).await;
    let read = assert_exactly_once(&broker.bootstrap(), &acked).await;
    assert_eq!(read, acked.len());
    let status = sidecar.status().await;
    eprintln!("after the hang: {}", status["relay"]["last_errors"]);
    assert!(
        !sidecar.log_text().contains("another producer took"),
        "{}",
        sidecar.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_refuses_is_parked_and_its_transaction_sent_again_without_it() {
    let broker = Kafka::start();
    let topic = "eventzr.integration-hub.sync.failed.v1";
    broker.create_topic_with(topic, 3, &[("max.message.bytes", "1048576")]);
    let dir = tempfile::tempdir().unwrap();
    // A producer that sends up to 2 MB, so that the broker is the one to refuse.
    let config = config_file_with(
        dir.path(),
        "[ingest]\nmax_event_bytes = 2097152\n[kafka]\ncompression = \"none\"",
        "\"message.max.bytes\" = \"3000000\"",
    );
    provision(&broker, &config);
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    // One request, so that all three are in one transaction.
    let batch = vec![
        event(topic, "before", "t", 0),
        oversized_event(topic),
        event(topic, "after", "t", 2),
    ];
    let answer = post(sidecar.addr(), BATCH, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    // The aborted transaction's copies are invisible to read_committed: each once, in order.
    assert_only_the_oversized_event_parked(&sidecar, &broker.bootstrap(), topic).await;
}
