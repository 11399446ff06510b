//! One tenant cannot starve the others: a tenant over its share of the backlog or over its
//! ingest rate gets 429 while the others get 202, and after an outage the relay drains tenants
//! fairly (each tenant's order kept) into Apache Kafka, where strict append order would make
//! the quiet tenants wait behind the noisy one.

mod common;

use common::kafka::Kafka;
use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::config::{Config, Limit};
use edge_outbox::store::TenantShare;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const TYPE: &str = "eventzr.integration-hub.sync.started.v1";

fn topic() -> String {
    let catalog = Catalog::builtin();
    catalog
        .lookup(TYPE)
        .expect("a catalogue type")
        .topic
        .clone()
}

/// A sidecar whose broker does not answer: everything stays in the backlog.
fn outage_config(dir: &Path) -> Config {
    test_config(&format!("127.0.0.1:{}", free_port()), dir)
}

/// Posts `events` events of `tenant` (`n` from `first`) in one batch request.
async fn post_batch(addr: SocketAddr, tenant: &str, first: u64, events: u64) -> Answer {
    let batch: Vec<Value> = (first..first + events)
        .map(|n| event(TYPE, &format!("{tenant}-{n}"), tenant, n))
        .collect();
    post(addr, BATCH, serde_json::to_vec(&batch).unwrap()).await
}

async fn metrics(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_over_its_backlog_share_gets_429_while_the_others_get_202() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = outage_config(dir.path());
    config.store.max_backlog_events = 100;
    config.store.max_backlog_events_per_tenant = TenantShare::Fraction(0.05);
    let sidecar = start(config).await;
    let addr = sidecar.addr();
    assert_eq!(post_batch(addr, "noisy", 0, 5).await.status, 202);

    let refused = post_batch(addr, "noisy", 5, 1).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.content_type, "application/problem+json");
    assert!(refused.retry_after.is_some(), "429 carries Retry-After");
    assert_eq!(
        refused.body["type"],
        "urn:edge-outbox:problem:tenant-backlog-full"
    );
    assert_eq!(refused.body["tenant"], "noisy");
    assert_eq!(
        refused.body["limit"],
        "5 events (store.max_backlog_events_per_tenant)"
    );
    for t in 0..3 {
        let answer = post_batch(addr, &format!("quiet-{t}"), 0, 5).await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
    }
    let stats = sidecar.store().stats();
    assert_eq!(stats.backlog_events, 20, "the refused event is not stored");

    let text = metrics(addr).await;
    assert!(
        text.contains(r#"edge_outbox_refused_requests_total{reason="tenant-backlog-full"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"edge_outbox_tenant_backlog_events{tenant="noisy"} 5"#));
    assert!(text.contains("edge_outbox_tenants_with_backlog 4"));
    let status = get_json(&format!("http://{addr}/v1/status")).await;
    assert_eq!(status["tenants"]["with_backlog"], 4);
    assert_eq!(status["tenants"]["largest"][0]["tenant"], "noisy");
    assert_eq!(status["tenants"]["largest"][0]["events"], 5);
    let url = format!("http://{addr}");
    let text = tokio::task::spawn_blocking(move || {
        stdout_ok(cli().args(["status", "--url", &url]).output().unwrap())
    })
    .await
    .unwrap();
    assert!(
        text.contains("tenants              4 with backlog; largest: noisy 5, quiet-0 5"),
        "{text}"
    );
    sidecar.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tenant_over_its_ingest_rate_gets_429_while_the_others_get_202() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = outage_config(dir.path());
    config.ingest.max_events_per_second_per_tenant = Limit::PerSecond(2);
    let sidecar = start(config).await;
    let addr = sidecar.addr();

    let burst = post_batch(addr, "noisy", 0, 3).await;
    assert_eq!(burst.status, 413, "{:?}", burst.body);
    assert_eq!(
        burst.body["type"],
        "urn:edge-outbox:problem:tenant-rate-burst"
    );

    // Two a second: of a quick run of posts, one soon finds the rate used up.
    let mut refused = None;
    for n in 0..10 {
        let answer = post_batch(addr, "noisy", n, 1).await;
        if answer.status != 202 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the noisy tenant is held to its rate");
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(
        refused.body["type"],
        "urn:edge-outbox:problem:tenant-rate-limited"
    );
    assert_eq!(refused.body["tenant"], "noisy");
    let wait: u64 = refused.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let quiet = post_batch(addr, "quiet", 0, 2).await;
    assert_eq!(quiet.status, 202, "{:?}", quiet.body);
    let text = metrics(addr).await;
    assert!(
        text.contains(r#"edge_outbox_refused_requests_total{reason="tenant-rate-limited"} 1"#),
        "{text}"
    );
    sidecar.shutdown().await.unwrap();
}

const NOISY_EVENTS: u64 = 1000;
const QUIET_TENANTS: usize = 10;
const QUIET_EVENTS: u64 = 10;
const BATCH_EVENTS: usize = 200;

/// Offsets of each tenant's messages in `consumed` (one partition), with their `n` values.
fn by_tenant(consumed: &[Consumed]) -> HashMap<String, Vec<(i64, u64)>> {
    let mut tenants: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
    for m in consumed {
        let n = m.json()["n"].as_u64().unwrap();
        tenants
            .entry(m.key.clone())
            .or_default()
            .push((m.offset, n));
    }
    for list in tenants.values_mut() {
        list.sort();
    }
    tenants
}

/// Delivers the store in `data` to `broker` with `relay.fair_drain = fair` and returns what
/// arrived, by tenant (offsets relative to `base`).
async fn drain(
    broker: &Kafka,
    data: &Path,
    fair: bool,
    base: i64,
) -> HashMap<String, Vec<(i64, u64)>> {
    let mut config = test_config(&broker.bootstrap(), data);
    config.relay.fair_drain = fair;
    config.relay.batch_max_events = BATCH_EVENTS;
    let sidecar = start(config).await;
    wait_store_drained(sidecar.store(), Duration::from_secs(60)).await;
    sidecar.shutdown().await.unwrap();
    let total = (NOISY_EVENTS + QUIET_TENANTS as u64 * QUIET_EVENTS) as usize;
    let consumed = consume_async(
        &broker.bootstrap(),
        &[topic()],
        base as usize + total,
        Duration::from_secs(60),
    )
    .await;
    let run: Vec<Consumed> = (consumed.into_iter())
        .filter(|m| m.offset >= base)
        .map(|m| Consumed {
            offset: m.offset - base,
            ..m
        })
        .collect();
    assert_eq!(run.len(), total, "every stored event arrives once");
    let tenants = by_tenant(&run);
    for (tenant, list) in &tenants {
        let ns: Vec<u64> = list.iter().map(|(_, n)| *n).collect();
        let count = if tenant == "noisy" {
            NOISY_EVENTS
        } else {
            QUIET_EVENTS
        };
        assert_eq!(ns, (0..count).collect::<Vec<_>>(), "order of {tenant}");
    }
    tenants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_quiet_tenants_are_not_stuck_behind_the_noisy_one() {
    let dir = tempfile::tempdir().unwrap();
    let fair_data = dir.path().join("fair");
    let sidecar = start(outage_config(&fair_data)).await;
    let addr = sidecar.addr();
    for first in (0..NOISY_EVENTS).step_by(100) {
        assert_eq!(post_batch(addr, "noisy", first, 100).await.status, 202);
    }
    for t in 0..QUIET_TENANTS {
        let answer = post_batch(addr, &format!("quiet-{t}"), 0, QUIET_EVENTS).await;
        assert_eq!(answer.status, 202);
    }
    assert_eq!(sidecar.store().tenants_with_backlog(), 1 + QUIET_TENANTS);
    sidecar.shutdown().await.unwrap();
    let strict_data = dir.path().join("strict");
    copy_dir(&fair_data, &strict_data);

    let broker = Kafka::start();
    broker.create_topic_with(&topic(), 1, &[]);
    let fair = drain(&broker, &fair_data, true, 0).await;
    let total = NOISY_EVENTS as i64 + (QUIET_TENANTS as u64 * QUIET_EVENTS) as i64;
    let strict = drain(&broker, &strict_data, false, total).await;

    let last_quiet = |tenants: &HashMap<String, Vec<(i64, u64)>>| {
        (tenants.iter())
            .filter(|(tenant, _)| *tenant != "noisy")
            .map(|(_, list)| list.last().unwrap().0)
            .max()
            .unwrap()
    };
    eprintln!(
        "last quiet offset: fair {}, append order {}",
        last_quiet(&fair),
        last_quiet(&strict)
    );
    // Fair: the quiet tenants are all in the first full batch (behind the first batch, which
    // is a probe of a sixteenth of the size while the broker has not confirmed one yet).
    let bound = (BATCH_EVENTS + BATCH_EVENTS / 16) as i64;
    assert!(
        last_quiet(&fair) < bound,
        "fair drain: the last quiet event is at offset {} of {total}",
        last_quiet(&fair)
    );
    // Strict append order: behind every noisy event.
    assert!(
        last_quiet(&strict) >= NOISY_EVENTS as i64,
        "append order: the last quiet event is at offset {}",
        last_quiet(&strict)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_drain_in_many_small_batches_delivers_every_tenant_once_and_in_order() {
    // Twenty tenants holding 1 to 400 events, appended interleaved in requests of mixed
    // tenants, drained in batches of 16: shares change from batch to batch, and batches are
    // read while the one before is in flight.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sidecar = start(outage_config(&data)).await;
    let addr = sidecar.addr();
    let sizes: Vec<u64> = (0..20u64).map(|t| 1 + (t * t * 7) % 400).collect();
    let mut next = vec![0u64; sizes.len()];
    let mut expected = 0;
    loop {
        let mut batch = Vec::new();
        for (t, size) in sizes.iter().enumerate() {
            let take = (*size - next[t]).min(t as u64 % 5 + 1);
            for n in next[t]..next[t] + take {
                batch.push(event(TYPE, &format!("t{t}-{n}"), &format!("t{t}"), n));
            }
            next[t] += take;
        }
        if batch.is_empty() {
            break;
        }
        expected += batch.len();
        let answer = post(addr, BATCH, serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
    }
    sidecar.shutdown().await.unwrap();

    let broker = Kafka::start();
    broker.create_topic_with(&topic(), 3, &[]);
    let mut config = test_config(&broker.bootstrap(), &data);
    config.relay.batch_max_events = 16;
    let sidecar = start(config).await;
    wait_store_drained(sidecar.store(), Duration::from_secs(60)).await;
    let batches = sidecar.relay_status().lock().unwrap().batches;
    sidecar.shutdown().await.unwrap();
    assert!(batches as usize >= expected / 16, "{batches} batches");
    let consumed = consume_async(
        &broker.bootstrap(),
        &[topic()],
        expected,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(consumed.len(), expected, "each event once");
    let mut arrived: HashMap<String, Vec<u64>> = HashMap::new();
    for m in &consumed {
        arrived
            .entry(m.key.clone())
            .or_default()
            .push(m.json()["n"].as_u64().unwrap());
    }
    for (t, size) in sizes.iter().enumerate() {
        let ns = arrived.remove(&format!("t{t}")).unwrap_or_default();
        // One tenant, one partition: the consumer reads it in the order it was written.
        assert_eq!(ns, (0..*size).collect::<Vec<_>>(), "order of t{t}");
    }
}
