//! The whole HTTP ingest request through the real handler and store: a refused request is
//! problem+json and leaves the store unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edge_outbox::fuzzing::http_ingest(data));
