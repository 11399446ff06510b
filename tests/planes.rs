//! Two planes: data (ingest, dead-letter administration) on `listen`, loopback by default;
//! operations (`/metrics`, `/healthz`, `/readyz`) on `ops_listen`. The dead-letter routes need
//! the admin token when one is set, and a `listen` off loopback is refused without one.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::DevBroker;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_listener_serves_only_metrics_and_probes_and_the_admin_routes_need_the_token() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-token-of-the-test\n").unwrap();
    let mut config = test_config(&kafka.bootstrap_servers(), &dir.path().join("data"));
    let ops_port = free_port();
    config.ops_listen = Some(format!("127.0.0.1:{ops_port}").parse().unwrap());
    config.admin.token_file = Some(token_file.clone());
    let sidecar = start(config).await;
    let t = "eventzr.integration-hub.provider.created.v1";
    post_poison(&kafka, &sidecar, &event(t, "p-1", "t", 1)).await;
    let seq = sidecar.store().dead_letters(0, 1).unwrap()[0].seq;

    // The ops plane: metrics and probes; no ingest, no status, no dead letters.
    let ops = format!("http://127.0.0.1:{ops_port}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = reqwest::get(format!("{ops}{path}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let metrics = reqwest::get(format!("{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("edge_outbox_dead_letters 1"), "{metrics}");
    for path in ["/v1/status", "/v1/dlq", &format!("/v1/dlq/{seq}")] {
        let response = reqwest::get(format!("{ops}{path}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path} on the ops plane");
    }
    let posted = reqwest::Client::new()
        .post(format!("{ops}/v1/events"))
        .header("content-type", STRUCTURED)
        .body(serde_json::to_vec(&event(t, "p-2", "t", 2)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 404);

    // The data plane: the dead-letter routes want the token.
    let data = format!("http://{}", sidecar.addr());
    let client = reqwest::Client::new();
    for request in [
        client.get(format!("{data}/v1/dlq")),
        client.get(format!("{data}/v1/dlq/{seq}")),
        client.post(format!("{data}/v1/dlq/{seq}/replay")),
        client.delete(format!("{data}/v1/dlq/{seq}")),
        client
            .delete(format!("{data}/v1/dlq/{seq}"))
            .bearer_auth("s3cret-token-of-the-tesT"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(sidecar.store().stats().dead_letters, 1, "nothing changed");
    // Ingest and status do not.
    post_ok(sidecar.addr(), &event(t, "p-3", "t", 3)).await;
    assert!(reqwest::get(format!("{data}/v1/status"))
        .await
        .unwrap()
        .status()
        .is_success());
    // The CLI sends the token from its file.
    let listed = cli()
        .args(["dlq", "list", "--json", "--url", &data])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let without = cli()
        .args(["dlq", "list", "--url", &data])
        .output()
        .unwrap();
    assert!(!without.status.success());
    let purged = cli()
        .args(["dlq", "purge", &seq.to_string(), "--url", &data])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    wait_for("the purge", Duration::from_secs(5), || async {
        sidecar.store().stats().dead_letters == 0
    })
    .await;
    sidecar.shutdown().await.unwrap();
}

#[test]
fn a_listen_address_off_loopback_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let refused = cli()
        .args([
            "serve",
            "--brokers",
            "127.0.0.1:9",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("admin.token_file") && text.contains("not a loopback address"),
        "{text}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "refused before the store is touched"
    );
    // A token too short to be one is refused too.
    let token = dir.path().join("token");
    let check = |token_text: &str| {
        std::fs::write(&token, token_text).unwrap();
        cli()
            .args(["check-config", "--set", "listen=\"0.0.0.0:8080\""])
            .args([
                "--set",
                &format!("admin.token_file=\"{}\"", token.display()),
            ])
            .output()
            .unwrap()
    };
    let checked = check("short");
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stderr).contains("at least 16 characters"));
    let checked = check("a-token-of-enough-length");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // The token itself is never printed.
    assert!(!String::from_utf8_lossy(&checked.stdout).contains("a-token-of-enough-length"));
}
