//! Offline inspection of a stopped store: counters, a checksum pass over every undelivered
//! record and dead letter, and JSON-lines export. It opens the live generations with sled
//! directly and writes nothing; sled's own lock refuses a store that a running sidecar holds.

use super::chunk::ChunkMeta;
use super::dedup;
use super::generation;
use super::keys;
use super::record::{self, DeadLetter, Record};
use super::segment::{self, Location, SegmentReader};
use crate::event::kafka::from_message;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// A stopped store, opened for reading.
pub struct Inspector {
    /// Oldest first; the last one is active.
    generations: Vec<(u64, sled::Db, sled::Tree)>,
    /// Each generation's segment files, in the same order.
    segments: Vec<SegmentReader>,
    dir: std::path::PathBuf,
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
        let mut generations = Vec::new();
        let mut segments = Vec::new();
        for id in ids {
            let db = generation::open_sled(
                sled::Config::new()
                    .path(generation::dir_of(dir, id))
                    .cache_capacity(16 * 1024 * 1024)
                    .flush_every_ms(None),
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the store in {} ({e}); is a sidecar still running on it?",
                    dir.display()
                )
            })?;
            let tree = db.open_tree("outbox")?;
            generations.push((id, db, tree));
            segments.push(SegmentReader::new(generation::segments_dir(
                &generation::dir_of(dir, id),
            )));
        }
        Ok(Inspector {
            generations,
            segments,
            dir: dir.to_path_buf(),
        })
    }

    fn active(&self) -> &sled::Tree {
        &self.generations.last().expect("at least one generation").2
    }

    fn meta(&self, name: &str) -> anyhow::Result<u64> {
        Ok(self
            .active()
            .get(keys::meta(name))?
            .and_then(|v| keys::u64_value(&v))
            .unwrap_or(0))
    }

    /// Every chunk's first sequence number, metadata, location and segment files, in sequence
    /// order.
    fn chunks(&self) -> anyhow::Result<Vec<StoredChunk<'_>>> {
        let mut out = Vec::new();
        for ((_, _, tree), segments) in self.generations.iter().zip(&self.segments) {
            for item in tree.scan_prefix([keys::CHUNK_META]) {
                let (key, value) = item?;
                let first = keys::seq_of(&key);
                let meta = record::decode::<ChunkMeta>(&value)
                    .map_err(|e| anyhow::anyhow!("chunk {first} has corrupt metadata: {e}"))?;
                let location = tree
                    .get(keys::chunk(first))?
                    .and_then(|v| Location::decode(&v));
                out.push((first, meta, location, segments));
            }
        }
        // After a crash, the newest appends may be only in the log (the sidecar restores them
        // when it opens the store): read them from there too.
        let (_, _, tree) = self.generations.last().expect("at least one generation");
        let segments = self.segments.last().expect("one per generation");
        let log_end = tree
            .get(keys::meta(keys::LOG_END))?
            .and_then(|v| keys::decode_log_end(&v))
            .unwrap_or_default();
        let (groups, _) = segment::scan(segments.dir(), log_end)?;
        for group in groups {
            let meta = ChunkMeta::new(0, group.lengths);
            out.push((group.first_seq, meta, Some(group.frames), segments));
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
            generations: self.generations.iter().map(|g| g.0).collect(),
            next_seq: self.meta("next_seq")?.max(
                chunks
                    .last()
                    .map_or(0, |(first, meta, _, _)| first + meta.count()),
            ),
            cursor: self.meta("cursor")?,
            dead_letters: self.dead_letter_items()?.count() as u64,
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
        let (_, db, _) = self.generations.last().expect("at least one generation");
        let window = db.open_tree(generation::WINDOW_TREE)?;
        for item in window
            .iter()
            .chain(self.active().scan_prefix([keys::DEDUP]))
        {
            let value = item?.1;
            summary.dedup_bytes += value.len() as u64;
            if let Ok(groups) = dedup::decode_pack(&value) {
                summary.dedup_entries += groups.iter().map(|g| g.entries.len() as u64).sum::<u64>();
            }
        }
        Ok(summary)
    }

    /// The dead letters of the active generation: its dead-letter tree, then any the release
    /// before kept in the main tree (moved out when a sidecar next opens the store).
    fn dead_letter_items(
        &self,
    ) -> anyhow::Result<impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + '_> {
        let (_, db, _) = self.generations.last().expect("at least one generation");
        let dead = db.open_tree(generation::DEAD_TREE)?;
        Ok(dead.iter().chain(self.active().scan_prefix([keys::DEAD])))
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
        for item in self.dead_letter_items()? {
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
    /// the CloudEvent. Returns how many lines were written.
    pub fn export(
        &self,
        dead: bool,
        out: &mut impl Write,
        mut progress: impl FnMut(),
    ) -> anyhow::Result<u64> {
        let mut lines: Vec<(u64, Stored, Option<String>)> = Vec::new();
        let mut written = 0;
        let mut flush = |lines: &mut Vec<(u64, Stored, Option<String>)>| -> anyhow::Result<()> {
            for (seq, stored, error) in lines.drain(..) {
                writeln!(out, "{}", export_line(seq, stored, error))?;
                written += 1;
                progress();
            }
            Ok(())
        };
        if dead {
            for item in self.dead_letter_items()? {
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

fn export_line(seq: u64, stored: Stored, error: Option<String>) -> serde_json::Value {
    match stored.and_then(|raw| record::decode::<Record>(&raw).map_err(|e| e.to_string())) {
        Ok(r) => {
            let event = from_message(&r.message.headers, &r.message.payload)
                .map(|e| crate::event::http::to_json(&e));
            serde_json::json!({
                "seq": seq, "topic": r.message.topic, "key": r.message.key,
                "appended_ms": r.appended_ms, "error": error, "event": event,
            })
        }
        Err(e) => serde_json::json!({"seq": seq, "error": error, "corrupt": e}),
    }
}

/// Flips bytes in the middle of the stored record `seq` of a stopped store, for the tests that
/// prove corruption is found and quarantined. Fails when the record is not stored.
#[doc(hidden)]
pub fn corrupt_record_for_tests(dir: &Path, seq: u64) -> anyhow::Result<()> {
    let inspector = Inspector::open(dir)?;
    for (first, meta, location, segments) in inspector.chunks()? {
        if seq < first || seq >= first + meta.count() {
            continue;
        }
        let location = location.ok_or_else(|| anyhow::anyhow!("chunk {first} has no location"))?;
        let index = (seq - first) as usize;
        let before: u64 = meta.lengths[..index]
            .iter()
            .map(|len| segment::framed_len(*len))
            .sum();
        let offset =
            location.offset + before + segment::FRAME_HEADER + u64::from(meta.lengths[index]) / 2;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment::path_of(segments.dir(), location.segment))?;
        let mut bytes = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, offset)?;
        bytes[0] ^= 0xff;
        bytes[1] ^= 0x55;
        std::os::unix::fs::FileExt::write_all_at(&file, &bytes, offset)?;
        file.sync_all()?;
        return Ok(());
    }
    anyhow::bail!("record {seq} is not stored")
}
