//! Stored records are outside input too (a disk can flip bits): decoding never panics and
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edge_outbox::fuzzing::stored_record(data));
