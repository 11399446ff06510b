//! The outbox: it keeps records, a cursor, dead letters and counters, and knows nothing of
//! HTTP or Kafka. [`Store`] is the handle; everything it asks for is done by one committer thread.
//!
//! # Durability, told once
//! The committer takes every queued command at once (a commit group). An append is answered
//! only once its group's records are in the active segment file (the log, `segment.rs`) and
//! `fdatasync`ed. What sled holds about them (where each chunk of records is, de-duplication
//! entries, counters, and `log_end`: how far sled reflects the log) is applied to sled in memory
//! and made durable by a checkpoint (a sled flush followed by a real `fdatasync`, `durable.rs`):
//! before answering a group that confirms, parks, replays or purges, and otherwise at least every
//! `checkpoint_every` (`checkpointer.rs`). Opening the store restores from the log what the last
//! checkpoint had not reached (`recovery.rs`). A delivered record leaves the index only once its
//! confirmation is durable, and a failed write or sync stops all later writes.
//!
//! # Layout
//! The committer's loop, planning and upkeep: `committer/`. Reading for the relay: `read.rs`.
//! Opening and recovery, shared with `inspect`: `recovery.rs`. Disk space comes back through
//! generations (`generation.rs`). The key layout inside sled: `keys.rs`.

mod checkpointer;
pub mod chunk;
mod commands;
mod committer;
mod config;
pub mod dedup;
pub mod disk;
pub mod durable;
mod error;
mod fingerprint;
pub mod generation;
pub mod inspect;
pub mod instance;
pub mod keys;
mod live;
pub mod lock;
mod print_table;
mod read;
pub mod record;
mod recovery;
pub mod segment;
mod shared;
pub mod tenants;
mod writes;

pub use crate::message::{Message, MessageView};
pub use commands::Appended;
pub use config::{RotationStep, StoreConfig, TenantShare};
pub use error::StoreError;
pub use read::{ReadBatch, StoredRecord};
pub use record::{DeadLetter, Record, RecordError, RecordView};
pub use recovery::SCHEMA_VERSION;
pub use shared::{FlushObserver, Stats};

use commands::{Command, Prepared};
use committer::Committer;
use error::unavailable;
use generation::Generation;
use shared::Shared;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// A handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    committer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Held from before sled is opened until the committer has stopped.
    lock: Arc<Mutex<Option<lock::StoreLock>>>,
    dir: PathBuf,
    instance_id: Arc<str>,
}

/// A command queued to the committer, whose answer is still to come.
pub struct Queued<T>(Option<oneshot::Receiver<Result<T, StoreError>>>);

impl<T: Send + 'static> std::future::IntoFuture for Queued<T> {
    type Output = Result<T, StoreError>;
    type IntoFuture = futures::future::BoxFuture<'static, Result<T, StoreError>>;

    /// Waits for the committer's answer.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Some(answer) = self.0 else {
                return Err(StoreError::Unavailable("the store is closed".into()));
            };
            answer
                .await
                .map_err(|_| StoreError::Unavailable("the committer stopped".into()))?
        })
    }
}

impl Store {
    /// Opens (or creates) the store and starts its committer thread.
    /// Refused with [`StoreError::Locked`] while another process owns the directory.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let lock =
            lock::StoreLock::acquire(&config.dir).map_err(|e| StoreError::Locked(e.to_string()))?;
        let recovered = recovery::open(&config)?;
        let instance_id = instance::read_or_create(&config.dir)
            .map_err(|e| unavailable("read or create the instance id", e))?;
        let (committer, shared) = Committer::new(config.clone(), recovered);
        let (commands, receiver) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("outbox-committer".into())
            .spawn(move || committer.run(receiver))
            .map_err(|e| unavailable("start committer", e))?;
        Ok(Store {
            commands,
            shared,
            committer: Arc::new(Mutex::new(Some(handle))),
            lock: Arc::new(Mutex::new(Some(lock))),
            dir: config.dir,
            instance_id: instance_id.into(),
        })
    }

    /// The store's instance id ([`instance`]).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Appends records and returns once they are durable. All or nothing: a refused request
    /// stores none of its records. A record whose `source` + `id` pair is already stored
    /// (within the de-duplication window) is answered with the stored sequence number.
    pub async fn append(&self, events: Vec<Record>) -> Result<Vec<Appended>, StoreError> {
        let events = events.iter().map(Prepared::new).collect();
        self.command(|reply| Command::Append {
            events,
            queued: std::time::Instant::now(),
            reply,
        })
        .await
    }

    /// Removes delivered records and advances the cursor, in one durable step. The command
    /// is queued at the call, so the committer works on it while the caller goes on; the
    /// returned handle, awaited, tells when it is durable.
    pub fn confirm(&self, seqs: Vec<u64>) -> Queued<()> {
        self.command(|reply| Command::Confirm { seqs, reply })
    }

    /// Moves a record to the dead-letter table with the error that parked it.
    pub async fn park(&self, seq: u64, error: String) -> Result<(), StoreError> {
        self.command(|reply| Command::Park { seq, error, reply })
            .await
    }

    /// Puts a dead letter back at the end of the outbox under a new sequence number.
    pub async fn replay(&self, seq: u64) -> Result<u64, StoreError> {
        self.command(|reply| Command::Replay { seq, reply }).await
    }

    /// Deletes a dead letter.
    pub async fn purge(&self, seq: u64) -> Result<(), StoreError> {
        self.command(|reply| Command::Purge { seq, reply }).await
    }

    /// Checks the generations now: rotates a grown one, retires a drained one (otherwise done
    /// at most once a second after a commit).
    pub async fn maintain(&self) -> Result<(), StoreError> {
        self.command(|reply| Command::Maintain { reply }).await
    }

    /// Queues a command now; its answer comes through the returned handle.
    fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Queued<T> {
        let (reply, answer) = oneshot::channel();
        match self.commands.send(make(reply)) {
            Ok(()) => Queued(Some(answer)),
            Err(_) => Queued(None),
        }
    }

    /// Reads undelivered records in sequence order, starting at `from`, up to the limits
    /// (at least one record when any is there). `skip` leaves records out (paused topics,
    /// tenants waiting for a retry) without counting them.
    pub fn read_batch(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: u64,
        mut skip: impl FnMut(u64, &RecordView) -> bool,
    ) -> Result<ReadBatch, StoreError> {
        self.read_batch_with(from, max_events, max_bytes, |seq, record| {
            (!skip(seq, record)).then_some(())
        })
    }

    /// [`Store::read_batch`], where `prepare` sees each record while it is decoded and returns
    /// what the reader keeps of it (`None` leaves it out, as `skip` does), so that the reader
    /// decodes nothing twice.
    pub fn read_batch_with<T>(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: u64,
        prepare: impl FnMut(u64, &RecordView) -> Option<T>,
    ) -> Result<ReadBatch<T>, StoreError> {
        let scope = read::Scope::default();
        read::read_batch_with(
            &self.shared.index,
            from,
            max_events,
            max_bytes,
            scope,
            prepare,
        )
    }

    /// [`Store::read_batch_with`] for a fair drain: while several tenants hold more backlog
    /// than the batch takes, each gets its fair share of it ([`tenants::FairShare`]) first,
    /// taken in its own order; room the shares leave (they count records in flight too) is
    /// then filled in append order, each tenant going on where its share ended. `deferred`
    /// counts what the shares left out. Records in `exclude` (sorted: those in flight) are
    /// passed over uncounted. The records of a batch are in sequence order per tenant, not
    /// overall.
    pub fn read_fair_batch_with<T>(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: u64,
        exclude: &[u64],
        mut prepare: impl FnMut(u64, &RecordView) -> Option<T>,
    ) -> Result<ReadBatch<T>, StoreError> {
        let index = &self.shared.index;
        let share = (self.shared.tenants.lock().expect("tenants lock"))
            .fair_shares(max_events as u64, max_bytes);
        let scope = read::Scope { share, exclude };
        let mut batch =
            read::read_batch_with(index, from, max_events, max_bytes, scope, &mut prepare)?;
        let room = (
            max_events.saturating_sub(batch.records.len()),
            max_bytes.saturating_sub(batch.bytes),
        );
        if batch.deferred == 0 || room.0 == 0 || room.1 == 0 {
            return Ok(batch);
        }
        let mut taken: Vec<u64> = (batch.records.iter().map(|r| r.seq))
            .chain(exclude.iter().copied())
            .collect();
        taken.sort_unstable();
        let scope = read::Scope {
            share: None,
            exclude: &taken,
        };
        let more = read::read_batch_with(index, from, room.0, room.1, scope, prepare)?;
        // Mostly records the shares' pass saw already: a corrupt one is reported once, and a
        // skip counts as seen by either pass.
        for (seq, error) in more.corrupt {
            if !batch.corrupt.iter().any(|(s, _)| *s == seq) {
                batch.corrupt.push((seq, error));
            }
        }
        batch.skipped = batch.skipped.max(more.skipped);
        batch.bytes += more.bytes;
        batch.records.extend(more.records);
        batch.prepared.extend(more.prepared);
        Ok(batch)
    }

    /// The `n` tenants holding the most undelivered events, largest first (an empty tenant
    /// stands for the tenants beyond `store.max_tracked_tenants`).
    pub fn largest_tenants(&self, n: usize) -> Vec<tenants::TenantBacklog> {
        (self.shared.tenants.lock().expect("tenants lock")).largest(n)
    }

    /// How many tenants hold undelivered events (the untracked ones counting as one).
    pub fn tenants_with_backlog(&self) -> usize {
        (self.shared.tenants.lock().expect("tenants lock")).tenants()
    }

    fn active(&self) -> Arc<Generation> {
        self.shared
            .index
            .read()
            .expect("index lock")
            .active()
            .clone()
    }

    /// The time the oldest undelivered event entered the outbox.
    pub fn oldest_appended_ms(&self) -> Option<u64> {
        let index = self.shared.index.read().expect("index lock");
        index.chunks.values().next().map(|e| e.meta.appended_ms)
    }

    /// Dead letters in sequence order, starting at `from`, at most `limit`.
    pub fn dead_letters(&self, from: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.active()
            .dead()
            .range(keys::dead(from)..=keys::dead(u64::MAX))
            .take(limit)
            .map(|item| {
                let (_, value) = item.map_err(|e| unavailable("read", e))?;
                record::decode::<DeadLetter>(&value)
                    .map_err(|e| StoreError::Unavailable(format!("corrupt dead letter: {e}")))
            })
            .collect()
    }

    /// A single dead letter.
    pub fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, StoreError> {
        match self
            .active()
            .dead()
            .get(keys::dead(seq))
            .map_err(|e| unavailable("read", e))?
        {
            None => Ok(None),
            Some(value) => record::decode::<DeadLetter>(&value)
                .map(Some)
                .map_err(|e| StoreError::Unavailable(format!("corrupt dead letter: {e}"))),
        }
    }

    /// A single undelivered record.
    pub fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        let batch = self.read_batch(seq, 1, u64::MAX, |_, _| false)?;
        if let Some((_, error)) = batch.corrupt.iter().find(|(s, _)| *s == seq) {
            return Err(StoreError::Unavailable(format!("corrupt record: {error}")));
        }
        batch
            .records
            .iter()
            .find(|r| r.seq == seq)
            .map(|r| record::decode::<Record>(r.raw()))
            .transpose()
            .map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))
    }

    /// Counters as of the last commit.
    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().expect("stats lock")
    }

    /// Resolves after the next commit that appended events.
    pub async fn appended(&self) {
        self.shared.appended.notified().await
    }

    /// Registers a callback told the duration of every durable flush.
    pub fn set_flush_observer(&self, observer: FlushObserver) {
        *self.shared.flush_observer.lock().expect("lock") = Some(observer);
    }

    /// `None` while the store accepts writes, else why it does not.
    pub fn broken(&self) -> Option<String> {
        self.shared.is_broken().then(|| self.shared.broken_reason())
    }

    /// Bytes the store's files take on disk (all generations), measured now.
    pub fn disk_bytes(&self) -> u64 {
        generation::disk_usage(&self.dir)
    }

    /// [`Store::disk_bytes`] as measured at most 200 ms ago: for status and metrics, which may
    /// be asked many times a second.
    pub fn recent_disk_bytes(&self) -> u64 {
        self.shared.disk_usage(&self.dir)
    }

    /// The live generations, oldest first.
    pub fn generations(&self) -> Vec<u64> {
        let index = self.shared.index.read().expect("index lock");
        index.generations.iter().map(|g| g.id).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the committer after it has answered everything queued, and flushes.
    pub async fn close(&self) {
        let _ = self.command(|reply| Command::Stop { reply }).await;
        if let Some(handle) = self.committer.lock().expect("lock").take() {
            let _ = handle.join();
        }
        self.lock.lock().expect("lock").take();
    }
}

#[cfg(test)]
mod tests;
