//! Offline inspection of a stopped store: counters, a checksum pass over every undelivered
//! record and dead letter, and JSON-lines export. It reads the store as the sidecar would open
//! it (through `recovery.rs`) and writes nothing; sled's own lock refuses a store that a
//! running sidecar holds.

use super::chunk::ChunkMeta;
use super::generation::{self, Generation};
use super::keys;
use super::record::{self, DeadLetter, Record};
use super::recovery;
use super::segment::{self, Location, SegmentReader};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// sled's page cache while inspecting.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A stopped store, opened for reading.
pub struct Inspector {
    /// Oldest first; the last one is active.
    generations: Vec<Generation>,
    dir: PathBuf,
}

/// What `inspect` reports.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub schema_version: u64,
    pub generations: Vec<u64>,
    pub next_seq: u64,
    pub cursor: u64,
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    pub chunks: u64,
    pub dead_letters: u64,
    pub dedup_entries: u64,
    /// Stored bytes of the de-duplication entries.
    pub dedup_bytes: u64,
    pub first_backlog_seq: Option<u64>,
    pub last_backlog_seq: Option<u64>,
    pub disk_bytes: u64,
}

/// The outcome of a checksum pass.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub records_ok: u64,
    pub dead_letters_ok: u64,
    /// `(table, seq, error)` of every value that does not decode.
    pub corrupt: Vec<(String, u64, String)>,
}

/// A chunk as stored: first sequence number, metadata, location (if readable) and the segment
/// files of its generation.
type StoredChunk<'a> = (u64, ChunkMeta, Option<Location>, &'a SegmentReader);

/// An undelivered record as stored: its bytes, or why they cannot be had.
type Stored = Result<Vec<u8>, String>;

impl Inspector {
    pub fn open(dir: &Path) -> anyhow::Result<Inspector> {
        let Some(ids) = generation::read_current(dir)? else {
            anyhow::bail!(
                "{} holds no edge-outbox store (no CURRENT file)",
                dir.display()
            );
        };
        let generations = recovery::open_generations(dir, &ids, CACHE_BYTES)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the store in {} ({e}); is a sidecar still running on it?",
                    dir.display()
                )
            })?
            .into_iter()
            .map(|(generation, _)| generation)
            .collect();
        Ok(Inspector {
            generations,
            dir: dir.to_path_buf(),
        })
    }

    fn active(&self) -> &Generation {
        self.generations.last().expect("at least one generation")
    }

    fn meta(&self, name: &str) -> anyhow::Result<u64> {
        Ok(recovery::meta_u64(&self.active().tree(), name)?)
    }

    /// Every chunk's first sequence number, metadata, location and segment files, in sequence
    /// order: those sled names, then the groups only the log holds after a crash (the sidecar
    /// restores them when it opens the store).
    fn chunks(&self) -> anyhow::Result<Vec<StoredChunk<'_>>> {
        let mut named = BTreeMap::new();
        for generation in &self.generations {
            for chunk in recovery::named_chunks(generation)? {
                let first = chunk.first;
                let meta = chunk
                    .meta
                    .map_err(|e| anyhow::anyhow!("chunk {first} has corrupt metadata: {e}"))?;
                named.insert(first, (first, meta, chunk.location, &generation.segments));
            }
        }
        let active = self.active();
        let (groups, _) = recovery::unnamed_log_groups(active, &named)?;
        let mut out: Vec<StoredChunk<'_>> = named.into_values().collect();
        for group in groups {
            let meta = ChunkMeta::new(0, group.lengths);
            out.push((group.first_seq, meta, Some(group.frames), &active.segments));
        }
        Ok(out)
    }

    /// Calls `each` with every undelivered record in sequence order.
    fn for_each_record(&self, mut each: impl FnMut(u64, Stored)) -> anyhow::Result<()> {
        for (first, meta, location, segments) in self.chunks()? {
            let frames = match location {
                Some(location) => segments
                    .read(&location)
                    .map_err(|e| format!("chunk frames: {e}")),
                None => Err("chunk location missing".to_string()),
            };
            let records = frames
                .as_ref()
                .map(|frames| segment::records(frames, &meta.lengths));
            for i in (0..meta.lengths.len()).filter(|i| !meta.is_delivered(*i)) {
                let stored = match &records {
                    Ok(records) => records[i]
                        .as_ref()
                        .map(|r| r.to_vec())
                        .map_err(|e| format!("chunk frames: {e}")),
                    Err(e) => Err(e.to_string()),
                };
                each(first + i as u64, stored);
            }
        }
        Ok(())
    }

    pub fn summary(&self) -> anyhow::Result<Summary> {
        let chunks = self.chunks()?;
        let mut summary = Summary {
            schema_version: self.meta("schema_version")?,
            generations: self.generations.iter().map(|g| g.id).collect(),
            next_seq: self.meta("next_seq")?.max(
                chunks
                    .last()
                    .map_or(0, |(first, meta, _, _)| first + meta.count()),
            ),
            cursor: self.meta("cursor")?,
            dead_letters: self.dead_letter_items().len() as u64,
            chunks: chunks.len() as u64,
            disk_bytes: generation::disk_usage(&self.dir),
            ..Summary::default()
        };
        for (first, meta, _, _) in &chunks {
            let (events, bytes) = meta.undelivered();
            summary.backlog_events += events;
            summary.backlog_bytes += bytes;
            let undelivered = (0..meta.lengths.len())
                .filter(|i| !meta.is_delivered(*i))
                .map(|i| first + i as u64);
            for seq in undelivered {
                summary.first_backlog_seq.get_or_insert(seq);
                summary.last_backlog_seq = Some(seq);
            }
        }
        for pack in recovery::dedup_packs(self.active())? {
            summary.dedup_bytes += pack.bytes;
            if let Ok(groups) = pack.groups {
                summary.dedup_entries += groups.iter().map(|g| g.entries.len() as u64).sum::<u64>();
            }
        }
        Ok(summary)
    }

    /// The dead letters of the active generation: its dead-letter tree, then any the release
    /// before kept in the main tree (moved out when a sidecar next opens the store).
    fn dead_letter_items(&self) -> Vec<sled::Result<(sled::IVec, sled::IVec)>> {
        let active = self.active();
        let legacy = active.tree().scan_prefix([keys::DEAD]).collect::<Vec<_>>();
        active.dead().iter().chain(legacy).collect()
    }

    /// Decodes every undelivered record and dead letter; `progress` is told each value checked.
    pub fn verify(&self, mut progress: impl FnMut()) -> anyhow::Result<Verification> {
        let mut out = Verification::default();
        self.for_each_record(|seq, stored| {
            match stored.and_then(|raw| record::decode::<Record>(&raw).map_err(|e| e.to_string())) {
                Ok(_) => out.records_ok += 1,
                Err(e) => out.corrupt.push(("backlog".into(), seq, e)),
            }
            progress();
        })?;
        for item in self.dead_letter_items() {
            let (key, value) = item?;
            match record::decode::<DeadLetter>(&value) {
                Ok(_) => out.dead_letters_ok += 1,
                Err(e) => out
                    .corrupt
                    .push(("dead".into(), keys::seq_of(&key), e.to_string())),
            }
            progress();
        }
        Ok(out)
    }

    /// Writes the backlog (or the dead letters) as JSON lines: sequence number, topic, key and
    /// the event as `describe` renders the record (the caller knows the bindings; the store
    /// does not). Returns how many lines were written.
    pub fn export(
        &self,
        dead: bool,
        out: &mut impl Write,
        describe: impl Fn(&Record) -> serde_json::Value,
        mut progress: impl FnMut(),
    ) -> anyhow::Result<u64> {
        let mut lines: Vec<(u64, Stored, Option<String>)> = Vec::new();
        let mut written = 0;
        let mut flush = |lines: &mut Vec<(u64, Stored, Option<String>)>| -> anyhow::Result<()> {
            for (seq, stored, error) in lines.drain(..) {
                writeln!(out, "{}", export_line(seq, stored, error, &describe))?;
                written += 1;
                progress();
            }
            Ok(())
        };
        if dead {
            for item in self.dead_letter_items() {
                let (key, value) = item?;
                let line = match record::decode::<DeadLetter>(&value) {
                    Ok(d) => (d.seq, Ok(d.raw), Some(d.error)),
                    Err(e) => (
                        keys::seq_of(&key),
                        Err(format!("corrupt dead letter: {e}")),
                        None,
                    ),
                };
                lines.push(line);
                flush(&mut lines)?;
            }
        } else {
            let mut failed = None;
            self.for_each_record(|seq, stored| {
                lines.push((seq, stored, None));
                if failed.is_none() {
                    failed = flush(&mut lines).err();
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(written)
    }
}

fn export_line(
    seq: u64,
    stored: Stored,
    error: Option<String>,
    describe: &impl Fn(&Record) -> serde_json::Value,
) -> serde_json::Value {
    match stored.and_then(|raw| record::decode::<Record>(&raw).map_err(|e| e.to_string())) {
        Ok(r) => serde_json::json!({
            "seq": seq, "topic": r.message.topic, "key": r.message.key,
            "appended_ms": r.appended_ms, "error": error, "event": describe(&r),
        }),
        Err(e) => serde_json::json!({"seq": seq, "error": error, "corrupt": e}),
    }
}

/// Where a stored record's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPosition {
    pub file: PathBuf,
    /// The offset of the record's first byte (after its frame header) in `file`.
    pub offset: u64,
    pub len: u32,
}

impl Inspector {
    /// Where the undelivered record `seq` is stored (for tools and tests that look at or damage
    /// the bytes themselves). Fails when the record is not stored.
    pub fn locate(&self, seq: u64) -> anyhow::Result<RecordPosition> {
        for (first, meta, location, segments) in self.chunks()? {
            if seq < first || seq >= first + meta.count() {
                continue;
            }
            let location =
                location.ok_or_else(|| anyhow::anyhow!("chunk {first} has no location"))?;
            let index = (seq - first) as usize;
            let before: u64 = meta.lengths[..index]
                .iter()
                .map(|len| segment::framed_len(*len))
                .sum();
            return Ok(RecordPosition {
                file: segment::path_of(segments.dir(), location.segment),
                offset: location.offset + before + segment::FRAME_HEADER,
                len: meta.lengths[index],
            });
        }
        anyhow::bail!("record {seq} is not stored")
    }
}
