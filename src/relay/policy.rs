//! What the relay makes of delivery outcomes, decided without a broker: per record (confirm,
//! park, pause the topic, hold the tenant's newer events), per round (the back-off, when the
//! producer is recreated, whether the broker has taken a batch since the start or the last
//! outage), and which stored records a read leaves out (paused topics, newer records of held
//! (topic, key) pairs), so that a tenant's order holds.

use super::service::{ErrorClass, Outcome};
use crate::config::RelayConfig;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// After this many fruitless rounds the producer is recreated: a broker that lost its
/// idempotence state (a restart without it) can otherwise refuse the old producer id forever.
pub const RECREATE_AFTER_ROUNDS: u32 = 3;

/// What to do with one record after its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivered: confirm it in the store.
    Confirm,
    /// The broker can never take it: park it in the dead-letter table.
    Park,
    /// The cluster is not set up for its topic: pause the topic (the record stays stored).
    PauseTopic,
    /// Keep it and send it again first; its (topic, key) pair is held meanwhile.
    Retry,
}

/// What settling one batch, or two together, found.
#[derive(Debug, Default)]
pub struct Round {
    pub records: usize,
    pub delivered: usize,
    /// Failed messages kept for another try (their (topic, key) pairs are held).
    pub retriable: usize,
    /// The producer's state is in doubt: it is recreated.
    pub producer_in_doubt: bool,
}

impl Round {
    /// Everything delivered: nothing to retry, nothing to react to.
    pub fn whole(&self) -> bool {
        self.delivered == self.records
    }

    pub fn add(&mut self, other: Round) {
        self.records += other.records;
        self.delivered += other.delivered;
        self.retriable += other.retriable;
        self.producer_in_doubt |= other.producer_in_doubt;
    }
}

/// What the relay does after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    /// Replace the producer before sending more.
    pub recreate_producer: bool,
    /// Wait this long before the next batch (a back-off after failures).
    pub wait: Option<Duration>,
}

/// (topic, key) → sequence numbers that failed retriably and must go first.
type Held = HashMap<(String, String), BTreeSet<u64>>;

/// The relay's memory of failures.
pub struct Policy {
    backoff_min: Duration,
    backoff_max: Duration,
    pause_retry: Duration,
    backoff: Duration,
    /// Paused topics and when to try them again.
    paused: HashMap<String, Instant>,
    held: Held,
    /// Rounds in a row that delivered nothing because of retriable errors.
    failed_rounds: u32,
    /// See [`super::RelayStatus::broker_confirmed`].
    broker_confirmed: bool,
}

impl Policy {
    pub fn new(config: &RelayConfig) -> Policy {
        Policy {
            backoff_min: config.retry_backoff_min,
            backoff_max: config.retry_backoff_max,
            pause_retry: config.pause_retry,
            backoff: config.retry_backoff_min,
            paused: HashMap::new(),
            held: HashMap::new(),
            failed_rounds: 0,
            broker_confirmed: false,
        }
    }

    /// Decides about one record of a round and counts it there. `pair` gives its (topic,
    /// key), asked for only when a hold is to be taken or released.
    pub fn settle<'a>(
        &mut self,
        round: &mut Round,
        pair: impl FnOnce() -> (&'a str, &'a str),
        seq: u64,
        outcome: &Outcome,
    ) -> Action {
        let failure = match outcome {
            Outcome::Delivered => {
                round.delivered += 1;
                if !self.held.is_empty() {
                    let (topic, key) = pair();
                    self.release(topic, key, seq);
                }
                return Action::Confirm;
            }
            Outcome::Failed(failure) => failure,
        };
        let (topic, key) = pair();
        match failure.class {
            ErrorClass::Permanent => {
                self.release(topic, key, seq);
                Action::Park
            }
            ErrorClass::Configuration => Action::PauseTopic,
            ErrorClass::Retriable | ErrorClass::Fatal => {
                round.producer_in_doubt |= failure.producer_in_doubt;
                round.retriable += 1;
                self.held
                    .entry((topic.to_string(), key.to_string()))
                    .or_default()
                    .insert(seq);
                Action::Retry
            }
        }
    }

    /// What a round's outcomes say: the back-off after failures, and a new producer when its
    /// state is in doubt or it failed [`RECREATE_AFTER_ROUNDS`] rounds in a row.
    pub fn after_round(&mut self, round: &Round) -> Reaction {
        if round.delivered > 0 {
            self.broker_confirmed = true;
        } else if round.retriable > 0 {
            self.broker_confirmed = false;
        }
        let mut recreate_producer = round.producer_in_doubt;
        if round.retriable > 0 && round.delivered == 0 {
            self.failed_rounds += 1;
        } else {
            self.failed_rounds = 0;
        }
        if self.failed_rounds >= RECREATE_AFTER_ROUNDS {
            self.failed_rounds = 0;
            recreate_producer = true;
        }
        let wait = if round.retriable > 0 {
            let wait = self.backoff;
            self.backoff = (self.backoff * 2).min(self.backoff_max);
            Some(wait)
        } else {
            self.backoff = self.backoff_min;
            None
        };
        Reaction {
            recreate_producer,
            wait,
        }
    }

    /// Pauses `topic` for `pause_retry`; true if it was not paused.
    pub fn pause(&mut self, topic: &str) -> bool {
        self.paused
            .insert(topic.to_string(), Instant::now() + self.pause_retry)
            .is_none()
    }

    /// Ends the pauses that are over.
    pub fn end_pauses(&mut self, now: Instant) {
        self.paused.retain(|_, until| *until > now);
    }

    pub fn is_paused(&self, topic: &str) -> bool {
        self.paused.contains_key(topic)
    }

    /// When the first pause ends.
    pub fn next_pause_end(&self) -> Option<Instant> {
        self.paused.values().min().copied()
    }

    /// Whether nothing is paused or held, and the broker takes batches: the relay may then
    /// produce one batch behind another.
    pub fn clear(&self) -> bool {
        self.broker_confirmed && self.paused.is_empty() && self.held.is_empty()
    }

    pub fn broker_confirmed(&self) -> bool {
        self.broker_confirmed
    }

    /// A stall (no delivery report for `relay.stall_timeout`) is noticed: the broker is not
    /// confirmed from now on, before the round's outcomes are settled, so the status never
    /// shows a stall beside a confirmed broker.
    pub fn stalled(&mut self) {
        self.broker_confirmed = false;
    }

    pub fn held_keys(&self) -> usize {
        self.held.len()
    }

    /// What a read (on another thread) leaves out, as of now.
    pub fn read_filter(&self) -> ReadFilter {
        ReadFilter {
            paused: self.paused.keys().cloned().collect(),
            held: self.held.clone(),
        }
    }

    /// Lets newer messages of the pair flow again once `seq` is settled.
    /// Lets every held pair go (exactly-once: an aborted transaction is sent again whole, in
    /// order, so nothing needs holding).
    pub fn release_all(&mut self) {
        self.held.clear();
    }

    fn release(&mut self, topic: &str, key: &str, seq: u64) {
        let pair = (topic.to_string(), key.to_string());
        if let Some(failed) = self.held.get_mut(&pair) {
            failed.remove(&seq);
            if failed.is_empty() {
                self.held.remove(&pair);
            }
        }
    }
}

/// The records a read leaves out: those of paused topics, and the records of a held pair
/// other than its failed ones (which go first).
pub struct ReadFilter {
    paused: BTreeSet<String>,
    held: Held,
}

impl ReadFilter {
    pub fn skips(&self, topic: &str, key: &str, seq: u64) -> bool {
        // Most reads hold nothing back: no key pair to build for every record then.
        self.paused.contains(topic)
            || (!self.held.is_empty()
                && self
                    .held
                    .get(&(topic.to_string(), key.to_string()))
                    .is_some_and(|failed| !failed.contains(&seq)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    fn policy() -> Policy {
        let mut config = crate::config::Config::default().relay;
        config.retry_backoff_min = Duration::from_millis(100);
        config.retry_backoff_max = Duration::from_millis(350);
        Policy::new(&config)
    }

    fn failed(code: RDKafkaErrorCode) -> Outcome {
        Outcome::failed(KafkaError::MessageProduction(code))
    }

    #[test]
    fn a_retriable_failure_holds_the_tenants_newer_events_until_it_is_delivered() {
        let mut policy = policy();
        let mut round = Round::default();
        let pair = ("orders", "tenant-a");
        let action = policy.settle(
            &mut round,
            || pair,
            7,
            &failed(RDKafkaErrorCode::RequestTimedOut),
        );
        assert_eq!(action, Action::Retry);
        assert_eq!(round.retriable, 1);
        let filter = policy.read_filter();
        assert!(
            !filter.skips("orders", "tenant-a", 7),
            "the failed one goes first"
        );
        assert!(filter.skips("orders", "tenant-a", 8), "a newer one waits");
        assert!(!filter.skips("orders", "tenant-b", 8), "other tenants flow");
        assert!(!policy.clear());

        let action = policy.settle(&mut Round::default(), || pair, 7, &Outcome::Delivered);
        assert_eq!(action, Action::Confirm);
        assert_eq!(policy.held_keys(), 0);
        assert!(!policy.read_filter().skips("orders", "tenant-a", 8));
    }

    #[test]
    fn a_refused_message_is_parked_and_releases_its_tenant() {
        let mut policy = policy();
        let pair = ("orders", "t");
        let mut round = Round::default();
        policy.settle(
            &mut round,
            || pair,
            1,
            &failed(RDKafkaErrorCode::NotLeaderForPartition),
        );
        let action = policy.settle(
            &mut round,
            || pair,
            1,
            &failed(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(action, Action::Park);
        assert_eq!(policy.held_keys(), 0);
        let action = policy.settle(
            &mut round,
            || pair,
            2,
            &failed(RDKafkaErrorCode::UnknownTopicOrPartition),
        );
        assert_eq!(action, Action::PauseTopic);
        assert!(policy.pause("orders"));
        assert!(!policy.pause("orders"), "already paused");
        assert!(policy.read_filter().skips("orders", "other", 3));
        policy.end_pauses(Instant::now() + Duration::from_secs(3600));
        assert!(!policy.is_paused("orders"));
    }

    #[test]
    fn failures_back_off_doubling_to_the_maximum_and_a_delivery_resets_it() {
        let mut policy = policy();
        let failing = Round {
            records: 1,
            retriable: 1,
            delivered: 1,
            ..Round::default()
        };
        let waits: Vec<_> = (0..3).map(|_| policy.after_round(&failing).wait).collect();
        assert_eq!(
            waits,
            [100, 200, 350].map(|ms| Some(Duration::from_millis(ms)))
        );
        let whole = Round {
            records: 1,
            delivered: 1,
            ..Round::default()
        };
        assert_eq!(policy.after_round(&whole).wait, None);
        assert_eq!(
            policy.after_round(&failing).wait,
            Some(Duration::from_millis(100)),
            "the back-off starts again at the minimum"
        );
        assert!(policy.broker_confirmed());
    }

    #[test]
    fn the_producer_is_recreated_when_in_doubt_or_after_fruitless_rounds() {
        let mut policy = policy();
        let fruitless = Round {
            records: 2,
            retriable: 2,
            ..Round::default()
        };
        let recreated: Vec<bool> = (0..RECREATE_AFTER_ROUNDS)
            .map(|_| policy.after_round(&fruitless).recreate_producer)
            .collect();
        assert_eq!(recreated, [false, false, true]);
        assert!(!policy.broker_confirmed(), "nothing went through");
        let mut round = Round::default();
        policy.settle(
            &mut round,
            || ("t", "k"),
            1,
            &failed(RDKafkaErrorCode::MessageTimedOut),
        );
        assert!(policy.after_round(&round).recreate_producer);
    }

    #[test]
    fn a_stall_unconfirms_the_broker_until_a_round_delivers() {
        let mut policy = policy();
        let delivered = Round {
            records: 1,
            delivered: 1,
            ..Round::default()
        };
        policy.after_round(&delivered);
        assert!(policy.clear());
        policy.stalled();
        assert!(!policy.broker_confirmed());
        assert!(
            !policy.clear(),
            "no read-ahead while the broker is in doubt"
        );
        policy.after_round(&delivered);
        assert!(policy.broker_confirmed());
    }
}
