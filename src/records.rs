//! How a validated CloudEvent becomes a record to store: its topic from the catalogue, its
//! tenant key, its Kafka message (binding mode and trace context) and the size limit that
//! message must keep. One step for the HTTP ingest and the embedded [`crate::embedded::Outbox`],
//! so both refuse the same events with the same field named.

use crate::catalog::Catalog;
use crate::config::IngestConfig;
use crate::event::kafka::{to_message, KafkaMode};
use crate::event::trace::TraceContext;
use crate::event::{CloudEvent, ErrorKind, EventError};
use crate::store::Record;

/// What turning events into records depends on.
#[derive(Debug, Clone, Copy)]
pub struct Recorder<'a> {
    pub catalog: &'a Catalog,
    /// With `max_event_bytes` the effective limit ([`crate::config::Config::event_limit`]).
    pub ingest: &'a IngestConfig,
    /// What sets that limit, for the error.
    pub event_limit_source: &'a str,
    pub mode: KafkaMode,
}

impl Recorder<'_> {
    /// The record of `event`, appended at `appended_ms`. `trace` (the request's own trace
    /// context) goes before the event's distributed-tracing extension. `at` names a field of
    /// this event in an error (`[3].type` in a batch).
    pub fn record(
        &self,
        event: &CloudEvent,
        trace: Option<&TraceContext>,
        appended_ms: u64,
        at: impl Fn(&str) -> String,
    ) -> Result<Record, EventError> {
        let topic = match self.catalog.lookup(&event.event_type) {
            Some(entry) => entry.topic.clone(),
            None if self.ingest.allow_unknown_types => event.event_type.clone(),
            None => {
                return Err(EventError::new(
                    ErrorKind::UnknownType,
                    at("type"),
                    format!(
                        "{:?} is not in the topic catalogue (see `edge-outbox topics`)",
                        event.event_type
                    ),
                ))
            }
        };
        let key = (event.tenant_key(&self.ingest.key_order)).map_err(|e| EventError {
            field: at(&e.field),
            ..e
        })?;
        let mut message = to_message(event, &topic, &key, self.mode);
        let trace = (trace.cloned()).or_else(|| TraceContext::from_extensions(&event.extensions));
        if let Some(trace) = trace {
            trace.add_to(&mut message);
        }
        if message.size() > self.ingest.max_event_bytes {
            return Err(EventError::new(
                ErrorKind::TooLarge,
                at("data"),
                format!(
                    "the event takes {} bytes as a Kafka message, more than the {} allowed ({})",
                    message.size(),
                    self.ingest.max_event_bytes,
                    self.event_limit_source
                ),
            ));
        }
        Ok(Record {
            appended_ms,
            event_id: event.id.clone(),
            event_source: event.source.clone(),
            event_type: event.event_type.clone(),
            message,
        })
    }
}
