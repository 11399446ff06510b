//! What the relay reports about itself: [`RelayStatus`] for `/v1/status`, the CLI and
//! readiness, and what a confirmed batch adds to it and to the metrics.

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::StoredRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay reports about itself (for `/v1/status` and logs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayStatus {
    /// When the last batch was confirmed by the broker (ms since the epoch).
    pub last_delivery_ms: Option<u64>,
    pub delivered_events: u64,
    pub delivered_bytes: u64,
    pub dead_lettered: u64,
    pub batches: u64,
    /// The last error of each class, with when it happened.
    pub last_errors: BTreeMap<String, LastError>,
    /// Topics paused by a configuration error, with that error.
    pub paused_topics: BTreeMap<String, String>,
    /// (topic, key) pairs holding back newer events until a failed one is delivered.
    pub held_keys: usize,
    /// False until a batch goes through after the start or after a round that delivered
    /// nothing: until then batches are cut to a sixteenth (probes), so that a broker that
    /// is away holds one small batch in librdkafka's memory rather than a full one.
    pub broker_confirmed: bool,
    /// Events handed to librdkafka whose delivery reports are not all in: at most two
    /// batches, and after a stall (`relay.stall_timeout`) at most two probes.
    pub in_flight_events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub message: String,
    pub at_ms: u64,
}

/// Shared, readable view of the relay.
pub type StatusHandle = Arc<Mutex<RelayStatus>>;

/// Records the last error of `class` (retriable, permanent, configuration, fatal, store).
pub(super) fn note_error(status: &StatusHandle, class: &str, message: String) {
    status.lock().expect("lock").last_errors.insert(
        class.to_string(),
        LastError {
            message,
            at_ms: now_ms(),
        },
    );
}

/// A delivered batch as it is reported once its confirmation is durable.
pub(super) struct DeliveredBatch {
    pub count: u64,
    /// Events and bytes delivered per topic.
    pub per_topic: BTreeMap<String, (u64, u64)>,
    /// How long the oldest of them waited in the outbox.
    pub lag_ms: u64,
    /// From produce to the last delivery report.
    pub took: Duration,
}

impl DeliveredBatch {
    pub fn of(delivered: &[&StoredRecord], took: Duration) -> DeliveredBatch {
        let mut per_topic: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut oldest_ms = u64::MAX;
        for record in delivered {
            let topic = per_topic.entry(record.topic()).or_default();
            topic.0 += 1;
            topic.1 += record.size;
            oldest_ms = oldest_ms.min(record.appended_ms);
        }
        DeliveredBatch {
            count: delivered.len() as u64,
            per_topic: per_topic
                .into_iter()
                .map(|(topic, counts)| (topic.to_string(), counts))
                .collect(),
            lag_ms: now_ms().saturating_sub(oldest_ms),
            took,
        }
    }

    /// Logs the batch and adds it to the metrics and the status; topics no longer paused
    /// (`still_paused` says which are) leave the status's list.
    pub fn report(
        &self,
        status: &StatusHandle,
        metrics: &Metrics,
        still_paused: impl Fn(&str) -> bool,
    ) {
        let bytes: u64 = self.per_topic.values().map(|(_, b)| b).sum();
        tracing::info!(
            count = self.count,
            bytes,
            duration_ms = self.took.as_millis() as u64,
            lag_ms = self.lag_ms,
            "delivered batch"
        );
        for (topic, (events, bytes)) in &self.per_topic {
            metrics.published(topic, *events, *bytes);
        }
        metrics.batch_events.observe(self.count as f64);
        metrics
            .batch_duration_seconds
            .observe(self.took.as_secs_f64());
        let mut status = status.lock().expect("lock");
        status.last_delivery_ms = Some(now_ms());
        status.delivered_events += self.count;
        status.delivered_bytes += bytes;
        status.batches += 1;
        status.paused_topics.retain(|t, _| still_paused(t));
    }
}
