//! The relay: the background loop that moves the backlog from the store to Kafka. It decides
//! when to send (every `flush_interval`, or as soon as a full batch waits), reads batches in
//! sequence order, passes every message through the rate limiter, produces them, waits for
//! every delivery report and only then removes the delivered records (one durable step).
//! While the backlog streams out whole, the next batch is read and produced behind the one in
//! flight, and a batch delivered whole is confirmed meanwhile; at most two batches are ever
//! delivered and unconfirmed, so a kill re-sends no more than that. Until the broker has taken
//! a batch (after the start, or after a round that delivered nothing) batches are small probes.
//! Failures are classified: retriable ones keep the event and back off, permanent ones go to
//! the dead-letter table, configuration errors pause the topic, fatal ones recreate the
//! producer. A (topic, key) pair with a failed message sends nothing newer until the failed
//! ones are delivered, so a tenant's order holds.

mod limiter;
pub mod summary;

pub use limiter::Limiter;

use crate::broker_health::BrokerHealth;
use crate::catalog::OUTBOX_PUBLISHED_TYPE;
use crate::clock::now_ms;
use crate::config::{KafkaConfig, RelayConfig};
use crate::kafka::{
    classify, create_producer_with, owned_headers, ErrorClass, KafkaContext, Producer,
};
use crate::msk_iam::TokenSource;
use crate::shutdown::{Phase, Shutdown};
use crate::store::{Queued, ReadBatch, Record, RecordView, Store, StoreError, StoredRecord};
use futures::future::{self, Either};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub message: String,
    pub at_ms: u64,
}

/// Shared, readable view of the relay.
pub type StatusHandle = Arc<Mutex<RelayStatus>>;

/// The outcome of producing one message.
enum Outcome {
    Delivered,
    Failed(KafkaError),
}

/// A delivered batch being confirmed in the store, and what to report once it is.
struct Confirmation {
    /// Answered once the committer made the confirmation durable.
    durable: Queued<()>,
    count: u64,
    /// Events and bytes delivered per topic.
    per_topic: BTreeMap<String, (u64, u64)>,
    lag_ms: u64,
    took: Duration,
    summaries: Vec<Record>,
}

/// The delivery report of one message: librdkafka's, or the error that kept it out of
/// librdkafka's queue.
type Report = Either<DeliveryFuture, future::Ready<KafkaError>>;

/// A batch handed to librdkafka whose delivery reports are not all in.
struct InFlight {
    records: Vec<StoredRecord>,
    /// One per record, in the same order.
    reports: Vec<Report>,
    started: std::time::Instant,
}

/// What settling one batch, or two together, found.
#[derive(Debug, Default)]
struct Round {
    records: usize,
    delivered: usize,
    /// Failed messages kept for another try (their (topic, key) pairs are held).
    retriable: usize,
    /// The producer's state is in doubt: it is recreated.
    fatal: bool,
}

impl Round {
    /// Everything delivered: nothing to retry, nothing to react to.
    fn whole(&self) -> bool {
        self.delivered == self.records
    }

    fn add(&mut self, other: Round) {
        self.records += other.records;
        self.delivered += other.delivered;
        self.retriable += other.retriable;
        self.fatal |= other.fatal;
    }
}

/// What one delivery report says.
async fn outcome(report: Report) -> Outcome {
    match report {
        Either::Left(delivery) => match delivery.await {
            Ok(Ok(_)) => Outcome::Delivered,
            Ok(Err((error, _))) => Outcome::Failed(error),
            Err(_) => Outcome::Failed(KafkaError::Canceled),
        },
        Either::Right(ready) => Outcome::Failed(ready.await),
    }
}

/// A batch being read on a blocking thread, with each record's headers made ready for
/// librdkafka there (from the one decode the read does).
type ReadTask = tokio::task::JoinHandle<Result<ReadBatch<OwnedHeaders>, StoreError>>;

/// How [`Relay::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayExit {
    /// Draining with intake closed, the store became empty.
    Drained,
    /// Told to stop; what was not delivered stays stored.
    Stopped,
}

/// Whether the relay should go on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub struct Relay {
    store: Store,
    producer: Producer,
    kafka: KafkaConfig,
    /// Signs MSK IAM tokens for every producer this relay creates.
    tokens: Option<Arc<TokenSource>>,
    config: RelayConfig,
    limiter: Limiter,
    status: StatusHandle,
    /// Paused topics and when to try them again.
    paused: HashMap<String, Instant>,
    /// (topic, key) → sequence numbers that failed retriably and must go first.
    held: HashMap<(String, String), BTreeSet<u64>>,
    backoff: Duration,
    /// Backlog left after the last drain (paused or held): not a reason to send early.
    stuck_events: u64,
    /// Topics the cluster is known to have.
    known_topics: BTreeSet<String>,
    /// Batches in a row that delivered nothing because of retriable errors.
    failed_rounds: u32,
    /// See [`RelayStatus::broker_confirmed`].
    broker_confirmed: bool,
    /// The sequence after the last batch produced, while every stored record before it is
    /// delivered, being confirmed or in flight, and nothing is paused or held: the next batch
    /// may then be read from there and produced at once. `None` once anything failed.
    chain: Option<u64>,
    /// The confirmation of the last batch settled, while the next ones are sent.
    pending: Option<Confirmation>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Skip the rate limiter while draining (`shutdown.drain_unlimited`).
    unlimited_drain: bool,
    /// What the producers' client errors say about the cluster.
    health: Arc<BrokerHealth>,
}

/// While the broker has not taken a batch, batches are this fraction of the configured size.
const PROBE_FRACTION: usize = 16;

/// While the cluster is failing and nothing is sent, it is asked for metadata this often, so
/// that its recovery shows in status and readiness without a batch to deliver.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// After this many fruitless rounds the producer is recreated: a broker that lost its
/// idempotence state (a restart without it) can otherwise refuse the old producer id forever.
const RECREATE_AFTER_ROUNDS: u32 = 3;

impl Relay {
    pub fn new(
        store: Store,
        kafka: KafkaConfig,
        tokens: Option<Arc<TokenSource>>,
        config: RelayConfig,
        largest_message: u64,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Relay, KafkaError> {
        let health = Arc::new(BrokerHealth::default());
        let producer = create_producer_with(
            &kafka,
            KafkaContext::with_health(tokens.clone(), health.clone()),
        )?;
        let limiter = Limiter::new(
            config.max_events_per_second,
            config.max_bytes_per_second,
            largest_message,
        );
        Ok(Relay {
            store,
            producer,
            kafka,
            tokens,
            backoff: config.retry_backoff_min,
            config,
            limiter,
            status: StatusHandle::default(),
            paused: HashMap::new(),
            held: HashMap::new(),
            stuck_events: 0,
            known_topics: BTreeSet::new(),
            failed_rounds: 0,
            broker_confirmed: false,
            chain: None,
            pending: None,
            metrics,
            unlimited_drain: false,
            health,
        })
    }

    /// The relay a sidecar (or the adopter) runs for `config`: its Kafka and relay settings,
    /// the largest message ingest lets through ([`crate::config::Config::event_limit`]) and
    /// `shutdown.drain_unlimited`.
    pub fn for_config(
        store: Store,
        config: &crate::config::Config,
        tokens: Option<Arc<TokenSource>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Relay, KafkaError> {
        Ok(Relay::new(
            store,
            config.kafka.clone(),
            tokens,
            config.relay.clone(),
            config.event_limit().0 as u64,
            metrics,
        )?
        .unlimited_drain(config.shutdown.drain_unlimited))
    }

    /// Whether the cluster is reachable and takes our credentials, shared with the API.
    pub fn broker_health(&self) -> Arc<BrokerHealth> {
        self.health.clone()
    }

    /// Lets the drain at shutdown go without the rate limits.
    pub fn unlimited_drain(mut self, unlimited: bool) -> Relay {
        self.unlimited_drain = unlimited;
        self
    }

    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Sends every `flush_interval` (or as soon as a full batch waits) until the shutdown
    /// phase moves on. While draining it sends at once, whenever anything is stored, and ends
    /// once intake is closed and the store is empty. When stopping, in-flight deliveries are
    /// abandoned: their records stay in the store and are sent again after the restart.
    pub async fn run(mut self, mut shutdown: Shutdown) -> RelayExit {
        let mut next_flush = Instant::now() + self.config.flush_interval;
        loop {
            loop {
                match shutdown.phase() {
                    Phase::Stopping => {
                        self.finish().await;
                        return RelayExit::Stopped;
                    }
                    Phase::Draining { intake_closed, .. } => {
                        let backlog = self.store.stats().backlog_events;
                        if backlog == 0 && intake_closed && self.pending.is_none() {
                            self.finish().await;
                            return RelayExit::Drained;
                        }
                        if backlog > self.stuck_events {
                            break;
                        }
                        // Only paused topics are left: look again when a pause ends (soon when
                        // nothing is paused: then nothing is known to hold them back).
                        let retry = self
                            .paused
                            .values()
                            .min()
                            .copied()
                            .unwrap_or_else(|| Instant::now() + self.config.retry_backoff_min);
                        tokio::select! {
                            _ = tokio::time::sleep_until(retry) => {
                                self.stuck_events = 0;
                                break;
                            }
                            _ = self.store.appended() => continue,
                            _ = shutdown.changed() => continue,
                        }
                    }
                    Phase::Running => {
                        if self.full_batch_waiting() {
                            break;
                        }
                        let failing = self.health.failure().is_some();
                        tokio::select! {
                            _ = tokio::time::sleep_until(next_flush) => break,
                            _ = self.store.appended() => continue,
                            _ = shutdown.changed() => continue,
                            _ = tokio::time::sleep(PROBE_EVERY), if failing => {
                                self.probe_cluster().await;
                                continue;
                            }
                        }
                    }
                }
            }
            next_flush = Instant::now() + self.config.flush_interval;
            if self.drain(&mut shutdown).await == Flow::Stop {
                self.finish().await;
                return RelayExit::Stopped;
            }
        }
    }

    async fn finish(mut self) {
        // A confirmation under way is finished, so that a clean stop sends nothing twice.
        let _ = self.await_confirmation().await;
        // Give librdkafka a moment to hand over what is already acknowledged; nothing is
        // confirmed here, so anything unconfirmed is simply sent again after the restart.
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.flush(Duration::from_secs(2))
        })
        .await;
    }

    /// Reads the next batch from `from` on a blocking thread, leaving out records of paused
    /// topics and newer records of held (topic, key) pairs.
    fn read_from(&self, from: u64) -> ReadTask {
        let skip_paused: BTreeSet<String> = self.paused.keys().cloned().collect();
        let held = self.held.clone();
        let store = self.store.clone();
        let (mut max_events, mut max_bytes) =
            (self.config.batch_max_events, self.config.batch_max_bytes);
        if !self.broker_confirmed {
            max_events = (max_events / PROBE_FRACTION).max(1);
            max_bytes = (max_bytes / PROBE_FRACTION as u64).max(1);
        }
        tokio::task::spawn_blocking(move || {
            store.read_batch_with(from, max_events, max_bytes, |seq, record| {
                let message = &record.message;
                // Most reads hold nothing back: no key pair to build for every record then.
                let skip = skip_paused.contains(message.topic)
                    || (!held.is_empty()
                        && held
                            .get(&(message.topic.to_string(), message.key.to_string()))
                            .is_some_and(|failed| !failed.contains(&seq)));
                (!skip).then(|| owned_headers(&message.headers))
            })
        })
    }

    fn full_batch_waiting(&self) -> bool {
        let stats = self.store.stats();
        stats.backlog_events.saturating_sub(self.stuck_events)
            >= self.config.batch_max_events as u64
            || (self.stuck_events == 0 && stats.backlog_bytes >= self.config.batch_max_bytes)
    }

    /// Sends batches until nothing sendable is left. While a batch is in flight the next one
    /// is read from the store and produced behind it, so that librdkafka's queue never runs
    /// dry between batches; the two together settle like one batch twice the size. That
    /// happens only on an unbroken chain ([`Relay::chain`]): after a failure, a pause or a
    /// hold, what is in flight settles first and the store is read again from the start.
    /// Before a batch is produced behind another, the confirmation of the one before them is
    /// awaited: at most two batches are ever delivered and unconfirmed (a kill re-sends no
    /// more). While the broker has not taken a batch nothing is read ahead: a batch read
    /// ahead would only sit in memory.
    async fn drain(&mut self, shutdown: &mut Shutdown) -> Flow {
        let mut read_ahead: Option<(u64, ReadTask)> = None;
        let mut in_flight: Option<InFlight> = None;
        loop {
            let now = Instant::now();
            self.paused.retain(|_, until| *until > now);
            let read = match read_ahead.take() {
                Some((from, task)) if self.chain == Some(from) => task.await,
                _ => {
                    self.chain = None;
                    // Reading from the start must not see a batch in flight or being confirmed.
                    if self.settle_all(&mut in_flight, shutdown).await == Flow::Stop {
                        return Flow::Stop;
                    }
                    self.read_from(0).await
                }
            }
            .expect("the read task does not panic");
            let batch = match read {
                Ok(batch) => batch,
                Err(e) => {
                    self.note_error("store", e.to_string());
                    if self.settle_all(&mut in_flight, shutdown).await == Flow::Stop {
                        return Flow::Stop;
                    }
                    return self
                        .pause_for(self.config.retry_backoff_max, shutdown)
                        .await;
                }
            };
            for (seq, error) in batch.corrupt {
                tracing::error!(seq, %error, "quarantining a corrupt record to the dead-letter table");
                if let Err(e) = self
                    .store
                    .park(seq, format!("corrupt record: {error}"))
                    .await
                {
                    self.note_error("store", e.to_string());
                }
            }
            if batch.records.is_empty() {
                if in_flight.is_some() {
                    // Settled by the next turn, which reads from the start again.
                    self.chain = None;
                    continue;
                }
                // What is left once the last batch is confirmed waits for a pause or a hold.
                let flow = self.settle_pending(shutdown).await;
                // Exactly what this read left out: events appended since are not stuck, and
                // counting them (the backlog read after it) made a drain wait out pause_retry.
                self.stuck_events = batch.skipped;
                self.publish_status();
                return flow;
            }
            tokio::select! {
                _ = self.check_topics(&batch.records) => {}
                _ = shutdown.stopping() => return Flow::Stop,
            }
            let (records, headers): (Vec<StoredRecord>, Vec<OwnedHeaders>) = batch
                .records
                .into_iter()
                .zip(batch.prepared)
                .filter(|(r, _)| !self.paused.contains_key(r.topic()))
                .unzip();
            let Some(last) = records.last().map(|r| r.seq) else {
                self.chain = None;
                continue;
            };
            // This batch starts a chain, or continues one, only if nothing older waits.
            let unbroken = self.broker_confirmed
                && batch.skipped == 0
                && self.paused.is_empty()
                && self.held.is_empty();
            if in_flight.is_some() && self.settle_pending(shutdown).await == Flow::Stop {
                return Flow::Stop;
            }
            let Some(produced) = self.produce(records, headers, shutdown).await else {
                return Flow::Stop;
            };
            self.chain = unbroken.then_some(last + 1);
            if self.chain.is_some() {
                read_ahead = Some((last + 1, self.read_from(last + 1)));
            }
            if let Some(batch) = in_flight.replace(produced) {
                if self.complete(batch, &mut in_flight, shutdown).await == Flow::Stop {
                    return Flow::Stop;
                }
            }
        }
    }

    /// Produces one batch, `headers` holding each record's. Topic, key and value are read in
    /// place from the stored bytes; librdkafka copies what it is given. `None` if told to
    /// stop while librdkafka's queue was full.
    async fn produce(
        &mut self,
        records: Vec<StoredRecord>,
        headers: Vec<OwnedHeaders>,
        shutdown: &mut Shutdown,
    ) -> Option<InFlight> {
        let started = std::time::Instant::now();
        let mut reports = Vec::with_capacity(records.len());
        let limited = !(self.unlimited_drain && shutdown.is_shutting_down());
        for (record, headers) in records.iter().zip(headers) {
            if limited {
                let waited = self.limiter.wait(record.size as usize).await;
                self.metrics
                    .limiter_wait_seconds
                    .inc_by(waited.as_secs_f64());
            }
            let mut produce = FutureRecord::to(record.topic())
                .key(record.key())
                .payload(record.payload())
                .headers(headers);
            let report = loop {
                match self.producer.send_result(produce) {
                    Ok(delivery) => break Either::Left(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        produce = back;
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(5)) => continue,
                            _ = shutdown.stopping() => return None,
                        }
                    }
                    Err((error, _)) => break Either::Right(future::ready(error)),
                }
            };
            reports.push(report);
        }
        Some(InFlight {
            records,
            reports,
            started,
        })
    }

    /// Awaits every delivery report of a batch and settles each record. If it did not go
    /// through whole, the batch `behind` it (if one is in flight) settles with it before the
    /// relay reacts to the failures of both at once.
    async fn complete(
        &mut self,
        batch: InFlight,
        behind: &mut Option<InFlight>,
        shutdown: &mut Shutdown,
    ) -> Flow {
        let Some(mut round) = self.deliver(batch, shutdown).await else {
            return Flow::Stop;
        };
        if !round.whole() {
            if let Some(behind) = behind.take() {
                let Some(more) = self.deliver(behind, shutdown).await else {
                    return Flow::Stop;
                };
                round.add(more);
            }
        }
        self.after_round(round, shutdown).await
    }

    /// Settles the batch in flight, if any, and awaits the pending confirmation.
    async fn settle_all(
        &mut self,
        in_flight: &mut Option<InFlight>,
        shutdown: &mut Shutdown,
    ) -> Flow {
        if let Some(batch) = in_flight.take() {
            if self.complete(batch, &mut None, shutdown).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        self.settle_pending(shutdown).await
    }

    /// Awaits the reports of one batch and settles its records; `None` if told to stop.
    async fn deliver(&mut self, batch: InFlight, shutdown: &mut Shutdown) -> Option<Round> {
        // In order, one after the other: reports arrive in about that order anyway, and
        // join_all's task per future cost more CPU than the waiting (4 % of the drain).
        let InFlight {
            records,
            reports,
            started,
        } = batch;
        let reports = async move {
            let mut outcomes = Vec::with_capacity(reports.len());
            for report in reports {
                outcomes.push(outcome(report).await);
            }
            outcomes
        };
        let outcomes = tokio::select! {
            outcomes = reports => outcomes,
            _ = shutdown.stopping() => return None,
        };
        self.settle(records, outcomes, started.elapsed(), shutdown)
            .await
    }

    /// Confirms, parks, pauses or holds each record according to its outcome; `None` if told
    /// to stop.
    async fn settle(
        &mut self,
        records: Vec<StoredRecord>,
        outcomes: Vec<Outcome>,
        took: Duration,
        shutdown: &mut Shutdown,
    ) -> Option<Round> {
        if self.settle_pending(shutdown).await == Flow::Stop {
            return None;
        }
        let mut delivered: Vec<&StoredRecord> = Vec::new();
        let mut round = Round {
            records: records.len(),
            ..Round::default()
        };
        for (record, outcome) in records.iter().zip(outcomes) {
            let seq = record.seq;
            let pair = || (record.topic().to_string(), record.key().to_string());
            let error = match outcome {
                Outcome::Delivered => {
                    delivered.push(record);
                    if !self.held.is_empty() {
                        self.release(&pair(), seq);
                    }
                    continue;
                }
                Outcome::Failed(error) => error,
            };
            let pair = pair();
            match self.count_error(&error) {
                ErrorClass::Permanent => {
                    tracing::warn!(seq, topic = %pair.0, %error, "parking a message the broker refuses");
                    self.note_error("permanent", format!("seq {seq}: {error}"));
                    match self.store.park(seq, error.to_string()).await {
                        Ok(()) => self.status.lock().expect("lock").dead_lettered += 1,
                        Err(e) => self.note_error("store", e.to_string()),
                    }
                    self.release(&pair, seq);
                }
                ErrorClass::Configuration => {
                    self.known_topics.remove(&pair.0);
                    self.pause_topic(&pair.0, error.to_string());
                }
                class => {
                    // After a delivery timeout the idempotent producer's sequence state is
                    // uncertain. librdkafka would bump the epoch (KIP-360), which Apache Kafka
                    // handles but not every Kafka-protocol broker does (tansu 0.6.0 took its
                    // storage down); a fresh producer, with a new producer id, is the reset
                    // every broker supports, at the cost of one InitProducerId request. The
                    // relay goes on only once every report in flight is in, so nothing of
                    // the old producer is still under way.
                    let timed_out = matches!(
                        error,
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
                    );
                    round.fatal |= class == ErrorClass::Fatal || timed_out;
                    round.retriable += 1;
                    self.note_error(
                        if class == ErrorClass::Fatal {
                            "fatal"
                        } else {
                            "retriable"
                        },
                        format!("seq {seq}: {error}"),
                    );
                    self.held.entry(pair).or_default().insert(seq);
                }
            }
        }
        round.delivered = delivered.len();
        if !delivered.is_empty() {
            let confirmation = self.confirm(&delivered, took);
            // A batch delivered whole is confirmed while the next one is sent: every message
            // of it is in Kafka, so nothing of the next can overtake one of it. Otherwise
            // the confirmation is awaited before the failed records are looked at again.
            self.pending = Some(confirmation);
            if !round.whole() && self.settle_pending(shutdown).await == Flow::Stop {
                return None;
            }
        }
        Some(round)
    }

    /// What the outcomes of a round (one batch, or two settled together) say about the
    /// cluster: status and health, and after failures the back-off and, when the producer's
    /// state is in doubt, a new producer.
    async fn after_round(&mut self, round: Round, shutdown: &mut Shutdown) -> Flow {
        if !round.whole() {
            self.chain = None;
        }
        let mut fatal = round.fatal;
        if round.delivered > 0 {
            self.broker_confirmed = true;
            self.health.recovered();
        } else if round.retriable > 0 {
            self.broker_confirmed = false;
        }
        self.publish_status();
        self.metrics
            .broker_reachable
            .set(if round.retriable > 0 { 0 } else { 1 });
        if round.retriable > 0 && round.delivered == 0 {
            self.failed_rounds += 1;
        } else {
            self.failed_rounds = 0;
        }
        if self.failed_rounds >= RECREATE_AFTER_ROUNDS {
            self.failed_rounds = 0;
            fatal = true;
        }
        if fatal {
            tracing::warn!("recreating the Kafka producer (fatal error, delivery timeout or repeated failures)");
            let context = KafkaContext::with_health(self.tokens.clone(), self.health.clone());
            match create_producer_with(&self.kafka, context) {
                Ok(producer) => self.producer = producer,
                Err(e) => self.note_error("fatal", format!("recreating the producer: {e}")),
            }
        }
        if round.retriable > 0 {
            tracing::warn!(
                retriable = round.retriable,
                backoff_ms = self.backoff.as_millis() as u64,
                "retrying failed messages after a pause"
            );
            let wait = self.backoff;
            self.backoff = (self.backoff * 2).min(self.config.retry_backoff_max);
            return self.pause_for(wait, shutdown).await;
        }
        self.backoff = self.config.retry_backoff_min;
        Flow::Continue
    }

    /// Starts the durable confirmation of delivered records; what is reported about them
    /// (log line, metrics, status, summaries) waits until it is done.
    fn confirm(&self, delivered: &[&StoredRecord], took: Duration) -> Confirmation {
        let seqs: Vec<u64> = delivered.iter().map(|record| record.seq).collect();
        let mut per_topic: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut oldest_ms = u64::MAX;
        for record in delivered {
            let topic = per_topic.entry(record.topic()).or_default();
            topic.0 += 1;
            topic.1 += record.size;
            oldest_ms = oldest_ms.min(record.appended_ms);
        }
        let per_topic = per_topic
            .into_iter()
            .map(|(topic, counts)| (topic.to_string(), counts))
            .collect();
        let lag_ms = now_ms().saturating_sub(oldest_ms);
        let summaries = if self.config.publish_summaries {
            let views: Vec<(u64, RecordView)> =
                delivered.iter().map(|r| (r.seq, r.view())).collect();
            summary::summaries(
                &views,
                OUTBOX_PUBLISHED_TYPE,
                &self.config.summary_source,
                self.config.mode,
            )
        } else {
            Vec::new()
        };
        Confirmation {
            durable: self.store.confirm(seqs),
            count: delivered.len() as u64,
            per_topic,
            lag_ms,
            took,
            summaries,
        }
    }

    /// Waits for the pending confirmation, if any, and reports the batch it confirms. If it
    /// failed, the records stay stored, the next read starts from the oldest (they are sent
    /// again: at-least-once) and the relay pauses.
    async fn await_confirmation(&mut self) -> Result<(), StoreError> {
        let Some(confirmation) = self.pending.take() else {
            return Ok(());
        };
        if let Err(e) = confirmation.durable.await {
            self.chain = None;
            self.note_error("store", e.to_string());
            return Err(e);
        }
        let bytes: u64 = confirmation.per_topic.values().map(|(_, b)| b).sum();
        tracing::info!(
            count = confirmation.count,
            bytes,
            duration_ms = confirmation.took.as_millis() as u64,
            lag_ms = confirmation.lag_ms,
            "delivered batch"
        );
        for (topic, (events, bytes)) in &confirmation.per_topic {
            self.metrics.published(topic, *events, *bytes);
        }
        self.metrics.batch_events.observe(confirmation.count as f64);
        self.metrics
            .batch_duration_seconds
            .observe(confirmation.took.as_secs_f64());
        {
            let mut status = self.status.lock().expect("lock");
            status.last_delivery_ms = Some(now_ms());
            status.delivered_events += confirmation.count;
            status.delivered_bytes += bytes;
            status.batches += 1;
            let paused = &self.paused;
            status.paused_topics.retain(|t, _| paused.contains_key(t));
        }
        if !confirmation.summaries.is_empty() {
            if let Err(e) = self.store.append(confirmation.summaries).await {
                tracing::warn!(error = %e, "could not store the outbox.published summaries");
            }
        }
        Ok(())
    }

    /// Awaits the pending confirmation; pauses if it failed.
    async fn settle_pending(&mut self, shutdown: &mut Shutdown) -> Flow {
        match self.await_confirmation().await {
            Ok(()) => Flow::Continue,
            Err(_) => {
                self.pause_for(self.config.retry_backoff_max, shutdown)
                    .await
            }
        }
    }

    /// Classifies a failed message and counts it.
    fn count_error(&self, error: &KafkaError) -> ErrorClass {
        let class = classify(error);
        self.metrics.produce_error(class.name());
        class
    }

    /// Pauses a topic whose messages the cluster cannot take as configured (missing topic,
    /// no authorisation); its events stay stored and are tried again after `pause_retry`.
    fn pause_topic(&mut self, topic: &str, reason: String) {
        if !self.paused.contains_key(topic) {
            tracing::error!(topic, %reason, "pausing topic; its events stay stored");
        }
        self.note_error("configuration", format!("{topic}: {reason}"));
        self.paused
            .insert(topic.to_string(), Instant::now() + self.config.pause_retry);
        self.status
            .lock()
            .expect("lock")
            .paused_topics
            .insert(topic.to_string(), reason);
    }

    /// Asks the cluster about topics not seen yet, and pauses those it does not have, so that
    /// a missing topic never holds up the others.
    async fn check_topics(&mut self, records: &[StoredRecord]) {
        let unseen: BTreeSet<String> = records
            .iter()
            .map(|r| r.topic())
            .filter(|t| !self.known_topics.contains(*t))
            .map(str::to_string)
            .collect();
        for topic in unseen {
            let producer = self.producer.clone();
            let name = topic.clone();
            let metadata = tokio::task::spawn_blocking(move || {
                use rdkafka::producer::Producer;
                producer
                    .client()
                    .fetch_metadata(Some(&name), Duration::from_secs(5))
            })
            .await
            .expect("the metadata task does not panic");
            let Ok(metadata) = metadata else {
                // The cluster does not answer: producing will tell (and be retried). Asking
                // again for every other topic would only wait the timeout once per topic.
                break;
            };
            let missing = metadata.topics().iter().any(|t| {
                t.name() == topic
                    && (t.error().is_some_and(|e| {
                        RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition
                    }) || t.partitions().is_empty())
            });
            if missing {
                self.pause_topic(
                    &topic,
                    format!(
                        "topic {topic} does not exist on the cluster: create it \
                         (`edge-outbox topics create`) or set kafka.create_topics = true"
                    ),
                );
            } else {
                self.known_topics.insert(topic);
            }
        }
    }

    /// Asks the cluster for its metadata; an answer ends the health's failure streak.
    async fn probe_cluster(&self) {
        let producer = self.producer.clone();
        let answered = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if answered {
            self.health.recovered();
        }
    }

    /// Lets newer messages of `pair` flow again once `seq` is settled.
    fn release(&mut self, pair: &(String, String), seq: u64) {
        if let Some(failed) = self.held.get_mut(pair) {
            failed.remove(&seq);
            if failed.is_empty() {
                self.held.remove(pair);
            }
        }
    }

    async fn pause_for(&self, wait: Duration, shutdown: &mut Shutdown) -> Flow {
        tokio::select! {
            _ = tokio::time::sleep(wait) => Flow::Continue,
            _ = shutdown.stopping() => Flow::Stop,
        }
    }

    fn note_error(&self, class: &str, message: String) {
        self.status.lock().expect("lock").last_errors.insert(
            class.to_string(),
            LastError {
                message,
                at_ms: now_ms(),
            },
        );
    }

    fn publish_status(&self) {
        let mut status = self.status.lock().expect("lock");
        status.held_keys = self.held.len();
        status.broker_confirmed = self.broker_confirmed;
    }
}
