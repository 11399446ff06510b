//! The key layout of the outbox tree. Everything lives in one sled tree so that a commit group
//! (records, de-duplication entries, counters) is one atomic `apply_batch`; sled batches are
//! atomic only within a tree. A one-byte prefix separates the logical tables:
//!
//! | prefix | key                         | value                               |
//! |--------|-----------------------------|-------------------------------------|
//! | `e`    | seq (u64 BE)                | encoded [`Record`](super::Record)   |
//! | `d`    | seq (u64 BE)                | encoded [`DeadLetter`](super::DeadLetter) |
//! | `m`    | name                        | u64 BE (counters, cursor, version)  |
//! | `u`    | len(source) u32 BE, source, id | seq (u64 BE), appended ms (u64 BE)  |
//! | `x`    | appended ms (u64 BE), seq   | the `u` key, for expiring it        |

pub const EVENT: u8 = b'e';
pub const DEAD: u8 = b'd';
pub const META: u8 = b'm';
pub const DEDUP: u8 = b'u';
pub const DEDUP_EXPIRY: u8 = b'x';

pub fn event(seq: u64) -> [u8; 9] {
    seq_key(EVENT, seq)
}

pub fn dead(seq: u64) -> [u8; 9] {
    seq_key(DEAD, seq)
}

fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of an `e` or `d` key.
pub fn seq_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[1..9].try_into().expect("sequence keys are 9 bytes"))
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn dedup(source: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + source.len() + id.len());
    key.push(DEDUP);
    key.extend_from_slice(&(source.len() as u32).to_be_bytes());
    key.extend_from_slice(source.as_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn dedup_value(seq: u64, appended_ms: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&seq.to_be_bytes());
    value[8..].copy_from_slice(&appended_ms.to_be_bytes());
    value
}

/// `(seq, appended_ms)` of a `u` value.
pub fn parse_dedup_value(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() != 16 {
        return None;
    }
    Some((
        u64::from_be_bytes(value[..8].try_into().ok()?),
        u64::from_be_bytes(value[8..].try_into().ok()?),
    ))
}

pub fn dedup_expiry(appended_ms: u64, seq: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = DEDUP_EXPIRY;
    key[1..9].copy_from_slice(&appended_ms.to_be_bytes());
    key[9..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn u64_value(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_keys_sort_numerically() {
        assert!(event(255) < event(256));
        assert!(event(u64::MAX - 1) < event(u64::MAX));
        assert_eq!(seq_of(&event(42)), 42);
        assert_eq!(seq_of(&dead(7)), 7);
        assert!(event(u64::MAX)[..] < [EVENT + 1][..]);
    }

    #[test]
    fn dedup_keys_separate_source_and_id() {
        assert_ne!(dedup("a", "bc"), dedup("ab", "c"));
        assert_ne!(dedup("a\0b", "c"), dedup("a", "b\0c"));
        assert_eq!(parse_dedup_value(&dedup_value(3, 4)), Some((3, 4)));
    }
}
