//! How a `source` + `id` pair is known to the de-duplication index: a 128-bit SHA-256
//! fingerprint, of which the in-memory table (`print_table.rs`) compares 96 bits. A chance
//! collision (about 2^-57 at a million pairs, and infeasible to forge) is far below the rate of
//! undetected disk errors.

use sha2::{Digest, Sha256};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_keeps_its_fingerprint_and_the_split_between_source_and_id_counts() {
        assert_ne!(fingerprint("a", "bc"), fingerprint("ab", "c"));
        assert_eq!(fingerprint("s", "1"), fingerprint("s", "1"));
    }
}
