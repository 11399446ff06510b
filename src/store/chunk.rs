//! Chunks: the records of one commit group (or of several young groups in a row), back to back
//! in a segment file. sled names each chunk under its first sequence number: where its frames are
//! and a small [`ChunkMeta`] (sizes, append time, which are delivered). One entry per group, not
//! per event, keeps sled's work per commit small.

use super::segment::{framed_len, Location};
use serde::{Deserialize, Serialize};

/// A commit group's records are cut into chunks of about this size.
pub const CHUNK_TARGET_BYTES: usize = 96 * 1024;

/// A chunk cut from a group's frames: its first sequence number, its records' lengths and
/// where its frames are.
pub struct Cut {
    pub first_seq: u64,
    pub lengths: Vec<u32>,
    pub location: Location,
}

/// Cuts the records of one group, numbered from `first_seq` and framed back to back from
/// `offset` of segment `segment`, into chunks of about [`CHUNK_TARGET_BYTES`] (at least one
/// record each). The committer names a new group's chunks with it, and an open names the
/// groups it restores from the log the same way.
pub fn cut(first_seq: u64, lengths: &[u32], segment: u64, offset: u64) -> Vec<Cut> {
    let mut cuts = Vec::new();
    let (mut first_seq, mut offset) = (first_seq, offset);
    let mut rest = lengths;
    while !rest.is_empty() {
        let mut size = 0usize;
        let count = rest
            .iter()
            .take_while(|len| {
                size += **len as usize;
                size <= CHUNK_TARGET_BYTES
            })
            .count()
            .max(1);
        // Copied to a vector of its exact size: the index keeps it as long as the chunk.
        let (members, after) = rest.split_at(count);
        let len: u64 = members.iter().map(|l| framed_len(*l)).sum();
        cuts.push(Cut {
            first_seq,
            lengths: members.to_vec(),
            location: Location {
                segment,
                offset,
                len,
            },
        });
        first_seq += count as u64;
        offset += len;
        rest = after;
    }
    cuts
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_metadata_tracks_which_records_are_delivered() {
        let mut meta = ChunkMeta::new(5, vec![10; 70]);
        assert_eq!(meta.undelivered(), (70, 700));
        assert_eq!(meta.mark_delivered(65), Some(10));
        assert_eq!(meta.mark_delivered(65), None);
        assert_eq!(meta.mark_delivered(70), None);
        assert!(meta.is_delivered(65) && !meta.is_delivered(64));
        assert_eq!(meta.undelivered(), (69, 690));
        assert_eq!(meta.count(), 70);
    }

    #[test]
    fn a_group_is_cut_into_chunks_of_about_the_target_size() {
        let big = CHUNK_TARGET_BYTES as u32;
        let cuts = cut(10, &[40_000, 40_000, 40_000, big + 1, 7], 3, 100);
        let shape: Vec<_> = cuts
            .iter()
            .map(|c| (c.first_seq, c.lengths.clone(), c.location))
            .collect();
        let at = |offset, len| Location {
            segment: 3,
            offset,
            len,
        };
        assert_eq!(
            shape,
            vec![
                (10, vec![40_000, 40_000], at(100, 80_008)),
                (12, vec![40_000], at(80_108, 40_004)),
                (13, vec![big + 1], at(120_112, u64::from(big) + 5)),
                (14, vec![7], at(120_117 + u64::from(big), 11)),
            ]
        );
        assert!(cut(1, &[], 1, 0).is_empty());
    }
}
