//! The relay: the background loop that moves the backlog from the store to Kafka (the
//! driver, as the sink of Vector's Kafka sink is). It decides when to send (every
//! `flush_interval`, or as soon as a full batch waits) and where a batch is cut (`Relay::drain`:
//! sequence order, size limits, probes, paused and held records left out), hands batches to
//! [`service`] (the only caller of the Kafka client, which classifies what comes back), lets
//! [`policy`] decide about each outcome, and removes delivered records only once the broker
//! confirmed them (one durable step). At most two batches are ever delivered and unconfirmed,
//! so a kill re-sends no more than that.

pub mod checkpoint;
mod exactly_once;
mod limiter;
pub mod policy;
pub mod service;
mod status;
pub mod summary;

pub use limiter::Limiter;
pub use status::{LastError, RelayStatus, StatusHandle};

use crate::broker_health::BrokerHealth;
use crate::catalog::OUTBOX_PUBLISHED_TYPE;
use crate::config::{Delivery, KafkaConfig, RelayConfig};
use crate::event::trace::TraceContext;
use crate::kafka_client::owned_headers;
use crate::msk_iam::TokenSource;
use crate::shutdown::{Phase, Shutdown};
use crate::store::{Queued, ReadBatch, Record, RecordView, Store, StoreError, StoredRecord};
use policy::{Action, Policy, Round};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use service::{Failure, InFlight, KafkaService, Outcome};
use status::{note_error, DeliveredBatch};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A delivered batch being confirmed in the store, and what to report once it is.
struct Confirmation {
    /// Answered once the committer made the confirmation durable.
    durable: Queued<()>,
    delivered: DeliveredBatch,
    summaries: Vec<Record>,
}

/// A batch being read on a blocking thread, with each record's headers made ready for
/// librdkafka there (from the one decode the read does).
type ReadTask = tokio::task::JoinHandle<Result<ReadBatch<OwnedHeaders>, StoreError>>;

/// Where to read a batch: from `from`, passing over `exclude` (sorted; the batches in flight
/// or being confirmed). Every undelivered record before `from` is in `exclude`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Continuation {
    from: u64,
    exclude: Arc<[u64]>,
}

impl Continuation {
    /// A read from the oldest record, with nothing in flight.
    fn start() -> Continuation {
        Continuation::default()
    }
}

/// How [`Relay::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayExit {
    /// Draining with intake closed, the store became empty.
    Drained,
    /// Told to stop; what was not delivered stays stored.
    Stopped,
    /// Exactly-once: another producer with this store's transactional id took over (a copy
    /// of the store started elsewhere), or the checkpoints name records this store does not
    /// hold. What was not delivered stays stored.
    Fenced(String),
}

/// Whether the relay should go on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub struct Relay {
    store: Store,
    service: KafkaService,
    config: RelayConfig,
    limiter: Limiter,
    policy: Policy,
    status: StatusHandle,
    /// Backlog left after the last drain (paused or held): not a reason to send early.
    stuck_events: u64,
    /// Topics the cluster is known to have.
    known_topics: BTreeSet<String>,
    /// Where the next batch may be read while the ones before it are in flight, as long as
    /// nothing is paused or held: the next batch may then be produced at once. `None` once
    /// anything failed.
    chain: Option<Continuation>,
    /// The confirmation of the last batch settled, while the next ones are sent.
    pending: Option<Confirmation>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Skip the rate limiter while draining (`shutdown.drain_unlimited`).
    unlimited_drain: bool,
    /// `relay.delivery = "exactly-once"`: the transactions' state.
    exactly_once: Option<exactly_once::ExactlyOnce>,
    /// The `produce` spans, when `telemetry.otlp_endpoint` is set.
    telemetry: Arc<crate::telemetry::Telemetry>,
}

/// While the broker has not taken a batch, batches are this fraction of the configured size.
const PROBE_FRACTION: usize = 16;

/// While the cluster is failing and nothing is sent, it is asked for metadata this often, so
/// that its recovery shows in status and readiness without a batch to deliver.
const PROBE_EVERY: Duration = Duration::from_secs(5);

impl Relay {
    pub fn new(
        store: Store,
        kafka: KafkaConfig,
        tokens: Option<Arc<TokenSource>>,
        config: RelayConfig,
        largest_message: u64,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Relay, KafkaError> {
        let exactly_once = (config.delivery == Delivery::ExactlyOnce).then(|| {
            exactly_once::ExactlyOnce::new(
                &config,
                &kafka,
                tokens.clone(),
                store.instance_id(),
                store.dir(),
            )
        });
        let service = match &exactly_once {
            Some(eo) => KafkaService::transactional(kafka, tokens, &eo.transactional_id)?,
            None => KafkaService::new(kafka, tokens)?,
        };
        let limiter = Limiter::new(
            config.max_events_per_second,
            config.max_bytes_per_second,
            largest_message,
        );
        Ok(Relay {
            store,
            service,
            policy: Policy::new(&config),
            config,
            limiter,
            status: StatusHandle::default(),
            stuck_events: 0,
            known_topics: BTreeSet::new(),
            chain: None,
            pending: None,
            metrics,
            unlimited_drain: false,
            exactly_once,
            telemetry: Arc::default(),
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
        self.service.health().clone()
    }

    /// Exports a `produce` span for each batch the broker confirmed.
    pub fn with_telemetry(mut self, telemetry: Arc<crate::telemetry::Telemetry>) -> Relay {
        self.telemetry = telemetry;
        self
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
                            .policy
                            .next_pause_end()
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
                        let failing = self.service.health().failure().is_some();
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
            let flow = match self.exactly_once.is_some() {
                true => self.drain_exactly_once(&mut shutdown).await,
                false => self.drain(&mut shutdown).await,
            };
            if flow == Flow::Stop {
                let fenced = self.exactly_once.as_ref().and_then(|eo| eo.fenced.clone());
                self.finish().await;
                return fenced.map_or(RelayExit::Stopped, RelayExit::Fenced);
            }
        }
    }

    async fn finish(mut self) {
        // A confirmation under way is finished, so that a clean stop sends nothing twice.
        let _ = self.await_confirmation().await;
        // Give librdkafka a moment to hand over what is already acknowledged; nothing is
        // confirmed here, so anything unconfirmed is simply sent again after the restart.
        self.service.flush(Duration::from_secs(2)).await;
    }

    /// Reads the next batch from `at` on a blocking thread, leaving out records of paused
    /// topics and newer records of held (topic, key) pairs, and (with `relay.fair_drain`)
    /// holding each tenant to its fair share. Until the broker has taken a batch, batches are
    /// probes: a sixteenth of the configured size.
    fn read_from(&self, at: Continuation) -> ReadTask {
        let filter = self.policy.read_filter();
        let store = self.store.clone();
        let (mut max_events, mut max_bytes) =
            (self.config.batch_max_events, self.config.batch_max_bytes);
        if !self.policy.broker_confirmed() {
            max_events = (max_events / PROBE_FRACTION).max(1);
            max_bytes = (max_bytes / PROBE_FRACTION as u64).max(1);
        }
        let fair = self.config.fair_drain;
        tokio::task::spawn_blocking(move || {
            let prepare = |seq, record: &RecordView| {
                let message = &record.message;
                (!filter.skips(message.topic, message.key, seq))
                    .then(|| owned_headers(&message.headers))
            };
            match fair {
                true => {
                    store.read_fair_batch_with(at.from, max_events, max_bytes, &at.exclude, prepare)
                }
                false => store.read_batch_with(at.from, max_events, max_bytes, prepare),
            }
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
        let mut read_ahead: Option<(Continuation, ReadTask)> = None;
        let mut in_flight: Option<InFlight> = None;
        loop {
            self.policy.end_pauses(Instant::now());
            let (read_at, read) = match read_ahead.take() {
                Some((at, task)) if self.chain.as_ref() == Some(&at) => (at, task.await),
                _ => {
                    self.chain = None;
                    // Reading from the start must not see a batch in flight or being confirmed.
                    if self.settle_all(&mut in_flight, shutdown).await == Flow::Stop {
                        return Flow::Stop;
                    }
                    let at = Continuation::start();
                    (at.clone(), self.read_from(at).await)
                }
            };
            let read = read.expect("the read task does not panic");
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
            self.quarantine(batch.corrupt).await;
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
            let (records, headers) = self.sendable(batch.records, batch.prepared);
            let Some(last) = records.last().map(|r| r.seq) else {
                self.chain = None;
                continue;
            };
            // This batch starts a chain, or continues one, only if nothing older waits.
            let unbroken = self.policy.clear() && batch.skipped == 0;
            if in_flight.is_some() && self.settle_pending(shutdown).await == Flow::Stop {
                return Flow::Stop;
            }
            let Some(produced) = self.produce(records, headers, shutdown).await else {
                return Flow::Stop;
            };
            self.chain = unbroken.then(|| {
                self.continuation(read_at, batch.deferred, last, &produced, in_flight.as_ref())
            });
            if let Some(at) = &self.chain {
                read_ahead = Some((at.clone(), self.read_from(at.clone())));
            }
            if let Some(batch) = in_flight.replace(produced) {
                if self.complete(batch, &mut in_flight, shutdown).await == Flow::Stop {
                    return Flow::Stop;
                }
            }
        }
    }

    /// Moves the corrupt records a read found to the dead-letter table.
    async fn quarantine(&self, corrupt: Vec<(u64, crate::store::RecordError)>) {
        for (seq, error) in corrupt {
            tracing::error!(seq, %error, "quarantining a corrupt record to the dead-letter table");
            if let Err(e) = self
                .store
                .park(seq, format!("corrupt record: {error}"))
                .await
            {
                self.note_error("store", e.to_string());
            }
        }
    }

    /// The records of a batch (with their headers) whose topics are not paused.
    fn sendable(
        &self,
        records: Vec<StoredRecord>,
        prepared: Vec<OwnedHeaders>,
    ) -> (Vec<StoredRecord>, Vec<OwnedHeaders>) {
        (records.into_iter().zip(prepared))
            .filter(|(r, _)| !self.policy.is_paused(r.topic()))
            .unzip()
    }

    /// Where the batch after `produced` (read at `read_at`, its last record `last`) is read
    /// while it and the one `before` it are in flight: after it, or (when fair shares left
    /// records for later) where it was read, passing over both batches in flight.
    fn continuation(
        &self,
        read_at: Continuation,
        deferred: u64,
        last: u64,
        produced: &InFlight,
        before: Option<&InFlight>,
    ) -> Continuation {
        if !self.config.fair_drain {
            return Continuation {
                from: last + 1,
                exclude: Arc::from([]),
            };
        }
        let mut exclude: Vec<u64> = (before.into_iter())
            .chain([produced])
            .flat_map(|batch| batch.records.iter().map(|r| r.seq))
            .collect();
        exclude.sort_unstable();
        Continuation {
            from: if deferred > 0 { read_at.from } else { last + 1 },
            exclude: exclude.into(),
        }
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
        let settled = tokio::select! {
            settled = batch.outcomes(Some(self.config.stall_timeout)) => settled,
            _ = shutdown.stopping() => return None,
        };
        self.reports_in(&settled);
        if settled.stalled {
            self.policy.stalled();
            self.publish_status();
            let waited = humantime::format_duration(self.config.stall_timeout);
            tracing::warn!(%waited, "no delivery report: taking back what librdkafka holds, to send it again in small batches");
            self.note_error(
                "stalled",
                format!("no delivery report for {waited}: messages in flight taken back from librdkafka, sent again in small batches"),
            );
        }
        self.settle(settled.records, settled.outcomes, settled.took, shutdown)
            .await
    }

    /// Confirms, parks, pauses or holds each record as [`policy`] decides; `None` if told to
    /// stop.
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
            let pair = || (record.topic(), record.key());
            let action = self.policy.settle(&mut round, pair, seq, &outcome);
            let Outcome::Failed(failure) = outcome else {
                delivered.push(record);
                continue;
            };
            self.act_on_failure(record, action, &failure).await;
        }
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

    /// Does what the policy decided about a message that failed: park it (a permanent
    /// refusal), pause its topic (a configuration error) or keep it for another try.
    async fn act_on_failure(&mut self, record: &StoredRecord, action: Action, failure: &Failure) {
        let (seq, topic, error) = (record.seq, record.topic(), &failure.error);
        self.metrics.produce_error(failure.class.name());
        match action {
            Action::Confirm => unreachable!("a failed message is never confirmed"),
            Action::Park => {
                tracing::warn!(seq, topic, %error, "parking a message the broker refuses");
                self.note_error("permanent", format!("seq {seq}: {error}"));
                match self.store.park(seq, error.to_string()).await {
                    Ok(()) => self.status.lock().expect("lock").dead_lettered += 1,
                    Err(e) => self.note_error("store", e.to_string()),
                }
            }
            Action::PauseTopic => {
                self.known_topics.remove(topic);
                self.pause_topic(topic, error.to_string());
            }
            Action::Retry => {
                self.note_error(failure.class.name(), format!("seq {seq}: {error}"));
            }
        }
    }

    /// Hands a batch to the service, through the rate limiter unless a drain may skip it;
    /// `None` if told to stop while librdkafka's queue was full.
    async fn produce(
        &self,
        records: Vec<StoredRecord>,
        headers: Vec<OwnedHeaders>,
        shutdown: &mut Shutdown,
    ) -> Option<InFlight> {
        let limited = !(self.unlimited_drain && shutdown.is_shutting_down());
        let limiter = limited.then_some(&self.limiter);
        let (produced, waited) = (self.service)
            .produce(records, headers, limiter, shutdown)
            .await?;
        self.metrics
            .limiter_wait_seconds
            .inc_by(waited.as_secs_f64());
        self.status.lock().expect("lock").in_flight_events += produced.records.len() as u64;
        Some(produced)
    }

    /// Acts on what [`Policy::after_round`] makes of a round (one batch, or two settled
    /// together): status and health, and after failures a new producer and the back-off.
    async fn after_round(&mut self, round: Round, shutdown: &mut Shutdown) -> Flow {
        if !round.whole() {
            self.chain = None;
        }
        let reaction = self.policy.after_round(&round);
        if round.delivered > 0 {
            self.service.health().recovered();
        }
        self.publish_status();
        self.metrics
            .broker_reachable
            .set(if round.retriable > 0 { 0 } else { 1 });
        if reaction.recreate_producer {
            tracing::warn!("recreating the Kafka producer (fatal error, delivery timeout or repeated failures)");
            if let Err(e) = self.service.recreate() {
                self.note_error("fatal", format!("recreating the producer: {e}"));
            }
            if let Some(eo) = &mut self.exactly_once {
                // A new transactional producer fences and reads the checkpoints first.
                eo.ready = false;
            }
        }
        if let Some(wait) = reaction.wait {
            tracing::warn!(
                retriable = round.retriable,
                backoff_ms = wait.as_millis() as u64,
                "retrying failed messages after a pause"
            );
            return self.pause_for(wait, shutdown).await;
        }
        Flow::Continue
    }

    /// Starts the durable confirmation of delivered records; what is reported about them
    /// (log line, metrics, status, summaries) waits until it is done.
    fn confirm(&self, delivered: &[&StoredRecord], took: Duration) -> Confirmation {
        let seqs: Vec<u64> = delivered.iter().map(|record| record.seq).collect();
        self.telemetry.produce(
            took,
            || {
                (delivered.iter())
                    .filter_map(|r| {
                        TraceContext::from_headers(r.view().message.headers.into_iter())
                    })
                    .collect()
            },
            delivered.len(),
            self.exactly_once.is_some(),
        );
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
            delivered: DeliveredBatch::of(delivered, took),
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
        let policy = &self.policy;
        confirmation
            .delivered
            .report(&self.status, &self.metrics, |topic| policy.is_paused(topic));
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

    /// Pauses a topic whose messages the cluster cannot take as configured (missing topic,
    /// no authorisation); its events stay stored and are tried again after `pause_retry`.
    fn pause_topic(&mut self, topic: &str, reason: String) {
        if self.policy.pause(topic) {
            tracing::error!(topic, %reason, "pausing topic; its events stay stored");
        }
        self.note_error("configuration", format!("{topic}: {reason}"));
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
            match self.service.has_topic(&topic).await {
                // The cluster does not answer: producing will tell (and be retried). Asking
                // again for every other topic would only wait the timeout once per topic.
                None => break,
                Some(true) => {
                    self.known_topics.insert(topic);
                }
                Some(false) => self.pause_topic(
                    &topic,
                    format!(
                        "topic {topic} does not exist on the cluster: create it \
                         (`edge-outbox topics create`) or set kafka.create_topics = true"
                    ),
                ),
            }
        }
    }

    /// Asks the cluster for its metadata; an answer ends the health's failure streak.
    async fn probe_cluster(&self) {
        if self.service.cluster_answers().await {
            self.service.health().recovered();
        }
    }

    async fn pause_for(&self, wait: Duration, shutdown: &mut Shutdown) -> Flow {
        tokio::select! {
            _ = tokio::time::sleep(wait) => Flow::Continue,
            _ = shutdown.stopping() => Flow::Stop,
        }
    }

    /// Counts a settled batch out of [`RelayStatus::in_flight_events`].
    fn reports_in(&self, settled: &service::Settled) {
        let mut status = self.status.lock().expect("lock");
        status.in_flight_events =
            (status.in_flight_events).saturating_sub(settled.records.len() as u64);
    }

    fn note_error(&self, class: &str, message: String) {
        note_error(&self.status, class, message);
    }

    fn publish_status(&self) {
        let mut status = self.status.lock().expect("lock");
        status.held_keys = self.policy.held_keys();
        status.broker_confirmed = self.policy.broker_confirmed();
    }
}
