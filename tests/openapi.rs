//! The HTTP API against its OpenAPI document: schemathesis (installed by
//! scripts/install-test-deps) generates requests from `/v1/openapi.json` and sends them to the
//! real binary. No answer is a 5xx, every answer matches the document (status, content type,
//! schema, headers), schema-invalid requests are refused, the process stays up, and nothing
//! but what a 202 acknowledged is stored.

mod common;

use common::process::SidecarProcess;
use std::collections::BTreeSet;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_as_documented_and_stores_only_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-outbox.toml");
    // No broker answers: everything acknowledged stays in the store, to be counted.
    std::fs::write(&config, "[relay]\npublish_summaries = false\n").unwrap();
    let mut sidecar = SidecarProcess::start(&config, &dir.path().join("data"), "127.0.0.1:9").await;
    let document: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", sidecar.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let types = &document["components"]["schemas"]["CloudEvent"]["properties"]["type"]["enum"];
    assert_eq!(types.as_array().map(Vec::len), Some(36), "{types}");

    let har = dir.path().join("schemathesis.har");
    let output = Command::new("schemathesis")
        .args(["run", &format!("{}/v1/openapi.json", sidecar.url())])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "20261207",
            "--workers",
            "1",
        ])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance,negative_data_rejection",
        ])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .env("NO_COLOR", "1")
        // Its cache of what it found goes in the test's folder, not the repository.
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs (scripts/install-test-deps installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    let tail = &report[report.len().saturating_sub(6000)..];
    assert!(output.status.success(), "{tail}");
    assert!(sidecar.exited().is_none(), "the sidecar stopped");

    // Every sequence number the store handed out was in a 202 answer.
    let har: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for entry in entries {
        let (request, response) = (&entry["request"], &entry["response"]);
        if request["method"] != "POST" || !request["url"].as_str().unwrap().ends_with("/v1/events")
        {
            continue;
        }
        if response["status"] == 202 {
            let body: serde_json::Value =
                serde_json::from_str(response["content"]["text"].as_str().unwrap()).unwrap();
            for seq in body["sequences"].as_array().unwrap() {
                acknowledged.insert(seq.as_u64().unwrap());
            }
        } else {
            refused += 1;
        }
    }
    let status = sidecar.status().await;
    let stored: BTreeSet<u64> = (1..status["store"]["next_seq"].as_u64().unwrap()).collect();
    eprintln!(
        "schemathesis: {} requests, {refused} events requests refused, {} events acknowledged",
        entries.len(),
        acknowledged.len()
    );
    assert!(refused > 100, "{refused} refusals");
    assert!(!acknowledged.is_empty(), "no event was accepted");
    assert_eq!(stored, acknowledged, "stored without a 202");
    assert_eq!(
        status["store"]["backlog_events"].as_u64(),
        Some(acknowledged.len() as u64)
    );
}
