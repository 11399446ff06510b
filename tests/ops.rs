//! Operator commands against a running sidecar: `status` and `dlq list|show|replay|purge`,
//! including clear refusals of unknown sequence numbers.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka::DevBroker;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::process::{Command, Output};
use std::time::Duration;

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-outbox"))
        .args(args)
        .args(["--url", url])
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dead_letter_commands() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    let url = format!("http://{}", sidecar.addr());
    let t = "eventzr.integration-hub.webhook.failed.v1";
    kafka.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    post_ok(sidecar.addr(), &event(t, "parked-1", "tenant-o", 0)).await;
    let store = sidecar.store().clone();
    wait_for("the event to be parked", Duration::from_secs(30), || {
        let store = store.clone();
        async move { store.stats().dead_letters == 1 }
    })
    .await;

    let text = stdout(&run(&url, &["status"]));
    assert!(text.contains("dead letters         1"), "{text}");
    assert!(text.contains("store writable       true"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&url, &["status", "--json"]))).unwrap();
    assert_eq!(json["store"]["dead_letters"], 1);

    let list = stdout(&run(&url, &["dlq", "list"]));
    assert!(
        list.contains("parked-1") && list.contains("1 dead letters"),
        "{list}"
    );
    let seq = sidecar.store().dead_letters(0, 1).unwrap()[0]
        .seq
        .to_string();
    let shown = stdout(&run(&url, &["dlq", "show", &seq]));
    assert!(shown.contains("\"event_id\": \"parked-1\""), "{shown}");

    for args in [
        ["dlq", "replay", "999"],
        ["dlq", "purge", "999"],
        ["dlq", "show", "999"],
    ] {
        let refused = run(&url, &args);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("no dead letter with seq 999"),
            "{args:?}: {stderr}"
        );
    }
    let refused = run(&url, &["dlq", "replay"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--all"));

    let purged = stdout(&run(&url, &["dlq", "purge", "--all"]));
    assert!(purged.contains("1 purged"), "{purged}");
    assert_eq!(sidecar.store().stats().dead_letters, 0);
    assert!(stdout(&run(&url, &["dlq", "list"])).contains("0 dead letters"));
    sidecar.shutdown().await.unwrap();
}
