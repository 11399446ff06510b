//! The command line: configuration precedence (file < environment < flags), the catalogue
//! listing, and clear errors that name the setting.

mod common;

use common::{cli as edge_outbox, cli_stdout as effective};

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:7001\"\n[relay]\nflush_interval = \"5s\"\n[kafka]\nbrokers = \"file:9092\"\n").unwrap();
    let file = file.to_str().unwrap();
    let only_file = effective(&["check-config", "--config", file], &[]);
    assert!(only_file.contains("flush_interval = \"5s\""), "{only_file}");
    assert!(only_file.contains("brokers = \"file:9092\""));
    assert!(only_file.contains("listen = \"127.0.0.1:7001\""));
    let env = [
        ("EDGE_OUTBOX_FLUSH_INTERVAL", "7s"),
        ("EDGE_OUTBOX_BROKERS", "env:9092"),
    ];
    let with_env = effective(&["check-config", "--config", file], &env);
    assert!(with_env.contains("flush_interval = \"7s\""), "{with_env}");
    assert!(with_env.contains("brokers = \"env:9092\""));
    assert!(
        with_env.contains("listen = \"127.0.0.1:7001\""),
        "the file still counts"
    );
    let with_flags = effective(
        &[
            "check-config",
            "--config",
            file,
            "--flush-interval",
            "250ms",
            "--brokers",
            "flag:9092",
        ],
        &env,
    );
    assert!(
        with_flags.contains("flush_interval = \"250ms\""),
        "{with_flags}"
    );
    assert!(with_flags.contains("brokers = \"flag:9092\""));
    // The config file itself may come from the environment.
    let via_env = effective(&["check-config"], &[("EDGE_OUTBOX_CONFIG", file)]);
    assert!(via_env.contains("brokers = \"file:9092\""));
}

#[test]
fn defaults_listen_on_loopback() {
    let defaults = effective(&["check-config"], &[]);
    assert!(
        defaults.contains("listen = \"127.0.0.1:8080\""),
        "{defaults}"
    );
    assert!(defaults.contains("data_dir = \"./data\""));
    assert!(defaults.contains("flush_interval = \"10s\""));
}

#[test]
fn secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[kafka]\nproperties = { \"sasl.password\" = \"hunter2\" }\n",
    )
    .unwrap();
    let shown = effective(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(!shown.contains("hunter2"));
    assert!(shown.contains("<redacted>"));
}

#[test]
fn errors_name_the_setting() {
    let output = edge_outbox()
        .args(["check-config", "--flush-interval", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--flush-interval") && stderr.contains("soon"),
        "{stderr}"
    );
    let output = edge_outbox()
        .args(["serve", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kafka.brokers"), "{stderr}");
}

#[test]
fn topics_lists_the_catalogue() {
    let json = effective(&["topics", "--json"], &[]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(entries.len(), 36);
    assert!(entries.iter().all(|e| e["type"] == e["topic"]));
    let table = effective(&["topics"], &[]);
    assert!(table.contains("36 event types in 9 categories"));
    assert!(table.contains("eventzr.integration-hub.whatsapp.webhook.received.v1"));
}

#[test]
fn probe_fails_when_nothing_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = edge_outbox()
        .args(["probe", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("probing"));
}
