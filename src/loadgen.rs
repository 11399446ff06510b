//! The load tool behind `edge-outbox bench`: drives a running sidecar over HTTP with N
//! concurrent clients (single-event or batched mode) with realistic ~1 KiB integration-hub
//! events, and reports accepted events/s, latency percentiles of the 202 answers, the
//! sidecar's RSS and CPU, then how long the relay takes to drain the backlog. Optionally it
//! produces the same messages with a plain rdkafka producer, as the yardstick for the relay.

mod connection;

use crate::catalog::Catalog;
use crate::config::KafkaConfig;
use crate::event::http::{BATCH, STRUCTURED};
use crate::event::kafka::{to_message, KafkaMode};
use crate::kafka_client::{create_producer, owned_headers, DevBroker};
use anyhow::{bail, Context};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub url: String,
    pub clients: usize,
    /// Events per request: 1 is single-event (structured) mode, more is batched mode.
    pub batch: usize,
    pub events: u64,
    pub payload_bytes: usize,
    pub tenants: u64,
    /// The sidecar's pid, for RSS and CPU (read from /proc).
    pub pid: Option<u32>,
    /// Events per second in all, 0 for no limit.
    pub rate: u64,
    /// Wait for the backlog to drain and time it.
    pub drain: bool,
    /// Also produce the same messages with a plain producer to these brokers.
    pub baseline_brokers: Option<String>,
    /// Also produce them to a fresh embedded broker of the load tool's own.
    pub baseline_fresh: bool,
    /// How many messages the plain producer sends (`None`: as many as were posted, or
    /// delivered in a drain-only run).
    pub baseline_events: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub batch: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub refused: u64,
    pub sidecar_rss_mib_before: Option<f64>,
    pub sidecar_rss_mib_after: Option<f64>,
    pub sidecar_cpu_percent: Option<f64>,
    /// The load tool's own CPU while sending (it shares the machine with the sidecar).
    pub load_tool_cpu_percent: Option<f64>,
    pub drain_seconds: Option<f64>,
    pub relay_events_per_second: Option<f64>,
    pub relay_mb_per_second: Option<f64>,
    /// The sidecar's CPU-seconds (with `--pid`) from the start until the backlog drained.
    pub drain_cpu_seconds: Option<f64>,
    pub baseline_events_per_second: Option<f64>,
    /// The plain producer's CPU-seconds while it produced (its messages built before).
    pub baseline_cpu_seconds: Option<f64>,
    pub relay_to_baseline_ratio: Option<f64>,
    pub fresh_baseline_events_per_second: Option<f64>,
    pub relay_to_fresh_baseline_ratio: Option<f64>,
}

impl LoadReport {
    /// One line per measure, for people: `name  value`, leaving out what was not measured.
    pub fn text(&self) -> String {
        let value = serde_json::to_value(self).expect("reports serialise");
        let mut out = String::new();
        for (name, v) in value.as_object().expect("a struct") {
            let shown = match v {
                Value::Null => continue,
                Value::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            };
            out.push_str(&format!("{:<34} {shown}\n", name.replace('_', " ")));
        }
        out
    }
}

/// [`sample_event`] as the store keeps it (1,000 tenants, 1 KiB payload), for benches.
pub fn sample_record(catalog: &Catalog, n: u64) -> crate::store::Record {
    let event = crate::event::http::from_json(sample_event(catalog, n, 1000, 1024))
        .expect("sample events are valid");
    let key = event
        .tenant_key(&crate::event::DEFAULT_KEY_ORDER)
        .expect("sample events name a tenant");
    crate::store::Record {
        appended_ms: crate::clock::now_ms(),
        event_id: event.id.clone(),
        event_source: event.source.clone(),
        event_type: event.event_type.clone(),
        message: to_message(&event, &event.event_type, &key, KafkaMode::Binary),
    }
}

/// A realistic integration-hub event of about `payload_bytes`.
pub fn sample_event(catalog: &Catalog, n: u64, tenants: u64, payload_bytes: usize) -> Value {
    serde_json::from_str(&sample_event_json(catalog, n, tenants, payload_bytes))
        .expect("sample events are JSON")
}

/// [`sample_event`] as JSON text, written directly: the load tool shares the machine with the
/// sidecar, so making its events must cost little.
pub fn sample_event_json(catalog: &Catalog, n: u64, tenants: u64, payload_bytes: usize) -> String {
    let event_type = &catalog
        .entries()
        .nth((n % catalog.len() as u64) as usize)
        .expect("the catalogue is not empty")
        .event_type;
    let tenant = format!("a{:07}-0000-0000-0000-{:012}", n % tenants, n % tenants);
    let mut event = format!(
        r#"{{"specversion":"1.0","type":"{event_type}","source":"integration-hub-svc","id":"evt-{}-{n}","time":"2026-02-24T12:00:00.000Z","datacontenttype":"application/json","subject":"{tenant}","data":{{"tenantId":"{tenant}","executionId":"exec-{n}","providerKey":"stripe","intent":"payment.create","status":"SUCCESS","durationMs":{}}}}}"#,
        uuid::Uuid::new_v4(),
        n % 1000,
    );
    if payload_bytes > event.len() {
        let notes = format!(r#","notes":"{}""#, "x".repeat(payload_bytes - event.len()));
        event.insert_str(event.len() - 2, &notes);
    }
    event
}

/// Resident memory (MiB) and total CPU seconds of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kib / 1024.0, ticks / 100.0))
}

/// The CPU-seconds a process spent between two [`process_usage`] readings of it.
fn cpu_seconds_between(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<f64> {
    before.zip(after).map(|(b, a)| a.1 - b.1)
}

async fn status(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{url}/v1/status"))
        .send()
        .await?
        .json()
        .await?)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

pub async fn run(spec: LoadSpec) -> anyhow::Result<LoadReport> {
    if spec.clients == 0 || spec.batch == 0 {
        bail!("--clients and --batch must be positive");
    }
    let url = spec.url.trim_end_matches('/').to_string();
    // For status only; the clients' requests go over connections of their own.
    let client = reqwest::Client::new();
    let before = status(&client, &url)
        .await
        .with_context(|| format!("no sidecar answers at {url}"))?;
    let delivered_before = before["relay"]["delivered_events"].as_u64().unwrap_or(0);
    let bytes_before = before["relay"]["delivered_bytes"].as_u64().unwrap_or(0);
    let catalog = Arc::new(Catalog::builtin());
    let usage_before = spec.pid.and_then(process_usage);
    let own_before = process_usage(std::process::id());
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..spec.clients {
        let (url, catalog, next, refused, latencies, spec) = (
            url.clone(),
            catalog.clone(),
            next.clone(),
            refused.clone(),
            latencies.clone(),
            spec.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut connection = connection::Connection::open(&url).await?;
            let mut mine = Vec::new();
            loop {
                let first = next.fetch_add(spec.batch as u64, Ordering::SeqCst);
                if first >= spec.events {
                    break;
                }
                let last = (first + spec.batch as u64).min(spec.events);
                if spec.rate > 0 {
                    // Event `first` is due `first / rate` seconds after the start.
                    let due = Duration::from_secs_f64(first as f64 / spec.rate as f64);
                    tokio::time::sleep_until((started + due).into()).await;
                }
                let events: Vec<String> = (first..last)
                    .map(|n| sample_event_json(&catalog, n, spec.tenants, spec.payload_bytes))
                    .collect();
                let (content_type, body) = if spec.batch == 1 {
                    (STRUCTURED, events.concat())
                } else {
                    (BATCH, format!("[{}]", events.join(",")))
                };
                let sent = Instant::now();
                let status = connection.post("/v1/events", content_type, body).await?;
                mine.push(sent.elapsed());
                if status.as_u16() != 202 {
                    refused.fetch_add(last - first, Ordering::SeqCst);
                }
            }
            latencies.lock().expect("lock").extend(mine);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage_after = spec.pid.and_then(process_usage);
    let own_after = process_usage(std::process::id());
    let mut sorted = latencies.lock().expect("lock").clone();
    sorted.sort();
    let refused = refused.load(Ordering::SeqCst);
    let accepted = spec.events - refused;
    let mut report = LoadReport {
        clients: spec.clients,
        batch: spec.batch,
        events: accepted,
        seconds,
        events_per_second: if accepted == 0 {
            0.0
        } else {
            accepted as f64 / seconds
        },
        latency_ms_p50: percentile(&sorted, 0.50),
        latency_ms_p99: percentile(&sorted, 0.99),
        latency_ms_max: percentile(&sorted, 1.0),
        refused,
        sidecar_rss_mib_before: usage_before.map(|u| u.0),
        sidecar_rss_mib_after: usage_after.map(|u| u.0),
        sidecar_cpu_percent: cpu_seconds_between(usage_before, usage_after)
            .map(|cpu| cpu / seconds * 100.0),
        load_tool_cpu_percent: cpu_seconds_between(own_before, own_after)
            .map(|cpu| cpu / seconds * 100.0),
        drain_seconds: None,
        relay_events_per_second: None,
        relay_mb_per_second: None,
        drain_cpu_seconds: None,
        baseline_events_per_second: None,
        baseline_cpu_seconds: None,
        relay_to_baseline_ratio: None,
        fresh_baseline_events_per_second: None,
        relay_to_fresh_baseline_ratio: None,
    };
    if spec.drain {
        loop {
            let now = status(&client, &url).await?;
            if now["store"]["backlog_events"].as_u64() == Some(0) {
                let total = started.elapsed().as_secs_f64();
                let delivered =
                    now["relay"]["delivered_events"].as_u64().unwrap_or(0) - delivered_before;
                let bytes = now["relay"]["delivered_bytes"].as_u64().unwrap_or(0) - bytes_before;
                report.drain_seconds = Some(total - seconds);
                report.relay_events_per_second = Some(delivered as f64 / total);
                report.relay_mb_per_second = Some(bytes as f64 / total / 1e6);
                report.drain_cpu_seconds =
                    cpu_seconds_between(usage_before, spec.pid.and_then(process_usage));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if spec.baseline_brokers.is_some() || spec.baseline_fresh {
        let mut baseline_spec = spec.clone();
        if let Some(events) = spec.baseline_events {
            baseline_spec.events = events.max(1);
        } else if baseline_spec.events == 0 {
            // Drain-only run: compare against as many messages as the relay delivered.
            let delivered = status(&client, &url).await?["relay"]["delivered_events"]
                .as_u64()
                .unwrap_or(0)
                - delivered_before;
            baseline_spec.events = delivered.max(1);
        }
        if let Some(brokers) = &spec.baseline_brokers {
            let (rate, cpu) = baseline(brokers, &catalog, &baseline_spec).await?;
            report.baseline_events_per_second = Some(rate);
            report.baseline_cpu_seconds = cpu;
            report.relay_to_baseline_ratio = report.relay_events_per_second.map(|r| r / rate);
        }
        if spec.baseline_fresh {
            let broker = DevBroker::start(1, &catalog.topics(), 3)?;
            let (rate, _) = baseline(&broker.bootstrap_servers(), &catalog, &baseline_spec).await?;
            report.fresh_baseline_events_per_second = Some(rate);
            report.relay_to_fresh_baseline_ratio = report.relay_events_per_second.map(|r| r / rate);
        }
    }
    Ok(report)
}

/// Produces the same messages with a plain idempotent producer; returns its events/s and the
/// CPU-seconds this process spent producing them.
async fn baseline(
    brokers: &str,
    catalog: &Catalog,
    spec: &LoadSpec,
) -> anyhow::Result<(f64, Option<f64>)> {
    let config = KafkaConfig {
        brokers: brokers.to_string(),
        ..KafkaConfig::default()
    };
    let producer = create_producer(&config, None)?;
    let messages: Vec<_> = (0..spec.events)
        .map(|n| {
            let value = sample_event(catalog, n, spec.tenants, spec.payload_bytes);
            let event = crate::event::http::from_json(value).expect("sample events are valid");
            let key = event
                .tenant_key(&crate::event::DEFAULT_KEY_ORDER)
                .expect("sample events carry a tenant");
            to_message(&event, &event.event_type, &key, KafkaMode::Binary)
        })
        .collect();
    let started = Instant::now();
    let cpu_before = process_usage(std::process::id());
    let mut pending = Vec::with_capacity(messages.len());
    for message in &messages {
        let mut record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(owned_headers(&message.headers));
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for delivery in pending {
        if let Ok(Err((e, _))) = delivery.await {
            bail!("baseline produce failed: {e}");
        }
    }
    let rate = spec.events as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu_seconds_between(cpu_before, process_usage(std::process::id()));
    Ok((rate, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_events_are_valid_sized_and_unique() {
        let catalog = Catalog::builtin();
        let mut ids = std::collections::HashSet::new();
        for n in 0..72 {
            let text = sample_event_json(&catalog, n, 10, 1024);
            assert!((1024..1100).contains(&text.len()), "{} bytes", text.len());
            let event = crate::event::http::parse_structured(text.as_bytes()).unwrap();
            assert!(catalog.lookup(&event.event_type).is_some());
            let tenant = event.tenant_key(&crate::event::DEFAULT_KEY_ORDER).unwrap();
            assert!(tenant.starts_with(&format!("a{:07}", n % 10)));
            assert!(ids.insert(event.id));
        }
    }
}
