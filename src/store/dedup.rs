//! The de-duplication index: which `source` + `id` pairs (by their fingerprint) were appended
//! within the window, and under which sequence number, bounded by the window and by a number of
//! entries. It lives in memory; each commit group persists its entries as one value, a *pack*
//! (a rotation copies many groups into one), so that restart reads them back and expiry deletes
//! whole packs.

use super::fingerprint::Fingerprint;
use super::print_table::PrintTable;
use super::record::{self, RecordError};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// The persisted entries of one commit group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupGroup {
    pub appended_ms: u64,
    pub entries: Vec<(Fingerprint, u64)>,
}

impl DedupGroup {
    /// The group's key: the sequence number of its first entry.
    pub fn first_seq(&self) -> u64 {
        self.entries.first().map_or(0, |(_, seq)| *seq)
    }
}

/// Encodes groups as one stored value.
pub fn encode_pack(groups: &[DedupGroup]) -> Vec<u8> {
    record::encode(&groups)
}

pub fn decode_pack(bytes: &[u8]) -> Result<Vec<DedupGroup>, RecordError> {
    record::decode(bytes)
}

/// A persisted group, as remembered for expiry.
#[derive(Debug, Clone, Copy)]
pub struct GroupRef {
    /// The group's first sequence number.
    pub first_seq: u64,
    /// The key of the pack that holds it.
    pub pack: u64,
    pub appended_ms: u64,
    pub entries: usize,
}

/// The in-memory index. Expiry is by sequence number: every entry below `live_from` is
/// expired, whatever the table still holds; the table sheds those entries in bulk now and then.
#[derive(Default)]
pub struct DedupIndex {
    table: PrintTable,
    groups: VecDeque<GroupRef>,
    /// Live groups in each pack.
    pack_groups: HashMap<u64, usize>,
    /// The first sequence number whose entry is still remembered.
    live_from: u64,
    /// Entries of the live groups (kept, not summed: expiry asks on every commit).
    live: usize,
}

impl DedupIndex {
    /// The sequence number stored under `fingerprint`, unless expired.
    pub fn get(&self, fingerprint: Fingerprint) -> Option<u64> {
        self.table
            .get(fingerprint)
            .filter(|seq| *seq >= self.live_from)
    }

    /// Entries remembered (not expired).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds a committed group held in pack `pack` (groups arrive in sequence order).
    pub fn insert_group(&mut self, pack: u64, group: &DedupGroup) {
        for (fingerprint, seq) in &group.entries {
            self.table.insert(*fingerprint, *seq, self.live_from);
        }
        self.groups.push_back(GroupRef {
            first_seq: group.first_seq(),
            pack,
            appended_ms: group.appended_ms,
            entries: group.entries.len(),
        });
        self.live += group.entries.len();
        *self.pack_groups.entry(pack).or_default() += 1;
    }

    /// Records that the groups were copied into new packs (`first_seq` -> pack key).
    pub fn repacked(&mut self, packs: &HashMap<u64, u64>) {
        self.pack_groups.clear();
        for group in self.groups.iter_mut() {
            if let Some(pack) = packs.get(&group.first_seq) {
                group.pack = *pack;
            }
            *self.pack_groups.entry(group.pack).or_default() += 1;
        }
    }

    /// Expires the groups older than `cutoff_ms`, and the oldest ones beyond `max_entries`.
    /// Returns the packs that hold no live group any more (to be deleted).
    pub fn expire(&mut self, cutoff_ms: u64, max_entries: usize) -> Vec<u64> {
        let mut empty_packs = Vec::new();
        while let Some(oldest) = self.groups.front().copied() {
            if oldest.appended_ms >= cutoff_ms && self.live <= max_entries {
                break;
            }
            self.groups.pop_front();
            self.live -= oldest.entries;
            let left = self.pack_groups.entry(oldest.pack).or_insert(1);
            *left -= 1;
            if *left == 0 {
                self.pack_groups.remove(&oldest.pack);
                empty_packs.push(oldest.pack);
            }
            self.live_from = self
                .groups
                .front()
                .map_or(oldest.first_seq + oldest.entries as u64, |g| g.first_seq)
                .max(self.live_from);
        }
        // Shed expired entries once they are a good part of the table (one pass over it).
        let stale = self.table.len().saturating_sub(self.live);
        if stale > 4096 && stale * 4 > self.table.len() {
            self.table.retain_from(self.live_from);
        }
        empty_packs
    }

    /// The first sequence number whose entry is still remembered.
    pub fn live_from(&self) -> u64 {
        self.live_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fingerprint::fingerprint;

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
        index.insert_group(1, &group(100, &[1, 2]));
        index.insert_group(1, &group(200, &[3]));
        index.insert_group(4, &group(300, &[4, 5]));
        assert_eq!(index.get(fingerprint("s", "2")), Some(2));
        assert!(index.expire(100, 10).is_empty());
        assert_eq!(index.len(), 5);
        // Age: the first group goes; pack 1 still holds the second one.
        assert!(index.expire(150, 10).is_empty());
        assert_eq!(index.get(fingerprint("s", "2")), None);
        assert_eq!(index.get(fingerprint("s", "3")), Some(3));
        // Count: the second group goes too, and with it pack 1.
        assert_eq!(index.expire(0, 2), vec![1]);
        assert_eq!(index.get(fingerprint("s", "3")), None);
        assert_eq!(index.len(), 2);
        // A pair appended again after expiry is remembered under its new number.
        index.insert_group(9, &group(400, &[1]));
        assert_eq!(
            index.get(fingerprint("s", "1")),
            None,
            "seq 1 is below the cutoff"
        );
        let renewed = DedupGroup {
            appended_ms: 400,
            entries: vec![(fingerprint("s", "x"), 10)],
        };
        index.insert_group(10, &renewed);
        assert_eq!(index.get(fingerprint("s", "x")), Some(10));
    }

    #[test]
    fn dedup_packs_survive_encoding_and_decoding() {
        let g = DedupGroup {
            appended_ms: 7,
            entries: vec![(u128::MAX, 3), (fingerprint("a", "b"), 4)],
        };
        assert_eq!(g.first_seq(), 3);
        let pack = vec![g.clone(), g];
        assert_eq!(decode_pack(&encode_pack(&pack)).unwrap(), pack);
    }
}
