//! The relay's read path: undelivered records in sequence order, read straight from the
//! segment files that the in-memory index names, checked and decoded in place; in a fair read,
//! each tenant held to its share of the batch (chunks holding only tenants that have had
//! their share are passed over unread).

use super::error::unavailable;
use super::error::StoreError;
use super::record::{self, RecordError, RecordView};
use super::segment;
use super::shared::{ChunkEntry, Index};
use super::tenants::{FairShare, Taken, OTHERS};
use std::sync::RwLock;

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
    /// Records a fair read left for a later batch: their tenant had its share of this one.
    pub deferred: u64,
}

impl<T> Default for ReadBatch<T> {
    fn default() -> Self {
        ReadBatch {
            records: Vec::new(),
            prepared: Vec::new(),
            corrupt: Vec::new(),
            bytes: 0,
            skipped: 0,
            deferred: 0,
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
    /// The message's size as [`crate::message::MessageView::size`] counts it.
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
        self.text(&self.topic)
    }

    pub fn key(&self) -> &str {
        self.text(&self.key)
    }

    /// A string of the record checked when it was read (the relay asks for topics and keys
    /// several times per record; checking them each time was 7 % of its CPU).
    fn text(&self, range: &std::ops::Range<usize>) -> &str {
        let bytes = &self.chunk[range.clone()];
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: `range` is where a `&str` of the decoded record lay in `chunk` (see `new`),
        // and `chunk` is immutable: the bytes are the same valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
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

/// What a read leaves out besides what `prepare` refuses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scope<'a> {
    /// Each tenant's share of the batch (a fair read), if any.
    pub share: Option<FairShare>,
    /// Sequence numbers to pass over uncounted (sorted): records already in flight.
    pub exclude: &'a [u64],
}

/// Reads undelivered records in sequence order from `from`, up to the limits (at least one
/// record when any is there), within `scope`. `prepare` sees each record while it is decoded
/// and returns what the reader keeps of it (`None` leaves it out), so that the reader decodes
/// nothing twice.
pub(super) fn read_batch_with<T>(
    index: &RwLock<Index>,
    from: u64,
    max_events: usize,
    max_bytes: u64,
    scope: Scope,
    mut prepare: impl FnMut(u64, &RecordView) -> Option<T>,
) -> Result<ReadBatch<T>, StoreError> {
    let mut batch = ReadBatch::default();
    let mut taken = Taken::default();
    let excluded = |seq: u64| scope.exclude.binary_search(&seq).is_ok();
    let mut position = from;
    loop {
        let Some((first, entry)) = chunk_from(index, position) else {
            break;
        };
        // A chunk can grow between two index reads: never go back before `start`.
        let start = position;
        position = first + entry.meta.count();
        let undelivered = (0..entry.meta.lengths.len())
            .filter(|i| !entry.meta.is_delivered(*i))
            .map(|i| (i, first + i as u64))
            .filter(|(_, seq)| *seq >= start && !excluded(*seq));
        // Delivered since the index was read.
        if !is_indexed(index, first) {
            continue;
        }
        if undelivered.clone().next().is_none() {
            continue;
        }
        let account = |i: usize| entry.accounts.get(i).copied().unwrap_or(OTHERS);
        if let Some(share) = &scope.share {
            // Nothing here for a tenant still under its share: pass the chunk over unread.
            let mut wanted = undelivered.clone().filter(|(i, _)| {
                taken.admits(share, account(*i), u64::from(entry.meta.lengths[*i]))
            });
            if wanted.next().is_none() {
                batch.deferred += undelivered.count() as u64;
                continue;
            }
        }
        let frames = match entry.generation.segments.read(&entry.location) {
            // Shared by the chunk's records without a copy.
            Ok(frames) => bytes::Bytes::from(frames),
            // Delivered (and its generation retired) since the check above.
            Err(_) if !is_indexed(index, first) => continue,
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
            let size = raw.len() as u64;
            if let Some(share) = &scope.share {
                if !taken.admits(share, account(i), size) {
                    batch.deferred += 1;
                    continue;
                }
            }
            match record::decode_in_place::<RecordView>(raw) {
                Ok(view) => {
                    let Some(prepared) = prepare(seq, &view) else {
                        batch.skipped += 1;
                        continue;
                    };
                    if !batch.records.is_empty()
                        && (batch.records.len() >= max_events || batch.bytes + size > max_bytes)
                    {
                        return Ok(batch);
                    }
                    taken.take(account(i), size);
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

fn is_indexed(index: &RwLock<Index>, first: u64) -> bool {
    let index = index.read().expect("index lock");
    index.chunks.contains_key(&first)
}

fn chunk_from(index: &RwLock<Index>, seq: u64) -> Option<(u64, ChunkEntry)> {
    let index = index.read().expect("index lock");
    index
        .chunk_from(seq)
        .map(|(first, entry)| (first, entry.clone()))
}
