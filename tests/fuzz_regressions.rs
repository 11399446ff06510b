//! Every input kept under `fuzz/regressions/<target>/` (crashes the fuzzers found, plus the
//! seed corpus) is run through the same property as its fuzz target, on every `cargo test`.

use std::path::Path;

#[test]
fn kept_fuzz_inputs_hold_their_properties() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut checked = 0;
    for target in std::fs::read_dir(&root).expect("fuzz/regressions exists") {
        let target = target.unwrap();
        let name = target.file_name().to_string_lossy().to_string();
        let property = edge_outbox::fuzzing::property(&name)
            .unwrap_or_else(|| panic!("fuzz/regressions/{name} names no fuzz target"));
        for input in std::fs::read_dir(target.path()).unwrap() {
            let input = input.unwrap().path();
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| property(&data));
            assert!(outcome.is_ok(), "{} fails its property", input.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} inputs kept");
}
