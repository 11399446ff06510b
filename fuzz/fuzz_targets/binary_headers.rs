//! Binary-mode requests: arbitrary header names and values (percent-decoding included) and
//! body. Never a panic; an accepted event passes validation.
#![no_main]
use edge_outbox::event::http::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: lines "name:value" until an empty line, then the body.
    let split = data.windows(2).position(|w| w == b"\n\n").unwrap_or(data.len());
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
    let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let content_type = pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    if let Ok(events) = parse_request(content_type, pairs.iter().copied(), body) {
        for e in events {
            e.validate().expect("accepted events are valid");
        }
    }
});
