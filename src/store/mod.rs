//! The outbox. Appends go through one committer thread that groups concurrent requests, appends
//! their records to a segment file (the log) and fdatasyncs it, and only then answers (group
//! commit); where the records are (chunks) and the counters go to sled, made durable by a
//! checkpoint and restored from the log on open when a crash came first. Reads for the relay go
//! straight to the segment files, guided by the in-memory chunk index. The store lives in
//! generations (separate sled databases) so that disk space comes back after a drain. The store
//! knows nothing of HTTP or Kafka: it keeps records, a cursor, dead letters and counters.

mod checkpointer;
pub mod chunk;
mod committer;
pub mod dedup;
pub mod disk;
pub mod durable;
pub mod generation;
pub mod inspect;
pub mod keys;
pub mod lock;
mod print_table;
pub mod record;
pub mod segment;
mod writes;

pub use record::{DeadLetter, MessageView, Record, RecordError, RecordView};

use chunk::ChunkMeta;
use committer::{Command, Committer, Prepared};
use generation::Generation;
use segment::Location;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// The schema version written into new stores (3: records in segment files, chunks of them
/// named in sled, generations).
pub const SCHEMA_VERSION: u64 = 3;

/// How the store is opened and bounded.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// sled's page cache, in bytes (sled's own default is 1 GiB, too much for a sidecar).
    pub cache_bytes: u64,
    /// Appends beyond this many undelivered events are refused (503).
    pub max_backlog_events: u64,
    /// Appends beyond this many undelivered bytes are refused (503).
    pub max_backlog_bytes: u64,
    /// How long a `source` + `id` pair is remembered for idempotent appends.
    pub dedup_window: Duration,
    /// Appends are refused while the volume has less free space than this.
    pub min_free_bytes: u64,
    /// Appends are refused while the store's files take more than this (0: no limit).
    pub max_disk_bytes: u64,
    /// At most this many `source` + `id` pairs are remembered (oldest forgotten first).
    pub dedup_max_entries: usize,
    /// The active generation is rotated once its files exceed this and twice the backlog.
    pub rotate_min_bytes: u64,
    /// A new segment file is started once the current one holds this much, so that files whose
    /// records are all delivered can be deleted while the generation lives on.
    pub segment_bytes: u64,
    /// sled is made durable at least this often while only appends come in; appends are
    /// durable in the segment files regardless, and restored from there on open.
    pub checkpoint_every: Duration,
    /// Called at each step of a rotation (tests copy the directory there to get crash images).
    pub rotation_observer: Option<RotationObserver>,
}

/// The steps of a generation rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// The new generation holds the copied state; `CURRENT` does not name it yet.
    NewGenerationWritten,
    /// `CURRENT` names both generations.
    Switched,
    /// The draining generation's last chunk is delivered; `CURRENT` names only the new one.
    OldGenerationDropped,
    /// The old generation's directory is gone.
    OldGenerationRemoved,
}

/// A callback told each rotation step with the store's directory.
#[derive(Clone)]
pub struct RotationObserver(pub Arc<RotationCallback>);

pub type RotationCallback = dyn Fn(&Path, RotationStep) + Send + Sync;

impl std::fmt::Debug for RotationObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotationObserver")
    }
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            cache_bytes: 4 * 1024 * 1024,
            max_backlog_events: 1_000_000,
            max_backlog_bytes: 1024 * 1024 * 1024,
            dedup_window: Duration::from_secs(24 * 3600),
            min_free_bytes: 64 * 1024 * 1024,
            max_disk_bytes: 0,
            dedup_max_entries: 1_000_000,
            rotate_min_bytes: 64 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            checkpoint_every: Duration::from_millis(200),
            rotation_observer: None,
        }
    }
}

/// Counters of the store, as of the last commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// The sequence number the next appended event gets.
    pub next_seq: u64,
    /// The highest sequence number confirmed delivered (0: none yet).
    pub cursor: u64,
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    pub dead_letters: u64,
}

/// The answer for one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Appended {
    pub seq: u64,
    /// The event was already stored (same `source` + `id` within the window).
    pub duplicate: bool,
}

/// Why the store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("backlog limit reached ({events} events, {bytes} bytes stored); retry later")]
    BacklogFull { events: u64, bytes: u64 },
    #[error("the data volume is nearly full ({free} bytes free, {reserve} kept in reserve); retry later")]
    DiskFull { free: u64, reserve: u64 },
    #[error("the store's files take {used} bytes, at the limit of {limit} (store.max_disk_bytes); retry later")]
    DiskLimit { used: u64, limit: u64 },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("no record with sequence number {0}")]
    NotFound(u64),
    /// Another process owns the data directory (see [`lock`]): what the lock said.
    #[error("{0}")]
    Locked(String),
}

/// A batch read for the relay.
#[derive(Debug)]
pub struct ReadBatch<T = ()> {
    pub records: Vec<StoredRecord>,
    /// What the reader's `prepare` made of each record, in the same order.
    pub prepared: Vec<T>,
    /// Records that failed to decode: to be quarantined, never delivered.
    pub corrupt: Vec<(u64, RecordError)>,
    /// Stored bytes of the records read.
    pub bytes: u64,
    /// Records `skip` left out (paused topics, held tenants).
    pub skipped: u64,
}

impl<T> Default for ReadBatch<T> {
    fn default() -> Self {
        ReadBatch {
            records: Vec::new(),
            prepared: Vec::new(),
            corrupt: Vec::new(),
            bytes: 0,
            skipped: 0,
        }
    }
}

/// One record of a [`ReadBatch`]: its sequence number and its stored bytes, checked when read
/// and shared with the other records of its chunk. [`StoredRecord::view`] reads it in place;
/// what the relay looks at for every record (topic, key, value, age, size) is kept at hand.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    /// When the sidecar accepted the event (ms since the epoch).
    pub appended_ms: u64,
    /// The message's size as [`MessageView::size`] counts it.
    pub size: u64,
    chunk: bytes::Bytes,
    range: std::ops::Range<usize>,
    topic: std::ops::Range<usize>,
    key: std::ops::Range<usize>,
    payload: std::ops::Range<usize>,
}

impl StoredRecord {
    fn new(seq: u64, chunk: &bytes::Bytes, view: &RecordView, raw: &[u8]) -> StoredRecord {
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - chunk.as_ptr() as usize;
            start..start + part.len()
        };
        StoredRecord {
            seq,
            appended_ms: view.appended_ms,
            size: view.message.size() as u64,
            chunk: chunk.clone(),
            range: at(raw),
            topic: at(view.message.topic.as_bytes()),
            key: at(view.message.key.as_bytes()),
            payload: at(view.message.payload),
        }
    }

    pub fn topic(&self) -> &str {
        std::str::from_utf8(&self.chunk[self.topic.clone()]).expect("checked when read")
    }

    pub fn key(&self) -> &str {
        std::str::from_utf8(&self.chunk[self.key.clone()]).expect("checked when read")
    }

    /// The message's value.
    pub fn payload(&self) -> &[u8] {
        &self.chunk[self.payload.clone()]
    }

    /// The record, borrowing from the stored bytes.
    pub fn view(&self) -> RecordView<'_> {
        record::decode_accepted(self.raw()).expect("checked and decoded when it was read")
    }

    /// The stored bytes (format version, checksum, body).
    pub fn raw(&self) -> &[u8] {
        &self.chunk[self.range.clone()]
    }
}

/// An undelivered chunk, as the index knows it.
#[derive(Clone)]
pub(crate) struct ChunkEntry {
    pub generation: Arc<Generation>,
    pub meta: ChunkMeta,
    pub location: Location,
}

/// Where every undelivered chunk is; written by the committer after each commit.
#[derive(Default)]
pub(crate) struct Index {
    /// By first sequence number.
    pub chunks: BTreeMap<u64, ChunkEntry>,
    /// The live generations, oldest first; the last one is active.
    pub generations: Vec<Arc<Generation>>,
}

impl Index {
    /// The chunk holding `seq`, or else the first one after it.
    fn chunk_from(&self, seq: u64) -> Option<(u64, &ChunkEntry)> {
        self.chunks
            .range(..=seq)
            .next_back()
            .filter(|(first, entry)| **first + entry.meta.count() > seq)
            .or_else(|| self.chunks.range(seq..).next())
            .map(|(first, entry)| (*first, entry))
    }

    fn active(&self) -> &Arc<Generation> {
        self.generations.last().expect("a store has a generation")
    }
}

struct Shared {
    stats: Mutex<Stats>,
    index: RwLock<Index>,
    /// Signalled after each commit that appended events.
    appended: Notify,
    /// Set when a write or sync failed: from then on the store refuses writes.
    broken: AtomicBool,
    /// sled holds changes not yet made durable (appends: they are durable in the log).
    unsynced: AtomicBool,
    broken_reason: Mutex<Option<String>>,
    /// Told how long each commit group's flush + fdatasync took.
    flush_observer: Mutex<Option<FlushObserver>>,
    /// The last measurement of the store's disk use, and when it was taken.
    disk_usage: Mutex<Option<(std::time::Instant, u64)>>,
}

/// How old a measurement of the store's disk use may be (for `store.max_disk_bytes`, status
/// and metrics): measuring walks the data directory.
const DISK_USAGE_EVERY: Duration = Duration::from_millis(200);

impl Shared {
    /// After a failed write or fsync the page cache cannot be trusted (the "fsyncgate"
    /// lesson): refuse every later write instead of acknowledging on top of it.
    fn mark_broken(&self, reason: &str) {
        tracing::error!(%reason, "the store is no longer writable");
        *self.broken_reason.lock().expect("lock") = Some(reason.to_string());
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Bytes the store's files take on disk, measured at most every [`DISK_USAGE_EVERY`].
    fn disk_usage(&self, dir: &Path) -> u64 {
        let mut last = self.disk_usage.lock().expect("disk usage lock");
        match *last {
            Some((at, used)) if at.elapsed() < DISK_USAGE_EVERY => used,
            _ => {
                let used = generation::disk_usage(dir);
                *last = Some((std::time::Instant::now(), used));
                used
            }
        }
    }
}

/// A callback for the duration of each durable flush (for metrics).
pub type FlushObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// A handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    committer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Held from before sled is opened until the committer has stopped.
    lock: Arc<Mutex<Option<lock::StoreLock>>>,
    dir: PathBuf,
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
        let (committer, shared) = Committer::open(config.clone())?;
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
        })
    }

    /// Appends records and returns once they are durable. All or nothing: a refused request
    /// stores none of its records. A record whose `source` + `id` pair is already stored
    /// (within the de-duplication window) is answered with the stored sequence number.
    pub async fn append(&self, events: Vec<Record>) -> Result<Vec<Appended>, StoreError> {
        let events = events.iter().map(Prepared::new).collect();
        self.command(|reply| Command::Append { events, reply })
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
        mut prepare: impl FnMut(u64, &RecordView) -> Option<T>,
    ) -> Result<ReadBatch<T>, StoreError> {
        let mut batch = ReadBatch::default();
        let mut position = from;
        loop {
            let Some((first, entry)) = self.chunk_from(position) else {
                break;
            };
            // A chunk can grow between two index reads: never go back before `start`.
            let start = position;
            position = first + entry.meta.count();
            let undelivered = (0..entry.meta.lengths.len())
                .filter(|i| !entry.meta.is_delivered(*i))
                .map(|i| (i, first + i as u64))
                .filter(|(_, seq)| *seq >= start);
            // Delivered since the index was read.
            if !self.is_indexed(first) {
                continue;
            }
            let frames = match entry.generation.segments.read(&entry.location) {
                // Shared by the chunk's records without a copy.
                Ok(frames) => bytes::Bytes::from(frames),
                // Delivered (and its generation retired) since the check above.
                Err(_) if !self.is_indexed(first) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    let error = RecordError::Truncated(0);
                    batch
                        .corrupt
                        .extend(undelivered.map(|(_, seq)| (seq, error.clone())));
                    continue;
                }
                Err(e) => return Err(unavailable("read", e)),
            };
            let records = segment::records(&frames, &entry.meta.lengths);
            for (i, seq) in undelivered {
                let raw = match &records[i] {
                    Ok(raw) => *raw,
                    Err(error) => {
                        batch.corrupt.push((seq, error.clone()));
                        continue;
                    }
                };
                match record::decode_in_place::<RecordView>(raw) {
                    Ok(view) => {
                        let Some(prepared) = prepare(seq, &view) else {
                            batch.skipped += 1;
                            continue;
                        };
                        let size = raw.len() as u64;
                        if !batch.records.is_empty()
                            && (batch.records.len() >= max_events || batch.bytes + size > max_bytes)
                        {
                            return Ok(batch);
                        }
                        batch.bytes += size;
                        batch
                            .records
                            .push(StoredRecord::new(seq, &frames, &view, raw));
                        batch.prepared.push(prepared);
                    }
                    Err(error) => batch.corrupt.push((seq, error)),
                }
            }
        }
        Ok(batch)
    }

    fn is_indexed(&self, first: u64) -> bool {
        let index = self.shared.index.read().expect("index lock");
        index.chunks.contains_key(&first)
    }

    fn chunk_from(&self, seq: u64) -> Option<(u64, ChunkEntry)> {
        let index = self.shared.index.read().expect("index lock");
        index
            .chunk_from(seq)
            .map(|(first, entry)| (first, entry.clone()))
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
        if self.shared.broken.load(Ordering::SeqCst) {
            self.shared.broken_reason.lock().expect("lock").clone()
        } else {
            None
        }
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

fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
