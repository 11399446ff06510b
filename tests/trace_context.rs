//! W3C trace context through to Apache Kafka: the request's `traceparent` / `tracestate`
//! headers, or else the event's distributed-tracing extension, become the message's plain
//! `traceparent` / `tracestate` headers, and the extension stays `ce_traceparent`.

mod common;

use common::kafka::Kafka;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

const TOPIC: &str = "eventzr.integration-hub.webhook.dispatched.v1";
const TYPE: &str = "eventzr.integration-hub.webhook.dispatched.v1";
const HOP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const ORIGIN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_trace_or_else_the_events_reaches_kafka_as_plain_headers() {
    let broker = Kafka::start();
    broker.create_topics(&[TOPIC.to_string()], 1);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&broker.bootstrap(), dir.path())).await;
    let addr = sidecar.addr();
    // Binary-mode headers of event `id`, with the extension's traceparent and the request's.
    let binary = |id: &str, extension: Option<&str>, request: Option<&str>| {
        let mut headers = vec![
            ("content-type", "application/json".to_string()),
            ("ce-specversion", "1.0".to_string()),
            ("ce-source", "integration-hub-svc".to_string()),
            ("ce-type", TYPE.to_string()),
            ("ce-subject", "tenant-t".to_string()),
            ("ce-id", id.to_string()),
        ];
        if let Some(parent) = extension {
            headers.push(("ce-traceparent", parent.to_string()));
        }
        if let Some(parent) = request {
            headers.push(("traceparent", parent.to_string()));
        }
        headers
    };
    let post_binary = |headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = serde_json::to_vec(&serde_json::json!({"tenantId": "t", "n": 0})).unwrap();
        let answer = post_with(addr, &headers, body).await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
    };
    // 1. The request's own trace, structured mode.
    let answer = post_with(
        addr,
        &[
            ("content-type", STRUCTURED),
            ("traceparent", HOP),
            ("tracestate", "vendor=abc"),
        ],
        serde_json::to_vec(&event(TYPE, "hop-only", "t", 0)).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    // 2. Only the event's extension, binary mode.
    post_binary(binary("origin-only", Some(ORIGIN), None)).await;
    // 3. Both: the hop's trace in the plain header, the extension kept as it was.
    post_binary(binary("both", Some(ORIGIN), Some(HOP))).await;
    // 4. An invalid traceparent is ignored, and the event taken.
    post_binary(binary("invalid", None, Some("00-not-a-trace-01"))).await;

    wait_store_drained(sidecar.store(), Duration::from_secs(30)).await;
    sidecar.shutdown().await.unwrap();
    let consumed = consume_async(
        &broker.bootstrap(),
        &[TOPIC.to_string()],
        4,
        Duration::from_secs(30),
    )
    .await;
    let by_id: HashMap<&str, &HashMap<String, String>> = consumed
        .iter()
        .map(|m| (m.headers["ce_id"].as_str(), &m.headers))
        .collect();
    let header = |id: &str, name: &str| by_id[id].get(name).map(String::as_str);
    assert_eq!(header("hop-only", "traceparent"), Some(HOP));
    assert_eq!(header("hop-only", "tracestate"), Some("vendor=abc"));
    assert_eq!(header("hop-only", "ce_traceparent"), None);
    assert_eq!(header("origin-only", "traceparent"), Some(ORIGIN));
    assert_eq!(header("origin-only", "ce_traceparent"), Some(ORIGIN));
    assert_eq!(header("both", "traceparent"), Some(HOP));
    assert_eq!(header("both", "ce_traceparent"), Some(ORIGIN));
    assert_eq!(header("invalid", "traceparent"), None);
}
