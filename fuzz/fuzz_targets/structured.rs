//! Structured-mode bodies: never a panic; an accepted event survives the JSON round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edge_outbox::fuzzing::structured(data));
