//! Offline inspection of a stopped store: counters, a checksum pass over every record and dead
//! letter, and JSON-lines export. It opens sled directly and writes nothing; sled's own lock
//! refuses a store that a running sidecar holds.

use super::keys;
use super::record::{self, DeadLetter, Record};
use crate::event::kafka::from_message;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// A stopped store, opened for reading.
pub struct Inspector {
    tree: sled::Tree,
    _db: sled::Db,
}

/// What `inspect` reports.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub schema_version: u64,
    pub next_seq: u64,
    pub cursor: u64,
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    pub dead_letters: u64,
    pub dedup_entries: u64,
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

impl Inspector {
    pub fn open(dir: &Path) -> anyhow::Result<Inspector> {
        if !dir.join("db").exists() {
            anyhow::bail!("{} holds no edge-outbox store (no db file)", dir.display());
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 * 1024 * 1024)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the store in {} ({e}); is a sidecar still running on it?",
                    dir.display()
                )
            })?;
        let tree = db.open_tree("outbox")?;
        Ok(Inspector { tree, _db: db })
    }

    fn meta(&self, name: &str) -> anyhow::Result<u64> {
        Ok(self
            .tree
            .get(keys::meta(name))?
            .and_then(|v| keys::u64_value(&v))
            .unwrap_or(0))
    }

    fn count(&self, prefix: u8) -> u64 {
        self.tree.scan_prefix([prefix]).keys().count() as u64
    }

    pub fn summary(&self) -> anyhow::Result<Summary> {
        let seq =
            |item: Option<sled::Result<(sled::IVec, sled::IVec)>>| -> anyhow::Result<Option<u64>> {
                Ok(item.transpose()?.map(|(k, _)| keys::seq_of(&k)))
            };
        Ok(Summary {
            schema_version: self.meta("schema_version")?,
            next_seq: self.meta("next_seq")?,
            cursor: self.meta("cursor")?,
            backlog_events: self.meta("backlog_events")?,
            backlog_bytes: self.meta("backlog_bytes")?,
            dead_letters: self.meta("dead_letters")?,
            dedup_entries: self.count(keys::DEDUP),
            first_backlog_seq: seq(self.tree.scan_prefix([keys::EVENT]).next())?,
            last_backlog_seq: seq(self.tree.scan_prefix([keys::EVENT]).next_back())?,
            disk_bytes: self._db.size_on_disk()?,
        })
    }

    /// Decodes every record and dead letter; `progress` is told each value checked.
    pub fn verify(&self, mut progress: impl FnMut()) -> anyhow::Result<Verification> {
        let mut out = Verification::default();
        out.records_ok =
            self.check_table::<Record>(keys::EVENT, "backlog", &mut out.corrupt, &mut progress)?;
        out.dead_letters_ok =
            self.check_table::<DeadLetter>(keys::DEAD, "dead", &mut out.corrupt, &mut progress)?;
        Ok(out)
    }

    /// Decodes every value under `prefix`; returns how many decode and notes the others.
    fn check_table<T: serde::de::DeserializeOwned>(
        &self,
        prefix: u8,
        table: &str,
        corrupt: &mut Vec<(String, u64, String)>,
        progress: &mut impl FnMut(),
    ) -> anyhow::Result<u64> {
        let mut ok = 0;
        for item in self.tree.scan_prefix([prefix]) {
            let (key, value) = item?;
            match record::decode::<T>(&value) {
                Ok(_) => ok += 1,
                Err(e) => corrupt.push((table.into(), keys::seq_of(&key), e.to_string())),
            }
            progress();
        }
        Ok(ok)
    }

    /// Writes the backlog (or the dead letters) as JSON lines: sequence number, topic, key and
    /// the CloudEvent. Returns how many lines were written.
    pub fn export(
        &self,
        dead: bool,
        out: &mut impl Write,
        mut progress: impl FnMut(),
    ) -> anyhow::Result<u64> {
        let prefix = if dead { keys::DEAD } else { keys::EVENT };
        let mut written = 0;
        for item in self.tree.scan_prefix([prefix]) {
            let (key, value) = item?;
            let seq = keys::seq_of(&key);
            let (raw, error) = if dead {
                match record::decode::<DeadLetter>(&value) {
                    Ok(d) => (d.raw, Some(d.error)),
                    Err(e) => (Vec::new(), Some(format!("corrupt dead letter: {e}"))),
                }
            } else {
                (value.to_vec(), None)
            };
            let line = match record::decode::<Record>(&raw) {
                Ok(r) => {
                    let event = from_message(&r.message.headers, &r.message.payload)
                        .map(|e| crate::event::http::to_json(&e));
                    serde_json::json!({
                        "seq": seq, "topic": r.message.topic, "key": r.message.key,
                        "appended_ms": r.appended_ms, "error": error, "event": event,
                    })
                }
                Err(e) => serde_json::json!({"seq": seq, "error": error, "corrupt": e.to_string()}),
            };
            writeln!(out, "{line}")?;
            written += 1;
            progress();
        }
        Ok(written)
    }
}
