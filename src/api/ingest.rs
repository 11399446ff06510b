//! `POST /v1/events`: parse the request in any CloudEvents HTTP mode, check every event
//! against the catalogue and limits, turn it into a stored record, append all of them in one
//! durable step, and answer `202` with their sequence numbers only then.

use super::problem::Problem;
use super::tenant_rate::{Refusal, TenantRates};
use super::App;
use crate::clock::now_ms;
use crate::event::trace::TraceContext;
use crate::event::{http, ErrorKind, EventError};
use crate::records::Recorder;
use crate::store::Record;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// The answer to an accepted request. A repeated request gets the same body; only the
/// `x-edge-outbox-duplicates` header tells how many events were already stored.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// The sequence number of each event, in request order.
    pub sequences: Vec<u64>,
    #[serde(skip)]
    pub duplicates: usize,
}

/// Response header: how many events of the request were already stored (same `source` + `id`).
pub const DUPLICATES_HEADER: &str = "x-edge-outbox-duplicates";

pub async fn post_events(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    match ingest(&app, &headers, body).await {
        Ok(accepted) => {
            let duplicates = accepted.duplicates as u64;
            app.metrics.duplicate_events.inc_by(duplicates);
            app.metrics
                .appended_events
                .inc_by(accepted.sequences.len() as u64 - duplicates);
            (
                StatusCode::ACCEPTED,
                [(DUPLICATES_HEADER, accepted.duplicates.to_string())],
                Json(accepted),
            )
                .into_response()
        }
        Err(problem) => {
            let reason = problem
                .problem_type
                .rsplit(':')
                .next()
                .unwrap_or("unknown")
                .to_string();
            app.metrics.refused(&reason);
            problem.into_response()
        }
    }
}

async fn ingest(app: &App, headers: &HeaderMap, body: Body) -> Result<Accepted, Problem> {
    let started = std::time::SystemTime::now();
    let limit = app.ingest.max_request_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::from(EventError::new(
            ErrorKind::TooLarge,
            "body",
            format!("the request body exceeds {limit} bytes"),
        ))
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let events = http::parse_request(content_type, pairs.iter().copied(), &body)?;
    let request_trace = TraceContext::from_headers(pairs.iter().copied());
    let batch = events.len() > 1 || is_batch(content_type);
    let at = |i: usize, field: &str| {
        if batch {
            format!("[{i}].{field}")
        } else {
            field.to_string()
        }
    };
    let appended_ms = now_ms();
    let recorder = Recorder {
        catalog: &app.catalog,
        ingest: &app.ingest,
        event_limit_source: &app.event_limit_source,
        mode: app.mode,
    };
    let records = (events.iter().enumerate())
        .map(|(i, event)| recorder.record(event, request_trace.as_ref(), appended_ms, |f| at(i, f)))
        .collect::<Result<Vec<Record>, EventError>>()?;
    if let Some(rates) = &app.tenant_rates {
        check_tenant_rates(rates, &records)?;
    }
    let Some(_open) = app.intake.enter().await else {
        return Err(super::shutting_down(app.retry_after_secs));
    };
    let count = records.len();
    let appended = app.store.append(records).await;
    app.telemetry.append(
        started,
        request_trace.as_ref(),
        || {
            (events.iter())
                .filter_map(|e| TraceContext::from_extensions(&e.extensions))
                .collect()
        },
        count,
        appended.as_ref().err().map(|e| e.to_string()).as_deref(),
    );
    let answers = appended.map_err(|e| Problem::from(e).retry_after(app.retry_after_secs))?;
    Ok(Accepted {
        duplicates: answers.iter().filter(|a| a.duplicate).count(),
        sequences: answers.iter().map(|a| a.seq).collect(),
    })
}

/// Takes the request's events from each of its tenants' ingest rates; refuses the request
/// (429, or 413 when it holds more of one tenant's events than its rate lets through at once)
/// at the first tenant over its rate.
fn check_tenant_rates(rates: &TenantRates, records: &[Record]) -> Result<(), Problem> {
    let mut per_tenant: Vec<(&str, u32)> = Vec::new();
    for record in records {
        let tenant = record.message.key.as_str();
        match per_tenant.iter_mut().find(|(t, _)| *t == tenant) {
            Some((_, events)) => *events += 1,
            None => per_tenant.push((tenant, 1)),
        }
    }
    let rate = rates.per_second();
    let limit = format!("{rate} events per second (ingest.max_events_per_second_per_tenant)");
    for (tenant, events) in per_tenant {
        match rates.check(tenant, events) {
            Ok(()) => {}
            Err(Refusal::OverRate(wait)) => {
                let detail = format!(
                    "tenant {tenant:?} is over its ingest rate of {rate} events per second; \
                     other tenants are not held back; retry later"
                );
                let seconds = wait.as_secs_f64().ceil() as u64;
                return Err(Problem::tenant_limited(
                    "tenant-rate-limited",
                    "Tenant over its ingest rate",
                    tenant,
                    limit,
                    detail,
                )
                .retry_after(seconds));
            }
            Err(Refusal::TooMany) => {
                let detail = format!(
                    "the request holds {events} events of tenant {tenant:?}, more than its \
                     ingest rate of {rate} events per second lets through at once: send them \
                     in smaller requests"
                );
                let mut problem = Problem::tenant_limited(
                    "tenant-rate-burst",
                    "More events of one tenant than its rate allows at once",
                    tenant,
                    limit,
                    detail,
                );
                problem.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
                return Err(problem);
            }
        }
    }
    Ok(())
}

fn is_batch(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| ct.to_ascii_lowercase().starts_with(http::BATCH))
}
