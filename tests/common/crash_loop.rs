//! The SIGKILL loop shared by the crash tests: concurrent clients post while the real binary is
//! killed at chosen moments (during appends, during a relay batch, right after a delivery
//! report) and restarted on the same data directory. Afterwards every event answered 202 must
//! be in Kafka; duplicates are allowed only for batches in flight at a kill, and are counted.

use super::process::SidecarProcess;
use super::{consume_async, event, STRUCTURED};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOPIC: &str = "eventzr.integration-hub.webhook.dispatched.v1";

/// What a crash loop saw.
#[derive(Debug)]
pub struct CrashReport {
    pub cycles: u64,
    pub acknowledged: usize,
    pub delivered: usize,
    pub duplicates: u64,
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

/// Writes the sidecar configuration the crash loops use; `relay` adds lines to `[relay]`.
pub fn write_config(dir: &Path, batch: u64, relay: &str) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nbatch_max_events = {batch}\npublish_summaries = false\nflush_interval = \"50ms\"\nretry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n{relay}\n"
        ),
    )
    .unwrap();
    path
}

async fn batches(process: &SidecarProcess) -> Option<u64> {
    process
        .status_with(&reqwest::Client::new())
        .await
        .and_then(|s| s["relay"]["batches"].as_u64())
}

pub async fn run(brokers: &str, cycles: u64, clients: usize, batch: u64) -> CrashReport {
    run_with(brokers, cycles, clients, batch, "", TOPIC).await
}

/// [`run`] with `relay` added to the `[relay]` section (exactly-once, say), the events posted
/// to `topic`. Each tenant's events are also checked to arrive first in the order they were
/// acknowledged.
pub async fn run_with(
    brokers: &str,
    cycles: u64,
    clients: usize,
    batch: u64,
    relay: &str,
    topic: &'static str,
) -> CrashReport {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), batch, relay);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash loop seed {seed}");
    let mut rng = Rng(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let attempted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut process = SidecarProcess::start(&config, &data, brokers).await;

    for cycle in 0..cycles {
        if cycle > 0 {
            process.restart().await;
        }
        let url = process.url();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, acked, attempted, stop, url) = (
                http.clone(),
                acked.clone(),
                attempted.clone(),
                stop.clone(),
                url.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("c{c}-{cycle}-{n}");
                    let body = event(topic, &id, &format!("tenant-{c}"), n);
                    attempted.lock().unwrap().insert(id.clone());
                    let sent = http
                        .post(format!("{url}/v1/events"))
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
        match cycle % 3 {
            // While appending.
            0 => tokio::time::sleep(Duration::from_millis(50 + rng.next(300))).await,
            // Right after a delivery report: as soon as a new batch is confirmed.
            1 => {
                let before = batches(&process).await.unwrap_or(0);
                let deadline = Instant::now() + Duration::from_secs(20);
                while batches(&process).await.is_none_or(|b| b <= before)
                    && Instant::now() < deadline
                {}
            }
            // During a relay batch: once a backlog waits, a few ms into the next flush.
            _ => {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let backlog = process
                        .status_with(&http)
                        .await
                        .and_then(|s| s["store"]["backlog_events"].as_u64())
                        .unwrap_or(0);
                    if backlog > 0 || Instant::now() > deadline {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.next(60))).await;
            }
        }
        process.kill();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
    }

    process.restart().await;
    process.wait_drained(Duration::from_secs(120)).await;
    process.kill();

    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() as u64 > cycles * 10,
        "the clients got work done ({})",
        acked.len()
    );
    // Everything in the topic: the backlog has drained, so the watermarks cover it all.
    let consumed = consume_async(
        brokers,
        &[topic.to_string()],
        acked.len(),
        Duration::from_secs(60),
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
    // Each client's events (one tenant, posted one after another) arrive first in order.
    let mut by_offset: Vec<&super::Consumed> = consumed.iter().collect();
    by_offset.sort_by_key(|m| (m.partition, m.offset));
    let mut seen: HashSet<&str> = HashSet::new();
    let mut last: HashMap<&str, (u64, u64)> = HashMap::new();
    for m in by_offset {
        let id = m.headers["ce_id"].as_str();
        if !seen.insert(id) {
            continue;
        }
        let mut parts = id.rsplit('-');
        let n: u64 = parts.next().unwrap().parse().unwrap();
        let cycle: u64 = parts.next().unwrap().parse().unwrap();
        if let Some(before) = last.insert(&m.key, (cycle, n)) {
            assert!(before < (cycle, n), "{}: {id} after {before:?}", m.key);
        }
    }
    // At a kill at most two batches are unconfirmed: one being sent and the one before it,
    // delivered whole and being confirmed meanwhile.
    assert!(
        duplicates <= 2 * cycles * batch,
        "{duplicates} duplicates: more than the two batches in flight at each of {cycles} kills"
    );
    CrashReport {
        cycles,
        acknowledged: acked.len(),
        delivered: consumed.len(),
        duplicates,
    }
}
