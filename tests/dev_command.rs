//! The README's first command: `edge-outbox dev` runs the sidecar with its embedded broker,
//! prints a bootstrap address any Kafka client can use, accepts the example event, delivers
//! it, and exits cleanly on SIGTERM.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_example_event_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-outbox"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--flush-interval",
            "100ms",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    // Keep reading so that the pipe stays open.
    std::thread::spawn(move || for _ in stdout.lines() {});
    let bootstrap = first_line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no bootstrap address in {first_line:?}"))
        .to_string();
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
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
