//! Production settings through the real binary: the staging and production presets, overriding
//! any value (file < environment < flags), secrets redacted, `check-config --connect` naming the
//! step that fails (DNS, TCP, credentials, TLS, missing topics) against a real broker, and a
//! sidecar whose AWS credentials cannot be had: it keeps storing events and says why it is not
//! ready.

mod common;

use common::kafka::Kafka;
use common::{cli as edge_outbox, event, free_port, get_json, post_ok, stdout_ok, wait_for};
use edge_outbox::catalog::Catalog;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    edge_outbox()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn presets_load_and_every_value_can_be_overridden() {
    let staging = stdout_ok(run(&["check-config", "--preset", "staging"], &[]));
    for expected in [
        "brokers = \"b-1.eventzr-msk.ap-south-1.amazonaws.com:9098\"",
        "protocol = \"sasl_ssl\"",
        "sasl_mechanism = \"aws_msk_iam\"",
        "aws_region = \"ap-south-1\"",
        "flush_interval = \"10s\"",
        "compression = \"lz4\"",
        "max_event_bytes = 900000",
        "max_bytes_per_second = 4000000",
    ] {
        assert!(staging.contains(expected), "{expected} missing:\n{staging}");
    }
    let production = stdout_ok(run(&["check-config", "--preset", "production"], &[]));
    assert!(production.contains("b-1.eventzr-msk-prod.ap-south-1.amazonaws.com:9098"));
    // Environment over the preset, --set over the environment, named flags for their settings.
    let env = [
        ("EDGE_OUTBOX__RELAY__FLUSH_INTERVAL", "5s"),
        ("EDGE_OUTBOX__KAFKA__SECURITY__AWS_REGION", "eu-west-1"),
    ];
    let with_env = stdout_ok(run(&["check-config", "--preset", "staging"], &env));
    assert!(with_env.contains("flush_interval = \"5s\""), "{with_env}");
    assert!(with_env.contains("aws_region = \"eu-west-1\""));
    let with_flags = stdout_ok(run(
        &[
            "check-config",
            "--preset",
            "staging",
            "--set",
            "relay.flush_interval=7s",
            "--set",
            "kafka.properties.linger.ms=20",
            "--brokers",
            "b-9.example:9098",
        ],
        &env,
    ));
    assert!(
        with_flags.contains("flush_interval = \"7s\""),
        "{with_flags}"
    );
    assert!(
        with_flags.contains("\"linger.ms\" = \"20\""),
        "{with_flags}"
    );
    assert!(with_flags.contains("brokers = \"b-9.example:9098\""));
    assert!(
        with_flags.contains("aws_region = \"eu-west-1\""),
        "env still counts"
    );
    // A preset can also be a path.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(&file, "[relay]\nflush_interval = \"3s\"\n").unwrap();
    let from_path = stdout_ok(run(
        &["check-config", "--preset", file.to_str().unwrap()],
        &[],
    ));
    assert!(from_path.contains("flush_interval = \"3s\""));
}

#[test]
fn bad_presets_and_overrides_are_named() {
    let unknown = run(&["check-config", "--preset", "qa"], &[]);
    assert!(!unknown.status.success());
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        message.contains("\"qa\"") && message.contains("staging, production"),
        "{message}"
    );
    let typo = run(&["check-config", "--set", "relay.flush_intervall=3s"], &[]);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("flush_intervall"));
    let no_region = run(
        &[
            "check-config",
            "--preset",
            "staging",
            "--set",
            "kafka.security.aws_region=",
        ],
        &[],
    );
    assert!(String::from_utf8_lossy(&no_region.stderr).contains("kafka.security.aws_region"));
    let both = run(
        &["check-config", "--preset", "staging", "--config", "x.toml"],
        &[],
    );
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}

#[test]
fn secrets_are_redacted_in_the_effective_configuration() {
    let shown = stdout_ok(run(
        &[
            "check-config",
            "--set",
            "kafka.security.protocol=sasl_ssl",
            "--set",
            "kafka.security.sasl_mechanism=scram-sha-512",
            "--set",
            "kafka.security.sasl_username=hub",
            "--set",
            "kafka.security.sasl_password=hunter2-secret",
            "--set",
            "kafka.properties.ssl.key.password=another-secret",
        ],
        &[],
    ));
    assert!(shown.contains("sasl_username = \"hub\""));
    assert!(
        !shown.contains("hunter2-secret") && !shown.contains("another-secret"),
        "{shown}"
    );
    assert!(shown.contains("sasl_password = \"<redacted>\""));
}

fn connect(brokers: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut args = vec![
        "check-config",
        "--connect",
        "--timeout",
        "5s",
        "--brokers",
        brokers,
    ];
    args.extend_from_slice(extra);
    let output = run(&args, env);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const IAM: [&str; 6] = [
    "--set",
    "kafka.security.protocol=sasl_ssl",
    "--set",
    "kafka.security.sasl_mechanism=aws_msk_iam",
    "--set",
    "kafka.security.aws_region=ap-south-1",
];

#[test]
fn connect_names_the_step_that_fails() {
    let (ok, report) = connect("no-such-host.invalid:9092", &[], &[]);
    assert!(!ok && report.contains("FAIL  dns"), "{report}");
    let closed = format!("127.0.0.1:{}", free_port());
    let (ok, report) = connect(&closed, &[], &[]);
    assert!(
        !ok && report.contains("ok    dns") && report.contains("FAIL  tcp"),
        "{report}"
    );

    let broker = Kafka::start();
    let catalog = Catalog::builtin();
    let topics = catalog.topics();
    broker.create_topics(&topics[..30], 1);
    let (ok, report) = connect(&broker.bootstrap(), &[], &[]);
    assert!(!ok, "{report}");
    assert!(report.contains("ok    metadata"), "{report}");
    assert!(
        report.contains("FAIL  topics") && report.contains("6 of 36"),
        "{report}"
    );
    broker.create_topics(&topics[30..], 1);
    let (ok, report) = connect(&broker.bootstrap(), &[], &[]);
    assert!(
        ok && report.contains("all 36 catalogue topics exist"),
        "{report}"
    );

    // MSK IAM without credentials: the credentials step says so.
    let (ok, report) = connect(&broker.bootstrap(), &IAM, &[]);
    assert!(!ok && report.contains("FAIL  credentials"), "{report}");
    assert!(report.contains("no AWS credentials"), "{report}");
    // With credentials from the environment the token is signed; the broker's listener speaks
    // no TLS, and Apache Kafka closes the connection at the TLS hello.
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let creds = [
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ];
    let (ok, report) = connect(&broker.bootstrap(), &IAM, &creds);
    assert!(!ok && report.contains("ok    credentials"), "{report}");
    assert!(
        report.contains("FAIL  tls") && report.contains("PLAINTEXT broker listener"),
        "{report}"
    );
    assert!(report.len() < 2_000, "each client error once: {report}");
    assert!(!report.contains(secret));
}

fn iam_sidecar(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut command = edge_outbox();
    command
        .args(["serve", "--preset", "staging", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .args(["--brokers", &format!("127.0.0.1:{}", free_port())])
        .args(["--set", "kafka.security.token_timeout=2s"])
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

#[tokio::test]
async fn without_credentials_events_are_stored_and_readiness_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = iam_sidecar(&dir.path().join("data"), port, &[]);
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_for("the sidecar to serve", Duration::from_secs(30), || {
        let client = client.clone();
        let url = url.clone();
        async move { client.get(format!("{url}/healthz")).send().await.is_ok() }
    })
    .await;
    let topic = Catalog::builtin().topics()[0].clone();
    let entry = Catalog::builtin().entries().next().unwrap().clone();
    assert_eq!(entry.topic, topic);
    for n in 0..3 {
        post_ok(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &event(&entry.event_type, &format!("iam-{n}"), "tenant-1", n),
        )
        .await;
    }
    wait_for(
        "the token failure to be reported",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let answer = client.get(format!("{url}/readyz")).send().await.unwrap();
                answer.status() == 503
                    && answer
                        .text()
                        .await
                        .unwrap()
                        .contains("Kafka authentication: no AWS credentials")
            }
        },
    )
    .await;
    let status = get_json(&format!("{url}/v1/status")).await;
    assert_eq!(status["store"]["backlog_events"], 3, "{status}");
    assert!(status["auth"]["token_refresh_failures"].as_u64().unwrap() >= 1);
    assert!(status["auth"]["last_error"]
        .as_str()
        .unwrap()
        .contains("no AWS credentials"));
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("edge_outbox_token_refresh_failures_total "))
        .unwrap_or_else(|| panic!("no failure counter in:\n{metrics}"));
    assert!(!failures.ends_with(" 0"), "{failures}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the sidecar keeps running"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn signed_tokens_and_secrets_stay_out_of_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let session = "IQoJb3JpZ2luX2VjEXAMPLEsessiontoken";
    let mut child = iam_sidecar(
        &dir.path().join("data"),
        port,
        &[
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEKEY"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_SESSION_TOKEN", session),
        ],
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for("a signed token", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let status = reqwest::get(format!("{url}/v1/status")).await;
            match status {
                Ok(answer) => {
                    let status: serde_json::Value = answer.json().await.unwrap();
                    status["auth"]["token_refreshes"].as_u64().unwrap_or(0) >= 1
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a signed token is no reason to be unready"
    );
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("signed a new MSK IAM token"), "{log}");
    assert!(!log.contains(secret) && !log.contains(session), "{log}");
    // Nor the token itself: it would carry the signature and the session token.
    assert!(
        !log.contains("X-Amz-Signature") && !log.contains("aHR0cHM6Ly9rYWZrYS"),
        "{log}"
    );
}

#[tokio::test]
async fn tokens_are_refreshed_before_short_lived_credentials_expire() {
    // A profile whose credential_process hands out credentials valid for 20 seconds: the token
    // may live no longer, so librdkafka asks again (at 80 % of its lifetime) and the SDK runs
    // the process again for fresh credentials.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("creds.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nexp=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
         echo \"{\\\"Version\\\":1,\\\"AccessKeyId\\\":\\\"ASIASHORTLIVED\\\",\\\"SecretAccessKey\\\":\\\"short-secret\\\",\\\"SessionToken\\\":\\\"short-session\\\",\\\"Expiration\\\":\\\"$exp\\\"}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile short]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut command = edge_outbox();
    command
        .args(["serve", "--preset", "staging", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--brokers", &format!("127.0.0.1:{}", free_port())])
        .args(["--set", "kafka.security.aws_profile=short"])
        .env("AWS_CONFIG_FILE", &config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let refreshes = || {
        let url = url.clone();
        async move {
            match reqwest::get(format!("{url}/v1/status")).await {
                Ok(answer) => {
                    let status: serde_json::Value = answer.json().await.unwrap();
                    status["auth"]["token_refreshes"].as_u64().unwrap_or(0)
                }
                Err(_) => 0,
            }
        }
    };
    wait_for(
        "a second token before the first expires",
        Duration::from_secs(60),
        || {
            let refreshes = refreshes();
            async move { refreshes.await >= 2 }
        },
    )
    .await;
    let status = get_json(&format!("{url}/v1/status")).await;
    assert_eq!(status["auth"]["token_refresh_failures"], 0, "{status}");
    child.kill().unwrap();
    let _ = child.wait();
}
