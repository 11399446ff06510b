//! What librdkafka's client-level errors say about the cluster: whether it is unreachable or
//! refusing authentication, and since when (for `/v1/status`, `/readyz` and `status`), and
//! their logging: each kind of error once, then a summary with its count and last message at
//! most every [`SUMMARY_EVERY`], never a line per retry.

use crate::clock::now_ms;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeating error is logged again (with how many times it came meanwhile).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// What is wrong with the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No broker answers (refused, unresolvable, TLS failed, all brokers down).
    Connection,
    /// A broker refuses our credentials (SASL, MSK IAM token).
    Authentication,
}

/// The current streak of failures.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerFailure {
    pub kind: FailureKind,
    /// The last error's text.
    pub message: String,
    /// When the streak began (ms since the epoch).
    pub since_ms: u64,
    /// When the last error of it came.
    pub last_ms: u64,
    /// Errors in the streak.
    pub count: u64,
}

#[derive(Default)]
struct State {
    failure: Option<BrokerFailure>,
    /// Per kind of error: when it was last logged, and what came since.
    logged: HashMap<String, (Instant, u64)>,
}

/// Shared by every client of the sidecar's cluster.
#[derive(Default)]
pub struct BrokerHealth {
    state: Mutex<State>,
}

impl BrokerHealth {
    /// Takes a client-level error from librdkafka: remembers it and logs it (or counts it
    /// for the next summary).
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let kind = match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::UnsupportedSASLMechanism,
            ) => Some(FailureKind::Authentication),
            _ if reason.contains("SASL authentication") => Some(FailureKind::Authentication),
            Some(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::SSL,
            ) => Some(FailureKind::Connection),
            _ => None,
        };
        let message = format!("{error}: {reason}");
        let now = now_ms();
        let mut state = self.state.lock().expect("lock");
        if let Some(kind) = kind {
            match &mut state.failure {
                // "All brokers down" comes after the error that says why: keep the why.
                Some(failure)
                    if failure.kind == kind
                        || (failure.kind == FailureKind::Authentication
                            && kind == FailureKind::Connection) =>
                {
                    if failure.kind == kind
                        && error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown)
                    {
                        failure.message = message.clone();
                    }
                    failure.last_ms = now;
                    failure.count += 1;
                }
                _ => {
                    state.failure = Some(BrokerFailure {
                        kind,
                        message: message.clone(),
                        since_ms: now,
                        last_ms: now,
                        count: 1,
                    })
                }
            }
        }
        let key = error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_string(), |code| format!("{code:?}"));
        let entry = state
            .logged
            .entry(key)
            .or_insert((Instant::now() - SUMMARY_EVERY * 2, 0));
        if entry.0.elapsed() >= SUMMARY_EVERY {
            let repeats = entry.1;
            *entry = (Instant::now(), 0);
            drop(state);
            if repeats > 0 {
                tracing::error!(
                    repeats,
                    "librdkafka: {message} (and {repeats} more like it since the last report)"
                );
            } else {
                tracing::error!("librdkafka: {message}");
            }
        } else {
            entry.1 += 1;
        }
    }

    /// The broker took a batch or answered a metadata request: the streak is over.
    pub fn recovered(&self) {
        let mut state = self.state.lock().expect("lock");
        if let Some(failure) = state.failure.take() {
            tracing::info!(
                kind = ?failure.kind,
                errors = failure.count,
                lasted_ms = now_ms().saturating_sub(failure.since_ms),
                "the Kafka cluster answers again"
            );
        }
        state.logged.clear();
    }

    /// The current streak, if any.
    pub fn failure(&self) -> Option<BrokerFailure> {
        self.state.lock().expect("lock").failure.clone()
    }

    /// The current streak, once it has lasted `bound`.
    pub fn failing_longer_than(&self, bound: Duration) -> Option<BrokerFailure> {
        self.failure()
            .filter(|f| now_ms().saturating_sub(f.since_ms) >= bound.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn a_streak_keeps_its_start_and_the_reason_that_is_not_all_brokers_down() {
        let health = BrokerHealth::default();
        assert!(health.failure().is_none());
        health.error(
            &global(RDKafkaErrorCode::BrokerTransportFailure),
            "Connect to ipv4#127.0.0.1:1 failed: Connection refused",
        );
        let first = health.failure().unwrap();
        assert_eq!(first.kind, FailureKind::Connection);
        health.error(
            &global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        let later = health.failure().unwrap();
        assert_eq!(later.since_ms, first.since_ms);
        assert_eq!(later.count, 2);
        assert!(later.message.contains("Connection refused"), "{later:?}");
        assert!(health.failing_longer_than(Duration::ZERO).is_some());
        assert!(health
            .failing_longer_than(Duration::from_secs(60))
            .is_none());
        health.recovered();
        assert!(health.failure().is_none());
    }

    #[test]
    fn a_refused_token_is_an_authentication_failure_that_outranks_the_disconnects_after_it() {
        let health = BrokerHealth::default();
        health.error(
            &global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER",
        );
        health.error(
            &global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        let failure = health.failure().unwrap();
        assert_eq!(failure.kind, FailureKind::Authentication);
        assert!(failure.message.contains("invalid credentials"));
        // Errors that say nothing about reachability leave the state alone.
        health.recovered();
        health.error(&global(RDKafkaErrorCode::MessageTimedOut), "queue");
        assert!(health.failure().is_none());
    }
}
