//! The committer's upkeep between commit groups: a new segment file when one is full,
//! deleting delivered ones, expiring de-duplication entries, reopening sled to release its
//! memory, and the generation cycle (rotate a grown generation, retire a drained one; see
//! [`crate::store::generation`]).

use super::plan::Group;
use super::Committer;
use crate::clock::now_ms;
use crate::store::config::RotationStep;
use crate::store::dedup::{self, DedupGroup};
use crate::store::error::read_error;
use crate::store::error::StoreError;
use crate::store::generation::{self, Generation};
use crate::store::keys;
use crate::store::live::{apply_to, Live};
use crate::store::recovery;
use crate::store::segment::{self, SegmentWriter};
use crate::store::writes::Writes;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// sled keeps what it wrote in memory: after this many bytes written, the committer reopens
/// the active generation (a pause of 10-15 ms, every second or so at 100,000 events/s) so that
/// memory follows what is read.
const REOPEN_AFTER_BYTES: u64 = 4 * 1024 * 1024;
/// How often the active generation's size is checked for rotation.
const ROTATION_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Committer {
    /// Forgets de-duplication groups older than the window, or beyond the entry limit, and
    /// deletes the packs left without a live group.
    pub(super) fn sweep_dedup(&mut self, group: &mut Group) -> Result<(), StoreError> {
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
    pub(super) fn roll_segment(&mut self) -> std::io::Result<()> {
        if self.active.log_position().1 >= self.config.segment_bytes {
            let next = SegmentWriter::create(&self.active.generation.segments_dir())?;
            *self.active.writer() = next;
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
    pub(super) fn maintain_generations(&mut self, forced: bool) {
        if self.written_since_open > REOPEN_AFTER_BYTES {
            self.written_since_open = 0;
            let started = Instant::now();
            if let Err(reason) = self.apply_deferred(false) {
                self.shared.mark_broken(&reason);
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
                    self.shared
                        .mark_broken(&format!("retiring store generation {id} failed: {e}"));
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

    /// Tells the tests' rotation observer the step reached.
    fn observe(&self, step: RotationStep) {
        #[cfg(test)]
        if let Some(observer) = &self.config.rotation_observer {
            (observer.0)(&self.config.dir, step);
        }
        #[cfg(not(test))]
        let _ = step;
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
        batch.insert(
            keys::meta(keys::LOG_END),
            &keys::encode_log_end(live.log_position()),
        );
        if let Err(e) = live.write(batch, true) {
            drop(live);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.observe(RotationStep::NewGenerationWritten);
        let old = self.active.generation.id;
        if let Err(e) = generation::write_current(&root, &[old, id]) {
            // The rename may or may not have happened: only a restart knows which list holds.
            self.shared
                .mark_broken(&format!("switching store generations failed: {e}"));
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
        let live_from = self.dedup.live_from();
        for pack in recovery::dedup_packs(&self.active.generation).map_err(|e| e.to_string())? {
            let Ok(groups) = pack.groups else {
                continue;
            };
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
