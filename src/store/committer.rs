//! The single writer of the store. It takes every queued command at once (a commit group),
//! turns them into one atomic sled batch together with the updated counters, makes the batch
//! durable with one `flush` + `fdatasync`, and only then answers each command. One writer also
//! sidesteps sled's `flush_async` deadlock with many concurrent callers (sled #1308).

use super::durable::Durability;
use super::keys;
use super::record::{self, DeadLetter, Record};
use super::{now_ms, Appended, Shared, Stats, StoreConfig, StoreError, SCHEMA_VERSION};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the committer.
pub(super) enum Command {
    Append {
        events: Vec<Record>,
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
    Stop {
        reply: Reply<()>,
    },
}

/// The most commands in one commit group.
const MAX_GROUP: usize = 4096;
/// How often expired de-duplication entries are swept, and how many at most per sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_MAX: usize = 10_000;

/// An answer waiting for the commit: called with the commit's outcome.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Answer {
    Box::new(move |commit| {
        let _ = reply.send(commit.and(result));
    })
}

pub(super) struct Committer {
    db: sled::Db,
    tree: sled::Tree,
    durability: Durability,
    config: StoreConfig,
    stats: Stats,
    shared: Arc<Shared>,
    last_sweep: Instant,
}

/// Reads the persisted counters; sequence numbers are also checked against the stored keys.
pub(super) fn load_stats(tree: &sled::Tree) -> sled::Result<Stats> {
    let meta = |name: &str| -> sled::Result<u64> {
        Ok(tree
            .get(keys::meta(name))?
            .and_then(|v| keys::u64_value(&v))
            .unwrap_or(0))
    };
    let last_seq = |prefix: u8| -> sled::Result<u64> {
        Ok(tree
            .scan_prefix([prefix])
            .next_back()
            .transpose()?
            .map(|(k, _)| keys::seq_of(&k))
            .unwrap_or(0))
    };
    let next_seq = meta("next_seq")?
        .max(last_seq(keys::EVENT)? + 1)
        .max(last_seq(keys::DEAD)? + 1)
        .max(1);
    Ok(Stats {
        next_seq,
        cursor: meta("cursor")?,
        backlog_events: meta("backlog_events")?,
        backlog_bytes: meta("backlog_bytes")?,
        dead_letters: meta("dead_letters")?,
    })
}

/// What one commit group changes, built before anything is written.
struct Group<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    stats: Stats,
    /// De-duplication keys appended in this group.
    dedup: HashMap<Vec<u8>, u64>,
    /// `e` and `d` keys removed in this group.
    events_gone: HashSet<u64>,
    dead_gone: HashSet<u64>,
    appended: bool,
    /// Bytes of records appended in this group so far.
    bytes_in_group: u64,
}

impl Committer {
    pub(super) fn new(
        db: sled::Db,
        tree: sled::Tree,
        durability: Durability,
        config: StoreConfig,
        stats: Stats,
        shared: Arc<Shared>,
    ) -> Committer {
        Committer {
            db,
            tree,
            durability,
            config,
            stats,
            shared,
            last_sweep: Instant::now(),
        }
    }

    pub(super) fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            if self.commit(group) {
                break;
            }
        }
        let _ = self.db.flush();
        let _ = self.durability.sync();
    }

    /// Commits one group; true when it held a stop command.
    fn commit(&mut self, commands: Vec<Command>) -> bool {
        let stop = commands.iter().any(|c| matches!(c, Command::Stop { .. }));
        let mut group = Group {
            tree: &self.tree,
            batch: sled::Batch::default(),
            stats: self.stats,
            dedup: HashMap::new(),
            events_gone: HashSet::new(),
            dead_gone: HashSet::new(),
            appended: false,
            bytes_in_group: 0,
        };
        let mut answers: Vec<Answer> = Vec::with_capacity(commands.len());
        let broken = self.shared.broken.load(Ordering::SeqCst);
        for command in commands {
            if broken {
                answers.push(refuse(command, self.broken_reason()));
                continue;
            }
            answers.push(match command {
                Command::Append { events, reply } => {
                    answer(reply, group.append(events, &self.config))
                }
                Command::Confirm { seqs, reply } => answer(reply, group.confirm(&seqs)),
                Command::Park { seq, error, reply } => answer(reply, group.park(seq, error)),
                Command::Replay { seq, reply } => answer(reply, group.replay(seq)),
                Command::Purge { seq, reply } => answer(reply, group.purge(seq)),
                Command::Stop { reply } => answer(reply, Ok(())),
            });
        }
        if broken {
            for a in answers {
                a(Ok(()));
            }
            return stop;
        }
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            let cutoff = now_ms().saturating_sub(self.config.dedup_window.as_millis() as u64);
            if let Err(e) = group.sweep_dedup(cutoff) {
                tracing::warn!(error = %e, "sweeping expired de-duplication entries failed");
            }
        }
        let stats = group.stats;
        let appended = group.appended;
        let mut batch = group.batch;
        for (name, value) in [
            ("next_seq", stats.next_seq),
            ("cursor", stats.cursor),
            ("backlog_events", stats.backlog_events),
            ("backlog_bytes", stats.backlog_bytes),
            ("dead_letters", stats.dead_letters),
        ] {
            batch.insert(keys::meta(name), &value.to_be_bytes());
        }
        let flush_started = Instant::now();
        let outcome = self
            .tree
            .apply_batch(batch)
            .and_then(|_| self.db.flush().map(|_| ()))
            .map_err(|e| format!("write failed: {e}"))
            .and_then(|_| {
                self.durability
                    .sync()
                    .map_err(|e| format!("fdatasync failed: {e}"))
            });
        match outcome {
            Ok(()) => {
                let observer = self.shared.flush_observer.lock().expect("lock").clone();
                if let Some(observe) = observer {
                    observe(flush_started.elapsed());
                }
                self.stats = stats;
                *self.shared.stats.lock().expect("stats lock") = stats;
                for a in answers {
                    a(Ok(()));
                }
                if appended {
                    self.shared.appended.notify_one();
                }
            }
            Err(reason) => {
                // After a failed fsync the page cache cannot be trusted (the "fsyncgate"
                // lesson): refuse every later write instead of acknowledging on top of it.
                tracing::error!(%reason, "the store is no longer writable");
                *self.shared.broken_reason.lock().expect("lock") = Some(reason.clone());
                self.shared.broken.store(true, Ordering::SeqCst);
                for a in answers {
                    a(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
        stop
    }

    fn broken_reason(&self) -> String {
        self.shared
            .broken_reason
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| "the store is broken".into())
    }
}

fn refuse(command: Command, reason: String) -> Answer {
    fn err<T>(reason: &str) -> Result<T, StoreError> {
        Err(StoreError::Unavailable(reason.to_string()))
    }
    match command {
        Command::Append { reply, .. } => answer(reply, err(&reason)),
        Command::Confirm { reply, .. } => answer(reply, err(&reason)),
        Command::Park { reply, .. } => answer(reply, err(&reason)),
        Command::Replay { reply, .. } => answer(reply, err(&reason)),
        Command::Purge { reply, .. } => answer(reply, err(&reason)),
        Command::Stop { reply } => answer(reply, Ok(())),
    }
}

fn read_error(e: sled::Error) -> StoreError {
    StoreError::Unavailable(format!("read failed: {e}"))
}

/// Checks the schema version of an existing store, or writes it durably into a new one.
pub(super) fn init_schema(
    db: &sled::Db,
    tree: &sled::Tree,
    durability: &mut Durability,
) -> Result<(), StoreError> {
    let version = tree
        .get(keys::meta("schema_version"))
        .map_err(read_error)?
        .and_then(|v| keys::u64_value(&v));
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::Unavailable(format!(
            "the store has schema version {v}, newer than this release's {SCHEMA_VERSION}"
        ))),
        Some(_) => Ok(()),
        None => {
            tree.insert(keys::meta("schema_version"), &SCHEMA_VERSION.to_be_bytes())
                .map_err(read_error)?;
            db.flush().map_err(read_error)?;
            durability
                .sync()
                .map_err(|e| StoreError::Unavailable(format!("fdatasync failed: {e}")))
        }
    }
}

impl Group<'_> {
    fn append(
        &mut self,
        events: Vec<Record>,
        config: &StoreConfig,
    ) -> Result<Vec<Appended>, StoreError> {
        let cutoff = now_ms().saturating_sub(config.dedup_window.as_millis() as u64);
        // First decide, without changing anything, which events are new.
        let mut outcomes: Vec<Option<Appended>> = Vec::with_capacity(events.len());
        let mut fresh: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
        // First index of each new pair in this request, and later repeats -> that index.
        let mut first_in_request: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut repeat_of: HashMap<usize, usize> = HashMap::new();
        let mut new_bytes = 0u64;
        for (i, event) in events.iter().enumerate() {
            let dedup_key = keys::dedup(&event.event_source, &event.event_id);
            if let Some(seq) = self.dedup.get(&dedup_key) {
                outcomes.push(Some(Appended {
                    seq: *seq,
                    duplicate: true,
                }));
                continue;
            }
            if let Some(&first) = first_in_request.get(&dedup_key) {
                outcomes.push(None);
                repeat_of.insert(i, first);
                continue;
            }
            let stored = self
                .tree
                .get(&dedup_key)
                .map_err(read_error)?
                .and_then(|v| keys::parse_dedup_value(&v))
                .filter(|(_, appended_ms)| *appended_ms >= cutoff);
            if let Some((seq, _)) = stored {
                outcomes.push(Some(Appended {
                    seq,
                    duplicate: true,
                }));
                continue;
            }
            let encoded = record::encode(event);
            new_bytes += encoded.len() as u64;
            first_in_request.insert(dedup_key.clone(), i);
            fresh.push((i, dedup_key, encoded));
            outcomes.push(None);
        }
        let new_events = fresh.len() as u64;
        if new_events > 0 {
            let free = super::disk::free_bytes(&config.dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot read free space: {e}")))?;
            // Room for what this group writes, several times over: sled appends to a log.
            let needed = config.min_free_bytes + 4 * (self.bytes_in_group + new_bytes);
            if free < needed {
                return Err(StoreError::DiskFull {
                    free,
                    reserve: config.min_free_bytes,
                });
            }
        }
        if new_events > 0
            && (self.stats.backlog_events + new_events > config.max_backlog_events
                || self.stats.backlog_bytes + new_bytes > config.max_backlog_bytes)
        {
            return Err(StoreError::BacklogFull {
                events: self.stats.backlog_events,
                bytes: self.stats.backlog_bytes,
            });
        }
        let mut seq_of_index: HashMap<usize, u64> = HashMap::new();
        for (i, dedup_key, encoded) in fresh {
            let seq = self.stats.next_seq;
            self.stats.next_seq += 1;
            let appended_ms = events[i].appended_ms;
            self.batch.insert(&keys::event(seq), encoded);
            self.batch
                .insert(dedup_key.clone(), &keys::dedup_value(seq, appended_ms));
            self.batch
                .insert(&keys::dedup_expiry(appended_ms, seq), dedup_key.clone());
            self.dedup.insert(dedup_key, seq);
            seq_of_index.insert(i, seq);
            outcomes[i] = Some(Appended {
                seq,
                duplicate: false,
            });
        }
        self.stats.backlog_events += new_events;
        self.stats.backlog_bytes += new_bytes;
        self.bytes_in_group += new_bytes;
        self.appended |= new_events > 0;
        // Repeats inside the request answer with the sequence number of their first copy.
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                outcome.unwrap_or_else(|| Appended {
                    seq: seq_of_index[&repeat_of[&i]],
                    duplicate: true,
                })
            })
            .collect())
    }

    /// Removes the record `seq` from the backlog; returns its stored bytes, if it was there.
    fn take_event(&mut self, seq: u64) -> Result<Option<sled::IVec>, StoreError> {
        if self.events_gone.contains(&seq) {
            return Ok(None);
        }
        let Some(value) = self.tree.get(keys::event(seq)).map_err(read_error)? else {
            return Ok(None);
        };
        self.batch.remove(&keys::event(seq));
        self.events_gone.insert(seq);
        self.stats.backlog_events -= 1;
        self.stats.backlog_bytes = self.stats.backlog_bytes.saturating_sub(value.len() as u64);
        Ok(Some(value))
    }

    fn confirm(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        for &seq in seqs {
            if self.take_event(seq)?.is_some() {
                self.stats.cursor = self.stats.cursor.max(seq);
            }
        }
        Ok(())
    }

    fn park(&mut self, seq: u64, error: String) -> Result<(), StoreError> {
        let raw = self.take_event(seq)?.ok_or(StoreError::NotFound(seq))?;
        let dead = DeadLetter {
            seq,
            raw: raw.to_vec(),
            error,
            parked_ms: now_ms(),
        };
        self.batch.insert(&keys::dead(seq), record::encode(&dead));
        self.stats.dead_letters += 1;
        Ok(())
    }

    fn take_dead(&mut self, seq: u64) -> Result<DeadLetter, StoreError> {
        if self.dead_gone.contains(&seq) {
            return Err(StoreError::NotFound(seq));
        }
        let value = self
            .tree
            .get(keys::dead(seq))
            .map_err(read_error)?
            .ok_or(StoreError::NotFound(seq))?;
        let dead = record::decode::<DeadLetter>(&value)
            .map_err(|e| StoreError::Unavailable(format!("dead letter {seq} is corrupt: {e}")))?;
        self.batch.remove(&keys::dead(seq));
        self.dead_gone.insert(seq);
        self.stats.dead_letters = self.stats.dead_letters.saturating_sub(1);
        Ok(dead)
    }

    fn replay(&mut self, seq: u64) -> Result<u64, StoreError> {
        // Check before taking, so that a refused replay changes nothing.
        let dead = match self.tree.get(keys::dead(seq)).map_err(read_error)? {
            Some(value) if !self.dead_gone.contains(&seq) => record::decode::<DeadLetter>(&value)
                .map_err(|e| {
                StoreError::Unavailable(format!("dead letter {seq} is corrupt: {e}"))
            })?,
            _ => return Err(StoreError::NotFound(seq)),
        };
        record::decode::<Record>(&dead.raw).map_err(|e| {
            StoreError::Unavailable(format!(
                "dead letter {seq} holds a corrupt record ({e}); it can only be purged"
            ))
        })?;
        self.take_dead(seq)?;
        let new_seq = self.stats.next_seq;
        self.stats.next_seq += 1;
        self.batch.insert(&keys::event(new_seq), dead.raw.clone());
        self.stats.backlog_events += 1;
        self.stats.backlog_bytes += dead.raw.len() as u64;
        self.appended = true;
        Ok(new_seq)
    }

    fn purge(&mut self, seq: u64) -> Result<(), StoreError> {
        if self.dead_gone.contains(&seq)
            || !self
                .tree
                .contains_key(keys::dead(seq))
                .map_err(read_error)?
        {
            return Err(StoreError::NotFound(seq));
        }
        self.batch.remove(&keys::dead(seq));
        self.dead_gone.insert(seq);
        self.stats.dead_letters = self.stats.dead_letters.saturating_sub(1);
        Ok(())
    }

    /// Forgets de-duplication entries appended before `cutoff_ms`.
    fn sweep_dedup(&mut self, cutoff_ms: u64) -> sled::Result<()> {
        let range = keys::dedup_expiry(0, 0)..keys::dedup_expiry(cutoff_ms, 0);
        for item in self.tree.range(range).take(SWEEP_MAX) {
            let (expiry_key, dedup_key) = item?;
            let ms = u64::from_be_bytes(expiry_key[1..9].try_into().expect("8 bytes"));
            let seq = keys::seq_of(&expiry_key[8..]);
            self.batch.remove(expiry_key);
            // The entry may have been renewed since (same pair appended after expiry).
            let current = self
                .tree
                .get(&dedup_key)?
                .and_then(|v| keys::parse_dedup_value(&v));
            if current == Some((seq, ms)) && !self.dedup.contains_key(dedup_key.as_ref()) {
                self.batch.remove(dedup_key);
            }
        }
        Ok(())
    }
}
