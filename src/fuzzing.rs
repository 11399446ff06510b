//! The properties the fuzz targets check, one function per parser of outside input. They live
//! in the library so that `fuzz/` (libFuzzer) and the regression test over `fuzz/regressions/`
//! (plain `cargo test`) check exactly the same thing. Each panics when its property fails.
#![doc(hidden)]

use crate::config::Config;
use crate::event::http::{from_json, parse_batch, parse_request, parse_structured, to_json};
use crate::store::record::{decode, encode};
use crate::store::{DeadLetter, Record};

/// Structured-mode bodies: an accepted event survives the JSON round trip.
pub fn structured(data: &[u8]) {
    if let Ok(event) = parse_structured(data) {
        let again = from_json(to_json(&event)).expect("an accepted event round-trips");
        assert_eq!(again, event);
    }
}

/// Batched-mode bodies: a batch is never empty; a refusal names a field.
pub fn batch(data: &[u8]) {
    match parse_batch(data) {
        Ok(events) => assert!(!events.is_empty()),
        Err(e) => assert!(!e.field.is_empty()),
    }
}

/// Splits fuzz input into `name:value` header lines, an empty line, and the body.
fn request_parts(data: &[u8]) -> (Vec<(String, Vec<u8>)>, &[u8]) {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let headers = head
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?.to_string();
            Some((name, line[colon + 1..].to_vec()))
        })
        .collect();
    (headers, body)
}

/// Binary-mode requests: `name:value` header lines, an empty line, then the body. An
/// accepted event is valid.
pub fn binary_request(data: &[u8]) {
    let (headers, body) = request_parts(data);
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let content_type = pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    if let Ok(events) = parse_request(content_type, pairs.iter().copied(), body) {
        for e in events {
            e.validate().expect("accepted events are valid");
        }
    }
}

/// Stored records: decoding never panics nor over-allocates; a decoded record survives an
/// encode/decode round trip. (Not byte equality: bincode accepts non-minimal varints, and
/// libFuzzer forges matching checksums, so several byte strings may decode to one record.)
pub fn stored_record(data: &[u8]) {
    if let Ok(record) = decode::<Record>(data) {
        let again = decode::<Record>(&encode(&record)).expect("a re-encoded record decodes");
        assert_eq!(again, record);
    }
    let _ = decode::<DeadLetter>(data);
}

/// Configuration files: parsing, validation and redaction never panic.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_toml(text) {
            let _ = config.validate(true);
            let _ = config.redacted_toml();
        }
    }
}

/// The ingest endpoint and store of [`http_ingest`], made once per process.
struct IngestHarness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    store: crate::store::Store,
}

fn ingest_harness() -> &'static IngestHarness {
    static HARNESS: std::sync::OnceLock<IngestHarness> = std::sync::OnceLock::new();
    HARNESS.get_or_init(|| {
        // One store per process, in the temp directory (statics are never dropped, so it stays).
        let dir = std::env::temp_dir().join(format!("edge-outbox-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = crate::store::StoreConfig::new(&dir);
        config.min_free_bytes = 0;
        config.max_backlog_events = u64::MAX;
        config.max_backlog_bytes = u64::MAX;
        let store = crate::store::Store::open(config).expect("the fuzz store opens");
        let app = crate::api::App {
            store: store.clone(),
            catalog: crate::catalog::Catalog::builtin(),
            ingest: crate::config::IngestConfig {
                max_event_bytes: 64 * 1024,
                max_request_bytes: 256 * 1024,
                ..Default::default()
            },
            event_limit_source: "ingest.max_event_bytes".into(),
            mode: crate::event::kafka::KafkaMode::Binary,
            relay: Default::default(),
            started: std::time::Instant::now(),
            retry_after_secs: 1,
            max_backlog_age: std::time::Duration::from_secs(300),
            metrics: crate::metrics::Metrics::new(),
            auth: None,
            intake: Default::default(),
            // Never shut down: the sender is dropped at once.
            shutdown: crate::shutdown::channel().1,
            broker: Default::default(),
            admin_token: None,
            max_broker_outage: std::time::Duration::from_secs(60),
            tenant_rates: None,
            telemetry: std::sync::Arc::default(),
        };
        IngestHarness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            router: crate::api::router(std::sync::Arc::new(app)),
            store,
        }
    })
}

/// The whole HTTP ingest request (headers and body) through the real handler and store: a
/// refused request is a problem+json answer and leaves the store exactly as it was.
pub fn http_ingest(data: &[u8]) {
    use tower::ServiceExt;
    let harness = ingest_harness();
    let (headers, body) = request_parts(data);
    let mut request = axum::http::Request::post("/v1/events");
    for (name, value) in &headers {
        let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else {
        return;
    };
    let before = harness.store.stats();
    let response = harness
        .runtime
        .block_on(harness.router.clone().oneshot(request))
        .expect("the router answers");
    if response.status() != axum::http::StatusCode::ACCEPTED {
        assert_eq!(
            harness.store.stats(),
            before,
            "a refused request changed the store"
        );
        let content_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/problem+json"));
    }
}

/// The property for a fuzz target's name.
pub fn property(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "structured" => structured,
        "batch" => batch,
        "binary_headers" => binary_request,
        "record_decode" => stored_record,
        "config_toml" => config_file,
        "http_ingest" => http_ingest,
        _ => return None,
    })
}
