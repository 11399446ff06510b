//! A pod's life with the real binary and Apache Kafka: SIGTERM drains the backlog before the
//! exit (with intake open for its grace, then 503), a drain that cannot finish exits with its
//! own code and leaves the store whole, a second signal stops at once, a locked store refuses
//! a second process, and the adopter delivers and removes the stores of sidecars that are gone.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const TOPIC: &str = "eventzr.integration-hub.execution.completed.v1";

fn config_file(dir: &Path, shutdown: &str) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nflush_interval = \"10s\"\npublish_summaries = false\nretry_backoff_min = \"50ms\"\n\
             retry_backoff_max = \"500ms\"\npause_retry = \"500ms\"\n[shutdown]\n{shutdown}"
        ),
    )
    .unwrap();
    path
}

/// Posts `count` events of `tenant` in batches of 100 with ids `{prefix}-{n}`; returns the ids.
async fn post_many(addr: SocketAddr, prefix: &str, tenant: &str, count: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for start in (0..count).step_by(100) {
        let batch: Vec<serde_json::Value> = (start..(start + 100).min(count))
            .map(|n| event(TOPIC, &format!("{prefix}-{n}"), tenant, n))
            .collect();
        let answer = post(addr, BATCH, serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        ids.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    }
    ids
}

/// How many times each id was read back.
fn counts(consumed: &[Consumed]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in consumed {
        *counts.entry(m.headers["ce_id"].clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_the_whole_backlog_before_exiting() {
    let broker = Kafka::start();
    broker.create_topics(&[TOPIC.to_string()], 3);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "intake_grace = \"0s\"\ndrain_timeout = \"25s\"\n",
    );
    let mut sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    let acked = post_many(sidecar.addr(), "d", "tenant-d", 5_000).await;
    // The flush interval is 10 s: nothing has been sent yet.
    assert_eq!(sidecar.status().await["relay"]["delivered_events"], 0);
    let (status, took) = sidecar.terminate_and_wait();
    assert!(status.success(), "exit {status}\n{}", sidecar.log_text());
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert!(
        sidecar.log_text().contains("drained"),
        "{}",
        sidecar.log_text()
    );
    let consumed = assert_all_delivered(&broker.bootstrap(), TOPIC, &acked).await;
    assert_eq!(consumed.len(), acked.len(), "each event once");
    eprintln!("drained 5,000 events on SIGTERM in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_clients_post_delivers_every_202_and_refuses_after_the_grace() {
    let broker = Kafka::start();
    broker.create_topics(&[TOPIC.to_string()], 3);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "intake_grace = \"2s\"\ndrain_timeout = \"20s\"\n",
    );
    let mut sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    let addr = sidecar.addr();
    // Four clients post one event after the other until they are refused.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut acked = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                for n in 0.. {
                    assert!(Instant::now() < deadline, "client {c} was never refused");
                    let id = format!("p{c}-{n}");
                    let body = serde_json::to_vec(&event(TOPIC, &id, &format!("t{c}"), n)).unwrap();
                    let response = client
                        .post(format!("http://{addr}/v1/events"))
                        .header("content-type", STRUCTURED)
                        .body(body)
                        .send()
                        .await;
                    let Ok(response) = response else {
                        panic!("client {c}: the sidecar went away before refusing with 503");
                    };
                    match response.status().as_u16() {
                        202 => acked.push(id),
                        503 => {
                            let retry_after = response.headers().get("retry-after").cloned();
                            let problem: serde_json::Value = response.json().await.unwrap();
                            return (acked, retry_after, problem);
                        }
                        other => panic!("client {c}: unexpected {other}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    wait_for("a first few events", Duration::from_secs(30), || async {
        sidecar.status().await["store"]["backlog_events"].as_u64() > Some(20)
    })
    .await;
    // Taken before the signal: the sidecar's grace starts when it gets the signal, which can be
    // before `kill` has returned here.
    let signalled = Instant::now();
    sidecar.signal("TERM");
    // From the signal on: not ready, and the drain shows in status and metrics.
    wait_for("readiness to fail", Duration::from_secs(5), || async {
        reqwest::get(format!("{}/readyz", sidecar.url()))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let readyz: serde_json::Value = get_json(&format!("{}/readyz", sidecar.url())).await;
    assert!(
        readyz["reasons"][0]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{readyz}"
    );
    let status = sidecar.status().await;
    assert_eq!(status["shutdown"]["phase"], "draining", "{status}");
    assert!(status["shutdown"]["deadline_in_ms"].as_u64().unwrap() <= 20_000);
    let metrics = reqwest::get(format!("{}/metrics", sidecar.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("edge_outbox_draining 1"), "{metrics}");
    let mut acked = Vec::new();
    for client in clients {
        let (ids, retry_after, problem) = client.await.unwrap();
        assert!(retry_after.is_some(), "a 503 says when to retry");
        assert_eq!(problem["type"], "urn:edge-outbox:problem:shutting-down");
        acked.extend(ids);
    }
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "intake stays open for the grace"
    );
    let exit = sidecar.wait_exit();
    assert!(exit.success(), "exit {exit}\n{}", sidecar.log_text());
    let consumed = assert_all_delivered(&broker.bootstrap(), TOPIC, &acked).await;
    assert_eq!(
        consumed.len(),
        acked.len(),
        "each accepted event once, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_away_exits_at_the_deadline_and_keeps_the_store() {
    let mut broker = Kafka::start();
    broker.create_topics(&[TOPIC.to_string()], 3);
    broker.kill();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(
        dir.path(),
        "intake_grace = \"0s\"\ndrain_timeout = \"3s\"\n",
    );
    let mut sidecar = SidecarProcess::start(&config, &data, &broker.bootstrap()).await;
    let acked = post_many(sidecar.addr(), "a", "tenant-a", 300).await;
    let (status, took) = sidecar.terminate_and_wait();
    assert_eq!(status.code(), Some(3), "{}", sidecar.log_text());
    // The exit follows the deadline within the 5 s the manifests leave before kubelet's SIGKILL
    // (drain_timeout 25 s of a 30 s grace period): no blocking call left over (a metadata
    // request to the absent broker) may hold it.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(3 + 5),
        "took {took:?}"
    );
    let log = sidecar.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("undelivered events"))
        .unwrap_or_else(|| panic!("no ERROR line about the events left: {log}"));
    assert!(line.contains("events_left=300"), "{line}");
    assert!(line.contains(&format!("{TOPIC}=300/")), "{line}");
    assert!(line.contains("oldest_age_ms="), "{line}");

    // Again with the broker still away; a second signal stops the drain at once.
    let mut sidecar = SidecarProcess::start(&config, &data, &broker.bootstrap()).await;
    assert_eq!(sidecar.status().await["store"]["backlog_events"], 300);
    let status = sidecar.terminate_twice().await;
    assert_eq!(status.code(), Some(3));

    // With the broker back, a new start on the store delivers everything.
    broker.restart();
    let mut sidecar = SidecarProcess::start(&config, &data, &broker.bootstrap()).await;
    sidecar.terminate();
    let consumed = assert_all_delivered(&broker.bootstrap(), TOPIC, &acked).await;
    assert_eq!(consumed.len(), acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_a_locked_store_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path(), "");
    let sidecar = SidecarProcess::start(&config, &data, "127.0.0.1:9").await;
    post_many(sidecar.addr(), "l", "tenant-l", 100).await;
    let lock_before = std::fs::read_to_string(data.join("edge-outbox.lock")).unwrap();
    let output = cli()
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--brokers", "127.0.0.1:9", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another edge-outbox (pid {}) holds the store",
            sidecar.pid()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("edge-outbox.lock")).unwrap(),
        lock_before
    );
    let status = sidecar.status().await;
    assert_eq!(status["store"]["backlog_events"], 100, "{status}");
    assert_eq!(status["writable"], true);
}

/// An `edge-outbox adopt` process.
struct Adopter {
    child: std::process::Child,
    url: String,
}

impl Adopter {
    async fn start(root: &Path, brokers: &str, config: &Path) -> Adopter {
        let port = free_port();
        let child = cli()
            .args(["adopt", "--config"])
            .arg(config)
            .arg("--root")
            .arg(root)
            .args([
                "--brokers",
                brokers,
                "--scan-interval",
                "200ms",
                "--min-idle",
                "1s",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "RUST_LOG",
                "warn,librdkafka=off,edge_outbox::kafka_client=off",
            )
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let status_url = format!("{url}/v1/status");
        wait_for("the adopter", Duration::from_secs(30), || {
            let status_url = status_url.clone();
            async move { reqwest::get(status_url).await.is_ok() }
        })
        .await;
        Adopter { child, url }
    }

    async fn status(&self) -> serde_json::Value {
        get_json(&format!("{}/v1/status", self.url)).await
    }
}

impl Drop for Adopter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopters_deliver_and_remove_the_stores_of_killed_sidecars_and_leave_a_live_one() {
    let mut broker = Kafka::start();
    broker.create_topics(&[TOPIC.to_string()], 3);
    broker.kill();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("stores");
    let config = config_file(dir.path(), "");
    // Three sidecars store events while the broker is away, and are killed.
    let mut acked = Vec::new();
    for pod in ["pod-a", "pod-b", "pod-c"] {
        let mut sidecar =
            SidecarProcess::start(&config, &root.join(pod), &broker.bootstrap()).await;
        acked.extend(post_many(sidecar.addr(), pod, pod, 500).await);
        sidecar.kill();
    }
    // A live one, whose store is its own.
    let live = SidecarProcess::start(&config, &root.join("pod-live"), &broker.bootstrap()).await;
    let live_acked = post_many(live.addr(), "pod-live", "pod-live", 200).await;
    broker.restart();
    let adopters = [
        Adopter::start(&root, &broker.bootstrap(), &config).await,
        Adopter::start(&root, &broker.bootstrap(), &config).await,
    ];
    // An adopter counts a store drained just after removing its folder: await both.
    wait_for(
        "the three dead stores to be delivered and removed",
        Duration::from_secs(90),
        || async {
            let mut drained = 0;
            for adopter in &adopters {
                drained += adopter.status().await["drained"].as_u64().unwrap();
            }
            drained >= 3
                && ["pod-a", "pod-b", "pod-c"]
                    .iter()
                    .all(|pod| !root.join(pod).exists())
        },
    )
    .await;
    let mut adopted = 0;
    let mut drained = 0;
    for adopter in &adopters {
        let status = adopter.status().await;
        adopted += status["adopted"].as_u64().unwrap();
        drained += status["drained"].as_u64().unwrap();
        assert_eq!(status["stores_seen"], 4, "{status}");
        assert_eq!(status["kept"], serde_json::json!({}), "{status}");
    }
    assert_eq!((adopted, drained), (3, 3), "each dead store adopted once");
    // The live sidecar still owns its store and serves.
    assert!(root.join("pod-live").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("pod-live/edge-outbox.lock"))
            .unwrap()
            .trim(),
        live.pid().to_string()
    );
    assert_eq!(live.status().await["writable"], true);
    let consumed = assert_all_delivered(&broker.bootstrap(), TOPIC, &acked).await;
    let counts = counts(&consumed);
    let duplicates: usize = acked.iter().map(|id| counts[id] - 1).sum();
    // The broker was away when the sidecars were killed: nothing was in flight to send twice.
    assert_eq!(duplicates, 0);
    let adopted_ids: HashSet<&String> = acked.iter().collect();
    assert!(live_acked.iter().all(|id| !adopted_ids.contains(id)));
    // Order per tenant (each pod is one tenant) holds in the adopted stores.
    let mut last: HashMap<(String, i32), u64> = HashMap::new();
    for m in consumed.iter().filter(|m| m.key != "pod-live") {
        let n = m.json()["n"].as_u64().unwrap();
        let previous = last.insert((m.key.clone(), m.partition), n);
        assert!(previous.is_none_or(|p| p < n), "{} out of order", m.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_right_after_sigterm_are_delivered_before_the_exit() {
    // Appends landing between the relay's read of an empty batch and its count of what was
    // left made it take them for paused events and wait out pause_retry, past the deadline.
    let broker = Kafka::start();
    broker.create_topics(&[TOPIC.to_string()], 3);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "intake_grace = \"2s\"\ndrain_timeout = \"10s\"\n",
    );
    // Nothing sent but by the drain, and a pause as long as the default.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("flush_interval = \"10s\"", "flush_interval = \"1h\"")
        .replace("pause_retry = \"500ms\"", "pause_retry = \"30s\"");
    std::fs::write(&config, text).unwrap();
    for round in 0..3 {
        let data = dir.path().join(format!("data-{round}"));
        let mut sidecar = SidecarProcess::start(&config, &data, &broker.bootstrap()).await;
        sidecar.signal("TERM");
        let mut acked = Vec::new();
        for n in 0..30 {
            let id = format!("r{round}-{n}");
            let answer = post_event(sidecar.addr(), &event(TOPIC, &id, "tenant-r", n)).await;
            if answer.status != 202 {
                break;
            }
            acked.push(id);
        }
        let status = sidecar.wait_exit();
        assert!(
            status.success(),
            "round {round}: exit {status}\n{}",
            sidecar.log_text()
        );
        let consumed = consume_async(
            &broker.bootstrap(),
            &[TOPIC.to_string()],
            0,
            Duration::from_secs(30),
        )
        .await;
        let ids: HashSet<&str> = consumed
            .iter()
            .map(|m| m.headers["ce_id"].as_str())
            .collect();
        for id in &acked {
            assert!(ids.contains(id.as_str()), "round {round}: {id} lost");
        }
    }
}
