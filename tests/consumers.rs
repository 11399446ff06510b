//! What we produce, read by clients written by others: Confluent's Python client
//! (confluent-kafka) and kafkajs, the most used Node client, against Apache Kafka. The default
//! compression (gzip) is read by both; lz4, which kafkajs cannot read without a codec plug-in,
//! is read by confluent-kafka and refused by kafkajs, as README's table says.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::path::Path;
use std::process::Command;

const TOPIC: &str = "eventzr.integration-hub.oauth.connected.v1";
const EVENTS: usize = 20;

fn interop(file: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/").to_string() + file
}

/// Runs a consumer script; its JSON lines, or its error.
fn read_with(
    program: &str,
    script: &str,
    brokers: &str,
    topic: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let timeout = if program == "node" { "30000" } else { "30" };
    let output = Command::new(program)
        .arg(interop(script))
        .args([brokers, topic, &EVENTS.to_string(), timeout])
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} runs ({e}): scripts/install-test-deps installs the consumers")
        });
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

async fn produce_with(
    broker: &Kafka,
    dir: &Path,
    compression: Option<&str>,
    topic: &str,
) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("edge-outbox.toml");
    let mut text = "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\n[shutdown]\nintake_grace = \"0s\"\n".to_string();
    if let Some(compression) = compression {
        text.push_str(&format!("[kafka]\ncompression = \"{compression}\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    let mut sidecar = SidecarProcess::start(&config, &dir.join("data"), &broker.bootstrap()).await;
    let mut ids = Vec::new();
    for n in 0..EVENTS as u64 {
        let id = format!("{}-{n}", compression.unwrap_or("default"));
        post_ok(
            sidecar.addr(),
            &event(topic, &id, &format!("tenant-{}", n % 4), n),
        )
        .await;
        ids.push(id);
    }
    sidecar.terminate();
    ids
}

fn check(read: &[serde_json::Value], ids: &[String]) {
    let got: Vec<&str> = read
        .iter()
        .map(|m| m["headers"]["ce_id"].as_str().unwrap())
        .collect();
    for id in ids {
        assert!(got.contains(&id.as_str()), "{id} not read: {got:?}");
    }
    for m in read {
        assert_eq!(m["headers"]["ce_specversion"], "1.0");
        assert!(m["key"].as_str().unwrap().starts_with("tenant-"));
        let data: serde_json::Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
        assert!(data["n"].is_u64(), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_compression_is_read_by_confluent_kafka_and_kafkajs_and_lz4_only_by_the_first()
{
    let broker = Kafka::start();
    let lz4_topic = "eventzr.integration-hub.oauth.refreshed.v1";
    broker.create_topics(&[TOPIC.to_string(), lz4_topic.to_string()], 3);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        edge_outbox::config::KafkaConfig::default().compression,
        "gzip"
    );
    let ids = produce_with(&broker, &dir.path().join("default"), None, TOPIC).await;
    let python = read_with("python3", "consume.py", &broker.bootstrap(), TOPIC).unwrap();
    check(&python, &ids);
    let node = read_with("node", "consume.js", &broker.bootstrap(), TOPIC).unwrap();
    check(&node, &ids);

    let ids = produce_with(&broker, &dir.path().join("lz4"), Some("lz4"), lz4_topic).await;
    let python = read_with("python3", "consume.py", &broker.bootstrap(), lz4_topic).unwrap();
    check(&python, &ids);
    let refused = read_with("node", "consume.js", &broker.bootstrap(), lz4_topic).unwrap_err();
    assert!(refused.to_lowercase().contains("lz4"), "{refused}");
}
