//! The properties the fuzz targets check, one function per parser of outside input. They live
//! in the library so that `fuzz/` (libFuzzer) and the regression test over `fuzz/regressions/`
//! (plain `cargo test`) check exactly the same thing. Each panics when its property fails.
#![doc(hidden)]

use crate::config::Config;
use crate::event::http::{from_json, parse_batch, parse_request, parse_structured, to_json};
use crate::store::record::{decode, encode};
use crate::store::{DeadLetter, Record};

/// Structured-mode bodies: an accepted event survives the JSON round trip.
pub fn structured(data: &[u8]) {
    if let Ok(event) = parse_structured(data) {
        let again = from_json(to_json(&event)).expect("an accepted event round-trips");
        assert_eq!(again, event);
    }
}

/// Batched-mode bodies: a batch is never empty; a refusal names a field.
pub fn batch(data: &[u8]) {
    match parse_batch(data) {
        Ok(events) => assert!(!events.is_empty()),
        Err(e) => assert!(!e.field.is_empty()),
    }
}

/// Binary-mode requests: `name:value` header lines, an empty line, then the body. An
/// accepted event is valid.
pub fn binary_request(data: &[u8]) {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let headers: Vec<(String, Vec<u8>)> = head
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?.to_string();
            Some((name, line[colon + 1..].to_vec()))
        })
        .collect();
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let content_type = pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    if let Ok(events) = parse_request(content_type, pairs.iter().copied(), body) {
        for e in events {
            e.validate().expect("accepted events are valid");
        }
    }
}

/// Stored records: decoding never panics nor over-allocates; a decoded record survives an
/// encode/decode round trip. (Not byte equality: bincode accepts non-minimal varints, and
/// libFuzzer forges matching checksums, so several byte strings may decode to one record.)
pub fn stored_record(data: &[u8]) {
    if let Ok(record) = decode::<Record>(data) {
        let again = decode::<Record>(&encode(&record)).expect("a re-encoded record decodes");
        assert_eq!(again, record);
    }
    let _ = decode::<DeadLetter>(data);
}

/// Configuration files: parsing, validation and redaction never panic.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_toml(text) {
            let _ = config.validate(true);
            let _ = config.redacted_toml();
        }
    }
}

/// The property for a fuzz target's name.
pub fn property(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "structured" => structured,
        "batch" => batch,
        "binary_headers" => binary_request,
        "record_decode" => stored_record,
        "config_toml" => config_file,
        _ => return None,
    })
}
