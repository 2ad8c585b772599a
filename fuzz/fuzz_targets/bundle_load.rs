//! Fuzz target: any bytes given as a compiled bundle must load (header, checksum, manifest, graph,
//! program, weight blobs checked against the kernels' layouts) or be refused with an error.
//! Checksums make random damage fail early; the seeds are valid bundles, and `-dict` or
//! `--no-checksum` style mutations are not needed: the checksum is part of what must hold.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run bundle_load corpus/bundle_load`

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = netc_runtime::bundle::Bundle::from_bytes(Path::new("fuzzed.netc"), data) else { return };
    let Ok(program) = bundle.program() else { return };
    if let Ok(weights) = bundle.weights(&program) {
        for (step, buffers) in program.steps().iter().zip(&weights) {
            for (&(_, len), buffer) in step.weights.iter().zip(buffers) {
                assert_eq!(buffer.len(), len);
            }
        }
    }
});
