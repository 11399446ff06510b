//! The `eventzr.integration-hub.outbox.published.v1` summaries the relay appends after each
//! delivered batch: one per tenant, saying how many of its events went out and how late.

use crate::catalog::OUTBOX_PUBLISHED_TYPE;
use crate::event::kafka::{to_message, KafkaMode};
use crate::event::{CloudEvent, Data};
use crate::store::{now_ms, Record, RecordView};
use serde_json::json;
use std::collections::BTreeMap;

/// What was delivered for one tenant in one batch.
#[derive(Debug, Default)]
struct TenantBatch {
    count: u64,
    first: Option<(u64, String)>,
    last: Option<(u64, String)>,
    oldest_appended_ms: u64,
    topics: Vec<String>,
}

/// Builds the summary records for the delivered `(seq, record)` pairs. Summaries themselves
/// are not summarised.
pub fn summaries(
    delivered: &[(u64, RecordView)],
    topic: &str,
    source: &str,
    mode: KafkaMode,
) -> Vec<Record> {
    let mut per_tenant: BTreeMap<&str, TenantBatch> = BTreeMap::new();
    for (seq, record) in delivered {
        if record.event_type == OUTBOX_PUBLISHED_TYPE {
            continue;
        }
        let entry = per_tenant.entry(record.message.key).or_insert(TenantBatch {
            oldest_appended_ms: u64::MAX,
            ..TenantBatch::default()
        });
        entry.count += 1;
        entry
            .first
            .get_or_insert((*seq, record.event_id.to_string()));
        entry.last = Some((*seq, record.event_id.to_string()));
        entry.oldest_appended_ms = entry.oldest_appended_ms.min(record.appended_ms);
        if !entry.topics.iter().any(|t| t == record.message.topic) {
            entry.topics.push(record.message.topic.to_string());
        }
    }
    let now = now_ms();
    per_tenant
        .into_iter()
        .map(|(tenant, batch)| {
            let (first_seq, first_id) = batch.first.unwrap_or_default();
            let (last_seq, last_id) = batch.last.unwrap_or_default();
            let event = CloudEvent {
                specversion: "1.0".into(),
                id: uuid::Uuid::new_v4().to_string(),
                source: source.to_string(),
                event_type: OUTBOX_PUBLISHED_TYPE.into(),
                time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                datacontenttype: Some("application/json".into()),
                dataschema: None,
                subject: Some(tenant.to_string()),
                extensions: BTreeMap::from([("partitionkey".to_string(), tenant.to_string())]),
                data: Some(Data::Json(json!({
                    "tenantId": tenant,
                    "count": batch.count,
                    "firstEventId": first_id,
                    "lastEventId": last_id,
                    "firstSequence": first_seq,
                    "lastSequence": last_seq,
                    "lagMs": now.saturating_sub(batch.oldest_appended_ms),
                    "topics": batch.topics,
                }))),
            };
            Record {
                appended_ms: now,
                event_id: event.id.clone(),
                event_source: event.source.clone(),
                event_type: event.event_type.clone(),
                message: to_message(&event, topic, tenant, mode),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::kafka::KafkaMessage;

    fn record(id: &str, tenant: &str, event_type: &str) -> Record {
        Record {
            appended_ms: now_ms() - 1000,
            event_id: id.into(),
            event_source: "s".into(),
            event_type: event_type.into(),
            message: KafkaMessage {
                topic: event_type.into(),
                key: tenant.into(),
                headers: vec![],
                payload: vec![],
            },
        }
    }

    #[test]
    fn one_summary_per_tenant_and_none_for_summaries() {
        let t = "eventzr.integration-hub.sync.started.v1";
        let records = [
            record("a1", "A", t),
            record("b1", "B", t),
            record("a2", "A", t),
            record("s", "A", OUTBOX_PUBLISHED_TYPE),
        ];
        let delivered: Vec<(u64, RecordView)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.view()))
            .collect();
        let out = summaries(
            &delivered,
            OUTBOX_PUBLISHED_TYPE,
            "edge-outbox",
            KafkaMode::Binary,
        );
        assert_eq!(out.len(), 2);
        let a: serde_json::Value = serde_json::from_slice(&out[0].message.payload).unwrap();
        assert_eq!(a["tenantId"], "A");
        assert_eq!(a["count"], 2);
        assert_eq!(a["firstEventId"], "a1");
        assert_eq!(a["lastEventId"], "a2");
        assert_eq!(a["lastSequence"], 3);
        assert!(a["lagMs"].as_u64().unwrap() >= 1000);
        assert_eq!(out[0].message.key, "A");
        assert_eq!(out[0].event_type, OUTBOX_PUBLISHED_TYPE);
        assert!(summaries(
            &delivered[3..],
            OUTBOX_PUBLISHED_TYPE,
            "x",
            KafkaMode::Binary
        )
        .is_empty());
    }
}
