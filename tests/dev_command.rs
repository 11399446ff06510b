//! The README's first command: `edge-outbox dev` runs the sidecar with its embedded broker,
//! prints a bootstrap address any Kafka client can use, accepts the example event, delivers
//! it, and exits cleanly on SIGTERM.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_example_event_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, bootstrap) = dev_process(dir.path(), port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("the API", Duration::from_secs(30), || async move {
        reqwest::get(format!("http://{addr}/healthz")).await.is_ok()
    })
    .await;
    let example = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/execution-completed.json"
    ))
    .unwrap();
    let answer = post(addr, STRUCTURED, example).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let topic = "eventzr.integration-hub.execution.completed.v1".to_string();
    let consumed = consume_async(&bootstrap, &[topic], 1, Duration::from_secs(30)).await;
    assert_eq!(consumed.len(), 1);
    assert_eq!(
        consumed[0].headers["ce_id"],
        "evt-550e8400-e29b-41d4-a716-446655440000"
    );
    assert_eq!(consumed[0].key, "a0000001-0000-0000-0000-000000000001");

    // SIGTERM: a graceful stop with exit code 0.
    let status = terminate(child).await;
    assert!(status.success(), "exit status {status}");
}
