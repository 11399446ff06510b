//! The de-duplication index: which `source` + `id` pairs were appended within the window, and
//! under which sequence number. A pair is known by a 128-bit SHA-256 fingerprint; a chance
//! collision (about 2^-64 even at a billion pairs, and infeasible to forge) is far below the
//! rate of undetected disk errors. The index lives in memory for speed; each commit group
//! persists its new entries as one value (`h` + first sequence number), so that restart rebuilds
//! the index by reading those, and expiry deletes whole groups. Bounded twice: by the time window
//! and by a maximum number of entries (oldest groups are forgotten first).

use super::record::{self, RecordError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

pub type Fingerprint = u128;

/// The fingerprint of a `source` + `id` pair.
pub fn fingerprint(source: &str, id: &str) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update((source.len() as u64).to_le_bytes());
    hasher.update(source.as_bytes());
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// The persisted entries of one commit group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupGroup {
    pub appended_ms: u64,
    pub entries: Vec<(Fingerprint, u64)>,
}

impl DedupGroup {
    pub fn encode(&self) -> Vec<u8> {
        record::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<DedupGroup, RecordError> {
        record::decode(bytes)
    }
}

/// Fingerprints are already uniformly distributed: hash them by their low bits.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// A persisted group, as remembered for expiry.
#[derive(Debug, Clone, Copy)]
pub struct GroupRef {
    /// The group's key (its first sequence number).
    pub first_seq: u64,
    pub appended_ms: u64,
    pub entries: usize,
}

/// The in-memory index.
#[derive(Default)]
pub struct DedupIndex {
    map: HashMap<Fingerprint, u64, BuildHasherDefault<FingerprintHasher>>,
    groups: VecDeque<GroupRef>,
}

impl DedupIndex {
    pub fn get(&self, fingerprint: Fingerprint) -> Option<u64> {
        self.map.get(&fingerprint).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds a committed group (groups arrive in sequence order).
    pub fn insert_group(&mut self, first_seq: u64, group: &DedupGroup) {
        for (fingerprint, seq) in &group.entries {
            self.map.insert(*fingerprint, *seq);
        }
        self.groups.push_back(GroupRef {
            first_seq,
            appended_ms: group.appended_ms,
            entries: group.entries.len(),
        });
    }

    /// The oldest group, if it has to go: older than `cutoff_ms`, or the index holds more than
    /// `max_entries`.
    pub fn expiring(&self, cutoff_ms: u64, max_entries: usize) -> Option<GroupRef> {
        let oldest = *self.groups.front()?;
        (oldest.appended_ms < cutoff_ms || self.map.len() > max_entries).then_some(oldest)
    }

    /// Forgets the oldest group, given its persisted entries. An entry renewed since (the same
    /// pair appended again after expiry) points at a newer sequence number and stays.
    pub fn remove_oldest(&mut self, group: Option<&DedupGroup>) {
        self.groups.pop_front();
        for (fingerprint, seq) in group.map(|g| g.entries.as_slice()).unwrap_or_default() {
            if self.map.get(fingerprint) == Some(seq) {
                self.map.remove(fingerprint);
            }
        }
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupRef> {
        self.groups.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_source_and_id() {
        assert_ne!(fingerprint("a", "bc"), fingerprint("ab", "c"));
        assert_eq!(fingerprint("s", "1"), fingerprint("s", "1"));
    }

    #[test]
    fn groups_expire_by_age_and_by_count() {
        let mut index = DedupIndex::default();
        let group = |ms, seqs: &[u64]| DedupGroup {
            appended_ms: ms,
            entries: seqs
                .iter()
                .map(|s| (fingerprint("s", &s.to_string()), *s))
                .collect(),
        };
        let (g1, g2) = (group(100, &[1, 2]), group(200, &[3]));
        index.insert_group(1, &g1);
        index.insert_group(3, &g2);
        assert_eq!(index.get(fingerprint("s", "2")), Some(2));
        assert!(index.expiring(100, 10).is_none());
        assert_eq!(index.expiring(150, 10).unwrap().first_seq, 1);
        assert_eq!(index.expiring(0, 2).unwrap().first_seq, 1);
        // Pair "s"/"1" renewed under seq 9: removing the old group keeps it.
        index.map.insert(fingerprint("s", "1"), 9);
        index.remove_oldest(Some(&g1));
        assert_eq!(index.get(fingerprint("s", "1")), Some(9));
        assert_eq!(index.get(fingerprint("s", "2")), None);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn groups_round_trip() {
        let g = DedupGroup {
            appended_ms: 7,
            entries: vec![(u128::MAX, 3), (fingerprint("a", "b"), 4)],
        };
        assert_eq!(DedupGroup::decode(&g.encode()).unwrap(), g);
    }
}
