//! Batched-mode bodies: never a panic; a refusal names a field.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edge_outbox::fuzzing::batch(data));
