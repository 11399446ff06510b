//! The de-duplication index's table: fingerprint -> sequence number in 20 bytes a slot (a
//! million pairs take 30 MB, against 69 MB in std's map). A slot keeps 96 of the fingerprint's
//! 128 bits and the sequence number (0: empty); linear probing, no deletes: the owner rebuilds
//! the table without expired entries now and then, and before it passes 80 % full.

use super::fingerprint::Fingerprint;

#[derive(Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Slot {
    high: u64,
    low: u32,
    seq: u64,
}

impl Slot {
    fn new(fingerprint: Fingerprint, seq: u64) -> Slot {
        Slot {
            high: (fingerprint >> 64) as u64,
            low: fingerprint as u32,
            seq,
        }
    }

    fn same_print(&self, other: &Slot) -> bool {
        let (a, b) = ((self.high, self.low), (other.high, other.low));
        a == b
    }
}

#[derive(Default)]
pub struct PrintTable {
    slots: Vec<Slot>,
    occupied: usize,
}

impl PrintTable {
    /// Entries held, expired ones included (until the next rebuild).
    pub fn len(&self) -> usize {
        self.occupied
    }

    pub fn get(&self, fingerprint: Fingerprint) -> Option<u64> {
        if self.slots.is_empty() {
            return None;
        }
        let wanted = Slot::new(fingerprint, 0);
        let mut at = self.home(wanted.high);
        loop {
            let slot = self.slots[at];
            let seq = slot.seq;
            if seq == 0 {
                return None;
            }
            if slot.same_print(&wanted) {
                return Some(seq);
            }
            at = (at + 1) % self.slots.len();
        }
    }

    /// Remembers `fingerprint` under `seq` (>= 1), replacing an older number. Entries below
    /// `keep_from` may be dropped if the table has to grow.
    pub fn insert(&mut self, fingerprint: Fingerprint, seq: u64, keep_from: u64) {
        debug_assert!(seq > 0, "sequence numbers start at 1");
        if (self.occupied + 1) * 5 > self.slots.len() * 4 {
            self.rebuild(keep_from, 1);
        }
        self.place(Slot::new(fingerprint, seq));
    }

    /// Drops every entry below `keep_from`, sizing the table for what is left.
    pub fn retain_from(&mut self, keep_from: u64) {
        self.rebuild(keep_from, 0);
    }

    fn rebuild(&mut self, keep_from: u64, room_for: usize) {
        let old = std::mem::take(&mut self.slots);
        let live: Vec<Slot> = old
            .into_iter()
            .filter(|slot| {
                let seq = slot.seq;
                seq != 0 && seq >= keep_from
            })
            .collect();
        let wanted = live.len() + room_for;
        // Two thirds full after a rebuild: room to grow by a fifth before the next one.
        self.slots = vec![Slot::default(); (wanted * 3 / 2).max(64)];
        self.occupied = 0;
        for slot in live {
            self.place(slot);
        }
    }

    fn place(&mut self, new: Slot) {
        let mut at = self.home(new.high);
        loop {
            let slot = &mut self.slots[at];
            let seq = slot.seq;
            if seq == 0 {
                *slot = new;
                self.occupied += 1;
                return;
            }
            if slot.same_print(&new) {
                slot.seq = new.seq;
                return;
            }
            at = (at + 1) % self.slots.len();
        }
    }

    /// A position in `0..len` from the fingerprint's high bits (uniform, so a multiply
    /// spreads them as well as a modulo would, and cheaper).
    fn home(&self, high: u64) -> usize {
        ((u128::from(high) * self.slots.len() as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fingerprint::fingerprint;

    #[test]
    fn a_table_slot_takes_twenty_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 20);
    }

    #[test]
    fn inserts_replace_grow_and_drop_expired_entries() {
        let mut table = PrintTable::default();
        assert_eq!(table.get(fingerprint("s", "0")), None);
        for n in 1..=10_000u64 {
            table.insert(fingerprint("s", &n.to_string()), n, 0);
        }
        assert_eq!(table.len(), 10_000);
        for n in 1..=10_000u64 {
            assert_eq!(table.get(fingerprint("s", &n.to_string())), Some(n));
        }
        assert_eq!(table.get(fingerprint("s", "10001")), None);
        table.insert(fingerprint("s", "5"), 20_000, 0);
        assert_eq!(table.get(fingerprint("s", "5")), Some(20_000));
        assert_eq!(table.len(), 10_000);
        table.retain_from(5_001);
        assert_eq!(table.len(), 5_001, "5,001..=10,000 and the renewed 5");
        assert_eq!(table.get(fingerprint("s", "4")), None);
        assert_eq!(table.get(fingerprint("s", "5")), Some(20_000));
        assert_eq!(table.get(fingerprint("s", "5001")), Some(5_001));
        assert!(table.slots.len() < 10_000, "sized for what is left");
    }

    #[test]
    fn growing_drops_entries_below_the_given_bound() {
        let mut table = PrintTable::default();
        for n in 1..=5_000u64 {
            table.insert(fingerprint("s", &n.to_string()), n, n.saturating_sub(100));
        }
        assert!(table.slots.len() < 300, "{} slots", table.slots.len());
        assert_eq!(table.get(fingerprint("s", "5000")), Some(5_000));
        assert_eq!(table.get(fingerprint("s", "4901")), Some(4_901));
        assert_eq!(table.get(fingerprint("s", "10")), None);
    }
}
