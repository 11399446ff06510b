//! The CloudEvents HTTP protocol binding: binary mode (`ce-*` headers, percent-decoded),
//! structured mode (`application/cloudevents+json`) and batched mode
//! (`application/cloudevents-batch+json`), parsed into [`CloudEvent`]s and validated.

use super::{is_json_media_type, is_valid_attribute_name, CloudEvent, Data, ErrorKind, EventError};
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Media type of structured mode.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Media type of batched mode.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// The binding mode a request uses, decided by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
    Batch,
}

/// Decides the mode from the content type; `has_ce_headers` tells whether the request carries
/// `ce-specversion` (required for binary mode).
pub fn mode_of(content_type: Option<&str>, has_ce_specversion: bool) -> Result<Mode, EventError> {
    let essence = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if essence == BATCH {
        return Ok(Mode::Batch);
    }
    if essence == STRUCTURED {
        return Ok(Mode::Structured);
    }
    if essence.starts_with("application/cloudevents") {
        return Err(EventError::new(
            ErrorKind::UnsupportedMediaType,
            "content-type",
            format!("event format {essence:?} is not supported; use {STRUCTURED} or {BATCH}"),
        ));
    }
    if has_ce_specversion {
        return Ok(Mode::Binary);
    }
    Err(EventError::new(
        ErrorKind::UnsupportedMediaType,
        "content-type",
        format!(
            "not a CloudEvents request: send {STRUCTURED}, {BATCH}, or binary mode with ce-* headers"
        ),
    ))
}

/// Parses a request in any mode into its events. Every event is validated; a batch fails
/// as a whole on the first bad event, and the error's field names the event's index.
pub fn parse_request<'a>(
    content_type: Option<&str>,
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    body: &[u8],
) -> Result<Vec<CloudEvent>, EventError> {
    let has = |wanted: &str| {
        headers
            .clone()
            .any(|(name, _)| name.eq_ignore_ascii_case(wanted))
    };
    // A request with the required attributes as headers is binary mode missing one, not
    // something else.
    let looks_binary = ["ce-specversion", "ce-id", "ce-type", "ce-source"]
        .iter()
        .any(|h| has(h));
    match mode_of(content_type, looks_binary)? {
        Mode::Binary => Ok(vec![parse_binary(content_type, headers, body)?]),
        Mode::Structured => Ok(vec![parse_structured(body)?]),
        Mode::Batch => parse_batch(body),
    }
}

/// Binary mode: attributes in `ce-` headers, data in the body, `Content-Type` as
/// `datacontenttype`.
pub fn parse_binary<'a>(
    content_type: Option<&str>,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body: &[u8],
) -> Result<CloudEvent, EventError> {
    let mut attributes: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in headers {
        let lower = name.to_ascii_lowercase();
        let Some(attr) = lower.strip_prefix("ce-") else {
            continue;
        };
        let field = format!("ce-{attr}");
        if !is_valid_attribute_name(attr) {
            return Err(EventError::invalid(
                field,
                "attribute names must be lower-case letters and digits",
            ));
        }
        let text = std::str::from_utf8(raw)
            .map_err(|_| EventError::invalid(&field, "header value is not valid UTF-8"))?;
        let value = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map_err(|_| EventError::invalid(&field, "percent-decoded value is not valid UTF-8"))?
            .into_owned();
        if attributes.insert(attr.to_string(), value).is_some() {
            return Err(EventError::invalid(field, "header given more than once"));
        }
    }
    if attributes.contains_key("datacontenttype") {
        return Err(EventError::invalid(
            "ce-datacontenttype",
            "binary mode carries datacontenttype in the Content-Type header",
        ));
    }
    let mut take = |name: &str| attributes.remove(name);
    let event = CloudEvent {
        specversion: take("specversion").unwrap_or_default(),
        id: take("id").unwrap_or_default(),
        source: take("source").unwrap_or_default(),
        event_type: take("type").unwrap_or_default(),
        time: take("time"),
        dataschema: take("dataschema"),
        subject: take("subject"),
        datacontenttype: content_type.map(str::to_string),
        data: (!body.is_empty()).then(|| Data::Bytes(body.to_vec())),
        extensions: attributes,
    };
    event.validate().map_err(|e| EventError {
        field: binary_field(&e.field),
        ..e
    })?;
    // A body declared as JSON must be JSON: relayed as it is, it would reach consumers that
    // trust the content type.
    if !body.is_empty() && content_type.is_some_and(is_json_media_type) {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            return Err(EventError::invalid(
                "data",
                format!(
                    "the body is not the JSON its content-type {} says: {e}",
                    content_type.unwrap_or_default()
                ),
            ));
        }
    }
    Ok(event)
}

/// In binary mode an attribute's field is its header.
fn binary_field(field: &str) -> String {
    if field == "datacontenttype" {
        "content-type".into()
    } else {
        format!("ce-{field}")
    }
}

/// Structured mode: one JSON object.
pub fn parse_structured(body: &[u8]) -> Result<CloudEvent, EventError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EventError::invalid("body", format!("not valid JSON: {e}")))?;
    let event = from_json(value)?;
    event.validate()?;
    Ok(event)
}

/// Batched mode: a JSON array of structured events, all or nothing.
pub fn parse_batch(body: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EventError::invalid("body", format!("not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(EventError::invalid(
            "body",
            "a batch must be a JSON array of events",
        ));
    };
    if items.is_empty() {
        return Err(EventError::invalid("body", "the batch holds no events"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            from_json(item)
                .and_then(|e| e.validate().map(|_| e))
                .map_err(|e| EventError {
                    field: format!("[{i}].{}", e.field),
                    ..e
                })
        })
        .collect()
}

/// A CloudEvent from its JSON event format object (not yet validated).
pub fn from_json(value: Value) -> Result<CloudEvent, EventError> {
    let Value::Object(mut map) = value else {
        return Err(EventError::invalid(
            "body",
            "an event must be a JSON object",
        ));
    };
    let data = map.remove("data");
    let data_base64 = map.remove("data_base64");
    let data = match (data, data_base64) {
        (Some(d), Some(b)) if !d.is_null() && !b.is_null() => {
            return Err(EventError::invalid(
                "data_base64",
                "data and data_base64 are mutually exclusive",
            ))
        }
        (_, Some(Value::String(encoded))) => Some(Data::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| EventError::invalid("data_base64", format!("not base64: {e}")))?,
        )),
        (_, Some(other)) if !other.is_null() => {
            return Err(EventError::invalid(
                "data_base64",
                "must be a base64 string",
            ))
        }
        (Some(d), _) if !d.is_null() => Some(Data::Json(d)),
        _ => None,
    };
    let specversion = required_string(&mut map, "specversion")?;
    let id = required_string(&mut map, "id")?;
    let source = required_string(&mut map, "source")?;
    let event_type = required_string(&mut map, "type")?;
    let time = optional_string(&mut map, "time")?;
    let datacontenttype = optional_string(&mut map, "datacontenttype")?;
    let dataschema = optional_string(&mut map, "dataschema")?;
    let subject = optional_string(&mut map, "subject")?;
    let mut extensions = BTreeMap::new();
    for (name, value) in map {
        if !is_valid_attribute_name(&name) {
            return Err(EventError::invalid(
                name,
                "attribute names must be lower-case letters and digits",
            ));
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) if n.is_i64() => n.to_string(),
            _ => {
                return Err(EventError::invalid(
                    name,
                    "extension values must be strings, integers or booleans",
                ))
            }
        };
        extensions.insert(name, text);
    }
    Ok(CloudEvent {
        specversion,
        id,
        source,
        event_type,
        time,
        datacontenttype,
        dataschema,
        subject,
        extensions,
        data,
    })
}

fn required_string(map: &mut Map<String, Value>, name: &str) -> Result<String, EventError> {
    match map.remove(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(EventError::invalid(name, "is required")),
        Some(_) => Err(EventError::invalid(name, "must be a string")),
    }
}

fn optional_string(map: &mut Map<String, Value>, name: &str) -> Result<Option<String>, EventError> {
    match map.remove(name) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(EventError::invalid(name, "must be a string")),
    }
}

/// The JSON event format of an event (structured mode), the inverse of [`from_json`].
pub fn to_json(event: &CloudEvent) -> Value {
    let mut map = Map::new();
    map.insert("specversion".into(), event.specversion.clone().into());
    map.insert("id".into(), event.id.clone().into());
    map.insert("source".into(), event.source.clone().into());
    map.insert("type".into(), event.event_type.clone().into());
    for (name, value) in [
        ("time", &event.time),
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
        ("subject", &event.subject),
    ] {
        if let Some(v) = value {
            map.insert(name.into(), v.clone().into());
        }
    }
    for (name, value) in &event.extensions {
        map.insert(name.clone(), value.clone().into());
    }
    match &event.data {
        Some(Data::Json(v)) => {
            map.insert("data".into(), v.clone());
        }
        Some(Data::Bytes(bytes)) => {
            let as_json = event
                .is_json_content()
                .then(|| serde_json::from_slice::<Value>(bytes).ok())
                .flatten();
            let as_text = (!event.is_json_content())
                .then(|| {
                    event
                        .datacontenttype
                        .as_deref()
                        .filter(|ct| ct.starts_with("text/"))
                        .and_then(|_| std::str::from_utf8(bytes).ok())
                })
                .flatten();
            if let Some(v) = as_json {
                map.insert("data".into(), v);
            } else if let Some(text) = as_text {
                map.insert("data".into(), text.into());
            } else {
                map.insert(
                    "data_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into(),
                );
            }
        }
        None => {}
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn structured_body() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "specversion": "1.0",
            "type": "eventzr.integration-hub.execution.completed.v1",
            "source": "integration-hub-svc",
            "id": "evt-550e8400",
            "time": "2026-02-24T12:00:00.000Z",
            "datacontenttype": "application/json",
            "subject": "tenant-uuid",
            "tenantflag": true,
            "data": {"tenantId": "a0000001", "status": "SUCCESS"}
        }))
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
        pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn a_structured_event_becomes_one_json_value_on_kafka() {
        let events = parse_request(
            Some("application/cloudevents+json; charset=utf-8"),
            std::iter::empty(),
            &structured_body(),
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id, "evt-550e8400");
        assert_eq!(e.extensions["tenantflag"], "true");
        assert_eq!(
            e.data,
            Some(Data::Json(
                json!({"tenantId": "a0000001", "status": "SUCCESS"})
            ))
        );
        // Round trip through the JSON format.
        assert_eq!(&from_json(to_json(e)).unwrap(), e);
    }

    #[test]
    fn structured_data_base64_is_decoded_into_bytes() {
        let body = json!({"specversion":"1.0","id":"1","source":"s","type":"t",
            "datacontenttype":"application/octet-stream","data_base64":"AAEC"});
        let e = parse_structured(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(e.data, Some(Data::Bytes(vec![0, 1, 2])));
        assert_eq!(to_json(&e)["data_base64"], "AAEC");
    }

    #[test]
    fn binary_mode_percent_decodes_header_values() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("CE-ID", "evt-1"),
            ("ce-source", "integration-hub-svc"),
            ("ce-type", "eventzr.integration-hub.oauth.connected.v1"),
            ("ce-subject", "caf%C3%A9%20tenant"),
            ("ce-partitionkey", "t-1"),
            ("content-length", "10"),
        ]);
        let body = br#"{"tenantId":"t-9"}"#;
        let events = parse_request(Some("application/json"), h.iter().copied(), body).unwrap();
        let e = &events[0];
        assert_eq!(e.id, "evt-1");
        assert_eq!(e.subject.as_deref(), Some("café tenant"));
        assert_eq!(
            e.extensions.get("partitionkey").map(String::as_str),
            Some("t-1")
        );
        assert_eq!(e.extensions.len(), 1);
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data, Some(Data::Bytes(body.to_vec())));
    }

    #[test]
    fn binary_mode_errors_name_the_header() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        let err = parse_request(None, h.iter().copied(), b"").unwrap_err();
        assert_eq!(err.field, "ce-id");
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
            ("ce-time", "not-a-time"),
        ]);
        let err = parse_request(None, h.iter().copied(), b"").unwrap_err();
        assert_eq!(err.field, "ce-time");
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "%FF"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        let err = parse_request(None, h.iter().copied(), b"").unwrap_err();
        assert_eq!(err.field, "ce-id");
        let h = headers(&[("ce-specversion", "1.0"), ("ce-Bad_Name", "x")]);
        let err = parse_request(None, h.iter().copied(), b"").unwrap_err();
        assert_eq!(err.field, "ce-bad_name");
    }

    #[test]
    fn batch_mode_all_or_nothing() {
        let good = serde_json::from_slice::<Value>(&structured_body()).unwrap();
        let mut second = good.clone();
        second["id"] = json!("evt-2");
        let body = serde_json::to_vec(&json!([good, second])).unwrap();
        let events = parse_request(Some(BATCH), std::iter::empty(), &body).unwrap();
        assert_eq!(events.len(), 2);
        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove("source");
        let body = serde_json::to_vec(&json!([good, bad])).unwrap();
        let err = parse_request(Some(BATCH), std::iter::empty(), &body).unwrap_err();
        assert_eq!(err.field, "[1].source");
        let err = parse_request(Some(BATCH), std::iter::empty(), b"[]").unwrap_err();
        assert_eq!(err.field, "body");
        let err = parse_request(Some(BATCH), std::iter::empty(), b"{}").unwrap_err();
        assert_eq!(err.field, "body");
    }

    #[test]
    fn structured_errors_name_the_field() {
        let cases = [
            (json!({"specversion":"1.0","source":"s","type":"t"}), "id"),
            (
                json!({"specversion":"1.0","id":1,"source":"s","type":"t"}),
                "id",
            ),
            (
                json!({"specversion":"0.3","id":"1","source":"s","type":"t"}),
                "specversion",
            ),
            (
                json!({"specversion":"1.0","id":"1","source":"s","type":"t","time":"x"}),
                "time",
            ),
            (
                json!({"specversion":"1.0","id":"1","source":"s","type":"t","Bad":"x"}),
                "Bad",
            ),
            (
                json!({"specversion":"1.0","id":"1","source":"s","type":"t","ext":{"a":1}}),
                "ext",
            ),
            (
                json!({"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}),
                "data_base64",
            ),
            (
                json!({"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"***"}),
                "data_base64",
            ),
            (json!(["not", "an", "object"]), "body"),
        ];
        for (body, field) in cases {
            let err = parse_structured(&serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert_eq!(err.field, field, "for {body}");
        }
        let err = parse_structured(b"{not json").unwrap_err();
        assert_eq!(err.field, "body");
    }

    #[test]
    fn the_content_type_decides_between_binary_structured_and_batched() {
        let err = mode_of(Some("application/json"), false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnsupportedMediaType);
        let err = mode_of(Some("application/cloudevents+avro"), false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnsupportedMediaType);
        assert_eq!(
            mode_of(Some("application/json"), true).unwrap(),
            Mode::Binary
        );
        assert_eq!(mode_of(Some(STRUCTURED), false).unwrap(), Mode::Structured);
        assert_eq!(mode_of(Some(BATCH), false).unwrap(), Mode::Batch);
    }
}
