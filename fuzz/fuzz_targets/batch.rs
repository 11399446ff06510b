//! Batched-mode bodies: never a panic; a refusal names a field.
#![no_main]
use edge_outbox::event::http::parse_batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_batch(data) {
        Ok(events) => assert!(!events.is_empty()),
        Err(e) => assert!(!e.field.is_empty()),
    }
});
