//! What the committer publishes after each commit and every reader reads: the counters, the
//! index of undelivered chunks and the generations, the backlog per tenant, and whether the
//! store is still writable.

use super::chunk::ChunkMeta;
use super::generation::{self, Generation};
use super::segment::Location;
use super::tenants::{Account, Ledger};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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

/// An undelivered chunk, as the index knows it.
#[derive(Clone)]
pub(crate) struct ChunkEntry {
    pub generation: Arc<Generation>,
    pub meta: ChunkMeta,
    pub location: Location,
    /// The tenant account of each record ([`super::tenants`]).
    pub accounts: Arc<[Account]>,
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
    pub fn chunk_from(&self, seq: u64) -> Option<(u64, &ChunkEntry)> {
        self.chunks
            .range(..=seq)
            .next_back()
            .filter(|(first, entry)| **first + entry.meta.count() > seq)
            .or_else(|| self.chunks.range(seq..).next())
            .map(|(first, entry)| (*first, entry))
    }

    pub fn active(&self) -> &Arc<Generation> {
        self.generations.last().expect("a store has a generation")
    }
}

/// A callback for the duration of each durable flush (for metrics).
pub type FlushObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// How old a measurement of the store's disk use may be (for `store.max_disk_bytes`, status
/// and metrics): measuring walks the data directory.
const DISK_USAGE_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct Shared {
    pub stats: Mutex<Stats>,
    pub index: RwLock<Index>,
    /// The backlog per tenant; changed by the committer as it plans each group.
    pub tenants: Mutex<Ledger>,
    /// Signalled after each commit that appended events.
    pub appended: Notify,
    /// Set when a write or sync failed: from then on the store refuses writes.
    pub broken: AtomicBool,
    /// sled holds changes not yet made durable (appends: they are durable in the log).
    pub unsynced: AtomicBool,
    pub broken_reason: Mutex<Option<String>>,
    /// Told how long each commit group's flush + fdatasync took.
    pub flush_observer: Mutex<Option<FlushObserver>>,
    /// The last measurement of the store's disk use, and when it was taken.
    disk_usage: Mutex<Option<(Instant, u64)>>,
}

impl Shared {
    pub fn new(stats: Stats, index: Index, tenants: Ledger) -> Shared {
        Shared {
            stats: Mutex::new(stats),
            index: RwLock::new(index),
            tenants: Mutex::new(tenants),
            appended: Notify::new(),
            broken: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
            broken_reason: Mutex::new(None),
            flush_observer: Mutex::new(None),
            disk_usage: Mutex::new(None),
        }
    }

    /// After a failed write or fsync the page cache cannot be trusted (the "fsyncgate"
    /// lesson): refuse every later write instead of acknowledging on top of it.
    pub fn mark_broken(&self, reason: &str) {
        tracing::error!(%reason, "the store is no longer writable");
        *self.broken_reason.lock().expect("lock") = Some(reason.to_string());
        self.broken.store(true, Ordering::SeqCst);
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Why the store is broken.
    pub fn broken_reason(&self) -> String {
        self.broken_reason
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| "the store is broken".into())
    }

    /// Bytes the store's files take on disk, measured at most every [`DISK_USAGE_EVERY`].
    pub fn disk_usage(&self, dir: &Path) -> u64 {
        let mut last = self.disk_usage.lock().expect("disk usage lock");
        match *last {
            Some((at, used)) if at.elapsed() < DISK_USAGE_EVERY => used,
            _ => {
                let used = generation::disk_usage(dir);
                *last = Some((Instant::now(), used));
                used
            }
        }
    }
}
