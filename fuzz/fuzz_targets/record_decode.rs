//! Stored records are outside input too (a disk can flip bits): decoding never panics and
//! never allocates past its limit; a decoded record re-encodes to the same bytes.
#![no_main]
use edge_outbox::store::record::{decode, encode};
use edge_outbox::store::{DeadLetter, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode::<Record>(data) {
        assert_eq!(encode(&record), data);
    }
    let _ = decode::<DeadLetter>(data);
});
