//! The de-duplication index's table: fingerprint -> sequence number in 16 bytes a slot (a
//! million pairs take 24 MB, against 69 MB in std's map). A slot keeps 96 of the fingerprint's
//! 128 bits and the sequence number as a 32-bit offset from the table's base (0: empty); linear
//! probing, no deletes: the owner rebuilds the table without expired entries now and then, and
//! before it passes 80 % full.

use super::fingerprint::Fingerprint;

/// The widest span of sequence numbers the table holds: an entry more than this far below the
/// newest one is forgotten early (only a window of over four billion events reaches it).
const MAX_SPAN: u64 = u32::MAX as u64 - 1;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    high: u64,
    low: u32,
    /// The sequence number less the table's base; 0 marks an empty slot.
    offset: u32,
}

impl Slot {
    fn same_print(&self, high: u64, low: u32) -> bool {
        self.high == high && self.low == low
    }
}

fn halves(fingerprint: Fingerprint) -> (u64, u32) {
    ((fingerprint >> 64) as u64, fingerprint as u32)
}

#[derive(Default)]
pub struct PrintTable {
    slots: Vec<Slot>,
    occupied: usize,
    /// Every sequence number held is above it, and at most `u32::MAX` above it.
    base: u64,
    /// The highest sequence number held.
    newest: u64,
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
        let (high, low) = halves(fingerprint);
        let mut at = self.home(high);
        loop {
            let slot = self.slots[at];
            if slot.offset == 0 {
                return None;
            }
            if slot.same_print(high, low) {
                return Some(self.base + u64::from(slot.offset));
            }
            at = (at + 1) % self.slots.len();
        }
    }

    /// Remembers `fingerprint` under `seq` (>= 1), replacing an older number. Entries below
    /// `keep_from` may be dropped if the table has to grow or move its base; `seq` below it is
    /// already expired and not kept.
    pub fn insert(&mut self, fingerprint: Fingerprint, seq: u64, keep_from: u64) {
        debug_assert!(seq > 0, "sequence numbers start at 1");
        if seq < keep_from {
            return;
        }
        self.newest = self.newest.max(seq);
        let fits = seq > self.base && seq - self.base <= u64::from(u32::MAX);
        if !fits || (self.occupied + 1) * 5 > self.slots.len() * 4 {
            self.rebuild(keep_from, 1);
        }
        if seq <= self.base {
            return; // more than the span below the newest: forgotten early
        }
        let offset = (seq - self.base) as u32;
        self.place(halves(fingerprint), offset);
    }

    /// Drops every entry below `keep_from`, sizing the table for what is left.
    pub fn retain_from(&mut self, keep_from: u64) {
        self.rebuild(keep_from, 0);
    }

    fn rebuild(&mut self, keep_from: u64, room_for: usize) {
        let keep_from = keep_from.max(self.newest.saturating_sub(MAX_SPAN)).max(1);
        let old_base = self.base;
        let old = std::mem::take(&mut self.slots);
        let live: Vec<(u64, u32, u64)> = old
            .into_iter()
            .filter(|slot| slot.offset != 0)
            .map(|slot| (slot.high, slot.low, old_base + u64::from(slot.offset)))
            .filter(|(_, _, seq)| *seq >= keep_from)
            .collect();
        let wanted = live.len() + room_for;
        // Two thirds full after a rebuild: room to grow by a fifth before the next one.
        self.slots = vec![Slot::default(); (wanted * 3 / 2).max(64)];
        self.occupied = 0;
        self.base = keep_from - 1;
        for (high, low, seq) in live {
            self.place((high, low), (seq - self.base) as u32);
        }
    }

    fn place(&mut self, (high, low): (u64, u32), offset: u32) {
        let mut at = self.home(high);
        loop {
            let slot = &mut self.slots[at];
            if slot.offset == 0 {
                *slot = Slot { high, low, offset };
                self.occupied += 1;
                return;
            }
            if slot.same_print(high, low) {
                slot.offset = offset;
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
    fn a_table_slot_takes_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
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

    #[test]
    fn sequence_numbers_far_apart_move_the_base_and_forget_the_oldest() {
        let mut table = PrintTable::default();
        let start = 1u64 << 40;
        table.insert(fingerprint("s", "a"), start, 0);
        table.insert(fingerprint("s", "b"), start + 1, 0);
        assert_eq!(table.get(fingerprint("s", "a")), Some(start));
        let far = start + u64::from(u32::MAX);
        table.insert(fingerprint("s", "c"), far, 0);
        assert_eq!(table.get(fingerprint("s", "a")), None, "beyond the span");
        assert_eq!(table.get(fingerprint("s", "b")), Some(start + 1));
        assert_eq!(table.get(fingerprint("s", "c")), Some(far));
        table.insert(fingerprint("s", "d"), 5, 0);
        assert_eq!(
            table.get(fingerprint("s", "d")),
            None,
            "below the span, not kept"
        );
        assert_eq!(table.get(fingerprint("s", "c")), Some(far));
        table.retain_from(far);
        assert_eq!(table.get(fingerprint("s", "b")), None);
        assert_eq!(table.get(fingerprint("s", "c")), Some(far));
        assert_eq!(table.len(), 1);
    }
}
