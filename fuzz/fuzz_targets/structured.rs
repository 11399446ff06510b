//! Structured-mode bodies: never a panic; an accepted event survives the JSON round trip.
#![no_main]
use edge_outbox::event::http::{from_json, parse_structured, to_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = parse_structured(data) {
        let again = from_json(to_json(&event)).expect("an accepted event round-trips");
        assert_eq!(again, event);
    }
});
