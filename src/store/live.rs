//! A generation as the committer holds it: its sled handle, the files it syncs and, for the
//! active one, the segment file new records go to; and the one way sled batches are written
//! to it (applied, and with `durable` flushed and synced).

use super::chunk::ChunkMeta;
use super::durable::Durability;
use super::generation::Generation;
use super::keys;
use super::record;
use super::segment::{Location, SegmentWriter};
use super::writes::Writes;
use std::sync::Arc;

/// A generation the committer writes to, with the files it syncs.
pub(super) struct Live {
    pub generation: Arc<Generation>,
    pub durability: Durability,
    /// The segment file new records go to (the active generation only).
    pub writer: Option<SegmentWriter>,
}

impl Live {
    /// `writer`: whether records will be appended to it (it is the active generation).
    pub fn new(
        generation: Generation,
        durability: Durability,
        writer: bool,
    ) -> std::io::Result<Live> {
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

    /// The active generation's segment writer.
    pub fn writer(&mut self) -> &mut SegmentWriter {
        self.writer
            .as_mut()
            .expect("the active generation has a writer")
    }

    /// Where the next record frames go: (segment, offset).
    pub fn log_position(&self) -> (u64, u64) {
        self.writer
            .as_ref()
            .map(SegmentWriter::position)
            .unwrap_or_default()
    }

    /// Applies a batch to the generation's main tree; with `durable`, flushes sled and syncs
    /// its files.
    pub fn write(&mut self, batch: Writes, durable: bool) -> Result<(), String> {
        {
            // One read guard for both calls: never take the generation's lock twice at once.
            let tree = self.generation.tree();
            let written = tree.apply_batch(batch.into_batch()).and_then(|()| {
                if durable {
                    tree.flush().map(drop)
                } else {
                    Ok(())
                }
            });
            // The IO buffers sled filled and replaced go to the collector now, not once 64 wait.
            crate::memory::hand_over_deferred_frees();
            written.map_err(|e| format!("write failed: {e}"))?;
            if !durable {
                return Ok(());
            }
        }
        self.durability
            .sync()
            .map_err(|e| format!("fdatasync failed: {e}"))
    }
}

/// Applies a batch to a tree (not durable: a flush of its generation makes it so).
pub(super) fn apply_to(tree: &sled::Tree, batch: Writes) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    tree.apply_batch(batch.into_batch())
        .map_err(|e| format!("write failed: {e}"))
}

/// Writes a chunk's location and metadata into `batch`; returns the bytes written.
pub(super) fn name_chunk(
    batch: &mut Writes,
    first: u64,
    meta: &ChunkMeta,
    location: &Location,
) -> u64 {
    let meta_value = record::encode(meta);
    let location_value = location.encode();
    let bytes = (meta_value.len() + location_value.len()) as u64;
    batch.insert(&keys::chunk(first), &location_value);
    batch.insert(&keys::chunk_meta(first), meta_value);
    bytes
}
