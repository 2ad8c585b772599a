//! Fuzz target: any text given to the front end (parse + elaborate + verify) must produce a graph or
//! a diagnostic, never a panic, stack overflow or hang. The text is compiled as if it lived in
//! `models/`, so `use "blocks/..."` reaches the real block files.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_check corpus/parse_check seeds -- -max_total_time=600`
//! (cargo fuzz needs nightly features; RUSTC_BOOTSTRAP enables them on the stable toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes, not only UTF-8: a binary file given as a source must be diagnosed too.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fuzzed.net");
    if let Ok(graph) = netc_compiler::compile_bytes(&path, data, &Default::default()) {
        netc_compiler::ir::verify(&graph).expect("an accepted graph verifies");
    }
});
