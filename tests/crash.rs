//! Crash safety of the real binary: it is killed with SIGKILL at random moments (during
//! appends, right after a delivery report, at random) while clients post concurrently, then
//! restarted on the same data directory. The mock cluster lives in this test process, so it
//! outlives every kill. At the end every event answered 202 must be in Kafka; duplicates are
//! allowed only for batches in flight at a kill, and are counted.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka::DevBroker;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "eventzr.integration-hub.webhook.dispatched.v1";
const CYCLES: u64 = 8;
const CLIENTS: usize = 6;
const BATCH: u64 = 50;

fn spawn(dir: &Path, config: &Path, brokers: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_edge-outbox"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--brokers",
            brokers,
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts")
}

async fn status(client: &reqwest::Client, port: u16) -> Option<serde_json::Value> {
    client
        .get(format!("http://127.0.0.1:{port}/v1/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn wait_serving(client: &reqwest::Client, port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(client, port).await.is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sidecar exited at start"
        );
        assert!(
            Instant::now() < deadline,
            "the sidecar did not start serving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small xorshift generator: random kill moments that a failing run can reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 3).unwrap();
    let brokers = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("edge-outbox.toml");
    std::fs::write(
        &config,
        format!("[relay]\nbatch_max_events = {BATCH}\npublish_summaries = false\nflush_interval = \"50ms\"\n"),
    )
    .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let attempted: Arc<Mutex<HashSet<String>>> = Arc::default();

    for cycle in 0..CYCLES {
        let port = free_port();
        let mut child = spawn(&data, &config, &brokers, port);
        wait_serving(&client, port, &mut child).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (client, acked, attempted, stop) = (
                client.clone(),
                acked.clone(),
                attempted.clone(),
                stop.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("c{c}-{cycle}-{n}");
                    let body = event(TOPIC, &id, &format!("tenant-{c}"), n);
                    attempted.lock().unwrap().insert(id.clone());
                    let sent = client
                        .post(format!("http://127.0.0.1:{port}/v1/events"))
                        .header("content-type", STRUCTURED)
                        .body(serde_json::to_vec(&body).unwrap())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().as_u16() == 202 => {
                            acked.lock().unwrap().insert(id);
                        }
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        Err(_) => break, // killed
                    }
                    n += 1;
                }
            }));
        }
        // Where to kill: while appending, right after a delivery report, or at random.
        match cycle % 3 {
            0 => tokio::time::sleep(Duration::from_millis(50 + rng.next(300))).await,
            1 => {
                let before = status(&client, port).await.unwrap()["relay"]["batches"]
                    .as_u64()
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let now = status(&client, port)
                        .await
                        .map(|s| s["relay"]["batches"].as_u64().unwrap());
                    if now.is_some_and(|b| b > before) || Instant::now() > deadline {
                        break;
                    }
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.next(800))).await,
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
    }

    // A last start drains whatever is left.
    let port = free_port();
    let mut child = spawn(&data, &config, &brokers, port);
    wait_serving(&client, port, &mut child).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&client, port).await.unwrap();
        if s["store"]["backlog_events"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backlog did not drain: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() as u64 > CYCLES * 10,
        "the clients got work done ({})",
        acked.len()
    );
    let consumed = consume_async(
        &brokers,
        &[TOPIC.to_string()],
        usize::MAX,
        Duration::from_secs(15),
    )
    .await;
    let mut copies: HashMap<String, u64> = HashMap::new();
    for m in &consumed {
        *copies.entry(m.headers["ce_id"].clone()).or_default() += 1;
    }
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !copies.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for id in copies.keys() {
        assert!(attempted.contains(id), "{id} was never sent");
    }
    let duplicates: u64 = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {CYCLES} kills, {} acknowledged, {} delivered, {} duplicates",
        acked.len(),
        consumed.len(),
        duplicates
    );
    assert!(
        duplicates <= CYCLES * BATCH,
        "{duplicates} duplicates: more than the batches in flight at {CYCLES} kills"
    );
}
