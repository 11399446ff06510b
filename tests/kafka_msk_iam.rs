//! The MSK IAM handshake end to end, checked by the broker: an Apache Kafka listener with
//! SASL/OAUTHBEARER whose server callback (`tests/kafka/MskIamValidator.java`) accepts only a
//! valid SigV4-presigned `kafka-cluster:Connect` URL for the test's credentials and region, not
//! expired, and makes clients authenticate again every 10 s. The sidecar connects with
//! `aws_msk_iam`, delivers, and goes on delivering across a token refresh forced by credentials
//! that expire after 30 s; a token signed with the wrong secret is refused by the broker.

mod common;

use common::kafka::{Iam, Kafka};
use common::process::SidecarProcess;
use common::*;
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "eventzr.integration-hub.credential.rotated.v1";
const KEY_ID: &str = "AKIAEDGEOUTBOXTEST01";
const SECRET: &str = "edge-outbox/test/secret/0123456789abcdefABCDEF";
const REGION: &str = "ap-south-1";

/// An AWS config file whose profile gets its credentials from a `credential_process` that
/// says they expire in 30 s, and counts its calls in `calls`.
fn credentials_profile(dir: &Path, secret: &str) -> std::path::PathBuf {
    let script = dir.join("credentials.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> {calls}\nexpires=$(date -u -d '+30 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"{KEY_ID}\", \"SecretAccessKey\": \"{secret}\", \"Expiration\": \"%s\"}}' \"$expires\"\n",
            calls = dir.join("calls").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile iam-test]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    config
}

fn sidecar_config(dir: &Path, kafka: &Kafka) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\n\
             retry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n\
             [shutdown]\nintake_grace = \"0s\"\ndrain_timeout = \"2s\"\n\
             [kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"aws_msk_iam\"\n\
             aws_region = \"{REGION}\"\naws_profile = \"iam-test\"\nca_file = \"{}\"\n",
            kafka.tls_dir().join("ca.pem").display()
        ),
    )
    .unwrap();
    path
}

fn calls(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("calls"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_accepts_our_msk_iam_tokens_across_a_refresh_and_refuses_a_wrong_secret() {
    let kafka = Kafka::with_iam(Iam {
        access_key_id: KEY_ID.into(),
        secret_access_key: SECRET.into(),
        region: REGION.into(),
    });
    kafka.create_topics(&edge_outbox::catalog::Catalog::builtin().topics(), 1);
    let dir = tempfile::tempdir().unwrap();
    let aws_config = credentials_profile(dir.path(), SECRET);
    let config = sidecar_config(dir.path(), &kafka);
    let env = [("AWS_CONFIG_FILE", aws_config.to_str().unwrap())];
    let sidecar = SidecarProcess::start_with_env(
        &config,
        &dir.path().join("data"),
        &kafka.iam_bootstrap(),
        &env,
    )
    .await;
    let mut acked = Vec::new();
    for n in 0..5 {
        let id = format!("iam-{n}");
        post_ok(sidecar.addr(), &event(TOPIC, &id, "tenant-i", n)).await;
        acked.push(id);
    }
    sidecar.wait_drained(Duration::from_secs(60)).await;
    // The credentials expire after 30 s: the SDK fetches new ones, librdkafka asks for a new
    // token before the old one ends, and the broker checks it at its next re-authentication.
    wait_for(
        "a credential and token refresh",
        Duration::from_secs(90),
        || async {
            calls(dir.path()) >= 2
                && sidecar.status().await["auth"]["token_refreshes"].as_u64() >= Some(2)
        },
    )
    .await;
    for n in 5..10 {
        let id = format!("iam-{n}");
        post_ok(sidecar.addr(), &event(TOPIC, &id, "tenant-i", n)).await;
        acked.push(id);
    }
    sidecar.wait_drained(Duration::from_secs(60)).await;
    let status = sidecar.status().await;
    assert_eq!(status["broker"]["reachable"], true, "{status}");
    assert_eq!(
        status["auth"]["last_error"],
        serde_json::Value::Null,
        "{status}"
    );
    let consumed = assert_all_delivered(&kafka.bootstrap(), TOPIC, &acked).await;
    assert_eq!(consumed.len(), 10);
    assert!(!sidecar.log_text().contains(SECRET));

    // Signed with the wrong secret: the broker refuses; events are still stored.
    let wrong_dir = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong_dir).unwrap();
    let wrong_aws = credentials_profile(&wrong_dir, "not/the/right/secret/0123456789abcdef");
    let wrong_env = [("AWS_CONFIG_FILE", wrong_aws.to_str().unwrap())];
    let report = cli()
        .args(["check-config", "--connect", "--timeout", "10s", "--config"])
        .arg(&config)
        .args(["--brokers", &kafka.iam_bootstrap()])
        .envs(wrong_env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stderr);
    assert!(!report.status.success());
    assert!(
        text.contains("ok    credentials") && text.contains("FAIL  authentication"),
        "{text}"
    );
    let wrong = SidecarProcess::start_with_env(
        &config,
        &wrong_dir.join("data"),
        &kafka.iam_bootstrap(),
        &wrong_env,
    )
    .await;
    post_ok(wrong.addr(), &event(TOPIC, "w-1", "tenant-w", 1)).await;
    wait_for(
        "the refusal in /v1/status",
        Duration::from_secs(30),
        || async { wrong.status().await["broker"]["failure"]["kind"] == "authentication" },
    )
    .await;
    let status = wrong.status().await;
    assert_eq!(status["store"]["backlog_events"], 1);
    assert!(status["auth"]["last_error"].is_string(), "{status}");
}
