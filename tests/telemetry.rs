//! The sidecar's own spans over OTLP (`telemetry.otlp_endpoint`), received by a real OTLP/HTTP
//! receiver built on the OpenTelemetry project's protobuf classes
//! (`tests/interop/otlp_receiver.py`, `opentelemetry-proto` from PyPI): an `append` span per
//! request, child of the request's trace and linked to the events' own traces, and `produce`
//! spans for the batches Apache Kafka confirmed, linked to the events' traces.

mod common;

use common::kafka::Kafka;
use common::process::SidecarProcess;
use common::*;
use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TYPE: &str = "eventzr.integration-hub.webhook.dispatched.v1";
const HOP: (&str, &str) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
const ORIGIN: (&str, &str) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
const OTHER: (&str, &str) = ("5c1e4a0d7f3b2a1908e6d5c4b3a29180", "1a2b3c4d5e6f7081");

fn traceparent((trace, span): (&str, &str)) -> String {
    format!("00-{trace}-{span}-01")
}

/// The receiver, its port, and its span lines as they come.
fn receiver() -> (std::process::Child, u16, mpsc::Receiver<Value>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/otlp_receiver.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect(
            "python3 runs the receiver (scripts/install-test-deps installs opentelemetry-proto)",
        );
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the receiver starts").unwrap();
    let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
    let (send, spans) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            if send
                .send(serde_json::from_str(&line.unwrap()).unwrap())
                .is_err()
            {
                break;
            }
        }
    });
    (child, port, spans)
}

fn links_to(span: &Value, (trace, span_id): (&str, &str)) -> bool {
    (span["links"].as_array().unwrap())
        .iter()
        .any(|l| l["trace_id"] == trace && l["span_id"] == span_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_produce_spans_reach_an_otlp_receiver_with_the_events_traces() {
    let broker = Kafka::start();
    broker.create_topics(&[TYPE.to_string()], 1);
    let (mut otlp, port, spans) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-outbox.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nflush_interval = \"100ms\"\npublish_summaries = false\n\
             [shutdown]\nintake_grace = \"0s\"\n\
             [telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nservice_name = \"edge-outbox-test\"\n"
        ),
    )
    .unwrap();
    let mut sidecar =
        SidecarProcess::start(&config, &dir.path().join("data"), &broker.bootstrap()).await;
    // One event with the request's trace (this hop) and its own (where it started).
    let mut first = event(TYPE, "traced-1", "tenant-t", 0);
    first["traceparent"] = traceparent(ORIGIN).into();
    let answer = post_with(
        sidecar.addr(),
        &[
            ("content-type", STRUCTURED),
            ("traceparent", &traceparent(HOP)),
        ],
        serde_json::to_vec(&first).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    // A batch without a request trace, one of its events with a trace of its own.
    let mut batch: Vec<Value> = (2..5)
        .map(|n| event(TYPE, &format!("traced-{n}"), "tenant-t", n))
        .collect();
    batch[1]["traceparent"] = traceparent(OTHER).into();
    let answer = post(sidecar.addr(), BATCH, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    sidecar.wait_drained(Duration::from_secs(30)).await;
    let (status, _) = sidecar.terminate_and_wait();
    assert!(status.success(), "{status:?}");

    let mut appends = Vec::new();
    let mut produces = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while appends.len() < 2
        || !produces.iter().any(|p| links_to(p, HOP))
        || !produces.iter().any(|p| links_to(p, OTHER))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let span = spans.recv_timeout(left).unwrap_or_else(|_| {
            panic!("spans missing: appends {appends:?}, produces {produces:?}")
        });
        assert_eq!(span["service"], "edge-outbox-test", "{span}");
        match span["name"].as_str().unwrap() {
            "append" => appends.push(span),
            "produce" => produces.push(span),
            other => panic!("unexpected span {other}: {span}"),
        }
    }
    let _ = otlp.kill();
    let _ = otlp.wait();

    // The request's span is the parent of the first append; its event's own trace a link.
    let traced = appends
        .iter()
        .find(|s| s["attributes"]["edge_outbox.events"] == 1)
        .unwrap();
    assert_eq!(traced["trace_id"], HOP.0, "{traced}");
    assert_eq!(traced["parent_span_id"], HOP.1, "{traced}");
    assert!(links_to(traced, ORIGIN), "{traced}");
    assert_eq!(traced["kind"], 2, "SERVER: {traced}");
    // The batch's append starts a trace of its own, linked to the event that had one.
    let batch = appends
        .iter()
        .find(|s| s["attributes"]["edge_outbox.events"] == 3)
        .unwrap();
    assert_eq!(batch["parent_span_id"], "", "{batch}");
    assert!(links_to(batch, OTHER), "{batch}");
    // The produce spans link the traces the Kafka messages carry (the hop's for the first).
    for span in &produces {
        assert_eq!(span["kind"], 4, "PRODUCER: {span}");
        assert_eq!(span["attributes"]["messaging.system"], "kafka", "{span}");
    }
    assert!(
        !produces.iter().any(|p| links_to(p, ORIGIN)),
        "{produces:?}"
    );
}
