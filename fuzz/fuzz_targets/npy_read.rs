//! Fuzz target: any bytes given as a `.npy` tensor must read as a tensor whose data matches its
//! shape, or be refused with an error.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run npy_read corpus/npy_read`

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = netc_runtime::io::npy::from_bytes(Path::new("fuzzed.npy"), data) {
        assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
    }
});
