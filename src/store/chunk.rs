//! Chunks: the records of one commit group (or of several young groups in a row) kept
//! together: their frames lie back to back in a segment file ([`super::segment`]), and sled
//! holds, under the chunk's first sequence number, where they are and a small [`ChunkMeta`]:
//! their sizes, the append time and which of them are already delivered. Restart reads only
//! these. One entry per group instead of one per event keeps sled's work per commit small.

use serde::{Deserialize, Serialize};

/// A commit group's records are cut into chunks of about this size.
pub const CHUNK_TARGET_BYTES: usize = 96 * 1024;

/// What the store keeps about a chunk besides its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// Append time of the chunk's first record, milliseconds since the Unix epoch.
    pub appended_ms: u64,
    /// Stored bytes of each record, in sequence order.
    pub lengths: Vec<u32>,
    /// One bit per record: set once delivered (or parked).
    pub delivered: Vec<u64>,
}

impl ChunkMeta {
    pub fn new(appended_ms: u64, lengths: Vec<u32>) -> ChunkMeta {
        let words = lengths.len().div_ceil(64);
        ChunkMeta {
            appended_ms,
            lengths,
            delivered: vec![0; words],
        }
    }

    pub fn count(&self) -> u64 {
        self.lengths.len() as u64
    }

    pub fn is_delivered(&self, index: usize) -> bool {
        self.delivered
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Marks record `index` delivered; returns its length if it was not before.
    pub fn mark_delivered(&mut self, index: usize) -> Option<u64> {
        if index >= self.lengths.len() || self.is_delivered(index) {
            return None;
        }
        self.delivered[index / 64] |= 1 << (index % 64);
        Some(u64::from(self.lengths[index]))
    }

    pub fn any_delivered(&self) -> bool {
        self.delivered.iter().any(|w| *w != 0)
    }

    /// `(events, bytes)` not yet delivered.
    pub fn undelivered(&self) -> (u64, u64) {
        let mut events = 0;
        let mut bytes = 0;
        for (i, len) in self.lengths.iter().enumerate() {
            if !self.is_delivered(i) {
                events += 1;
                bytes += u64::from(*len);
            }
        }
        (events, bytes)
    }

    /// Adds records at the end (extending the tail chunk of a store).
    pub fn extend(&mut self, lengths: &[u32]) {
        self.lengths.extend_from_slice(lengths);
        self.delivered.resize(self.lengths.len().div_ceil(64), 0);
    }

    pub fn stored_bytes(&self) -> u64 {
        self.lengths.iter().map(|l| u64::from(*l)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_tracks_delivery() {
        let mut meta = ChunkMeta::new(5, vec![10; 70]);
        assert_eq!(meta.undelivered(), (70, 700));
        assert_eq!(meta.mark_delivered(65), Some(10));
        assert_eq!(meta.mark_delivered(65), None);
        assert_eq!(meta.mark_delivered(70), None);
        assert!(meta.is_delivered(65) && !meta.is_delivered(64));
        assert_eq!(meta.undelivered(), (69, 690));
        meta.extend(&[1, 2]);
        assert_eq!(meta.count(), 72);
        assert_eq!(meta.undelivered(), (71, 693));
    }
}
