//! Chunks: the records of one commit group stored as one sled value. sled copies a leaf of up
//! to 16 entries on every insert, so one value per group instead of one per event is what
//! makes durable ingest fast. Each record inside keeps its own version and checksum
//! ([`super::record`]); the chunk adds a checksummed table of record lengths, so that a flipped
//! byte in one record quarantines that record only.
//!
//! A chunk value is `[CHUNK_VERSION: u8][count: u32 LE][crc32 of count and lengths: u32 LE]
//! [length: u32 LE; count][records]`. Beside it, a small [`ChunkMeta`] value under its own key
//! holds what the store needs without reading the records: their sizes, the append time and
//! which of them are already delivered. Restart reads only these.

use super::record::RecordError;
use serde::{Deserialize, Serialize};

/// The current chunk layout.
pub const CHUNK_VERSION: u8 = 1;
const HEADER_LEN: usize = 9;
/// A commit group's records are cut into chunks of about this size. Values above a quarter of
/// sled's 512 KiB segment become separate blob files, each with its own fsync; this stays below.
pub const CHUNK_TARGET_BYTES: usize = 96 * 1024;

/// Encodes already-encoded records into one chunk value.
pub fn encode<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let body: usize = records.iter().map(|r| r.as_ref().len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * records.len() + body);
    out.push(CHUNK_VERSION);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for r in records {
        out.extend_from_slice(&(r.as_ref().len() as u32).to_le_bytes());
    }
    let crc = table_crc(&out);
    out[5..9].copy_from_slice(&crc.to_le_bytes());
    for r in records {
        out.extend_from_slice(r.as_ref());
    }
    out
}

fn table_crc(chunk: &[u8]) -> u32 {
    let count = u32::from_le_bytes(chunk[1..5].try_into().expect("4 bytes")) as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&chunk[1..5]);
    hasher.update(&chunk[HEADER_LEN..HEADER_LEN + 4 * count]);
    hasher.finalize()
}

/// Splits a chunk value into its records (each still to be decoded and checked).
pub fn decode(chunk: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    if chunk.len() < HEADER_LEN {
        return Err(RecordError::Truncated(chunk.len()));
    }
    if chunk[0] != CHUNK_VERSION {
        return Err(RecordError::UnknownVersion(chunk[0]));
    }
    let count = u32::from_le_bytes(chunk[1..5].try_into().expect("4 bytes")) as usize;
    let table_end = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(HEADER_LEN))
        .filter(|end| *end <= chunk.len())
        .ok_or(RecordError::Truncated(chunk.len()))?;
    let stored = u32::from_le_bytes(chunk[5..9].try_into().expect("4 bytes"));
    let computed = table_crc(chunk);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let mut records = Vec::with_capacity(count);
    let mut at = table_end;
    for i in 0..count {
        let start = HEADER_LEN + 4 * i;
        let len = u32::from_le_bytes(chunk[start..start + 4].try_into().expect("4 bytes")) as usize;
        let end = at
            .checked_add(len)
            .filter(|end| *end <= chunk.len())
            .ok_or(RecordError::Truncated(chunk.len()))?;
        records.push(&chunk[at..end]);
        at = end;
    }
    Ok(records)
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
    fn round_trip_and_empty() {
        let records = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        let chunk = encode(&records);
        let decoded = decode(&chunk).unwrap();
        assert_eq!(decoded, vec![&b"one"[..], &b""[..], &b"three"[..]]);
        assert!(decode(&encode::<Vec<u8>>(&[])).unwrap().is_empty());
    }

    #[test]
    fn a_flipped_table_byte_is_detected_and_truncation_refused() {
        let chunk = encode(&[b"abc".to_vec(), b"defg".to_vec()]);
        for i in 0..HEADER_LEN + 8 {
            let mut bad = chunk.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
        assert!(decode(&chunk[..chunk.len() - 1]).is_err());
        assert!(decode(&chunk[..4]).is_err());
    }

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
