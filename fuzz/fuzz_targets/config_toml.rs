//! Configuration files: parsing and validation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edge_outbox::fuzzing::config_file(data));
