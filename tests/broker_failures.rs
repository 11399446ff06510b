//! A failing cluster shows where operators look, not only in the log: the real binary against
//! Apache Kafka that goes away and comes back, and against a SASL listener that refuses our
//! password. `/v1/status`, `edge-outbox status` and `/readyz` name the error and since when;
//! the log says each kind of error once, then summarised, never a line per retry.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn config_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("edge-outbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nflush_interval = \"200ms\"\npublish_summaries = false\n\
             [readiness]\nmax_broker_outage = \"2s\"\n[shutdown]\nintake_grace = \"0s\"\n\
             drain_timeout = \"1s\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

async fn readyz(sidecar: &SidecarProcess) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{}/readyz", sidecar.url()))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_shows_in_status_and_readiness_and_its_recovery_too() {
    let topic = "eventzr.integration-hub.execution.completed.v1".to_string();
    let mut broker = Kafka::start();
    broker.create_topics(std::slice::from_ref(&topic), 3);
    broker.kill();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let mut sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    post_ok(sidecar.addr(), &event(&topic, "u-1", "tenant-u", 1)).await;
    wait_for(
        "the failure in /v1/status",
        Duration::from_secs(30),
        || async { sidecar.status().await["broker"]["failure"]["kind"] == "connection" },
    )
    .await;
    let status = sidecar.status().await;
    let failure = &status["broker"]["failure"];
    assert_eq!(status["broker"]["reachable"], false);
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{status}"
    );
    assert!(failure["since_ms"].as_u64().unwrap() > 0);
    // Ready until the outage lasts the bound, then not, with the reason.
    wait_for("readiness to fail", Duration::from_secs(30), || async {
        readyz(&sidecar).await.0 == 503
    })
    .await;
    let (_, body) = readyz(&sidecar).await;
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("Kafka unreachable for"), "{body}");
    // The CLI says it too.
    let text = stdout_ok(
        cli()
            .args(["status", "--url", &sidecar.url()])
            .output()
            .unwrap(),
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("kafka") && l.contains("unreachable for")),
        "{text}"
    );

    // The cluster comes back: the event goes through, and both clear.
    broker.restart();
    sidecar.wait_drained(Duration::from_secs(60)).await;
    wait_for("the failure to clear", Duration::from_secs(30), || async {
        sidecar.status().await["broker"]["reachable"] == true
    })
    .await;
    assert_eq!(readyz(&sidecar).await.0, 200);
    sidecar.terminate();
    // Every error kind was logged at most once per 30 s window: a handful of lines, and no
    // line twice.
    let log = sidecar.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("librdkafka"))
        .collect();
    assert!(!errors.is_empty() && errors.len() <= 6, "{errors:#?}");
    let messages: std::collections::HashSet<&str> = errors
        .iter()
        .map(|l| l.split_once("librdkafka").unwrap().1)
        .collect();
    assert_eq!(
        messages.len(),
        errors.len(),
        "a line said twice: {errors:#?}"
    );
    assert!(log.contains("the Kafka cluster answers again"), "{log}");
    // A log file carries no colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_shows_as_an_authentication_failure() {
    let topic = "eventzr.integration-hub.execution.completed.v1".to_string();
    let broker = Kafka::with_users(1, &[("outbox", "right-password")]);
    broker.create_topics(std::slice::from_ref(&topic), 3);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "[kafka.security]\nprotocol = \"sasl_plaintext\"\nsasl_mechanism = \"plain\"\n\
         sasl_username = \"outbox\"\nsasl_password = \"wrong-password\"\n",
    );
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.sasl_bootstrap()).await;
    post_ok(sidecar.addr(), &event(&topic, "a-1", "tenant-a", 1)).await;
    wait_for(
        "the refusal in /v1/status",
        Duration::from_secs(30),
        || async { sidecar.status().await["broker"]["failure"]["kind"] == "authentication" },
    )
    .await;
    let status = sidecar.status().await;
    assert!(
        status["broker"]["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("SASL authentication"),
        "{status}"
    );
    assert!(!status.to_string().contains("wrong-password"));
    wait_for("readiness to fail", Duration::from_secs(30), || async {
        readyz(&sidecar).await.0 == 503
    })
    .await;
    let (_, body) = readyz(&sidecar).await;
    assert!(
        body["reasons"]
            .to_string()
            .contains("Kafka refusing authentication for"),
        "{body}"
    );
    // The event stays stored.
    assert_eq!(sidecar.status().await["store"]["backlog_events"], 1);
    assert!(!sidecar.log_text().contains("wrong-password"));
}

/// A broker that stops answering (SIGSTOP) while full batches are in flight: after
/// `relay.stall_timeout` without a delivery report the relay takes them back from librdkafka
/// and only probes (a sixteenth of a batch) until the broker answers, so what librdkafka holds
/// through an outage stays small. Once the broker continues, every acknowledged event arrives,
/// each tenant's first arrivals in order, and no more duplicates than were in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_gets_back_what_it_held_and_then_only_probes() {
    let warm_up = "eventzr.integration-hub.execution.completed.v1".to_string();
    let topic = "eventzr.integration-hub.sync.completed.v1".to_string();
    let broker = Kafka::start();
    broker.create_topics(&[warm_up.clone(), topic.clone()], 3);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-outbox.toml");
    std::fs::write(
        &config,
        "[relay]\nflush_interval = \"200ms\"\npublish_summaries = false\nbatch_max_events = 400\n\
         stall_timeout = \"2s\"\nretry_backoff_min = \"100ms\"\nretry_backoff_max = \"1s\"\n",
    )
    .unwrap();
    let sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    let addr = sidecar.addr();
    // Once a batch went through, batches are full-size (400) and the next is read ahead.
    post_tenants(addr, &warm_up, 2, 10, "warm").await;
    wait_for("the warm-up delivered", Duration::from_secs(60), || async {
        let status = sidecar.status().await;
        status["relay"]["delivered_events"] == 20 && status["relay"]["broker_confirmed"] == true
    })
    .await;
    broker.signal_node(1, "STOP");
    let (tenants, per_tenant) = (4, 300);
    let posting = {
        let topic = topic.clone();
        tokio::spawn(async move { post_tenants(addr, &topic, tenants, per_tenant, "hung").await })
    };
    let most_in_flight = AtomicU64::new(0);
    let in_flight = |status: &serde_json::Value| {
        let now = status["relay"]["in_flight_events"].as_u64().unwrap();
        most_in_flight.fetch_max(now, Ordering::Relaxed);
        now
    };
    wait_for(
        "a full batch in flight",
        Duration::from_secs(30),
        || async { in_flight(&sidecar.status().await) >= 400 },
    )
    .await;
    // Noticed, and acted on: the reports of both batches in flight are in (the one behind
    // settles a moment after the first), and at most a probe has been handed over since.
    wait_for("the stall noticed", Duration::from_secs(30), || async {
        let status = sidecar.status().await;
        let now = in_flight(&status);
        let stalled = status["relay"]["last_errors"]["stalled"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("taken back from librdkafka"));
        if stalled {
            assert_eq!(status["relay"]["broker_confirmed"], false, "{status}");
        }
        stalled && now <= 25
    })
    .await;
    posting.await.unwrap();
    // Through two more stall periods, librdkafka is given no more than a probe at a time.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let status = sidecar.status().await;
        let now = status["relay"]["in_flight_events"].as_u64().unwrap();
        assert!(now <= 25, "{now} in flight after the stall: {status}");
        assert_eq!(status["relay"]["broker_confirmed"], false);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.signal_node(1, "CONT");
    sidecar.wait_drained(Duration::from_secs(120)).await;
    let acked: Vec<String> = (0..tenants)
        .flat_map(|t| (0..per_tenant).map(move |n| format!("hung-{t}-{n}")))
        .collect();
    let consumed = assert_all_delivered(&broker.bootstrap(), &topic, &acked).await;
    assert_first_arrivals_in_order(&consumed, tenants, per_tenant);
    let duplicates = consumed.len() - acked.len();
    let most_in_flight = most_in_flight.into_inner();
    assert!(
        duplicates as u64 <= most_in_flight,
        "{duplicates} duplicates, at most {most_in_flight} were in flight"
    );
    eprintln!("in flight at most {most_in_flight}, duplicates {duplicates}");
}
