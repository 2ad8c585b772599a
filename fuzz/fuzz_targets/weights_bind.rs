//! Fuzz target: any bytes given as a safetensors weight file must open and bind to a model, or be
//! refused with an error; never a panic, an out-of-bounds read or an unbounded allocation.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run weights_bind corpus/weights_bind`

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// A conv + BatchNorm + linear model whose weights the inputs try to be.
fn model() -> &'static netc_compiler::ir::Graph {
    static MODEL: OnceLock<netc_compiler::ir::Graph> = OnceLock::new();
    MODEL.get_or_init(|| {
        let text = "network tiny(x: [3, 4, 4]) {\n  x |> conv(2, 3, pad = 1) @conv |> batchnorm @bn |> relu\n    |> flatten |> linear(5) @fc\n}\n";
        netc_compiler::compile_source(Path::new("tiny.net"), text, &Default::default()).expect("the model compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = netc_runtime::WeightFile::from_bytes("fuzzed.safetensors", data.to_vec()) {
        if let Ok(bound) = file.bind(model()) {
            for (_, t) in bound.iter() {
                assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
            }
        }
    }
});
