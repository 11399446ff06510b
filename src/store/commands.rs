//! The requests the committer serves, as the [`super::Store`] handle queues them, and how each
//! one's answer waits for the commit of its group.

use super::error::StoreError;
use super::fingerprint::{fingerprint, Fingerprint};
use super::record::{self, Record};
use tokio::sync::oneshot;

/// The answer for one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Appended {
    pub seq: u64,
    /// The event was already stored (same `source` + `id` within the window).
    pub duplicate: bool,
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A record made ready for the committer by the caller: encoded and fingerprinted on the
/// caller's thread, so that the one committer thread only orders and writes.
pub(super) struct Prepared {
    pub print: Fingerprint,
    pub appended_ms: u64,
    /// The tenant key (the message key), for the backlog per tenant.
    pub tenant: String,
    pub encoded: Vec<u8>,
}

impl Prepared {
    pub(super) fn new(record: &Record) -> Prepared {
        Prepared {
            print: fingerprint(&record.event_source, &record.event_id),
            appended_ms: record.appended_ms,
            tenant: record.message.key.clone(),
            encoded: record::encode(record),
        }
    }
}

/// A request to the committer.
pub(super) enum Command {
    Append {
        events: Vec<Prepared>,
        /// When it was queued: a commit group waits for more appends counting from its oldest.
        queued: std::time::Instant,
        reply: Reply<Vec<Appended>>,
    },
    Confirm {
        seqs: Vec<u64>,
        reply: Reply<()>,
    },
    Park {
        seq: u64,
        error: String,
        reply: Reply<()>,
    },
    Replay {
        seq: u64,
        reply: Reply<u64>,
    },
    Purge {
        seq: u64,
        reply: Reply<()>,
    },
    /// Check the generations now (rotate or retire) instead of at the next second.
    Maintain {
        reply: Reply<()>,
    },
    Stop {
        reply: Reply<()>,
    },
}

impl Command {
    /// Whether sled must be durable before the answer (appends alone are durable in the log).
    pub(super) fn needs_checkpoint(&self) -> bool {
        !matches!(self, Command::Append { .. })
    }

    /// The answer of a command refused because the store is broken (`reason`).
    pub(super) fn refuse(self, reason: &str) -> Answer {
        fn err<T>(reason: &str) -> Result<T, StoreError> {
            Err(StoreError::Unavailable(reason.to_string()))
        }
        match self {
            Command::Append { reply, .. } => answer(reply, err(reason)),
            Command::Confirm { reply, .. } => answer(reply, err(reason)),
            Command::Park { reply, .. } => answer(reply, err(reason)),
            Command::Replay { reply, .. } => answer(reply, err(reason)),
            Command::Purge { reply, .. } => answer(reply, err(reason)),
            Command::Maintain { reply } | Command::Stop { reply } => answer(reply, Ok(())),
        }
    }
}

/// An answer waiting for the commit: called with the commit's outcome.
pub(super) type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The answer `result`, sent once the commit succeeded (else the commit's error).
pub(super) fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Answer {
    Box::new(move |commit| {
        let _ = reply.send(commit.and(result));
    })
}
