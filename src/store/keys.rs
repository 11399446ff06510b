//! The key layout inside a generation's tree. A commit group (chunks, their metadata,
//! de-duplication entries, dead letters, counters) is one atomic `apply_batch`, and sled batches
//! are atomic only within a tree, so one tree holds everything and a one-byte prefix separates
//! the logical tables:
//!
//! | prefix | key                | value                                                        |
//! |--------|--------------------|--------------------------------------------------------------|
//! | `c`    | first seq (u64 BE) | where a [chunk](super::chunk)'s records are in its segments  |
//! | `k`    | first seq (u64 BE) | its [`ChunkMeta`](super::chunk::ChunkMeta)                   |
//! | `d`    | seq (u64 BE)       | encoded [`DeadLetter`](super::DeadLetter), in the generation's |
//! |        |                    | own dead-letter tree (a parked record can be a megabyte)     |
//! | `h`    | first seq (u64 BE) | a [`DedupGroup`](super::dedup::DedupGroup)                   |
//! | `m`    | name               | u64 BE (next sequence number, cursor, schema version), and   |
//! |        |                    | `log_end`: up to where sled reflects the segment files       |

pub const CHUNK: u8 = b'c';
pub const CHUNK_META: u8 = b'k';
pub const DEAD: u8 = b'd';
pub const DEDUP: u8 = b'h';
pub const META: u8 = b'm';

pub fn chunk(first_seq: u64) -> [u8; 9] {
    seq_key(CHUNK, first_seq)
}

pub fn chunk_meta(first_seq: u64) -> [u8; 9] {
    seq_key(CHUNK_META, first_seq)
}

pub fn dead(seq: u64) -> [u8; 9] {
    seq_key(DEAD, seq)
}

pub fn dedup(first_seq: u64) -> [u8; 9] {
    seq_key(DEDUP, first_seq)
}

fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of a `c`, `k`, `d` or `h` key.
pub fn seq_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[1..9].try_into().expect("sequence keys are 9 bytes"))
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name.as_bytes());
    key
}

/// The `m` key holding the log position (segment, offset) up to which sled reflects the
/// segment files; what lies after it is restored from them on open.
pub const LOG_END: &str = "log_end";

pub fn encode_log_end((segment, offset): (u64, u64)) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&segment.to_be_bytes());
    out[8..].copy_from_slice(&offset.to_be_bytes());
    out
}

pub fn decode_log_end(value: &[u8]) -> Option<(u64, u64)> {
    let value: &[u8; 16] = value.try_into().ok()?;
    let word = |i: usize| u64::from_be_bytes(value[i..i + 8].try_into().expect("8 bytes"));
    Some((word(0), word(8)))
}

pub fn u64_value(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_keys_sort_in_numeric_order() {
        assert!(chunk(255) < chunk(256));
        assert!(chunk(u64::MAX - 1) < chunk(u64::MAX));
        assert_eq!(seq_of(&chunk(42)), 42);
        assert_eq!(seq_of(&dead(7)), 7);
        assert_eq!(seq_of(&dedup(9)), 9);
        assert!(chunk(u64::MAX)[..] < [CHUNK + 1][..]);
    }
}
