//! The CloudEvents 1.0 envelope: the attributes, validation of what the spec and the sidecar
//! require, and the tenant key that orders and partitions events. Parsing of the HTTP binding
//! modes lives in [`http`], the Kafka binding in [`kafka`], the W3C trace context a message
//! carries in [`trace`].

pub mod http;
pub mod kafka;
pub mod trace;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The only CloudEvents spec version accepted.
pub const SPEC_VERSION: &str = "1.0";

/// A CloudEvent as received: context attributes plus data.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    /// Extension attributes, canonicalised to their string form.
    pub extensions: BTreeMap<String, String>,
    pub data: Option<Data>,
}

/// The event payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `data` of a JSON (structured or batched) event.
    Json(Value),
    /// `data_base64`, or the body of a binary-mode request, kept byte for byte.
    Bytes(Vec<u8>),
}

/// Why an event was refused. `field` names the attribute (or part of the request) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub kind: ErrorKind,
    pub field: String,
    pub reason: String,
}

/// The class of a refusal; it decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The event is malformed or misses a required attribute (400).
    Invalid,
    /// The event or request is larger than allowed (413).
    TooLarge,
    /// The request's content type is not a CloudEvents binding mode (415).
    UnsupportedMediaType,
    /// The event type is not in the catalogue (422).
    UnknownType,
}

impl EventError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> EventError {
        EventError {
            kind: ErrorKind::Invalid,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn new(kind: ErrorKind, field: impl Into<String>, reason: impl Into<String>) -> Self {
        EventError {
            kind,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for EventError {}

/// Where the tenant key comes from, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The `partitionkey` extension (CloudEvents partitioning extension).
    Partitionkey,
    /// `data.tenantId` of a JSON payload.
    DataTenantId,
    /// The `subject` attribute.
    Subject,
}

/// The default tenant key order: `partitionkey`, then `data.tenantId`, then `subject`.
pub const DEFAULT_KEY_ORDER: [KeySource; 3] = [
    KeySource::Partitionkey,
    KeySource::DataTenantId,
    KeySource::Subject,
];

impl CloudEvent {
    /// Checks the attributes the spec requires and the sidecar relies on.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.specversion != SPEC_VERSION {
            return Err(EventError::invalid(
                "specversion",
                format!("must be \"1.0\", got {:?}", self.specversion),
            ));
        }
        for (field, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.event_type),
        ] {
            if value.is_empty() {
                return Err(EventError::invalid(field, "must be a non-empty string"));
            }
        }
        if let Some(time) = &self.time {
            chrono::DateTime::parse_from_rfc3339(time).map_err(|e| {
                EventError::invalid("time", format!("must be an RFC 3339 timestamp ({e})"))
            })?;
        }
        if let Some(ct) = &self.datacontenttype {
            if ct.is_empty() {
                return Err(EventError::invalid(
                    "datacontenttype",
                    "must not be empty when present",
                ));
            }
        }
        if let Some(schema) = &self.dataschema {
            if schema.is_empty() {
                return Err(EventError::invalid(
                    "dataschema",
                    "must be a non-empty URI when present",
                ));
            }
        }
        if let Some(subject) = &self.subject {
            if subject.is_empty() {
                return Err(EventError::invalid(
                    "subject",
                    "must not be empty when present",
                ));
            }
        }
        Ok(())
    }

    /// The tenant key: the first of `order` that is present and non-empty.
    pub fn tenant_key(&self, order: &[KeySource]) -> Result<String, EventError> {
        for source in order {
            let candidate = match source {
                KeySource::Partitionkey => self.extensions.get("partitionkey").cloned(),
                KeySource::DataTenantId => self.data_tenant_id(),
                KeySource::Subject => self.subject.clone(),
            };
            if let Some(key) = candidate.filter(|k| !k.is_empty()) {
                return Ok(key);
            }
        }
        Err(EventError::invalid(
            "partitionkey",
            "no tenant key: set the partitionkey extension, data.tenantId or subject",
        ))
    }

    /// `data.tenantId` when the payload is a JSON object holding a string or number there.
    fn data_tenant_id(&self) -> Option<String> {
        let owned;
        let value = match &self.data {
            Some(Data::Json(v)) => v,
            Some(Data::Bytes(bytes)) if self.is_json_content() => {
                owned = serde_json::from_slice::<Value>(bytes).ok()?;
                &owned
            }
            _ => return None,
        };
        match value.get("tenantId")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Whether the data is JSON: no content type (JSON is the default of the JSON format) or a
    /// `application/json`, `text/json` or `+json` media type.
    pub fn is_json_content(&self) -> bool {
        match &self.datacontenttype {
            None => true,
            Some(ct) => is_json_media_type(ct),
        }
    }
}

/// `application/json`, `text/json`, `*/*+json`, with or without parameters.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// CloudEvents attribute names: lower-case ASCII letters and digits only.
pub fn is_valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: "evt-1".into(),
            source: "integration-hub-svc".into(),
            event_type: "eventzr.integration-hub.execution.completed.v1".into(),
            time: Some("2026-02-24T12:00:00.000Z".into()),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            subject: Some("subject-tenant".into()),
            extensions: BTreeMap::new(),
            data: Some(Data::Json(
                json!({"tenantId": "data-tenant", "status": "SUCCESS"}),
            )),
        }
    }

    #[test]
    fn a_valid_event_passes_validation() {
        sample().validate().unwrap();
    }

    #[test]
    fn each_validation_error_names_its_field() {
        type Mutation = Box<dyn Fn(&mut CloudEvent)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|e| e.specversion = "0.3".into()), "specversion"),
            (Box::new(|e| e.id.clear()), "id"),
            (Box::new(|e| e.source.clear()), "source"),
            (Box::new(|e| e.event_type.clear()), "type"),
            (Box::new(|e| e.time = Some("yesterday".into())), "time"),
            (
                Box::new(|e| e.datacontenttype = Some(String::new())),
                "datacontenttype",
            ),
            (
                Box::new(|e| e.dataschema = Some(String::new())),
                "dataschema",
            ),
            (Box::new(|e| e.subject = Some(String::new())), "subject"),
        ];
        for (mutate, field) in cases {
            let mut event = sample();
            mutate(&mut event);
            let err = event.validate().unwrap_err();
            assert_eq!(err.field, field);
            assert_eq!(err.kind, ErrorKind::Invalid);
        }
    }

    #[test]
    fn the_tenant_key_comes_from_the_first_source_that_has_one() {
        let mut event = sample();
        assert_eq!(event.tenant_key(&DEFAULT_KEY_ORDER).unwrap(), "data-tenant");
        event
            .extensions
            .insert("partitionkey".into(), "ext-tenant".into());
        assert_eq!(event.tenant_key(&DEFAULT_KEY_ORDER).unwrap(), "ext-tenant");
        event.extensions.clear();
        event.data = Some(Data::Json(json!({"other": 1})));
        assert_eq!(
            event.tenant_key(&DEFAULT_KEY_ORDER).unwrap(),
            "subject-tenant"
        );
        // Binary JSON payloads are looked into too.
        event.data = Some(Data::Bytes(br#"{"tenantId":"bytes-tenant"}"#.to_vec()));
        assert_eq!(
            event.tenant_key(&DEFAULT_KEY_ORDER).unwrap(),
            "bytes-tenant"
        );
        // A configured order is honoured.
        assert_eq!(
            event.tenant_key(&[KeySource::Subject]).unwrap(),
            "subject-tenant"
        );
        event.subject = None;
        event.data = None;
        let err = event.tenant_key(&DEFAULT_KEY_ORDER).unwrap_err();
        assert_eq!(err.field, "partitionkey");
    }

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_suffixes() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.api+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/octet-stream"));
    }
}
