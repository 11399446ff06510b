//! RFC 9457 problem details (`application/problem+json`): every refusal of the API names its
//! status, a stable type, the field at fault and a human reason.

use crate::event::{ErrorKind, EventError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a per-tenant limit: the tenant and the limit (`tenant` and `limit` members).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub held: Option<Box<TenantHeld>>,
    /// Seconds, for the `Retry-After` header.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

/// The tenant a per-tenant limit held back, and the limit.
#[derive(Debug, Clone, Serialize)]
pub struct TenantHeld {
    /// Empty for the shared account of the tenants beyond `store.max_tracked_tenants`.
    pub tenant: String,
    /// The limit that was reached, with its setting.
    pub limit: String,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            problem_type: format!("urn:edge-outbox:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            held: None,
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    /// `429` for a tenant held to `limit` (with its setting) while other tenants go on.
    pub fn tenant_limited(
        slug: &str,
        title: &str,
        tenant: &str,
        limit: String,
        detail: impl Into<String>,
    ) -> Problem {
        let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, slug, title, detail);
        problem.held = Some(Box::new(TenantHeld {
            tenant: tenant.to_string(),
            limit,
        }));
        problem
    }

    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds.clamp(1, u64::from(u32::MAX)) as u32);
        self
    }

    /// `400` for a request whose path or query is malformed (not its event), naming `field`.
    pub fn invalid_request(field: &str, detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            detail,
        )
        .with_field(field)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
}

impl From<EventError> for Problem {
    fn from(e: EventError) -> Problem {
        let (status, slug, title) = match e.kind {
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid-event", "Invalid event"),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Too large"),
            ErrorKind::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported content type",
            ),
            ErrorKind::UnknownType => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-event-type",
                "Unknown event type",
            ),
        };
        Problem::new(status, slug, title, format!("{}: {}", e.field, e.reason)).with_field(e.field)
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Problem {
        use crate::store::StoreError;
        let (slug, title) = match e {
            StoreError::NotFound(seq) => {
                return Problem::not_found(format!("no dead letter with seq {seq}"))
            }
            StoreError::BacklogFull { .. } => ("backlog-full", "Backlog full"),
            StoreError::TenantBacklogFull {
                ref tenant,
                limit,
                unit,
                ..
            } => {
                return Problem::tenant_limited(
                    "tenant-backlog-full",
                    "Tenant's backlog share full",
                    tenant,
                    format!("{limit} {unit} (store.max_backlog_{unit}_per_tenant)"),
                    e.to_string(),
                )
            }
            StoreError::DiskFull { .. } => ("disk-full", "Data volume nearly full"),
            StoreError::DiskLimit { .. } => ("disk-limit", "Store disk limit reached"),
            StoreError::Unavailable(_) | StoreError::Locked(_) => {
                ("store-unavailable", "Store unavailable")
            }
        };
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, title, e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("problems serialise");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
