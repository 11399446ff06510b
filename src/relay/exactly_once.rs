//! The exactly-once drain (`relay.delivery = "exactly-once"`): each batch is one Kafka
//! transaction holding its messages and a checkpoint of what it holds ([`checkpoint`]), and the
//! store confirms a batch only after the commit. Before the first batch, and after any fatal
//! error, the relay fences every earlier producer of this store (`init_transactions`: its open
//! transaction ends, aborted or committed) and confirms what the checkpoints committed since
//! the local mark say was delivered: Kafka's truth, not the store's, decides what was sent, so
//! a crash anywhere (transaction open, committed but not yet confirmed, during the fence) sends
//! nothing twice to a `read_committed` consumer.
//!
//! Batches follow the same read rules as at-least-once (sequence order or fair shares, paused
//! topics left out, probes while the broker has not taken one), one transaction at a time. A
//! failed message aborts its transaction: a permanent failure parks that record, a missing topic
//! pauses it, the rest is sent again in the next transaction.

use super::checkpoint::{self, Checkpoint};
use super::policy::Round;
use super::service::{classify, ErrorClass, Outcome, Settled, TxnFailure};
use super::{Continuation, Flow, Relay};
use crate::config::{KafkaConfig, RelayConfig};
use crate::msk_iam::TokenSource;
use crate::shutdown::Shutdown;
use crate::store::StoredRecord;
use rdkafka::message::OwnedHeaders;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one transaction step (init, commit, abort) may take; one that takes longer is
/// given up with its producer (a new one fences it).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that names a crash point for the tests: the process kills itself
/// with SIGKILL there (`transaction-open`: the batch produced, not committed; `committed`: the
/// commit done, the store not yet confirmed; `fenced`: earlier producers fenced, the
/// checkpoints not yet read). Unset in production; read once.
pub const CRASH_AT: &str = "EDGE_OUTBOX_TEST_CRASH_AT";

/// Dies here, as a SIGKILL would, if [`CRASH_AT`] names `point`.
fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(CRASH_AT).ok()).as_deref() == Some(point) {
        eprintln!("{CRASH_AT}={point}: killing the process");
        // SAFETY: kill(2) on our own pid; nothing is left to run after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// What the exactly-once relay keeps beside the at-least-once one's state.
pub struct ExactlyOnce {
    /// The store's instance id: the checkpoints' key.
    pub instance: String,
    pub transactional_id: String,
    pub checkpoint_topic: String,
    /// Earlier producers are fenced and the checkpoints read since the producer was made.
    pub ready: bool,
    /// The checkpoint topic's offset up to which this store's checkpoints are confirmed.
    pub mark: Option<i64>,
    /// Set once another producer with our transactional id took over.
    pub fenced: Option<String>,
    /// When the transaction under way began (`None` outside one).
    pub opened: Option<std::time::Instant>,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction open longer, and fences
    /// its producer.
    pub transaction_timeout: Duration,
    /// For the checkpoint consumer.
    pub kafka: KafkaConfig,
    pub tokens: Option<Arc<TokenSource>>,
}

impl ExactlyOnce {
    /// The state for the store with `instance` id in `data_dir` under `config`.
    pub fn new(
        config: &RelayConfig,
        kafka: &KafkaConfig,
        tokens: Option<Arc<TokenSource>>,
        instance: &str,
        data_dir: &Path,
    ) -> ExactlyOnce {
        ExactlyOnce {
            instance: instance.to_string(),
            transactional_id: format!("{}-{instance}", config.transactional_id_prefix),
            checkpoint_topic: config.checkpoint_topic.clone(),
            ready: false,
            mark: checkpoint::read_mark(data_dir),
            fenced: None,
            opened: None,
            transaction_timeout: crate::kafka_client::transaction_timeout(kafka),
            kafka: kafka.clone(),
            tokens,
        }
    }
}

impl Relay {
    /// Sends batches, one transaction each, until nothing sendable is left.
    pub(super) async fn drain_exactly_once(&mut self, shutdown: &mut Shutdown) -> Flow {
        loop {
            if !self.transactions().ready {
                match self.fence_and_recover().await {
                    Ok(()) => self.transactions_mut().ready = true,
                    Err(failure) => return self.after_txn_failure(failure, shutdown).await,
                }
            }
            self.policy.end_pauses(Instant::now());
            let read = self.read_from(Continuation::start()).await;
            let batch = match read.expect("the read task does not panic") {
                Ok(batch) => batch,
                Err(e) => {
                    self.note_error("store", e.to_string());
                    return self
                        .pause_for(self.config.retry_backoff_max, shutdown)
                        .await;
                }
            };
            self.quarantine(batch.corrupt).await;
            if batch.records.is_empty() {
                self.stuck_events = batch.skipped;
                self.publish_status();
                return Flow::Continue;
            }
            tokio::select! {
                _ = self.check_topics(&batch.records) => {}
                _ = shutdown.stopping() => return Flow::Stop,
            }
            let (records, headers) = self.sendable(batch.records, batch.prepared);
            if records.is_empty() {
                continue;
            }
            match self.transaction(records, headers, shutdown).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return Flow::Stop,
                Err(failure) => {
                    if self.after_txn_failure(failure, shutdown).await == Flow::Stop {
                        return Flow::Stop;
                    }
                }
            }
        }
    }

    /// One batch as one transaction: begin, produce the records and the checkpoint, commit,
    /// then confirm in the store and move the mark.
    async fn transaction(
        &mut self,
        records: Vec<StoredRecord>,
        headers: Vec<OwnedHeaders>,
        shutdown: &mut Shutdown,
    ) -> Result<Flow, TxnFailure> {
        self.transactions_mut().opened = Some(std::time::Instant::now());
        self.service.begin_transaction().await?;
        let checkpoint = Checkpoint::of(&self.transactions().instance, &records);
        let Some(in_flight) = self.produce(records, headers, shutdown).await else {
            return Ok(Flow::Stop);
        };
        let topic = self.transactions().checkpoint_topic.clone();
        let instance = self.transactions().instance.clone();
        let encoded = checkpoint.encode();
        let (settled, mark) = tokio::select! {
            settled = async {
                tokio::join!(
                    // A stalled transaction is the transaction timeout's to end.
                    in_flight.outcomes(None),
                    self.service.produce_one(&topic, &instance, &encoded),
                )
            } => settled,
            _ = shutdown.stopping() => return Ok(Flow::Stop),
        };
        self.reports_in(&settled);
        let Settled {
            records,
            outcomes,
            took,
            ..
        } = settled;
        crash_point("transaction-open");
        let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
        let mark = match mark {
            Ok((_, offset)) if !failed => offset,
            Ok(_) => {
                self.abort_and_settle(&records, outcomes, shutdown).await?;
                return Ok(Flow::Continue);
            }
            Err(e) if classify(&e) == ErrorClass::Configuration => {
                // The checkpoint topic is missing or not ours to write, which holds every
                // topic up.
                self.note_error(
                    "configuration",
                    format!("writing the checkpoint to {topic}: {e}"),
                );
                self.service.abort_transaction(STEP_TIMEOUT).await?;
                return Ok(self.pause_for(self.config.pause_retry, shutdown).await);
            }
            Err(e) => {
                // Not taken in time, or the producer failed: the abort says which (a fenced
                // or fatal producer fails it, and is handled as such); the batch is sent again.
                self.note_error(
                    classify(&e).name(),
                    format!("writing the checkpoint to {topic}: {e}"),
                );
                self.service.abort_transaction(STEP_TIMEOUT).await?;
                return Ok(self
                    .after_round(failed_round(records.len()), shutdown)
                    .await);
            }
        };
        let committing = std::time::Instant::now();
        if let Err(failure) = self.service.commit_transaction(STEP_TIMEOUT).await {
            if let TxnFailure::Abortable(message) = &failure {
                self.note_error("retriable", format!("committing a transaction: {message}"));
                self.service.abort_transaction(STEP_TIMEOUT).await?;
                return Ok(self
                    .after_round(failed_round(records.len()), shutdown)
                    .await);
            }
            return Err(failure);
        }
        crash_point("committed");
        tracing::debug!(
            events = records.len(),
            produce_ms = took.as_millis() as u64,
            commit_ms = committing.elapsed().as_millis() as u64,
            "transaction committed"
        );
        let delivered: Vec<&StoredRecord> = records.iter().collect();
        self.pending = Some(self.confirm(&delivered, took));
        if self.await_confirmation().await.is_err() {
            // Committed in Kafka but not confirmed here: a new producer, and the checkpoints
            // confirm the batch before anything is read again (reading it now would send it
            // twice).
            let round = Round {
                producer_in_doubt: true,
                ..failed_round(records.len())
            };
            return Ok(self.after_round(round, shutdown).await);
        }
        self.move_mark(mark);
        let round = Round {
            records: records.len(),
            delivered: records.len(),
            ..Round::default()
        };
        Ok(self.after_round(round, shutdown).await)
    }

    /// A message of the transaction failed: abort it, then park, pause or retry each failed
    /// record as at-least-once does (nothing of the aborted transaction is confirmed).
    async fn abort_and_settle(
        &mut self,
        records: &[StoredRecord],
        outcomes: Vec<Outcome>,
        shutdown: &mut Shutdown,
    ) -> Result<(), TxnFailure> {
        self.service.abort_transaction(STEP_TIMEOUT).await?;
        let mut round = failed_round(records.len());
        round.retriable = 0;
        for (record, outcome) in records.iter().zip(outcomes) {
            let Outcome::Failed(failure) = &outcome else {
                continue;
            };
            let pair = || (record.topic(), record.key());
            let action = self.policy.settle(&mut round, pair, record.seq, &outcome);
            self.act_on_failure(record, action, failure).await;
        }
        // Failed records held their (topic, key): the next transaction sends them first anyway.
        self.policy.release_all();
        self.after_round(round, shutdown).await;
        Ok(())
    }

    /// Fences earlier producers of this store, then confirms what their committed
    /// checkpoints since the mark delivered.
    async fn fence_and_recover(&mut self) -> Result<(), TxnFailure> {
        self.transactions_mut().opened = None;
        self.service.init_transactions(STEP_TIMEOUT).await?;
        crash_point("fenced");
        let eo = self.transactions();
        let (kafka, tokens) = (eo.kafka.clone(), eo.tokens.clone());
        let (topic, instance, mark) = (eo.checkpoint_topic.clone(), eo.instance.clone(), eo.mark);
        let found = tokio::task::spawn_blocking(move || {
            checkpoint::committed_since(&kafka, tokens, &topic, &instance, mark, STEP_TIMEOUT)
        })
        .await
        .map_err(|e| TxnFailure::Fatal(e.to_string()))?
        .map_err(TxnFailure::Retriable)?;
        for (offset, checkpoint) in found {
            self.confirm_checkpoint(offset, &checkpoint).await?;
        }
        Ok(())
    }

    /// Confirms in the store what a committed checkpoint delivered, once its records are
    /// known to be this store's (the digest), and moves the mark past it.
    async fn confirm_checkpoint(
        &mut self,
        offset: i64,
        checkpoint: &Checkpoint,
    ) -> Result<(), TxnFailure> {
        let seqs: Vec<u64> = checkpoint.seqs().collect();
        let mut present = Vec::new();
        for &seq in &seqs {
            match self.store.record(seq) {
                Ok(Some(record)) => present.push((seq, record.event_source, record.event_id)),
                Ok(None) => {}
                Err(e) => return Err(TxnFailure::Retriable(e.to_string())),
            }
        }
        if present.is_empty() {
            // Confirmed already (a crash between the confirmation and the mark).
            self.move_mark(offset);
            return Ok(());
        }
        if present.len() != seqs.len()
            || checkpoint::digest(present.into_iter()) != checkpoint.digest
        {
            return Err(TxnFailure::Fenced(format!(
                "the checkpoint at offset {offset} of {} names records this store does not \
                 hold as they were sent: another store uses instance id {} (a copy of this \
                 data directory?); stopping so that neither loses or repeats events",
                self.transactions().checkpoint_topic,
                checkpoint.instance
            )));
        }
        tracing::info!(
            offset,
            events = seqs.len(),
            "confirming a transaction committed before the restart"
        );
        self.store
            .confirm(seqs)
            .await
            .map_err(|e| TxnFailure::Retriable(e.to_string()))?;
        self.move_mark(offset);
        Ok(())
    }

    fn move_mark(&mut self, offset: i64) {
        if let Err(e) = checkpoint::write_mark(self.store.dir(), offset) {
            // Only costs a longer read of the checkpoints after a restart.
            tracing::warn!(error = %e, "could not write the checkpoint mark");
        }
        self.transactions_mut().mark = Some(offset);
    }

    /// What a failed transaction step leads to: the end when fenced by another producer (a
    /// fence on a transaction older than `transaction.timeout.ms` is the coordinator's own, and
    /// is handled as a fatal error); otherwise a new producer
    /// (whose `init_transactions` fences the old one and ends its transaction, committed or
    /// aborted), the checkpoints read again, and the batch sent again after a back-off.
    /// librdkafka's own recovery of a producer after a timed-out or failed step is where its
    /// known transaction bugs sit (a timed-out transaction answered by INVALID_TXN_STATE,
    /// begin_transaction after a fatal error, fencing after a disconnect): a new producer and
    /// Kafka's checkpoints avoid relying on it.
    async fn after_txn_failure(&mut self, failure: TxnFailure, shutdown: &mut Shutdown) -> Flow {
        tracing::warn!(error = failure.message(), "a transaction step failed");
        let class = match &failure {
            // Not another producer: the coordinator fenced us itself, having aborted a
            // transaction older than its timeout (a broker or network gone for that long).
            TxnFailure::Fenced(_) if self.transaction_outlived_its_timeout() => "fatal",
            TxnFailure::Fenced(message) => {
                tracing::error!(
                    transactional_id = %self.transactions().transactional_id,
                    %message,
                    "fenced: another producer took this store's transactional id (a copy of \
                     this data directory running elsewhere?); stopping, the store is kept"
                );
                self.note_error("fenced", message.clone());
                self.transactions_mut().fenced = Some(message.clone());
                return Flow::Stop;
            }
            TxnFailure::Fatal(_) => "fatal",
            TxnFailure::Abortable(_) | TxnFailure::Retriable(_) => "retriable",
        };
        self.note_error(class, failure.message().to_string());
        let round = Round {
            producer_in_doubt: true,
            ..failed_round(1)
        };
        self.after_round(round, shutdown).await
    }

    /// Whether the transaction under way has been open longer than `transaction.timeout.ms`.
    fn transaction_outlived_its_timeout(&self) -> bool {
        let eo = self.transactions();
        eo.opened
            .is_some_and(|opened| opened.elapsed() >= eo.transaction_timeout)
    }

    fn transactions(&self) -> &ExactlyOnce {
        self.exactly_once.as_ref().expect("exactly-once mode")
    }

    fn transactions_mut(&mut self) -> &mut ExactlyOnce {
        self.exactly_once.as_mut().expect("exactly-once mode")
    }
}

/// A round in which nothing was delivered and `records` are to be sent again.
fn failed_round(records: usize) -> Round {
    Round {
        records,
        retriable: records,
        ..Round::default()
    }
}
