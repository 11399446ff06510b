//! The single writer of the store. It takes every queued command at once (a commit group),
//! appends the group's new records to the active segment file (the log) and `fdatasync`s it,
//! then hands the rest to sled (where the new chunks are, chunk metadata, de-duplication
//! entries, dead letters, counters, `log_end`), and only then answers each command and updates
//! the shared index. A group that confirms, parks, replays or purges applies its sled writes,
//! with those of earlier appends still waiting, as one atomic batch and flushes and
//! `fdatasync`s sled before answering. Appends alone are durable in the log: their sled writes
//! are gathered (see [`super::writes`]) and applied as one batch at the first moment nothing is
//! queued once they are 10 ms old (after 50 ms while groups keep coming), made durable by the
//! checkpointer, and opening the store restores from the log what sled had not made durable.
//! Between groups it expires de-duplication entries, deletes delivered segment files and
//! rotates generations.
//! One writer also sidesteps sled's `flush_async` deadlock with many concurrent callers
//! (sled #1308).

use super::checkpointer::Checkpointer;
use super::chunk::{self, ChunkMeta};
use super::dedup::{self, fingerprint, DedupGroup, DedupIndex, Fingerprint};
use super::durable::Durability;
use super::generation::{self, Generation};
use super::record::{self, DeadLetter, Record};
use super::segment::{self, Location, SegmentWriter};
use super::writes::Writes;
use super::{
    keys, now_ms, Appended, ChunkEntry, Index, RotationStep, Shared, Stats, StoreConfig,
    StoreError, SCHEMA_VERSION,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A record made ready for the committer by the caller: encoded and fingerprinted on the
/// caller's thread, so that the one committer thread only orders and writes.
pub(super) struct Prepared {
    print: Fingerprint,
    appended_ms: u64,
    encoded: Vec<u8>,
}

impl Prepared {
    pub(super) fn new(record: &Record) -> Prepared {
        Prepared {
            print: fingerprint(&record.event_source, &record.event_id),
            appended_ms: record.appended_ms,
            encoded: record::encode(record),
        }
    }
}

/// A request to the committer.
pub(super) enum Command {
    Append {
        events: Vec<Prepared>,
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

/// The most commands in one commit group.
const MAX_GROUP: usize = 4096;
/// sled keeps what it wrote in memory: after this many bytes written, the committer reopens
/// the active generation (a pause of tens of milliseconds) so that memory follows what is read.
const REOPEN_AFTER_BYTES: u64 = 16 * 1024 * 1024;
/// How often the active generation's size is checked for rotation.
const ROTATION_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The sled writes of appends wait, gathered (see [`super::writes`]), until the committer has
/// nothing queued and they are this old...
const APPLY_IDLE: Duration = Duration::from_millis(10);
/// ...or, while commit groups keep coming, until they are this old.
const APPLY_EVERY: Duration = Duration::from_millis(50);

/// An answer waiting for the commit: called with the commit's outcome.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Answer {
    Box::new(move |commit| {
        let _ = reply.send(commit.and(result));
    })
}

/// A generation the committer writes to, with the files it syncs.
struct Live {
    generation: Arc<Generation>,
    durability: Durability,
    /// The segment file new records go to (the active generation only).
    writer: Option<SegmentWriter>,
}

impl Live {
    /// `writer`: whether records will be appended to it (it is the active generation).
    fn new(generation: Generation, durability: Durability, writer: bool) -> std::io::Result<Live> {
        let writer = match writer {
            true => Some(SegmentWriter::create(&generation.segments_dir())?),
            false => None,
        };
        Ok(Live {
            generation: Arc::new(generation),
            durability,
            writer,
        })
    }
}

pub(super) struct Committer {
    config: StoreConfig,
    active: Live,
    /// The previous generation while it still holds undelivered chunks.
    draining: Option<Live>,
    stats: Stats,
    shared: Arc<Shared>,
    dedup: DedupIndex,
    last_rotation_check: Instant,
    /// `maintain` callers waiting for the next generation check.
    maintain_requests: Vec<Reply<()>>,
    /// Bytes written to the active generation since it was opened.
    written_since_open: u64,
    /// sled writes of committed appends not yet applied to the active generation, and since
    /// when they wait.
    deferred: Writes,
    deferred_since: Option<Instant>,
}

/// What one commit group changes, built before anything is written.
#[derive(Default)]
struct Group {
    stats: Stats,
    active: Writes,
    draining: Writes,
    draining_touched: bool,
    /// Existing chunks changed in this group (delivered bits), by first sequence number.
    touched: BTreeMap<u64, ChunkEntry>,
    /// Encoded records appended in this group; the first has sequence number `pending_first`.
    pending: Vec<Vec<u8>>,
    pending_first: u64,
    /// The frames of the new records, to be appended to the active segment file.
    frames: Vec<u8>,
    /// De-duplication entries of this group, in order (persisted as they are) and by
    /// fingerprint; `appended_ms` is the earliest append time: the entries expire with it.
    new_dedup: DedupGroup,
    new_dedup_seq: HashMap<Fingerprint, u64>,
    dead_gone: HashSet<u64>,
    /// Dead letters parked in this group: applied to the dead-letter tree before the main
    /// tree's writes (a crash between leaves a letter whose record is also still undelivered:
    /// sent twice at worst, never lost).
    dead_inserts: Writes,
    /// Dead letters replayed or purged: applied after the main tree's writes (a replayed
    /// record is stored before its letter goes).
    dead_removes: Writes,
    /// Chunks written in this group (new or the extended tail).
    written: Vec<(u64, ChunkMeta, Location)>,
    bytes_in_group: u64,
    /// Free space on the volume and the store's disk use, read once per group.
    free_bytes: Option<u64>,
    disk_bytes: Option<u64>,
    /// Bytes of sled values written in this group.
    bytes_written: u64,
    /// sled must be durable before the answers (a confirmation, a dead letter): appends alone
    /// are durable in the segment file.
    checkpoint: bool,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

fn read_error(e: impl std::fmt::Display) -> StoreError {
    unavailable("read failed", e)
}

fn meta_u64(tree: &sled::Tree, name: &str) -> Result<u64, StoreError> {
    Ok(tree
        .get(keys::meta(name))
        .map_err(read_error)?
        .and_then(|v| keys::u64_value(&v))
        .unwrap_or(0))
}

impl Committer {
    /// Opens the store's generations, rebuilds the index and counters, and returns the committer
    /// with the state it shares with readers.
    pub(super) fn open(config: StoreConfig) -> Result<(Committer, Arc<Shared>), StoreError> {
        let root = config.dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| unavailable("create data dir", e))?;
        if root.join("db").exists() {
            return Err(StoreError::Unavailable(format!(
                "{} holds a store of the pre-release layout (schema 1, one sled database); \
                 drain it with the release that wrote it, or use a new data directory",
                root.display()
            )));
        }
        let ids =
            match generation::read_current(&root).map_err(|e| unavailable("read CURRENT", e))? {
                Some(ids) => ids,
                None => {
                    generation::remove_unlisted(&root, &[])
                        .map_err(|e| unavailable("clean data dir", e))?;
                    let (new, mut durability) = Generation::open(&root, 1, config.cache_bytes)
                        .map_err(|e| unavailable("create generation", e))?;
                    new.tree()
                        .insert(keys::meta("schema_version"), &SCHEMA_VERSION.to_be_bytes())
                        .map_err(read_error)?;
                    new.flush().map_err(read_error)?;
                    durability
                        .sync()
                        .map_err(|e| unavailable("fdatasync failed", e))?;
                    drop((new, durability));
                    generation::write_current(&root, &[1])
                        .map_err(|e| unavailable("write CURRENT", e))?;
                    vec![1]
                }
            };
        generation::remove_unlisted(&root, &ids).map_err(|e| unavailable("clean data dir", e))?;
        if let Some(id) = ids
            .iter()
            .find(|id| !generation::dir_of(&root, **id).exists())
        {
            // Opening it would create an empty database: an empty store is not the store.
            return Err(StoreError::Unavailable(format!(
                "generation {id} named in {}/CURRENT is missing; the data directory is damaged",
                root.display()
            )));
        }
        let mut lives = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let opened = Generation::open(&root, *id, config.cache_bytes).and_then(
                |(generation, durability)| Live::new(generation, durability, i + 1 == ids.len()),
            );
            lives.push(opened.map_err(|e| unavailable(&format!("open generation {id}"), e))?);
        }
        let mut active = lives.pop().expect("CURRENT names a generation");
        let draining = lives.pop();
        let moved = active
            .generation
            .move_dead_letters_out_of_the_main_tree()
            .map_err(|e| unavailable("move dead letters", e))?;
        if moved > 0 {
            active
                .durability
                .sync()
                .map_err(|e| unavailable("fdatasync failed", e))?;
            tracing::info!(moved, "moved dead letters into their own tree");
        }
        let active_generation = active.generation.clone();
        let tree = &active_generation.tree();
        let version = meta_u64(tree, "schema_version")?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "the store has schema version {version}, newer than this release's {SCHEMA_VERSION}"
            )));
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "{} holds a store of the pre-release schema {version} (records inside sled); \
                 drain it with the release that wrote it, or use a new data directory",
                root.display()
            )));
        }

        let mut index = Index::default();
        for live in draining.iter().chain([&active]) {
            load_chunks(&live.generation, &mut index.chunks)?;
            index.generations.push(live.generation.clone());
        }
        recover_log(&mut active, &mut index.chunks)?;
        let mut dedup = DedupIndex::default();
        let window = active_generation.window();
        for item in window.iter().chain(tree.scan_prefix([keys::DEDUP])) {
            let (key, value) = item.map_err(read_error)?;
            match dedup::decode_pack(&value) {
                Ok(groups) => {
                    for group in &groups {
                        dedup.insert_group(keys::seq_of(&key), group);
                    }
                }
                Err(e) => tracing::error!(
                    group = keys::seq_of(&key), error = %e,
                    "a de-duplication group is corrupt; its pairs are no longer recognised"
                ),
            }
        }
        let dead_tree = active_generation.dead();
        let mut stats = Stats {
            cursor: meta_u64(tree, "cursor")?,
            // Counted, not read: the dead-letter tree and the counter are written apart.
            dead_letters: dead_tree.len() as u64,
            ..Stats::default()
        };
        let mut last_seq = 0;
        for (first, entry) in &index.chunks {
            let (events, bytes) = entry.meta.undelivered();
            stats.backlog_events += events;
            stats.backlog_bytes += bytes;
            last_seq = last_seq.max(first + entry.meta.count() - 1);
        }
        if let Some(item) = dead_tree.iter().next_back() {
            last_seq = last_seq.max(keys::seq_of(&item.map_err(read_error)?.0));
        }
        stats.next_seq = meta_u64(tree, "next_seq")?.max(last_seq + 1).max(1);

        let shared = Arc::new(Shared {
            stats: Mutex::new(stats),
            index: RwLock::new(index),
            appended: Notify::new(),
            broken: Default::default(),
            unsynced: Default::default(),
            broken_reason: Mutex::new(None),
            flush_observer: Mutex::new(None),
            disk_usage: Mutex::new(None),
        });
        let committer = Committer {
            config,
            active,
            draining,
            stats,
            shared: shared.clone(),
            dedup,
            last_rotation_check: Instant::now(),
            maintain_requests: Vec::new(),
            written_since_open: 0,
            deferred: Writes::default(),
            deferred_since: None,
        };
        Ok((committer, shared))
    }

    pub(super) fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut checkpointer =
            match Checkpointer::start(self.shared.clone(), self.config.checkpoint_every) {
                Ok(checkpointer) => Some(checkpointer),
                Err(e) => {
                    // Appends still make sled durable whenever anything else is committed.
                    tracing::error!(error = %e, "starting the checkpoint thread failed");
                    None
                }
            };
        loop {
            let first = match self.deferred_since {
                None => match commands.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
                // Gathered sled writes wait. Applied while nothing is queued, they delay no one:
                // the first moment without commands once they are APPLY_IDLE old applies them
                // (groups that keep coming apply them at APPLY_EVERY, in `write_group`).
                Some(since) => match commands.try_recv() {
                    Ok(command) => command,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        match commands.recv_timeout(APPLY_IDLE.saturating_sub(since.elapsed())) {
                            Ok(command) => command,
                            Err(RecvTimeoutError::Timeout) => {
                                // A failure breaks the store; what was acknowledged is in the log.
                                if let Err(reason) = self.apply_deferred(false) {
                                    self.mark_broken(&reason);
                                }
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            };
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
            if !self.shared.broken.load(Ordering::SeqCst) {
                let forced = !self.maintain_requests.is_empty();
                self.maintain_generations(forced);
            }
            let outcome = match self.shared.broken.load(Ordering::SeqCst) {
                false => Ok(()),
                true => Err(StoreError::Unavailable(self.broken_reason())),
            };
            for reply in self.maintain_requests.drain(..) {
                let _ = reply.send(outcome.clone());
            }
        }
        if let Some(checkpointer) = &mut checkpointer {
            checkpointer.stop();
        }
        // The last checkpoint, whatever state the store is in (errors only mean that the next
        // open restores more from the log).
        let _ = self.apply_deferred(true);
    }

    /// Applies the gathered sled writes of appends to the active generation as one batch; with
    /// `durable`, flushes sled and syncs it (a checkpoint). Without, the checkpointer makes
    /// them durable.
    fn apply_deferred(&mut self, durable: bool) -> Result<(), String> {
        self.deferred_since = None;
        if self.deferred.is_empty() && !durable {
            return Ok(());
        }
        write_batch(
            &mut self.active,
            std::mem::take(&mut self.deferred),
            durable,
        )?;
        if !durable {
            self.shared.unsynced.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Commits one group; true when it held a stop command.
    fn commit(&mut self, commands: Vec<Command>) -> bool {
        let stop = commands.iter().any(|c| matches!(c, Command::Stop { .. }));
        let broken = self.shared.broken.load(Ordering::SeqCst);
        let mut group = Group {
            stats: self.stats,
            pending_first: self.stats.next_seq,
            ..Group::default()
        };
        if !broken {
            // Expire before looking anything up, so that the window is exact.
            if let Err(e) = self.sweep_dedup(&mut group) {
                tracing::warn!(error = %e, "sweeping expired de-duplication entries failed");
            }
        }
        let mut answers: Vec<Answer> = Vec::with_capacity(commands.len());
        for command in commands {
            if broken {
                answers.push(refuse(command, self.broken_reason()));
                continue;
            }
            group.checkpoint |= !matches!(command, Command::Append { .. });
            answers.push(match command {
                Command::Append { events, reply } => answer(reply, self.append(&mut group, events)),
                Command::Confirm { seqs, reply } => answer(reply, self.confirm(&mut group, &seqs)),
                Command::Park { seq, error, reply } => {
                    answer(reply, self.park(&mut group, seq, error))
                }
                Command::Replay { seq, reply } => answer(reply, self.replay(&mut group, seq)),
                Command::Purge { seq, reply } => answer(reply, self.purge(&mut group, seq)),
                Command::Maintain { reply } => {
                    // Answered once the check after this commit has run.
                    self.maintain_requests.push(reply);
                    Box::new(|_| ())
                }
                Command::Stop { reply } => answer(reply, Ok(())),
            });
        }
        if broken {
            for a in answers {
                a(Ok(()));
            }
            return stop;
        }
        let appended = !group.pending.is_empty();
        let outcome = self.write_group(&mut group);
        match outcome {
            Ok(flush_time) => {
                let observer = self.shared.flush_observer.lock().expect("lock").clone();
                if let Some(observe) = observer {
                    observe(flush_time);
                }
                self.written_since_open += group.bytes_written;
                self.publish(group);
                for a in answers {
                    a(Ok(()));
                }
                if appended {
                    self.shared.appended.notify_one();
                }
            }
            Err(reason) => {
                self.mark_broken(&reason);
                for a in answers {
                    a(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
        stop
    }

    fn mark_broken(&self, reason: &str) {
        self.shared.mark_broken(reason);
    }

    fn broken_reason(&self) -> String {
        self.shared
            .broken_reason
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| "the store is broken".into())
    }

    /// Turns the group into batches and makes them durable: the active generation first (new
    /// records, dead letters, counters), then the draining one (delivered bits). Returns the
    /// time spent flushing and syncing.
    fn write_group(&mut self, group: &mut Group) -> Result<Duration, String> {
        if !group.pending.is_empty() {
            self.roll_segment()
                .map_err(|e| format!("starting a segment file failed: {e}"))?;
        }
        self.build_chunks(group);
        for (first, entry) in &group.touched {
            let batch = if entry.generation.id == self.active.generation.id {
                &mut group.active
            } else {
                group.draining_touched = true;
                &mut group.draining
            };
            if entry.meta.undelivered().0 == 0 {
                batch.remove(&keys::chunk(*first));
                batch.remove(&keys::chunk_meta(*first));
            } else {
                let meta = record::encode(&entry.meta);
                group.bytes_written += meta.len() as u64;
                batch.insert(&keys::chunk_meta(*first), meta);
            }
        }
        if !group.new_dedup.entries.is_empty() {
            let pack = dedup::encode_pack(std::slice::from_ref(&group.new_dedup));
            group.bytes_written += pack.len() as u64;
            group
                .active
                .insert(&keys::dedup(group.new_dedup.first_seq()), pack);
        }
        let stats = group.stats;
        for (name, value) in [
            ("next_seq", stats.next_seq),
            ("cursor", stats.cursor),
            ("dead_letters", stats.dead_letters),
        ] {
            group.active.insert(keys::meta(name), &value.to_be_bytes());
        }
        let started = Instant::now();
        // The records first: the segment file is the log that makes an append durable.
        if !group.frames.is_empty() {
            let writer = self
                .active
                .writer
                .as_mut()
                .expect("the active generation has a writer");
            writer
                .append(&group.frames)
                .and_then(|_| writer.sync())
                .map_err(|e| format!("writing a segment file failed: {e}"))?;
        }
        // Appends alone are durable in the log: their sled writes wait, gathered with those of
        // the groups before, and the checkpointer makes them durable. A group that needs sled
        // durable applies them all with its own.
        self.deferred.absorb(std::mem::take(&mut group.active));
        let waiting = self.deferred_since.get_or_insert_with(Instant::now);
        if group.checkpoint {
            // One sled log for all trees, one flush: parked letters before, replayed or purged
            // ones after the main tree's writes, in the log's order.
            let dead = self.active.generation.dead();
            apply_to(&dead, std::mem::take(&mut group.dead_inserts))?;
            self.apply_deferred(false)?;
            let removed = !group.dead_removes.is_empty();
            apply_to(&dead, std::mem::take(&mut group.dead_removes))?;
            drop(dead);
            if removed && group.stats.dead_letters == 0 {
                self.active
                    .generation
                    .drop_dead_tree_if_empty()
                    .map_err(|e| format!("dropping the emptied dead-letter tree failed: {e}"))?;
            }
            self.apply_deferred(true)?;
        } else if waiting.elapsed() >= APPLY_EVERY {
            self.apply_deferred(false)?;
        }
        if group.draining_touched {
            if let Some(draining) = &mut self.draining {
                write_batch(draining, std::mem::take(&mut group.draining), true)?;
            }
        }
        Ok(started.elapsed())
    }

    /// Makes a committed group visible: counters, index, de-duplication entries.
    fn publish(&mut self, group: Group) {
        self.stats = group.stats;
        *self.shared.stats.lock().expect("stats lock") = group.stats;
        {
            let mut index = self.shared.index.write().expect("index lock");
            for (first, entry) in group.touched {
                if entry.meta.undelivered().0 == 0 {
                    index.chunks.remove(&first);
                } else {
                    index.chunks.insert(first, entry);
                }
            }
            for (first, meta, location) in group.written {
                index.chunks.insert(
                    first,
                    ChunkEntry {
                        generation: self.active.generation.clone(),
                        meta,
                        location,
                    },
                );
            }
        }
        if !group.new_dedup.entries.is_empty() {
            self.dedup
                .insert_group(group.new_dedup.first_seq(), &group.new_dedup);
        }
    }

    fn append(
        &self,
        group: &mut Group,
        events: Vec<Prepared>,
    ) -> Result<Vec<Appended>, StoreError> {
        // First decide, without changing anything, which events are new.
        let mut outcomes: Vec<Appended> = Vec::with_capacity(events.len());
        let mut fresh: Vec<(usize, Prepared)> = Vec::new();
        let mut first_in_request: HashMap<Fingerprint, usize> = HashMap::new();
        // Later copies of a pair new in this request -> the index of its first copy.
        let mut repeat_of: Vec<(usize, usize)> = Vec::new();
        let mut new_bytes = 0u64;
        for (i, event) in events.into_iter().enumerate() {
            let print = event.print;
            let known = group
                .new_dedup_seq
                .get(&print)
                .copied()
                .or_else(|| self.dedup.get(print));
            if let Some(seq) = known {
                outcomes.push(Appended {
                    seq,
                    duplicate: true,
                });
                continue;
            }
            if let Some(&first) = first_in_request.get(&print) {
                repeat_of.push((i, first));
                outcomes.push(Appended {
                    seq: 0,
                    duplicate: true,
                });
                continue;
            }
            new_bytes += event.encoded.len() as u64;
            first_in_request.insert(print, i);
            fresh.push((i, event));
            outcomes.push(Appended {
                seq: 0,
                duplicate: false,
            });
        }
        let new_events = fresh.len() as u64;
        if new_events > 0 {
            self.check_room(group, new_bytes)?;
        }
        if new_events > 0
            && (group.stats.backlog_events + new_events > self.config.max_backlog_events
                || group.stats.backlog_bytes + new_bytes > self.config.max_backlog_bytes)
        {
            return Err(StoreError::BacklogFull {
                events: group.stats.backlog_events,
                bytes: group.stats.backlog_bytes,
            });
        }
        for (i, event) in fresh {
            let print = event.print;
            let seq = self.push_record(group, event.encoded);
            let dedup = &mut group.new_dedup;
            dedup.appended_ms = match dedup.entries.is_empty() {
                true => event.appended_ms,
                false => dedup.appended_ms.min(event.appended_ms),
            };
            dedup.entries.push((print, seq));
            group.new_dedup_seq.insert(print, seq);
            outcomes[i].seq = seq;
        }
        group.bytes_in_group += new_bytes;
        // Repeats inside the request answer with the sequence number of their first copy.
        for (i, first) in repeat_of {
            outcomes[i].seq = outcomes[first].seq;
        }
        Ok(outcomes)
    }

    /// Refuses an append that would take the volume below its reserve or the store beyond its
    /// disk limit.
    fn check_room(&self, group: &mut Group, new_bytes: u64) -> Result<(), StoreError> {
        let free = match group.free_bytes {
            Some(free) => free,
            None => {
                let free = super::disk::free_bytes(&self.config.dir)
                    .map_err(|e| StoreError::Unavailable(format!("cannot read free space: {e}")))?;
                *group.free_bytes.insert(free)
            }
        };
        // Room for what this group writes, several times over (its records, then sled's log).
        let needed = 4 * (group.bytes_in_group + new_bytes);
        if free < self.config.min_free_bytes + needed {
            return Err(StoreError::DiskFull {
                free,
                reserve: self.config.min_free_bytes,
            });
        }
        if self.config.max_disk_bytes > 0 {
            let used = *group
                .disk_bytes
                .get_or_insert_with(|| self.shared.disk_usage(&self.config.dir));
            if used + needed > self.config.max_disk_bytes {
                return Err(StoreError::DiskLimit {
                    used,
                    limit: self.config.max_disk_bytes,
                });
            }
        }
        Ok(())
    }

    /// Gives an encoded record the next sequence number and queues it for this group's chunks.
    fn push_record(&self, group: &mut Group, encoded: Vec<u8>) -> u64 {
        let seq = group.stats.next_seq;
        group.stats.next_seq += 1;
        group.stats.backlog_events += 1;
        group.stats.backlog_bytes += encoded.len() as u64;
        group.pending.push(encoded);
        seq
    }

    /// The chunk holding `seq`, as changed so far in this group.
    fn chunk_of(&self, group: &mut Group, seq: u64) -> Option<u64> {
        if let Some((first, entry)) = group.touched.range(..=seq).next_back() {
            if first + entry.meta.count() > seq {
                return Some(*first);
            }
        }
        let index = self.shared.index.read().expect("index lock");
        let (first, entry) = index.chunks.range(..=seq).next_back()?;
        if first + entry.meta.count() <= seq {
            return None;
        }
        group.touched.insert(*first, entry.clone());
        Some(*first)
    }

    /// Marks `seq` delivered; returns its stored length if it was undelivered.
    fn take_record(&self, group: &mut Group, seq: u64) -> Option<u64> {
        let first = self.chunk_of(group, seq)?;
        let entry = group.touched.get_mut(&first).expect("just touched");
        let len = entry.meta.mark_delivered((seq - first) as usize)?;
        group.stats.backlog_events -= 1;
        group.stats.backlog_bytes = group.stats.backlog_bytes.saturating_sub(len);
        Some(len)
    }

    fn confirm(&self, group: &mut Group, seqs: &[u64]) -> Result<(), StoreError> {
        for &seq in seqs {
            if self.take_record(group, seq).is_some() {
                group.stats.cursor = group.stats.cursor.max(seq);
            }
        }
        Ok(())
    }

    /// The stored bytes of an undelivered record (empty when its frames cannot be read).
    fn raw_record(&self, group: &mut Group, seq: u64) -> Result<Vec<u8>, StoreError> {
        let first = self.chunk_of(group, seq).ok_or(StoreError::NotFound(seq))?;
        let entry = &group.touched[&first];
        let index = (seq - first) as usize;
        if entry.meta.is_delivered(index) {
            return Err(StoreError::NotFound(seq));
        }
        let frames = match entry.generation.segments.read(&entry.location) {
            Ok(frames) => frames,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Vec::new(),
            Err(e) => return Err(read_error(e)),
        };
        Ok(segment::records(&frames, &entry.meta.lengths)
            .swap_remove(index)
            .map(<[u8]>::to_vec)
            .unwrap_or_default())
    }

    fn park(&self, group: &mut Group, seq: u64, error: String) -> Result<(), StoreError> {
        let raw = self.raw_record(group, seq)?;
        self.take_record(group, seq);
        let already = self
            .active
            .generation
            .dead()
            .contains_key(keys::dead(seq))
            .map_err(read_error)?;
        let dead = DeadLetter {
            seq,
            raw,
            error,
            parked_ms: now_ms(),
        };
        group
            .dead_inserts
            .insert(&keys::dead(seq), record::encode(&dead));
        // A crash between the two generations' syncs can leave it parked and undelivered;
        // parking it again then replaces the letter instead of counting it twice.
        if !already {
            group.stats.dead_letters += 1;
        }
        Ok(())
    }

    fn dead_letter(&self, group: &Group, seq: u64) -> Result<DeadLetter, StoreError> {
        if group.dead_gone.contains(&seq) {
            return Err(StoreError::NotFound(seq));
        }
        let value = self
            .active
            .generation
            .dead()
            .get(keys::dead(seq))
            .map_err(read_error)?
            .ok_or(StoreError::NotFound(seq))?;
        record::decode::<DeadLetter>(&value)
            .map_err(|e| StoreError::Unavailable(format!("dead letter {seq} is corrupt: {e}")))
    }

    fn replay(&self, group: &mut Group, seq: u64) -> Result<u64, StoreError> {
        // Check before taking, so that a refused replay changes nothing.
        let dead = self.dead_letter(group, seq)?;
        record::decode::<Record>(&dead.raw).map_err(|e| {
            StoreError::Unavailable(format!(
                "dead letter {seq} holds a corrupt record ({e}); it can only be purged"
            ))
        })?;
        self.remove_dead(group, seq);
        Ok(self.push_record(group, dead.raw))
    }

    fn purge(&self, group: &mut Group, seq: u64) -> Result<(), StoreError> {
        if group.dead_gone.contains(&seq)
            || !self
                .active
                .generation
                .dead()
                .contains_key(keys::dead(seq))
                .map_err(read_error)?
        {
            return Err(StoreError::NotFound(seq));
        }
        self.remove_dead(group, seq);
        Ok(())
    }

    fn remove_dead(&self, group: &mut Group, seq: u64) {
        group.dead_removes.remove(&keys::dead(seq));
        group.dead_gone.insert(seq);
        group.stats.dead_letters = group.stats.dead_letters.saturating_sub(1);
    }

    /// Lays out the group's new records for the active segment file, in `group.frames`: a
    /// group header, then the records as frames, named in chunks of about
    /// [`chunk::CHUNK_TARGET_BYTES`]; `log_end` moves past them in the same sled batch.
    fn build_chunks(&self, group: &mut Group) {
        if group.pending.is_empty() {
            return;
        }
        let now = now_ms();
        let (segment, end) = self
            .active
            .writer
            .as_ref()
            .expect("the active generation has a writer")
            .position();
        let records = std::mem::take(&mut group.pending);
        let lengths: Vec<u32> = records.iter().map(|r| r.len() as u32).collect();
        segment::begin_group(&mut group.frames);
        for record in &records {
            segment::frame_into(&mut group.frames, record);
        }
        segment::seal_group(&mut group.frames, group.pending_first, lengths.len() as u32);
        let frames_at = end + segment::GROUP_HEADER;
        for cut in chunk::cut(group.pending_first, &lengths, segment, frames_at) {
            let meta = ChunkMeta::new(now, cut.lengths);
            put_chunk(group, cut.first_seq, meta, cut.location);
        }
        let log_end = (segment, end + group.frames.len() as u64);
        group
            .active
            .insert(keys::meta(keys::LOG_END), &keys::encode_log_end(log_end));
    }

    /// Forgets de-duplication groups older than the window, or beyond the entry limit, and
    /// deletes the packs left without a live group.
    fn sweep_dedup(&mut self, group: &mut Group) -> Result<(), StoreError> {
        let cutoff = now_ms().saturating_sub(self.config.dedup_window.as_millis() as u64);
        let expired = self.dedup.expire(cutoff, self.config.dedup_max_entries);
        if !expired.is_empty() {
            let window = self.active.generation.window();
            for pack in expired {
                group.active.remove(&keys::dedup(pack));
                // Made durable with the next flush; if a crash loses it, the expired entries
                // are read again and expire again.
                window.remove(keys::dedup(pack)).map_err(read_error)?;
            }
        }
        Ok(())
    }

    /// Starts a new segment file once the current one is full.
    fn roll_segment(&mut self) -> std::io::Result<()> {
        let writer = self
            .active
            .writer
            .as_mut()
            .expect("the active generation has a writer");
        if writer.position().1 >= self.config.segment_bytes {
            *writer = SegmentWriter::create(&self.active.generation.segments_dir())?;
        }
        Ok(())
    }

    /// Deletes the active generation's closed segment files that no undelivered chunk names.
    /// Chunks leave the index only after their delivery is durable in sled, so nothing
    /// durable names such a file either.
    fn drop_delivered_segments(&self) {
        let generation = &self.active.generation;
        let Some(writer) = &self.active.writer else {
            return;
        };
        let current = writer.position().0;
        let used: HashSet<u64> = {
            let index = self.shared.index.read().expect("index lock");
            index
                .chunks
                .values()
                .filter(|e| e.generation.id == generation.id)
                .map(|e| e.location.segment)
                .collect()
        };
        let Ok(ids) = segment::segment_ids(&generation.segments_dir()) else {
            return;
        };
        for id in ids
            .into_iter()
            .filter(|id| *id < current && !used.contains(id))
        {
            match generation.segments.remove(id) {
                Ok(()) => tracing::debug!(segment = id, "deleted a delivered segment file"),
                Err(e) => {
                    tracing::warn!(segment = id, error = %e, "deleting a segment file failed")
                }
            }
        }
    }

    /// Retires the draining generation once it is empty, and rotates the active one once its
    /// files have grown well beyond the data it holds.
    fn maintain_generations(&mut self, forced: bool) {
        if self.written_since_open > REOPEN_AFTER_BYTES {
            self.written_since_open = 0;
            let started = Instant::now();
            if let Err(reason) = self.apply_deferred(false) {
                self.mark_broken(&reason);
                return;
            }
            match self.active.generation.reopen() {
                Ok(durability) => {
                    self.active.durability = durability;
                    tracing::info!(
                        took_ms = started.elapsed().as_millis() as u64,
                        "reopened the active store generation to release sled's memory"
                    );
                }
                Err(e) => {
                    // Everything acknowledged is synced; without a database handle the
                    // process cannot serve, and a restart by its supervisor is the cure.
                    tracing::error!(error = %e, "reopening the store failed; exiting");
                    std::process::exit(70);
                }
            }
        }
        if let Some(draining) = &self.draining {
            let id = draining.generation.id;
            let still_used = {
                let index = self.shared.index.read().expect("index lock");
                index
                    .chunks
                    .values()
                    .next()
                    .is_some_and(|e| e.generation.id == id)
            };
            if !still_used {
                if let Err(e) = self.retire_draining() {
                    self.mark_broken(&format!("retiring store generation {id} failed: {e}"));
                }
            }
            return;
        }
        if !forced && self.last_rotation_check.elapsed() < ROTATION_CHECK_EVERY {
            return;
        }
        self.last_rotation_check = Instant::now();
        self.drop_delivered_segments();
        let size = self.active.generation.disk_bytes();
        if size > self.config.rotate_min_bytes
            && size > 2 * self.stats.backlog_bytes + self.config.rotate_min_bytes
        {
            if let Err(e) = self.rotate() {
                tracing::warn!(error = %e, "rotating the store generation failed; will retry");
            }
        }
    }

    fn observe(&self, step: RotationStep) {
        if let Some(observer) = &self.config.rotation_observer {
            (observer.0)(&self.config.dir, step);
        }
    }

    /// Starts a new generation holding the counters, dead letters and de-duplication groups;
    /// the current one keeps only its undelivered chunks and drains.
    fn rotate(&mut self) -> Result<(), String> {
        let root = self.config.dir.clone();
        let id = self.active.generation.id + 1;
        let started = Instant::now();
        // The old generation's log is not scanned again once it drains: make sled hold all of
        // it first.
        self.apply_deferred(true)?;
        let dir = generation::dir_of(&root, id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
        }
        let mut live = Generation::open(&root, id, self.config.cache_bytes)
            .and_then(|(new, durability)| Live::new(new, durability, true))
            .map_err(|e| e.to_string())?;
        let mut batch = Writes::default();
        for item in self.active.generation.tree().scan_prefix([keys::META]) {
            let (key, value) = item.map_err(|e| e.to_string())?;
            batch.insert(key, value);
        }
        // The dead letters go first; the main tree's durable batch below flushes them too.
        let mut dead = Writes::default();
        for item in self.active.generation.dead().iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            dead.insert(key, value);
        }
        apply_to(&live.generation.dead(), dead)?;
        let packs = self.repack_dedup(&live.generation.window())?;
        let log_start = live.writer.as_ref().map(SegmentWriter::position);
        batch.insert(
            keys::meta(keys::LOG_END),
            &keys::encode_log_end(log_start.unwrap_or_default()),
        );
        if let Err(e) = sync_batch(&mut live, batch) {
            drop(live);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.observe(RotationStep::NewGenerationWritten);
        let old = self.active.generation.id;
        if let Err(e) = generation::write_current(&root, &[old, id]) {
            // The rename may or may not have happened: only a restart knows which list holds.
            self.mark_broken(&format!("switching store generations failed: {e}"));
            return Err(e.to_string());
        }
        self.observe(RotationStep::Switched);
        self.shared
            .index
            .write()
            .expect("index lock")
            .generations
            .push(live.generation.clone());
        self.draining = Some(std::mem::replace(&mut self.active, live));
        self.dedup.repacked(&packs);
        tracing::info!(
            from = old,
            to = id,
            took_ms = started.elapsed().as_millis() as u64,
            "rotated the store to a new generation"
        );
        Ok(())
    }

    /// Copies the de-duplication groups into `window` (the new generation's window tree) as
    /// one pack (one sled blob file: a fresh generation then takes about the bytes it holds);
    /// returns each group's new pack key. The caller's durable batch makes it durable.
    fn repack_dedup(&self, window: &sled::Tree) -> Result<HashMap<u64, u64>, String> {
        let mut packs = HashMap::new();
        let mut pending: Vec<DedupGroup> = Vec::new();
        let old_window = self.active.generation.window();
        for item in old_window
            .iter()
            .chain(self.active.generation.tree().scan_prefix([keys::DEDUP]))
        {
            let (_, value) = item.map_err(|e| e.to_string())?;
            let Ok(groups) = dedup::decode_pack(&value) else {
                continue;
            };
            let live_from = self.dedup.live_from();
            pending.extend(groups.into_iter().filter(|g| g.first_seq() >= live_from));
        }
        pending.sort_by_key(DedupGroup::first_seq);
        if let Some(first) = pending.first() {
            let key = first.first_seq();
            for group in &pending {
                packs.insert(group.first_seq(), key);
            }
            window
                .insert(keys::dedup(key), dedup::encode_pack(&pending))
                .map_err(|e| e.to_string())?;
        }
        Ok(packs)
    }

    fn retire_draining(&mut self) -> std::io::Result<()> {
        let Some(draining) = self.draining.take() else {
            return Ok(());
        };
        let root = self.config.dir.clone();
        generation::write_current(&root, &[self.active.generation.id])?;
        self.observe(RotationStep::OldGenerationDropped);
        let id = draining.generation.id;
        let dir = draining.generation.dir.clone();
        self.shared
            .index
            .write()
            .expect("index lock")
            .generations
            .retain(|g| g.id != id);
        drop(draining);
        // CURRENT no longer names it: a directory left behind is removed on the next open.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                self.observe(RotationStep::OldGenerationRemoved);
                tracing::info!(generation = id, "removed a drained store generation");
            }
            Err(e) => {
                tracing::warn!(generation = id, error = %e, "removing a drained store generation failed")
            }
        }
        Ok(())
    }
}

/// Names a new chunk of the active generation: where its frames are, and its metadata.
fn put_chunk(group: &mut Group, first: u64, meta: ChunkMeta, location: Location) {
    group.bytes_written += name_chunk(&mut group.active, first, &meta, &location);
    group.written.push((first, meta, location));
}

/// Writes a chunk's location and metadata into `batch`; returns the bytes written.
fn name_chunk(batch: &mut Writes, first: u64, meta: &ChunkMeta, location: &Location) -> u64 {
    let meta_value = record::encode(meta);
    let location_value = location.encode();
    let bytes = (meta_value.len() + location_value.len()) as u64;
    batch.insert(&keys::chunk(first), &location_value);
    batch.insert(&keys::chunk_meta(first), meta_value);
    bytes
}

/// Applies a batch to a tree (not durable: a flush of its generation makes it so).
fn apply_to(tree: &sled::Tree, batch: Writes) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    tree.apply_batch(batch.into_batch())
        .map_err(|e| format!("write failed: {e}"))
}

/// Applies a batch to a generation and makes it durable.
fn sync_batch(live: &mut Live, batch: Writes) -> Result<(), String> {
    write_batch(live, batch, true)
}

/// Applies a batch to a generation; with `durable`, flushes sled and syncs its files.
fn write_batch(live: &mut Live, batch: Writes, durable: bool) -> Result<(), String> {
    {
        // One read guard for both calls: never take the generation's lock twice at once.
        let tree = live.generation.tree();
        tree.apply_batch(batch.into_batch())
            .map_err(|e| format!("write failed: {e}"))?;
        if !durable {
            return Ok(());
        }
        tree.flush().map_err(|e| format!("write failed: {e}"))?;
    }
    live.durability
        .sync()
        .map_err(|e| format!("fdatasync failed: {e}"))
}

/// Restores what was appended after sled's last checkpoint: scans the active generation's
/// segment files from `log_end`, names the groups found there in chunks, de-duplication entries
/// and counters, and makes that durable (a checkpoint) before the store serves.
fn recover_log(
    active: &mut Live,
    chunks: &mut BTreeMap<u64, ChunkEntry>,
) -> Result<(), StoreError> {
    let log_end = active
        .generation
        .tree()
        .get(keys::meta(keys::LOG_END))
        .map_err(read_error)?
        .and_then(|v| keys::decode_log_end(&v))
        .unwrap_or_default();
    let dir = active.generation.segments_dir();
    let (groups, torn) =
        segment::scan(&dir, log_end).map_err(|e| unavailable("read the segment files", e))?;
    if torn > 0 {
        tracing::warn!(
            bytes = torn,
            "the log ends in a group cut short by a crash (never acknowledged); ignored"
        );
    }
    let next_seq = meta_u64(&active.generation.tree(), "next_seq")?;
    let mut batch = Writes::default();
    let mut recovered = 0u64;
    let mut last_seq = 0;
    let now = now_ms();
    for group in groups {
        if group.first_seq < next_seq.max(1) && chunks.contains_key(&group.first_seq) {
            continue; // Already named in sled (a checkpoint raced the crash).
        }
        let records = segment::records(&group.bytes, &group.lengths);
        let mut dedup = DedupGroup::default();
        for (i, raw) in records.iter().enumerate() {
            // A record that does not decode is restored as it is: the relay quarantines it.
            if let Ok(record) = raw
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|raw| record::decode::<Record>(raw).map_err(|e| e.to_string()))
            {
                dedup.appended_ms = match dedup.entries.is_empty() {
                    true => record.appended_ms,
                    false => dedup.appended_ms.min(record.appended_ms),
                };
                dedup.entries.push((
                    fingerprint(&record.event_source, &record.event_id),
                    group.first_seq + i as u64,
                ));
            }
        }
        let appended_ms = match dedup.entries.is_empty() {
            true => now,
            false => dedup.appended_ms,
        };
        let frames = group.frames;
        for cut in chunk::cut(
            group.first_seq,
            &group.lengths,
            frames.segment,
            frames.offset,
        ) {
            let meta = ChunkMeta::new(appended_ms, cut.lengths);
            name_chunk(&mut batch, cut.first_seq, &meta, &cut.location);
            last_seq = cut.first_seq + meta.count() - 1;
            chunks.insert(
                cut.first_seq,
                ChunkEntry {
                    generation: active.generation.clone(),
                    meta,
                    location: cut.location,
                },
            );
        }
        if !dedup.entries.is_empty() {
            batch.insert(
                &keys::dedup(dedup.first_seq()),
                dedup::encode_pack(std::slice::from_ref(&dedup)),
            );
        }
        recovered += group.lengths.len() as u64;
    }
    if recovered > 0 {
        batch.insert(
            keys::meta("next_seq"),
            &(last_seq + 1).max(next_seq).to_be_bytes(),
        );
        tracing::info!(
            events = recovered,
            "restored events appended after the last checkpoint from the segment files"
        );
    }
    let start = active.writer.as_ref().map(SegmentWriter::position);
    batch.insert(
        keys::meta(keys::LOG_END),
        &keys::encode_log_end(start.unwrap_or_default()),
    );
    sync_batch(active, batch).map_err(StoreError::Unavailable)
}

/// Reads a generation's chunks (metadata and locations) into the index.
fn load_chunks(
    generation: &Arc<Generation>,
    chunks: &mut BTreeMap<u64, ChunkEntry>,
) -> Result<(), StoreError> {
    for item in generation.tree().scan_prefix([keys::CHUNK_META]) {
        let (key, value) = item.map_err(read_error)?;
        let first = keys::seq_of(&key);
        let location = generation
            .tree()
            .get(keys::chunk(first))
            .map_err(read_error)?
            .and_then(|v| Location::decode(&v));
        let location = location.unwrap_or_else(|| {
            // Its records cannot be found: the relay quarantines them as truncated.
            tracing::error!(chunk = first, "a chunk's location is missing or corrupt");
            Location {
                segment: 0,
                offset: 0,
                len: 0,
            }
        });
        let meta = match record::decode::<ChunkMeta>(&value) {
            Ok(meta) => meta,
            Err(e) => {
                // Rebuild what the frames tell; its records are delivered again at worst.
                tracing::error!(chunk = first, error = %e, "chunk metadata is corrupt; rebuilt from its frames");
                let lengths = generation
                    .segments
                    .read(&location)
                    .ok()
                    .and_then(|frames| segment::lengths_of(&frames).ok())
                    .filter(|lengths| !lengths.is_empty())
                    .unwrap_or_else(|| vec![0]);
                ChunkMeta::new(super::now_ms(), lengths)
            }
        };
        chunks.insert(
            first,
            ChunkEntry {
                generation: generation.clone(),
                meta,
                location,
            },
        );
    }
    Ok(())
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
        Command::Maintain { reply } | Command::Stop { reply } => answer(reply, Ok(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{copy_tree, record};

    /// A confirmation that comes while the sled writes of earlier appends still wait
    /// (gathered, not yet applied) makes them durable together with its own, in order: a crash
    /// right after it opens with the confirmed record gone and the others there. Driven group
    /// by group, without the run loop, so that no idle moment applies the writes in between.
    #[test]
    fn a_confirmation_applies_the_gathered_writes_before_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (mut committer, _shared) = Committer::open(StoreConfig::new(&data)).unwrap();
        let (reply, mut appended) = oneshot::channel();
        let events = ["1", "2", "3"]
            .iter()
            .map(|id| Prepared::new(&record("s", id, "t")))
            .collect();
        committer.commit(vec![Command::Append { events, reply }]);
        let seqs: Vec<u64> = appended
            .try_recv()
            .unwrap()
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(
            !committer.deferred.is_empty(),
            "the append's sled writes wait"
        );
        let (reply, mut confirmed) = oneshot::channel();
        committer.commit(vec![Command::Confirm {
            seqs: vec![2],
            reply,
        }]);
        confirmed.try_recv().unwrap().unwrap();
        assert!(committer.deferred.is_empty());

        // A crash now: the image holds what is on disk, and nothing more is written.
        let image = dir.path().join("crash");
        copy_tree(&data, &image);
        let store = super::super::Store::open(StoreConfig::new(&image)).unwrap();
        let batch = store.read_batch(0, 10, u64::MAX, |_, _| false).unwrap();
        let left: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        assert_eq!(left, vec![1, 3]);
        assert_eq!(store.stats().next_seq, 4);
    }
}
