//! The HTTP API (loopback by default): event ingest, health and readiness, status, the topic
//! catalogue and dead-letter administration, described by the OpenAPI document
//! `openapi.json` (served at `/v1/openapi.json`). Handlers are thin: they translate between
//! HTTP and the store, the catalogue and the relay's status.

mod ingest;
pub use ingest::DUPLICATES_HEADER;
pub mod problem;
pub mod tenant_rate;

use crate::broker_health::FailureKind;
use crate::catalog::Catalog;
use crate::clock::now_ms;
use crate::config::IngestConfig;
use crate::event::kafka::KafkaMode;
use crate::relay::StatusHandle;
use crate::shutdown::{Phase, Shutdown};
use crate::store::{record, Record, Store, StoreError};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use problem::Problem;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers share.
pub struct App {
    pub store: Store,
    pub catalog: Catalog,
    /// `max_event_bytes` is the effective limit (see [`crate::config::Config::event_limit`]).
    pub ingest: IngestConfig,
    /// What sets that limit, for the 413 answer.
    pub event_limit_source: String,
    pub mode: KafkaMode,
    pub relay: StatusHandle,
    pub started: Instant,
    /// `Retry-After` for 503 answers, in seconds.
    pub retry_after_secs: u64,
    pub max_backlog_age: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// MSK IAM token signing, when the cluster uses it.
    pub auth: Option<Arc<crate::msk_iam::AuthStatus>>,
    /// Appends pass through it; closed at the end of the drain's intake grace.
    pub intake: Arc<Intake>,
    pub shutdown: Shutdown,
    /// Whether the cluster answers and takes our credentials.
    pub broker: Arc<crate::broker_health::BrokerHealth>,
    /// The bearer token the dead-letter routes require, when `admin.token_file` is set.
    pub admin_token: Option<String>,
    pub max_broker_outage: Duration,
    /// The ingest rate per tenant, when `ingest.max_events_per_second_per_tenant` sets one.
    pub tenant_rates: Option<tenant_rate::TenantRates>,
    /// The `append` spans, when `telemetry.otlp_endpoint` is set.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

/// The gate in front of the store's appends (ingest and replay). Closing it waits for the
/// appends already past it, so that once it is closed nothing more can enter the store.
#[derive(Debug)]
pub struct Intake {
    open: tokio::sync::RwLock<bool>,
}

impl Default for Intake {
    fn default() -> Self {
        Intake {
            open: tokio::sync::RwLock::new(true),
        }
    }
}

impl Intake {
    /// A pass for one append, held until it is answered; `None` once closed.
    pub async fn enter(&self) -> Option<tokio::sync::RwLockReadGuard<'_, bool>> {
        let open = self.open.read().await;
        (*open).then_some(open)
    }

    /// Closes the gate once every append that entered it is answered.
    pub async fn close(&self) {
        *self.open.write().await = false;
    }

    pub fn is_open(&self) -> bool {
        self.open.try_read().map(|open| *open).unwrap_or(true)
    }
}

/// `503` for an append after the intake grace of a shutdown.
fn shutting_down(retry_after_secs: u64) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
        "Shutting down",
        "the sidecar is shutting down and takes no new events; send them to its successor",
    )
    .retry_after(retry_after_secs)
}

/// The data plane (`listen`): ingest, status, the catalogue, and the dead-letter routes, which
/// need the admin token when one is configured.
pub fn router(app: Arc<App>) -> Router {
    let admin = Router::new()
        .route("/v1/dlq", get(dlq_list))
        .route("/v1/dlq/{seq}", get(dlq_show).delete(dlq_purge))
        .route("/v1/dlq/{seq}/replay", post(dlq_replay))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_admin_token,
        ));
    Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/topics", get(topics))
        .route("/v1/openapi.json", get(openapi))
        .merge(admin)
        // The ingest handler enforces its own limit, with a problem+json answer.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// The operations plane (`ops_listen`): metrics and probes only, nothing that reads events or
/// changes the store.
pub fn ops_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// The OpenAPI 3.1 document of this API (`src/api/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// [`OPENAPI`], with the event types of this sidecar's catalogue (extra types included) as
/// the values a CloudEvent's `type` may take, unless `ingest.allow_unknown_types` is set.
async fn openapi(State(app): State<Arc<App>>) -> Response {
    let mut document: serde_json::Value =
        serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    if app.ingest.allow_unknown_types {
        return Json(document).into_response();
    }
    let types: Vec<&str> = (app.catalog.entries())
        .map(|e| e.event_type.as_str())
        .collect();
    document["components"]["schemas"]["CloudEvent"]["properties"]["type"]["enum"] = json!(types);
    Json(document).into_response()
}

/// `401` unless the request carries `Authorization: Bearer <admin token>` (when one is set).
async fn require_admin_token(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = &app.admin_token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let matches = given.is_some_and(|given| {
        // Compared in full whatever the first difference, so that timing tells nothing.
        given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    });
    if matches {
        return next.run(request).await;
    }
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        "the dead-letter routes need `Authorization: Bearer <token>` with the token of \
         admin.token_file (`edge-outbox dlq --token-file FILE`)",
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

fn oldest_age_ms(store: &Store) -> Option<u64> {
    store
        .oldest_appended_ms()
        .map(|ms| now_ms().saturating_sub(ms))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut reasons = Vec::new();
    if app.shutdown.is_shutting_down() {
        reasons.push("shutting down: draining the backlog".to_string());
    }
    if let Some(reason) = app.store.broken() {
        reasons.push(format!("store not writable: {reason}"));
    }
    if let Some(age) = oldest_age_ms(&app.store) {
        if age > app.max_backlog_age.as_millis() as u64 {
            reasons.push(format!(
                "oldest undelivered event is {}s old (bound {}s)",
                age / 1000,
                app.max_backlog_age.as_secs()
            ));
        }
    }
    if let Some(error) = app.auth.as_ref().and_then(|a| a.failing()) {
        reasons.push(format!("Kafka authentication: {error}"));
    }
    if let Some(failure) = app.broker.failing_longer_than(app.max_broker_outage) {
        let what = match failure.kind {
            FailureKind::Connection => "unreachable",
            FailureKind::Authentication => "refusing authentication",
        };
        reasons.push(format!(
            "Kafka {what} for {}s (bound {}s): {}",
            now_ms().saturating_sub(failure.since_ms) / 1000,
            app.max_broker_outage.as_secs(),
            failure.message
        ));
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": reasons.is_empty(), "reasons": reasons})),
    )
        .into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let relay = app.relay.lock().expect("lock").clone();
    let broker_failure = app.broker.failure();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "store": app.store.stats(),
        "oldest_age_ms": oldest_age_ms(&app.store),
        "disk_bytes": app.store.recent_disk_bytes(),
        "writable": app.store.broken().is_none(),
        "tenants": {
            "with_backlog": app.store.tenants_with_backlog(),
            "largest": app.store.largest_tenants(crate::metrics::LARGEST_TENANTS),
        },
        "relay": relay,
        "broker": {
            "reachable": broker_failure.is_none(),
            "failure": broker_failure,
        },
        "shutdown": shutdown_json(&app),
        "auth": app.auth.as_ref().map(|a| json!({
            "mechanism": "aws_msk_iam",
            "token_refreshes": a.refreshes.load(std::sync::atomic::Ordering::Relaxed),
            "token_refresh_failures": a.failures.load(std::sync::atomic::Ordering::Relaxed),
            // Signing failed here, or the broker refused what was signed.
            "last_error": a.failing().or_else(|| broker_failure
                .as_ref()
                .filter(|f| f.kind == FailureKind::Authentication)
                .map(|f| f.message.clone())),
            "last_success_ms": a.last_success_ms.load(std::sync::atomic::Ordering::Relaxed),
        })),
    }))
    .into_response()
}

/// The shutdown phase for `/v1/status`: null while running.
fn shutdown_json(app: &App) -> serde_json::Value {
    match app.shutdown.phase() {
        Phase::Running => serde_json::Value::Null,
        Phase::Draining {
            deadline,
            intake_closed,
        } => {
            let stats = app.store.stats();
            json!({
                "phase": "draining",
                "intake_open": !intake_closed && app.intake.is_open(),
                "deadline_in_ms": deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .as_millis() as u64,
                "events_left": stats.backlog_events,
                "bytes_left": stats.backlog_bytes,
            })
        }
        Phase::Stopping => json!({"phase": "stopping"}),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics
            .render(&app.store, app.auth.as_deref(), app.shutdown.phase()),
    )
        .into_response()
}

async fn topics(State(app): State<Arc<App>>) -> Response {
    Json(app.catalog.entries().cloned().collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// A dead letter as JSON: the record when it decodes, else only the error.
fn dead_letter_json(dead: &crate::store::DeadLetter) -> serde_json::Value {
    let record = record::decode::<Record>(&dead.raw).ok();
    json!({
        "seq": dead.seq,
        "error": dead.error,
        "parked_ms": dead.parked_ms,
        "event_id": record.as_ref().map(|r| &r.event_id),
        "event_source": record.as_ref().map(|r| &r.event_source),
        "event_type": record.as_ref().map(|r| &r.event_type),
        "topic": record.as_ref().map(|r| &r.message.topic),
        "key": record.as_ref().map(|r| &r.message.key),
        "bytes": dead.raw.len(),
    })
}

/// A dead letter's sequence number from the path: a problem naming `seq` when it is not one.
fn parse_seq(text: &str) -> Result<u64, Problem> {
    text.parse().map_err(|_| {
        Problem::invalid_request(
            "seq",
            format!("{text:?} is not a sequence number (a non-negative integer)"),
        )
    })
}

async fn dlq_list(
    State(app): State<Arc<App>>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let page = match page {
        Ok(Query(page)) => page,
        Err(e) => {
            return Problem::invalid_request(
                "query",
                format!("the query is not `from` and `limit` as integers: {e}"),
            )
            .into_response()
        }
    };
    match app.store.dead_letters(page.from, page.limit.min(10_000)) {
        Ok(list) => Json(list.iter().map(dead_letter_json).collect::<Vec<_>>()).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

async fn dlq_show(State(app): State<Arc<App>>, Path(seq): Path<String>) -> Response {
    let seq = match parse_seq(&seq) {
        Ok(seq) => seq,
        Err(problem) => return problem.into_response(),
    };
    match app.store.dead_letter(seq) {
        Ok(Some(dead)) => {
            // One dead letter: with the whole event (data included), as it would be sent.
            let mut json = dead_letter_json(&dead);
            json["event"] = record::decode::<Record>(&dead.raw)
                .ok()
                .and_then(|r| {
                    crate::event::kafka::from_message(&r.message.headers, &r.message.payload)
                })
                .map(|event| crate::event::http::to_json(&event))
                .unwrap_or(serde_json::Value::Null);
            Json(json).into_response()
        }
        Ok(None) => Problem::from(StoreError::NotFound(seq)).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

async fn dlq_replay(State(app): State<Arc<App>>, Path(seq): Path<String>) -> Response {
    let seq = match parse_seq(&seq) {
        Ok(seq) => seq,
        Err(problem) => return problem.into_response(),
    };
    // An event the producer can never take would only be parked again.
    if let Ok(Some(dead)) = app.store.dead_letter(seq) {
        if let Ok(record) = record::decode::<Record>(&dead.raw) {
            let size = record.message.size();
            if size > app.ingest.max_event_bytes {
                return Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Too large",
                    format!(
                        "dead letter {seq} takes {size} bytes as a Kafka message, more than the {} \
                         the producer takes ({}): it can never be delivered; purge it, or raise \
                         the limit first",
                        app.ingest.max_event_bytes, app.event_limit_source
                    ),
                )
                .into_response();
            }
        }
    }
    let Some(_open) = app.intake.enter().await else {
        return shutting_down(app.retry_after_secs).into_response();
    };
    match app.store.replay(seq).await {
        Ok(new_seq) => (
            StatusCode::ACCEPTED,
            Json(json!({"seq": seq, "new_seq": new_seq})),
        )
            .into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

async fn dlq_purge(State(app): State<Arc<App>>, Path(seq): Path<String>) -> Response {
    let seq = match parse_seq(&seq) {
        Ok(seq) => seq,
        Err(problem) => return problem.into_response(),
    };
    match app.store.purge(seq).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}
