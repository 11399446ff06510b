//! The CloudEvents Kafka protocol binding: how an event becomes a Kafka message (binary mode:
//! value = data, `content-type` header, every other attribute as a `ce_<name>` header; or
//! structured mode: value = the JSON event) and how a consumed message becomes an event again.

use super::http::{from_json, to_json, STRUCTURED};
use super::{CloudEvent, Data};
use crate::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The Kafka binding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaMode {
    #[default]
    Binary,
    Structured,
}

/// Maps an event onto a Kafka message for `topic` with the tenant `key`.
pub fn to_message(event: &CloudEvent, topic: &str, key: &str, mode: KafkaMode) -> Message {
    match mode {
        KafkaMode::Structured => Message {
            topic: topic.to_string(),
            key: key.to_string(),
            headers: vec![("content-type".into(), STRUCTURED.as_bytes().to_vec())],
            payload: serde_json::to_vec(&to_json(event)).expect("a JSON value serialises"),
        },
        KafkaMode::Binary => {
            let mut headers = vec![
                header("ce_specversion", &event.specversion),
                header("ce_id", &event.id),
                header("ce_source", &event.source),
                header("ce_type", &event.event_type),
            ];
            for (name, value) in [
                ("ce_time", &event.time),
                ("ce_dataschema", &event.dataschema),
                ("ce_subject", &event.subject),
            ] {
                if let Some(v) = value {
                    headers.push(header(name, v));
                }
            }
            for (name, value) in &event.extensions {
                headers.push(header(&format!("ce_{name}"), value));
            }
            let content_type = match (&event.datacontenttype, &event.data) {
                (Some(ct), _) => Some(ct.clone()),
                (None, Some(Data::Json(_))) => Some("application/json".to_string()),
                (None, _) => None,
            };
            if let Some(ct) = content_type {
                headers.push(header("content-type", &ct));
            }
            let payload = match &event.data {
                None => Vec::new(),
                Some(Data::Bytes(bytes)) => bytes.clone(),
                Some(Data::Json(serde_json::Value::String(text))) if !event.is_json_content() => {
                    text.as_bytes().to_vec()
                }
                Some(Data::Json(value)) => {
                    serde_json::to_vec(value).expect("a JSON value serialises")
                }
            };
            Message {
                topic: topic.to_string(),
                key: key.to_string(),
                headers,
                payload,
            }
        }
    }
}

fn header(name: &str, value: &str) -> (String, Vec<u8>) {
    (name.to_string(), value.as_bytes().to_vec())
}

/// Reads a consumed message back as a CloudEvent (either mode). `None` when the message is
/// not a CloudEvent.
pub fn from_message(headers: &[(String, Vec<u8>)], payload: &[u8]) -> Option<CloudEvent> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    };
    let content_type = get("content-type");
    if content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with(STRUCTURED))
    {
        return from_json(serde_json::from_slice(payload).ok()?).ok();
    }
    let mut attributes: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("ce_")?;
            Some((name.to_string(), String::from_utf8(v.clone()).ok()?))
        })
        .collect();
    let mut take = |name: &str| attributes.remove(name);
    Some(CloudEvent {
        specversion: take("specversion")?,
        id: take("id")?,
        source: take("source")?,
        event_type: take("type")?,
        time: take("time"),
        dataschema: take("dataschema"),
        subject: take("subject"),
        datacontenttype: content_type,
        data: (!payload.is_empty()).then(|| Data::Bytes(payload.to_vec())),
        extensions: attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample;

    #[test]
    fn binary_mode_headers_and_value() {
        let mut event = sample();
        event
            .extensions
            .insert("traceparent".into(), "00-abc".into());
        let msg = to_message(&event, "topic-a", "tenant-1", KafkaMode::Binary);
        assert_eq!(msg.topic, "topic-a");
        assert_eq!(msg.key, "tenant-1");
        let names: Vec<&str> = msg.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_time",
                "ce_subject",
                "ce_traceparent",
                "content-type"
            ]
        );
        let value: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(value["tenantId"], "data-tenant");
        let back = from_message(&msg.headers, &msg.payload).unwrap();
        assert_eq!(back.id, event.id);
        assert_eq!(back.extensions["traceparent"], "00-abc");
        assert_eq!(
            crate::event::http::to_json(&back)["data"]["status"],
            "SUCCESS"
        );
    }

    #[test]
    fn a_structured_event_survives_the_round_trip_through_kafka() {
        let event = sample();
        let msg = to_message(&event, "t", "k", KafkaMode::Structured);
        assert_eq!(
            msg.headers,
            vec![("content-type".into(), STRUCTURED.as_bytes().to_vec())]
        );
        assert_eq!(from_message(&msg.headers, &msg.payload).unwrap(), event);
    }

    #[test]
    fn text_data_is_sent_as_is() {
        let mut event = sample();
        event.datacontenttype = Some("text/plain".into());
        event.data = Some(Data::Json(serde_json::Value::String("hello".into())));
        let msg = to_message(&event, "t", "k", KafkaMode::Binary);
        assert_eq!(msg.payload, b"hello");
    }
}
