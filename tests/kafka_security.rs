//! Security on real Apache Kafka listeners, with a CA and certificates made by the test set-up:
//! TLS with `kafka.security.ca_file`, mutual TLS, SASL/SCRAM-SHA-512 over TLS. Events are
//! delivered through each; a wrong password or an untrusted CA fails `check-config --connect` at
//! the step it names while the sidecar keeps storing events; `tail` reads through TLS and SASL.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "eventzr.integration-hub.webhook.dispatched.v1";

/// `[kafka.security]` settings as a TOML table body.
fn security(kafka: &Kafka, protocol: &str, extra: &str) -> String {
    format!(
        "protocol = \"{protocol}\"\nca_file = \"{}\"\n{extra}",
        kafka.tls_dir().join("ca.pem").display()
    )
}

fn config_file(dir: &Path, security: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\n\
             [shutdown]\nintake_grace = \"0s\"\ndrain_timeout = \"2s\"\n\
             [kafka.security]\n{security}"
        ),
    )
    .unwrap();
    path
}

/// `check-config --connect` with this configuration: whether it passed, and its report.
fn connect(config: &Path, brokers: &str) -> (bool, String) {
    let output = cli()
        .args(["check-config", "--connect", "--timeout", "5s", "--config"])
        .arg(config)
        .args(["--brokers", brokers])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn delivers(config: &Path, data: &Path, brokers: &str, id: &str) -> SidecarProcess {
    let sidecar = SidecarProcess::start(config, data, brokers).await;
    post_ok(sidecar.addr(), &event(TOPIC, id, "tenant-s", 0)).await;
    sidecar.wait_drained(Duration::from_secs(60)).await;
    sidecar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mutual_tls_and_scram_over_tls_deliver_and_failures_name_their_step() {
    let kafka = Kafka::secured(&[("outbox", "right-password")]);
    // The whole catalogue, so that `check-config --connect` passes its topics step.
    kafka.create_topics(&edge_outbox::catalog::Catalog::builtin().topics(), 1);
    let dir = tempfile::tempdir().unwrap();
    let tls = kafka.tls_dir();
    let client_cert = format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        tls.join("client.crt").display(),
        tls.join("client.key").display()
    );
    let scram = |password: &str| {
        format!(
            "sasl_mechanism = \"scram-sha-512\"\nsasl_username = \"outbox\"\nsasl_password = \"{password}\"\n"
        )
    };

    // TLS, the broker authenticated by our CA.
    let tls_config = config_file(&dir.path().join("tls"), &security(&kafka, "ssl", ""));
    let (ok, report) = connect(&tls_config, &kafka.ssl_bootstrap());
    assert!(ok && report.contains("ok    tls"), "{report}");
    let mut sidecar = delivers(
        &tls_config,
        &dir.path().join("tls/data"),
        &kafka.ssl_bootstrap(),
        "tls-1",
    )
    .await;
    sidecar.terminate();

    // Mutual TLS: with our client certificate, delivered; without, refused at the tls step.
    let mtls_config = config_file(
        &dir.path().join("mtls"),
        &security(&kafka, "ssl", &client_cert),
    );
    let mut sidecar = delivers(
        &mtls_config,
        &dir.path().join("mtls/data"),
        &kafka.mtls_bootstrap(),
        "mtls-1",
    )
    .await;
    sidecar.terminate();
    let (ok, report) = connect(&tls_config, &kafka.mtls_bootstrap());
    assert!(
        !ok && report.contains("FAIL  tls"),
        "without a client certificate: {report}"
    );

    // SASL/SCRAM-SHA-512 over TLS.
    let scram_config = config_file(
        &dir.path().join("scram"),
        &security(&kafka, "sasl_ssl", &scram("right-password")),
    );
    let (ok, report) = connect(&scram_config, &kafka.sasl_ssl_bootstrap());
    assert!(ok, "{report}");
    let mut sidecar = delivers(
        &scram_config,
        &dir.path().join("scram/data"),
        &kafka.sasl_ssl_bootstrap(),
        "scram-1",
    )
    .await;
    sidecar.terminate();

    // A wrong password: the authentication step, and events keep being stored.
    let wrong = config_file(
        &dir.path().join("wrong"),
        &security(&kafka, "sasl_ssl", &scram("wrong-password")),
    );
    let (ok, report) = connect(&wrong, &kafka.sasl_ssl_bootstrap());
    assert!(!ok && report.contains("FAIL  authentication"), "{report}");
    assert!(!report.contains("wrong-password"));
    let sidecar = SidecarProcess::start(
        &wrong,
        &dir.path().join("wrong/data"),
        &kafka.sasl_ssl_bootstrap(),
    )
    .await;
    for n in 0..3 {
        post_ok(
            sidecar.addr(),
            &event(TOPIC, &format!("w-{n}"), "tenant-s", n),
        )
        .await;
    }
    assert_eq!(sidecar.status().await["store"]["backlog_events"], 3);
    drop(sidecar);

    // A CA that did not sign the broker's certificate: the tls step.
    let untrusted = config_file(
        &dir.path().join("untrusted"),
        &format!(
            "protocol = \"ssl\"\nca_file = \"{}\"\n",
            tls.join("other-ca.pem").display()
        ),
    );
    let (ok, report) = connect(&untrusted, &kafka.ssl_bootstrap());
    assert!(!ok && report.contains("FAIL  tls"), "{report}");

    // Everything delivered above is there, read back through TLS and SASL by `tail`.
    let tailed = cli()
        .args(["tail", "--config"])
        .arg(&scram_config)
        .args(["--brokers", &kafka.sasl_ssl_bootstrap(), "--topic", TOPIC])
        .args(["--count", "3", "--idle-timeout", "30s"])
        .output()
        .unwrap();
    assert!(
        tailed.status.success(),
        "{}",
        String::from_utf8_lossy(&tailed.stderr)
    );
    let ids: std::collections::BTreeSet<String> = String::from_utf8_lossy(&tailed.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        ["mtls-1", "scram-1", "tls-1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
