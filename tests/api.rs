//! The HTTP API's refusals: every bad request gets `application/problem+json` with the right
//! status and the field at fault, and leaves the store exactly as it was.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::DevBroker;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_problems_naming_the_field_and_change_nothing() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.ingest.max_event_bytes = 4096;
    config.ingest.max_request_bytes = 64 * 1024;
    let sidecar = start(config).await;
    let addr = sidecar.addr();
    let good = event(
        "eventzr.integration-hub.provider.created.v1",
        "ok-1",
        "t",
        0,
    );
    let first = post_ok(addr, &good).await;
    assert_eq!(first.duplicates.as_deref(), Some("0"));
    let before = sidecar.store().stats();

    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("id");
    let mut bad_time = good.clone();
    bad_time["time"] = json!("24/02/2026");
    let mut unknown = good.clone();
    unknown["type"] = json!("eventzr.integration-hub.nope.v1");
    let mut no_tenant = good.clone();
    no_tenant.as_object_mut().unwrap().remove("subject");
    no_tenant["data"] = json!({"x": 1});
    let mut big = good.clone();
    big["data"]["blob"] = json!("x".repeat(5000));
    let mut bad_spec = good.clone();
    bad_spec["specversion"] = json!("0.3");
    let mut in_batch = good.clone();
    in_batch["id"] = json!("ok-2");
    let mut second_bad = good.clone();
    second_bad["id"] = json!("");

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "missing id",
            STRUCTURED,
            serde_json::to_vec(&no_id).unwrap(),
            400,
            "id",
        ),
        (
            "bad time",
            STRUCTURED,
            serde_json::to_vec(&bad_time).unwrap(),
            400,
            "time",
        ),
        (
            "bad specversion",
            STRUCTURED,
            serde_json::to_vec(&bad_spec).unwrap(),
            400,
            "specversion",
        ),
        ("not JSON", STRUCTURED, b"{nope".to_vec(), 400, "body"),
        (
            "unknown type",
            STRUCTURED,
            serde_json::to_vec(&unknown).unwrap(),
            422,
            "type",
        ),
        (
            "no tenant key",
            STRUCTURED,
            serde_json::to_vec(&no_tenant).unwrap(),
            400,
            "partitionkey",
        ),
        (
            "event too large",
            STRUCTURED,
            serde_json::to_vec(&big).unwrap(),
            413,
            "data",
        ),
        (
            "body too large",
            STRUCTURED,
            vec![b' '; 65 * 1024],
            413,
            "body",
        ),
        (
            "plain JSON",
            "application/json",
            serde_json::to_vec(&good).unwrap(),
            415,
            "content-type",
        ),
        (
            "other format",
            "application/cloudevents+avro",
            vec![1, 2],
            415,
            "content-type",
        ),
        (
            "batch with one bad event",
            BATCH,
            serde_json::to_vec(&json!([in_batch, second_bad])).unwrap(),
            400,
            "[1].id",
        ),
    ];
    for (name, content_type, body, status, field) in cases {
        let answer = post(addr, content_type, body).await;
        assert_eq!(answer.status, status, "{name}: {:?}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json", "{name}");
        assert_eq!(answer.body["field"], field, "{name}: {:?}", answer.body);
        assert_eq!(answer.body["status"], status, "{name}");
        assert!(
            answer.body["detail"].as_str().unwrap().contains(field),
            "{name}"
        );
        assert_eq!(sidecar.store().stats(), before, "{name} changed the store");
    }

    // Binary mode: the header is named.
    let answer = post_with(
        addr,
        &[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "s"),
            ("ce-type", "eventzr.integration-hub.provider.created.v1"),
            ("ce-time", "not-a-time"),
        ],
        br#"{"tenantId":"t"}"#.to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["field"], "ce-time");
    assert_eq!(sidecar.store().stats(), before);

    // A repeated event is answered like the first time and stored once.
    let again = post_event(addr, &good).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(again.body, json!({"sequences": [before.next_seq - 1]}));
    assert_eq!(again.duplicates.as_deref(), Some("1"));
    assert_eq!(sidecar.store().stats().next_seq, before.next_seq);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_pass_when_allowed_and_health_endpoints_answer() {
    let kafka = DevBroker::start(1, &["custom.thing.v1".to_string()], 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.ingest.allow_unknown_types = true;
    let sidecar = start(config).await;
    let addr = sidecar.addr();
    let answer = post_event(addr, &event("custom.thing.v1", "c-1", "t", 0)).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let consumed = consume_async(
        &kafka.bootstrap_servers(),
        &["custom.thing.v1".into()],
        1,
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(consumed.len(), 1);
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let status: serde_json::Value = get_json(&format!("http://{addr}/v1/status")).await;
    assert_eq!(status["writable"], true);
    assert!(status["store"]["next_seq"].as_u64().unwrap() >= 2);
    sidecar.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_while_the_broker_is_away_and_ready_after() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), dir.path());
    config.readiness.max_backlog_age = std::time::Duration::from_millis(500);
    let sidecar = start(config).await;
    let addr = sidecar.addr();
    let ready = || async move {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(ready().await.0, 200);
    kafka.cluster().broker_down(1).unwrap();
    post_ok(
        addr,
        &event("eventzr.integration-hub.sync.started.v1", "r-1", "t", 0),
    )
    .await;
    wait_for(
        "/readyz to fail",
        std::time::Duration::from_secs(30),
        || async move { ready().await.0 == 503 },
    )
    .await;
    let (_, body) = ready().await;
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("oldest undelivered event"),
        "{body}"
    );
    kafka.cluster().broker_up(1).unwrap();
    wait_for(
        "/readyz to pass again",
        std::time::Duration::from_secs(60),
        || async move { ready().await.0 == 200 },
    )
    .await;
    sidecar.shutdown().await.unwrap();
}

/// An event with `data.blob` of `bytes` bytes.
fn sized_event(id: &str, bytes: usize) -> serde_json::Value {
    let mut e = event("eventzr.integration-hub.provider.created.v1", id, "t", 0);
    e["data"]["blob"] = json!("x".repeat(bytes));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_producer_would_refuse_are_refused_at_ingest_and_never_replayed() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The built-in defaults: ingest.max_event_bytes 1 MiB, message.max.bytes 1,000,000.
    let config = test_config(&kafka.bootstrap_servers(), dir.path());
    assert_eq!(config.ingest.max_event_bytes, 1024 * 1024);
    let sidecar = start(config.clone()).await;
    let before = sidecar.store().stats();
    for bytes in [1_020_000, 1_040_000] {
        let answer = post_event(sidecar.addr(), &sized_event("big", bytes)).await;
        assert_eq!(answer.status, 413, "{bytes}: {:?}", answer.body);
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(
            detail.contains("999488 allowed") && detail.contains("message.max.bytes (1000000)"),
            "{detail}"
        );
        assert_eq!(answer.body["field"], "data");
    }
    assert_eq!(sidecar.store().stats(), before, "nothing stored");
    // Just under the limit: accepted and delivered, not parked.
    post_ok(sidecar.addr(), &sized_event("fits", 990_000)).await;
    wait_store_drained(sidecar.store(), std::time::Duration::from_secs(30)).await;
    assert_eq!(sidecar.store().stats().dead_letters, 0);
    sidecar.shutdown().await.unwrap();

    // A dead letter stored under a larger limit is not replayed into a smaller one.
    let mut larger = config.clone();
    larger.ingest.max_event_bytes = 2 * 1024 * 1024;
    larger
        .kafka
        .properties
        .insert("message.max.bytes".into(), "3000000".into());
    let sidecar = start(larger).await;
    post_poison(&kafka, &sidecar, &sized_event("parked", 1_500_000)).await;
    sidecar.shutdown().await.unwrap();
    let sidecar = start(config).await;
    let dlq: serde_json::Value = get_json(&format!("http://{}/v1/dlq", sidecar.addr())).await;
    let seq = dlq[0]["seq"].as_u64().unwrap();
    // `dlq show` has the whole event, data included.
    let shown = get_json(&format!("http://{}/v1/dlq/{seq}", sidecar.addr())).await;
    assert_eq!(shown["event"]["id"], "parked");
    assert_eq!(
        shown["event"]["data"]["blob"].as_str().unwrap().len(),
        1_500_000
    );
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/dlq/{seq}/replay", sidecar.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("can never be delivered"),
        "{problem}"
    );
    assert_eq!(
        sidecar.store().stats().dead_letters,
        1,
        "still parked, not re-sent"
    );
}
