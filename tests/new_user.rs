//! What a new user ran into, each checked against the real binary: the embedded broker's
//! topics, a second `dev` on a held store, `tail` naming a missing topic and showing keys,
//! `send` telling of a repeat, `bench`'s text mode, problem+json for every API error,
//! binary-mode requests with a wrong body or a missing `ce-specversion`, and configuration
//! errors that name their layer.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> std::process::Output {
    cli().args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_loop_answers_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, bootstrap) = dev_process(dir.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // `topics create` against the embedded broker answers at once: it has the catalogue.
    let started = Instant::now();
    let created = run(&["topics", "create", "--brokers", &bootstrap]);
    let text = String::from_utf8_lossy(&created.stdout);
    assert!(created.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("exists")).count(),
        36,
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // A second dev on the same store is refused before any banner, naming the holder.
    let second = cli()
        .args(["dev", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        second.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(
        refusal.contains(&format!(
            "another edge-outbox (pid {}) holds the store",
            child.id()
        )),
        "{refusal}"
    );

    // `send` says when an event was stored already.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/execution-completed.json"
    );
    let first = run(&["send", example, "--url", &url]);
    assert!(first.status.success());
    assert!(!String::from_utf8_lossy(&first.stderr).contains("already stored"));
    let again = run(&["send", example, "--url", &url]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("1 of these events were already stored"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // `tail` names a missing topic once, and shows keys with --meta.
    let missing = run(&[
        "tail",
        "--brokers",
        &bootstrap,
        "--topic",
        "no.such.topic",
        "--count",
        "1",
    ]);
    assert!(!missing.status.success());
    let error = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(error.matches("no.such.topic").count(), 1, "{error}");
    let tail = run(&[
        "tail",
        "--brokers",
        &bootstrap,
        "--topic",
        "eventzr.integration-hub.execution.completed.v1",
        "--count",
        "1",
        "--idle-timeout",
        "20s",
        "--meta",
    ]);
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&tail.stdout).unwrap();
    assert_eq!(line["key"], "a0000001-0000-0000-0000-000000000001");
    assert_eq!(
        line["event"]["id"],
        "evt-550e8400-e29b-41d4-a716-446655440000"
    );

    // bench's text mode: a line per measure.
    let bench = run(&["bench", "--url", &url, "--events", "200", "--clients", "2"]);
    let text = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(
        text.lines().any(|l| l.starts_with("events per second")),
        "{text}"
    );

    // Every API error is problem+json, the path's too.
    let response = reqwest::Client::new()
        .delete(format!("{url}/v1/dlq/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "seq");
    let response = reqwest::get(format!("{url}/v1/dlq?limit=many"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // Binary mode: a body that is not the JSON its content type says is refused naming data;
    // ce-id/ce-type/ce-source without ce-specversion is binary mode missing specversion.
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "integration-hub-svc"),
        ("ce-type", "eventzr.integration-hub.execution.completed.v1"),
        ("ce-subject", "tenant-b"),
        ("content-type", "application/json"),
    ];
    let answer = post_with(addr, &binary, b"this is not json".to_vec()).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["field"], "data");
    let answer = post_with(addr, &binary[1..], br#"{"ok": true}"#.to_vec()).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["field"], "ce-specversion");

    // SIGTERM: drained, exit 0.
    let status = terminate(child).await;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn an_unknown_key_is_blamed_on_the_layer_that_gave_it() {
    let from_set = run(&["check-config", "--set", "relay.flush_intervall=5s"]);
    let text = String::from_utf8_lossy(&from_set.stderr);
    assert!(!from_set.status.success());
    assert!(
        text.contains("--set relay.flush_intervall") && !text.contains("defaults"),
        "{text}"
    );
    let from_env = cli()
        .arg("check-config")
        .env("EDGE_OUTBOX__RELAY__FLUSH_INTERVALL", "5s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&from_env.stderr);
    assert!(!from_env.status.success());
    assert!(
        text.contains("environment variable EDGE_OUTBOX__RELAY__FLUSH_INTERVALL"),
        "{text}"
    );
    let in_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(in_file.path(), "[relay]\nflush_intervall = \"5s\"\n").unwrap();
    let from_file = run(&["check-config", "--config", in_file.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&from_file.stderr);
    assert!(
        text.contains(&in_file.path().display().to_string()),
        "{text}"
    );
    // check-config says what limits the event size.
    let defaults = run(&["check-config"]);
    assert!(
        String::from_utf8_lossy(&defaults.stderr)
            .contains("events up to 999488 bytes are accepted (the producer's message.max.bytes"),
        "{}",
        String::from_utf8_lossy(&defaults.stderr)
    );
}
