//! sled writes gathered across commit groups. Each sled `apply_batch` costs two log writes on
//! sled's IO threads, and the sled writes of an append matter only once the log holds it, so the
//! committer gathers them here and applies them as one batch now and then. Later writes to a key
//! replace earlier ones: one gathered batch leaves sled as the groups one by one would.

use sled::IVec;
use std::collections::BTreeMap;

/// Inserts and removals, by key; the last one given for a key is the one kept.
#[derive(Debug, Default)]
pub(super) struct Writes {
    by_key: BTreeMap<IVec, Option<IVec>>,
}

impl Writes {
    pub(super) fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.by_key.insert(key.into(), Some(value.into()));
    }

    pub(super) fn remove(&mut self, key: impl Into<IVec>) {
        self.by_key.insert(key.into(), None);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Adds `later`'s writes, which replace this one's for the same keys.
    pub(super) fn absorb(&mut self, later: Writes) {
        if self.by_key.is_empty() {
            self.by_key = later.by_key;
            return;
        }
        self.by_key.extend(later.by_key);
    }

    /// The writes as one sled batch (applied atomically).
    pub(super) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.by_key {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_writes_replace_earlier_ones_and_the_batch_applies_them() {
        let mut gathered = Writes::default();
        gathered.insert(b"a".as_slice(), b"1".as_slice());
        gathered.insert(b"b".as_slice(), b"1".as_slice());
        let mut later = Writes::default();
        later.remove(b"a".as_slice());
        later.insert(b"b".as_slice(), b"2".as_slice());
        later.insert(b"c".as_slice(), b"2".as_slice());
        gathered.absorb(later);
        let mut then = Writes::default();
        then.insert(b"a".as_slice(), b"3".as_slice());
        then.remove(b"c".as_slice());
        gathered.absorb(then);

        let db = sled::Config::new().temporary(true).open().unwrap();
        db.insert(b"c", b"0".as_slice()).unwrap();
        db.insert(b"d", b"0".as_slice()).unwrap();
        db.apply_batch(gathered.into_batch()).unwrap();
        let all: Vec<(Vec<u8>, Vec<u8>)> = db
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(
            all,
            vec![
                (b"a".to_vec(), b"3".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
                (b"d".to_vec(), b"0".to_vec()),
            ]
        );
    }
}
