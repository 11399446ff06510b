//! Configuration files: parsing and validation never panic.
#![no_main]
use edge_outbox::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_toml(text) {
            let _ = config.validate(true);
            let _ = config.redacted_toml();
        }
    }
});
