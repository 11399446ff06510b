//! Binary-mode requests: arbitrary header names and values (percent-decoding included) and
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edge_outbox::fuzzing::binary_request(data));
