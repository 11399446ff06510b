//! Offline inspection of a stopped store: counters, a checksum pass over every undelivered
//! record and dead letter, and JSON-lines export. It opens the live generations with sled
//! directly and writes nothing; sled's own lock refuses a store that a running sidecar holds.

use super::chunk::{self, ChunkMeta};
use super::dedup;
use super::generation;
use super::keys;
use super::record::{self, DeadLetter, Record};
use crate::event::kafka::from_message;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// A stopped store, opened for reading.
pub struct Inspector {
    /// Oldest first; the last one is active.
    generations: Vec<(u64, sled::Db, sled::Tree)>,
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
        }
        Ok(Inspector {
            generations,
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

    /// Every chunk's first sequence number, metadata and tree, in sequence order.
    fn chunks(&self) -> anyhow::Result<Vec<(u64, ChunkMeta, &sled::Tree)>> {
        let mut out = Vec::new();
        for (_, _, tree) in &self.generations {
            for item in tree.scan_prefix([keys::CHUNK_META]) {
                let (key, value) = item?;
                let meta = record::decode::<ChunkMeta>(&value).map_err(|e| {
                    anyhow::anyhow!("chunk {} has corrupt metadata: {e}", keys::seq_of(&key))
                })?;
                out.push((keys::seq_of(&key), meta, tree));
            }
        }
        Ok(out)
    }

    /// Calls `each` with every undelivered record in sequence order.
    fn for_each_record(&self, mut each: impl FnMut(u64, Stored)) -> anyhow::Result<()> {
        for (first, meta, tree) in self.chunks()? {
            let value = tree.get(keys::chunk(first))?;
            let records = match value.as_deref().map(chunk::decode) {
                Some(Ok(records)) => Ok(records),
                Some(Err(e)) => Err(format!("chunk table: {e}")),
                None => Err("chunk missing".to_string()),
            };
            for i in (0..meta.lengths.len()).filter(|i| !meta.is_delivered(*i)) {
                let stored = match &records {
                    Ok(records) => records
                        .get(i)
                        .map(|r| r.to_vec())
                        .ok_or_else(|| "record missing from its chunk".to_string()),
                    Err(e) => Err(e.clone()),
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
            next_seq: self.meta("next_seq")?,
            cursor: self.meta("cursor")?,
            dead_letters: self.meta("dead_letters")?,
            chunks: chunks.len() as u64,
            disk_bytes: generation::disk_usage(&self.dir),
            ..Summary::default()
        };
        for (first, meta, _) in &chunks {
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
        for item in self.active().scan_prefix([keys::DEDUP]) {
            let value = item?.1;
            summary.dedup_bytes += value.len() as u64;
            if let Ok(groups) = dedup::decode_pack(&value) {
                summary.dedup_entries += groups.iter().map(|g| g.entries.len() as u64).sum::<u64>();
            }
        }
        Ok(summary)
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
        for item in self.active().scan_prefix([keys::DEAD]) {
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
            for item in self.active().scan_prefix([keys::DEAD]) {
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
    for (first, meta, tree) in inspector.chunks()? {
        if seq < first || seq >= first + meta.count() {
            continue;
        }
        let mut value = tree
            .get(keys::chunk(first))?
            .ok_or_else(|| anyhow::anyhow!("chunk {first} missing"))?
            .to_vec();
        let records = chunk::decode(&value).map_err(|e| anyhow::anyhow!("{e}"))?;
        let target = records[(seq - first) as usize];
        let offset = target.as_ptr() as usize - value.as_ptr() as usize + target.len() / 2;
        value[offset] ^= 0xff;
        value[offset + 1] ^= 0x55;
        tree.insert(keys::chunk(first), value)?;
        for (_, db, _) in &inspector.generations {
            db.flush()?;
        }
        return Ok(());
    }
    anyhow::bail!("record {seq} is not stored")
}
