//! The relay's one caller of the Kafka client: it owns the producer (and makes a new one when
//! told), hands a batch to librdkafka (waiting out a full queue), turns the delivery reports
//! into classified outcomes, and asks the cluster for metadata. How a produce error is
//! classified is decided here and nowhere else.

use super::Limiter;
use crate::broker_health::BrokerHealth;
use crate::config::KafkaConfig;
use crate::kafka_client::{create_producer_with, KafkaContext, Producer};
use crate::msk_iam::TokenSource;
use crate::shutdown::Shutdown;
use crate::store::StoredRecord;
use futures::future::{self, Either};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::Producer as _;
use rdkafka::producer::{DeliveryFuture, FutureRecord, PurgeConfig};
use std::sync::Arc;
use std::time::Duration;

/// What the relay does about a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Transient (timeouts, broker down, leader change): keep the event and retry.
    Retriable,
    /// The message itself can never be accepted (too large, invalid): dead-letter it.
    Permanent,
    /// The cluster is not set up for it (unknown topic, not authorised): pause the topic.
    Configuration,
    /// The producer is unusable (fatal idempotence error): recreate it and resend.
    Fatal,
}

impl ErrorClass {
    /// The class as a metric label and status key.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Retriable => "retriable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Configuration => "configuration",
            ErrorClass::Fatal => "fatal",
        }
    }
}

/// Sorts a produce error into what the relay should do.
pub fn classify(error: &KafkaError) -> ErrorClass {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        KafkaError::ClientCreation(_) => return ErrorClass::Configuration,
        _ => return ErrorClass::Retriable,
    };
    use RDKafkaErrorCode::*;
    match code {
        MessageSizeTooLarge
        | InvalidMessageSize
        | InvalidMessage
        | InvalidRecord
        | InvalidRequiredAcks
        | InvalidArgument
        | BadMessage
        | InvalidTimestamp
        | UnsupportedForMessageFormat
        | KeySerialization
        | ValueSerialization => ErrorClass::Permanent,
        UnknownTopicOrPartition
        | UnknownTopic
        | UnknownPartition
        | TopicAuthorizationFailed
        | ClusterAuthorizationFailed
        | InvalidTopic
        | SaslAuthenticationFailed
        | Authentication
        | PolicyViolation
        | UnsupportedSASLMechanism
        | UnsupportedCompressionType => ErrorClass::Configuration,
        Fatal
        | ProducerFenced
        | InvalidProducerEpoch
        | OutOfOrderSequenceNumber
        | UnknownProducerId
        | Fenced => ErrorClass::Fatal,
        _ => ErrorClass::Retriable,
    }
}

/// A message the cluster did not take, and what that means.
#[derive(Debug)]
pub struct Failure {
    pub class: ErrorClass,
    pub error: KafkaError,
    /// The producer's state is in doubt: it is to be recreated before more is sent.
    pub producer_in_doubt: bool,
}

/// The outcome of producing one message.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    Failed(Failure),
}

impl Outcome {
    /// The outcome of a message that failed with `error`.
    pub fn failed(error: KafkaError) -> Outcome {
        let class = classify(&error);
        // After a delivery timeout the idempotent producer's sequence state is uncertain.
        // librdkafka would bump the epoch (KIP-360), which Apache Kafka handles but not every
        // Kafka-protocol broker does; a fresh producer, with a new producer id, is the reset
        // every broker supports, at the cost of one InitProducerId request. The relay goes on
        // only once every report in flight is in, so nothing of the old producer is still
        // under way.
        // Messages taken back after a stall (`relay.stall_timeout`) are in the same doubt.
        let timed_out = matches!(
            error,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
                    | RDKafkaErrorCode::PurgeQueue
                    | RDKafkaErrorCode::PurgeInflight
            )
        );
        Outcome::Failed(Failure {
            producer_in_doubt: class == ErrorClass::Fatal || timed_out,
            class,
            error,
        })
    }
}

/// The delivery report of one message: librdkafka's, or the error that kept it out of
/// librdkafka's queue.
type Report = Either<DeliveryFuture, future::Ready<KafkaError>>;

/// A batch handed to librdkafka whose delivery reports are not all in.
pub struct InFlight {
    pub records: Vec<StoredRecord>,
    /// One per record, in the same order.
    reports: Vec<Report>,
    pub started: std::time::Instant,
    /// The producer that holds the batch (to take it back after a stall).
    producer: Producer,
}

/// What became of a batch in flight.
pub struct Settled {
    pub records: Vec<StoredRecord>,
    /// One per record, in the same order.
    pub outcomes: Vec<Outcome>,
    pub took: Duration,
    /// No report came for the stall timeout: everything the producer held was taken back.
    pub stalled: bool,
}

impl InFlight {
    /// Awaits every delivery report, in order (reports arrive in about that order anyway, and
    /// join_all's task per future cost more CPU than the waiting: 4 % of the drain). With a
    /// `stall` timeout, a wait that long for the next report takes back (purges) everything
    /// the producer holds, this batch and any behind it: their reports then come at once, as
    /// failures that put the producer in doubt.
    pub async fn outcomes(self, stall: Option<Duration>) -> Settled {
        let mut outcomes = Vec::with_capacity(self.reports.len());
        let mut stalled = false;
        for report in self.reports {
            let mut delivery = match report {
                Either::Left(delivery) => delivery,
                Either::Right(ready) => {
                    outcomes.push(Outcome::failed(ready.await));
                    continue;
                }
            };
            let answer = match stall.filter(|_| !stalled) {
                Some(stall) => match tokio::time::timeout(stall, &mut delivery).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        stalled = true;
                        self.producer
                            .purge(PurgeConfig::default().queue().inflight().non_blocking());
                        delivery.await
                    }
                },
                None => delivery.await,
            };
            outcomes.push(match answer {
                Ok(Ok(_)) => Outcome::Delivered,
                Ok(Err((error, _))) => Outcome::failed(error),
                Err(_) => Outcome::failed(KafkaError::Canceled),
            });
        }
        Settled {
            records: self.records,
            outcomes,
            took: self.started.elapsed(),
            stalled,
        }
    }
}

/// Why a transaction step failed, and what the relay does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnFailure {
    /// Abort the transaction and send the batch again.
    Abortable(String),
    /// The cluster did not answer in time: try the step again after a pause.
    Retriable(String),
    /// The producer is unusable (`INVALID_TXN_STATE`, a transaction timed out, a fatal
    /// idempotence error): make a new one, fence, and read the checkpoints again.
    Fatal(String),
    /// Another producer with our transactional id took over: this sidecar must stop.
    Fenced(String),
}

impl TxnFailure {
    /// Sorts a transaction error.
    pub fn of(error: &KafkaError) -> TxnFailure {
        let message = error.to_string();
        let Some(rd) = (match error {
            KafkaError::Transaction(rd) => Some(rd),
            _ => None,
        }) else {
            return TxnFailure::Retriable(message);
        };
        use RDKafkaErrorCode::*;
        match rd.code() {
            ProducerFenced | Fenced | InvalidProducerEpoch => TxnFailure::Fenced(message),
            _ if rd.is_fatal() => TxnFailure::Fatal(message),
            _ if rd.txn_requires_abort() => TxnFailure::Abortable(message),
            _ if rd.is_retriable() => TxnFailure::Retriable(message),
            _ => TxnFailure::Fatal(message),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            TxnFailure::Abortable(m)
            | TxnFailure::Retriable(m)
            | TxnFailure::Fatal(m)
            | TxnFailure::Fenced(m) => m,
        }
    }
}

/// The producer of the relay and what it needs to make another.
pub struct KafkaService {
    producer: Producer,
    kafka: KafkaConfig,
    /// Signs MSK IAM tokens for every producer this service creates.
    tokens: Option<Arc<TokenSource>>,
    /// What the producers' client errors say about the cluster.
    health: Arc<BrokerHealth>,
}

impl KafkaService {
    pub fn new(
        kafka: KafkaConfig,
        tokens: Option<Arc<TokenSource>>,
    ) -> Result<KafkaService, KafkaError> {
        let health = Arc::new(BrokerHealth::default());
        let producer = create_producer_with(
            &kafka,
            KafkaContext::with_health(tokens.clone(), health.clone()),
        )?;
        Ok(KafkaService {
            producer,
            kafka,
            tokens,
            health,
        })
    }

    pub fn health(&self) -> &Arc<BrokerHealth> {
        &self.health
    }

    /// A service whose producer is transactional, with `transactional_id` (exactly-once;
    /// see [`crate::kafka_client::transactional`]).
    pub fn transactional(
        kafka: KafkaConfig,
        tokens: Option<Arc<TokenSource>>,
        transactional_id: &str,
    ) -> Result<KafkaService, KafkaError> {
        KafkaService::new(
            crate::kafka_client::transactional(kafka, transactional_id),
            tokens,
        )
    }

    /// Fences every earlier producer with our transactional id and ends its open transaction
    /// (aborted, or finished if it was being committed).
    pub async fn init_transactions(&self, timeout: Duration) -> Result<(), TxnFailure> {
        self.transaction_step(move |p| p.init_transactions(timeout))
            .await
    }

    pub async fn begin_transaction(&self) -> Result<(), TxnFailure> {
        self.transaction_step(|p| p.begin_transaction()).await
    }

    /// Commits the open transaction (librdkafka flushes what it holds first).
    pub async fn commit_transaction(&self, timeout: Duration) -> Result<(), TxnFailure> {
        self.transaction_step(move |p| p.commit_transaction(timeout))
            .await
    }

    pub async fn abort_transaction(&self, timeout: Duration) -> Result<(), TxnFailure> {
        self.transaction_step(move |p| p.abort_transaction(timeout))
            .await
    }

    async fn transaction_step(
        &self,
        step: impl FnOnce(&Producer) -> rdkafka::error::KafkaResult<()> + Send + 'static,
    ) -> Result<(), TxnFailure> {
        match self.blocking(step).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TxnFailure::of(&e)),
            Err(e) => Err(TxnFailure::Fatal(format!(
                "the transaction task failed: {e}"
            ))),
        }
    }

    /// Produces one message of our own (a checkpoint); resolves to its partition and offset.
    pub async fn produce_one(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(i32, i64), KafkaError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match self.producer.send_result(record) {
            Ok(delivery) => match delivery.await {
                Ok(Ok(delivered)) => Ok((delivered.partition, delivered.offset)),
                Ok(Err((error, _))) => Err(error),
                Err(_) => Err(KafkaError::Canceled),
            },
            Err((error, _)) => Err(error),
        }
    }

    /// Replaces the producer with a new one (a new producer id); what the old one had in
    /// flight must be settled first.
    pub fn recreate(&mut self) -> Result<(), KafkaError> {
        let context = KafkaContext::with_health(self.tokens.clone(), self.health.clone());
        self.producer = create_producer_with(&self.kafka, context)?;
        Ok(())
    }

    /// Produces one batch, `headers` holding each record's, each message first let through
    /// by `limiter` (if any). Topic, key and value are read in place from the stored bytes;
    /// librdkafka copies what it is given. Returns the batch in flight and the time spent
    /// waiting for the limiter; `None` if told to stop while librdkafka's queue was full.
    pub async fn produce(
        &self,
        records: Vec<StoredRecord>,
        headers: Vec<OwnedHeaders>,
        limiter: Option<&Limiter>,
        shutdown: &mut Shutdown,
    ) -> Option<(InFlight, Duration)> {
        let started = std::time::Instant::now();
        let mut reports = Vec::with_capacity(records.len());
        let mut waited = Duration::ZERO;
        for (record, headers) in records.iter().zip(headers) {
            if let Some(limiter) = limiter {
                waited += limiter.wait(record.size as usize).await;
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
        let batch = InFlight {
            records,
            reports,
            started,
            producer: self.producer.clone(),
        };
        Some((batch, waited))
    }

    /// Whether the cluster has `topic` (with partitions); `None` when it does not answer.
    pub async fn has_topic(&self, topic: &str) -> Option<bool> {
        let name = topic.to_string();
        let metadata = self
            .blocking(move |producer| {
                producer
                    .client()
                    .fetch_metadata(Some(&name), Duration::from_secs(5))
            })
            .await
            .expect("the metadata task does not panic")
            .ok()?;
        let missing = metadata.topics().iter().any(|t| {
            t.name() == topic
                && (t.error().is_some_and(|e| {
                    RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition
                }) || t.partitions().is_empty())
        });
        Some(!missing)
    }

    /// Whether the cluster answers a metadata request.
    pub async fn cluster_answers(&self) -> bool {
        self.blocking(|producer| {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Gives librdkafka up to `timeout` to hand over what it holds (nothing is confirmed by
    /// it: anything unconfirmed is sent again after a restart).
    pub async fn flush(&self, timeout: Duration) {
        let _ = self.blocking(move |producer| producer.flush(timeout)).await;
    }

    /// Runs `work` with the producer on a blocking thread (librdkafka's calls that wait).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Producer) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || work(&producer)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_are_sorted_into_what_the_relay_does_about_them() {
        use RDKafkaErrorCode::*;
        let c = |code| classify(&KafkaError::MessageProduction(code));
        assert_eq!(c(MessageSizeTooLarge), ErrorClass::Permanent);
        assert_eq!(c(InvalidRecord), ErrorClass::Permanent);
        assert_eq!(c(UnknownTopicOrPartition), ErrorClass::Configuration);
        assert_eq!(c(TopicAuthorizationFailed), ErrorClass::Configuration);
        assert_eq!(c(MessageTimedOut), ErrorClass::Retriable);
        assert_eq!(c(NotLeaderForPartition), ErrorClass::Retriable);
        assert_eq!(c(AllBrokersDown), ErrorClass::Retriable);
        assert_eq!(c(Fatal), ErrorClass::Fatal);
    }

    #[test]
    fn a_delivery_timeout_or_a_fatal_error_puts_the_producer_in_doubt() {
        let doubt = |error| match Outcome::failed(error) {
            Outcome::Failed(failure) => failure.producer_in_doubt,
            Outcome::Delivered => unreachable!(),
        };
        use RDKafkaErrorCode::*;
        assert!(doubt(KafkaError::MessageProduction(MessageTimedOut)));
        assert!(doubt(KafkaError::MessageProduction(
            OutOfOrderSequenceNumber
        )));
        assert!(doubt(KafkaError::MessageProduction(PurgeInflight)));
        assert!(doubt(KafkaError::MessageProduction(PurgeQueue)));
        assert!(!doubt(KafkaError::MessageProduction(NotLeaderForPartition)));
        assert!(!doubt(KafkaError::MessageProduction(MessageSizeTooLarge)));
    }
}
