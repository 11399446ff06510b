//! The `eventzr.integration-hub.outbox.published.v1` summaries the relay appends after each
//! delivered batch: one summary per batch (not per tenant: with many tenants of one event each
//! that nearly doubled the traffic), listing each tenant's count, first and last event and lag.
//! A batch with more than [`TENANTS_PER_SUMMARY`] tenants gets one summary per that many.
//! Summaries are keyed by the sidecar's `summary_source`, so they keep their order per sidecar.

use crate::catalog::OUTBOX_PUBLISHED_TYPE;
use crate::clock::now_ms;
use crate::event::kafka::{to_message, KafkaMode};
use crate::event::{CloudEvent, Data};
use crate::store::{Record, RecordView};
use serde_json::json;
use std::collections::BTreeMap;

/// Tenants listed in one summary: about 150 bytes each, far below a message's limit.
pub const TENANTS_PER_SUMMARY: usize = 500;

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
    let tenants: Vec<serde_json::Value> = per_tenant
        .into_iter()
        .map(|(tenant, batch)| {
            let (first_seq, first_id) = batch.first.unwrap_or_default();
            let (last_seq, last_id) = batch.last.unwrap_or_default();
            json!({
                "tenantId": tenant,
                "count": batch.count,
                "firstEventId": first_id,
                "lastEventId": last_id,
                "firstSequence": first_seq,
                "lastSequence": last_seq,
                "lagMs": now.saturating_sub(batch.oldest_appended_ms),
                "topics": batch.topics,
            })
        })
        .collect();
    let parts = tenants.len().div_ceil(TENANTS_PER_SUMMARY);
    tenants
        .chunks(TENANTS_PER_SUMMARY)
        .enumerate()
        .map(|(part, tenants)| {
            let count: u64 = tenants.iter().filter_map(|t| t["count"].as_u64()).sum();
            let event = CloudEvent {
                specversion: "1.0".into(),
                id: uuid::Uuid::new_v4().to_string(),
                source: source.to_string(),
                event_type: OUTBOX_PUBLISHED_TYPE.into(),
                time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                datacontenttype: Some("application/json".into()),
                dataschema: None,
                subject: Some(source.to_string()),
                extensions: BTreeMap::from([("partitionkey".to_string(), source.to_string())]),
                data: Some(Data::Json(json!({
                    "count": count,
                    "tenantCount": tenants.len(),
                    "part": part + 1,
                    "parts": parts,
                    "tenants": tenants,
                }))),
            };
            Record {
                appended_ms: now,
                event_id: event.id.clone(),
                event_source: event.source.clone(),
                event_type: event.event_type.clone(),
                message: to_message(&event, topic, source, mode),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn record(id: &str, tenant: &str, event_type: &str) -> Record {
        Record {
            appended_ms: now_ms() - 1000,
            event_id: id.into(),
            event_source: "s".into(),
            event_type: event_type.into(),
            message: Message {
                topic: event_type.into(),
                key: tenant.into(),
                headers: vec![],
                payload: vec![],
            },
        }
    }

    fn summarise(records: &[Record]) -> Vec<Record> {
        let delivered: Vec<(u64, RecordView)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.view()))
            .collect();
        summaries(
            &delivered,
            OUTBOX_PUBLISHED_TYPE,
            "edge-outbox",
            KafkaMode::Binary,
        )
    }

    #[test]
    fn one_summary_per_batch_counts_each_tenant_and_skips_summaries() {
        let t = "eventzr.integration-hub.sync.started.v1";
        let records = [
            record("a1", "A", t),
            record("b1", "B", t),
            record("a2", "A", t),
            record("s", "A", OUTBOX_PUBLISHED_TYPE),
        ];
        let out = summarise(&records);
        assert_eq!(out.len(), 1);
        let summary: serde_json::Value = serde_json::from_slice(&out[0].message.payload).unwrap();
        assert_eq!(summary["count"], 3);
        assert_eq!(summary["tenantCount"], 2);
        let a = &summary["tenants"][0];
        assert_eq!(a["tenantId"], "A");
        assert_eq!(a["count"], 2);
        assert_eq!(a["firstEventId"], "a1");
        assert_eq!(a["lastEventId"], "a2");
        assert_eq!(a["lastSequence"], 3);
        assert!(a["lagMs"].as_u64().unwrap() >= 1000);
        assert_eq!(summary["tenants"][1]["tenantId"], "B");
        assert_eq!(out[0].message.key, "edge-outbox");
        assert_eq!(out[0].event_type, OUTBOX_PUBLISHED_TYPE);
        assert!(summarise(&records[3..]).is_empty());
    }

    #[test]
    fn a_batch_of_many_tenants_is_summarised_in_parts_that_fit_a_message() {
        let t = "eventzr.integration-hub.sync.started.v1";
        let records: Vec<Record> = (0..1_201)
            .map(|n| record(&format!("e{n}"), &format!("tenant-{n:05}"), t))
            .collect();
        let out = summarise(&records);
        assert_eq!(out.len(), 3);
        let counts: Vec<u64> = out
            .iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.message.payload).unwrap())
            .map(|s| s["tenantCount"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, vec![500, 500, 201]);
        assert!(out.iter().all(|r| r.message.size() < 200_000));
    }
}
