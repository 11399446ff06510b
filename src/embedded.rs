//! The outbox inside a Rust service, instead of beside it: open a store, append CloudEvents (the
//! future resolves once they are durable), let the relay deliver them to Kafka in the
//! background, and shut down (delivering what is stored first, within a deadline). The same
//! store, relay and validation as the sidecar, without HTTP.
//!
//! Choose it when the service is written in Rust and one process per pod is wanted: an append
//! costs a group commit and no HTTP round trip. Choose the sidecar for services in other
//! languages, or to keep the outbox's memory and restarts apart from the service's.
//! `examples/embedded.rs` runs this against the embedded broker (`cargo run --example embedded`).
//!
//! ```
//! use edge_outbox::embedded::{Event, Outbox};
//! use edge_outbox::Config;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! # let topics = edge_outbox::catalog::Catalog::builtin().topics();
//! # let broker = edge_outbox::kafka_client::DevBroker::start(1, &topics, 3)?;
//! # let dir = tempfile::tempdir()?;
//! let mut config = Config::default();
//! config.data_dir = dir.path().join("outbox"); // a volume that outlives the pod, in production
//! config.kafka.brokers = broker.bootstrap_servers(); // "b-1.msk:9098,b-2.msk:9098"
//! let outbox = Outbox::open(config).await?;
//!
//! let event = Event::new("evt-1", "my-service", "eventzr.integration-hub.sync.completed.v1")
//!     .json(serde_json::json!({"tenantId": "tenant-1", "syncId": "s-1"}));
//! let appended = outbox.append(event).await?; // durable once this resolves
//! assert_eq!(appended.seq, 1);
//!
//! // Delivered within relay.flush_interval; shutdown delivers what is left first.
//! let left = outbox.shutdown(Duration::from_secs(25)).await?;
//! assert_eq!(left.events, 0);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use crate::catalog::Catalog;
use crate::config::{Config, IngestConfig};
use crate::event::kafka::KafkaMode;
use crate::event::{CloudEvent, Data, EventError};
use crate::records::Recorder;
use crate::relay::{Relay, RelayExit, StatusHandle};
use crate::shutdown::{self, ShutdownSender};
use crate::sidecar::Leftover;
use crate::store::{Store, StoreError};
use anyhow::Context;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A CloudEvent to append: [`Event::new`] with the required attributes, then the optional ones.
///
/// ```
/// use edge_outbox::embedded::Event;
/// let event = Event::new("evt-1", "my-service", "eventzr.integration-hub.sync.completed.v1")
///     .subject("tenant-1")
///     .time("2026-02-24T12:00:00Z")
///     .extension("partitionkey", "tenant-1")
///     .json(serde_json::json!({"syncId": "s-1"}));
/// assert_eq!(event.id(), "evt-1");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event(CloudEvent);

impl Event {
    /// An event with its `id`, `source` and `type` (CloudEvents 1.0), no data yet.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
    ) -> Event {
        Event(CloudEvent {
            specversion: crate::event::SPEC_VERSION.into(),
            id: id.into(),
            source: source.into(),
            event_type: event_type.into(),
            time: None,
            datacontenttype: None,
            dataschema: None,
            subject: None,
            extensions: BTreeMap::new(),
            data: None,
        })
    }

    /// JSON data (`datacontenttype` `application/json`).
    pub fn json(mut self, data: serde_json::Value) -> Event {
        self.0.datacontenttype = Some("application/json".into());
        self.0.data = Some(Data::Json(data));
        self
    }

    /// Data of another content type, kept byte for byte.
    pub fn bytes(mut self, content_type: impl Into<String>, data: Vec<u8>) -> Event {
        self.0.datacontenttype = Some(content_type.into());
        self.0.data = Some(Data::Bytes(data));
        self
    }

    /// The `subject` attribute (a tenant key when neither `partitionkey` nor `data.tenantId` is).
    pub fn subject(mut self, subject: impl Into<String>) -> Event {
        self.0.subject = Some(subject.into());
        self
    }

    /// The `time` attribute, RFC 3339.
    pub fn time(mut self, time: impl Into<String>) -> Event {
        self.0.time = Some(time.into());
        self
    }

    /// An extension attribute (lower-case letters and digits), such as `partitionkey` or
    /// `traceparent`.
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.0.extensions.insert(name.into(), value.into());
        self
    }

    /// The `id` attribute.
    pub fn id(&self) -> &str {
        &self.0.id
    }
}

/// An event made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number in the store (the first one's, for a repeat).
    pub seq: u64,
    /// The same `source` + `id` was already stored: this is a repeat, stored once.
    pub duplicate: bool,
}

/// Why events were not appended; nothing of the call was stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// An event is invalid, of a type outside the catalogue, without a tenant key, or too
    /// large; `field` names the attribute (`[i].field` in a batch).
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The store refused (backlog or disk limit, a tenant over its share) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the outbox holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Events not yet delivered.
    pub events: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Events the broker refused for good, parked.
    pub dead_letters: u64,
    /// Events delivered since the outbox was opened.
    pub delivered: u64,
}

/// An open outbox with its relay running.
pub struct Outbox {
    store: Store,
    catalog: Catalog,
    ingest: IngestConfig,
    event_limit_source: String,
    mode: KafkaMode,
    shutdown: ShutdownSender,
    relay: JoinHandle<RelayExit>,
    status: StatusHandle,
}

impl Outbox {
    /// Opens (or creates) the store in `config.data_dir` and starts the relay to
    /// `config.kafka.brokers`, with every setting as the sidecar reads it (see
    /// [`crate::config`]); `listen` and the HTTP settings are not used.
    pub async fn open(config: Config) -> anyhow::Result<Outbox> {
        config.validate(true)?;
        let store_config = config.store_config();
        let store = tokio::task::spawn_blocking(move || Store::open(store_config))
            .await?
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
        let auth = std::sync::Arc::new(crate::msk_iam::AuthStatus::default());
        let tokens = crate::kafka_client::token_source(&config.kafka.security, auth).await;
        let relay = Relay::for_config(
            store.clone(),
            &config,
            tokens,
            crate::metrics::Metrics::new(),
        )
        .context("creating the Kafka producer")?;
        let status = relay.status();
        let (shutdown, watcher) = shutdown::channel();
        let (event_limit, event_limit_source) = config.event_limit();
        let mut ingest = config.ingest.clone();
        ingest.max_event_bytes = event_limit;
        Ok(Outbox {
            store,
            catalog: Catalog::with_extra(&config.ingest.extra_types),
            ingest,
            event_limit_source,
            mode: config.relay.mode,
            shutdown,
            relay: tokio::spawn(relay.run(watcher)),
            status,
        })
    }

    /// Appends one event; resolves once it is durable (fdatasync), as a `202` of the sidecar.
    pub async fn append(&self, event: Event) -> Result<Appended, AppendError> {
        let mut appended = self.append_all(vec![event]).await?;
        Ok(appended.remove(0))
    }

    /// Appends events in one durable step, all or none.
    pub async fn append_all(&self, events: Vec<Event>) -> Result<Vec<Appended>, AppendError> {
        let recorder = Recorder {
            catalog: &self.catalog,
            ingest: &self.ingest,
            event_limit_source: &self.event_limit_source,
            mode: self.mode,
        };
        let batch = events.len() > 1;
        let appended_ms = crate::clock::now_ms();
        let mut records = Vec::with_capacity(events.len());
        for (i, Event(event)) in events.iter().enumerate() {
            let at = |field: &str| match batch {
                true => format!("[{i}].{field}"),
                false => field.to_string(),
            };
            event.validate().map_err(|e| EventError {
                field: at(&e.field),
                ..e
            })?;
            records.push(recorder.record(event, None, appended_ms, at)?);
        }
        let answers = self.store.append(records).await?;
        Ok(answers
            .into_iter()
            .map(|a| Appended {
                seq: a.seq,
                duplicate: a.duplicate,
            })
            .collect())
    }

    /// What the outbox holds and has delivered.
    pub fn backlog(&self) -> Backlog {
        let stats = self.store.stats();
        Backlog {
            events: stats.backlog_events,
            bytes: stats.backlog_bytes,
            dead_letters: stats.dead_letters,
            delivered: self.status.lock().expect("lock").delivered_events,
        }
    }

    /// Delivers what is stored, for at most `drain_timeout`, then stops the relay and closes
    /// the store. What was not delivered stays stored for the next [`Outbox::open`]; the
    /// answer says how much.
    pub async fn shutdown(mut self, drain_timeout: Duration) -> anyhow::Result<Leftover> {
        let deadline = tokio::time::Instant::now() + drain_timeout;
        self.shutdown.drain(deadline);
        // No append can come any more: `self` is taken.
        self.shutdown.intake_closed();
        tokio::select! {
            _ = &mut self.relay => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
        self.shutdown.stop();
        if !self.relay.is_finished() {
            let _ = (&mut self.relay).await;
        }
        let store = self.store.clone();
        let left = tokio::task::spawn_blocking(move || Leftover::of(&store)).await?;
        self.store.close().await;
        Ok(left)
    }
}
