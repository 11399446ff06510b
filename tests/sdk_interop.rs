//! The CloudEvents SDKs that services use, against the real binary and Apache Kafka: the Python
//! SDK (`cloudevents`) and the JavaScript SDK (npm `cloudevents`) each make one event of every
//! catalogue type, post them with their own HTTP helpers in binary, structured and batched mode,
//! read them back from Kafka and decode them with their own Kafka binding
//! (`tests/interop/sdk_roundtrip.{py,js}`; scripts/install-test-deps installs both SDKs). Every
//! attribute, the data and an extension come back as sent, keyed by tenant.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use edge_outbox::catalog::Catalog;
use std::process::Command;

fn interop(file: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/").to_string() + file
}

/// Runs one SDK's round trip; its summary line.
fn round_trip(program: &str, url: &str, brokers: &str, types: &str, prefix: &str) -> String {
    let timeout = if program == "node" { "60000" } else { "60" };
    let output = Command::new(program)
        .arg(interop(&format!(
            "sdk_roundtrip.{}",
            if program == "node" { "js" } else { "py" }
        )))
        .args([url, brokers, types, prefix, timeout])
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} runs ({e}): scripts/install-test-deps installs the SDKs")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{program}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_javascript_sdks_get_back_every_type_as_they_sent_it() {
    let broker = Kafka::start();
    let catalog = Catalog::builtin();
    broker.create_topics(&catalog.topics(), 3);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-outbox.toml");
    std::fs::write(
        &config,
        "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\n",
    )
    .unwrap();
    let types = dir.path().join("types.json");
    let entries: Vec<serde_json::Value> = catalog
        .entries()
        .map(|e| serde_json::json!({"type": e.event_type, "topic": e.topic}))
        .collect();
    assert_eq!(entries.len(), 36);
    std::fs::write(&types, serde_json::to_vec(&entries).unwrap()).unwrap();
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    let types = types.to_str().unwrap();
    for (program, prefix) in [("python3", "py"), ("node", "js")] {
        let line = round_trip(program, &sidecar.url(), &broker.bootstrap(), types, prefix);
        let summary: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        eprintln!("{program} SDK: {summary}");
        assert_eq!(summary["sent"], 36, "{summary}");
        assert_eq!(summary["received"], 36, "{summary}");
        assert_eq!(summary["mismatches"], serde_json::json!([]), "{summary}");
    }
}
