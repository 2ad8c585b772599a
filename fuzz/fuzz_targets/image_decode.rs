//! Fuzz target: any bytes given as an input image must decode within the documented limits and
//! preprocess to a `[1, 3, 32, 32]` tensor, or be refused with an error.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run image_decode corpus/image_decode`

#![no_main]

use libfuzzer_sys::fuzz_target;
use netc_runtime::io::image;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(rgb) = image::decode_bytes(Path::new("fuzzed.jpg"), data) {
        assert_eq!(rgb.pixels.len(), rgb.width * rgb.height * 3);
        let t = image::preprocess(&rgb, 32, 32);
        assert_eq!(t.shape, [1, 3, 32, 32]);
    }
});
