//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `models/<name>.net`.
pub fn model(name: &str) -> PathBuf {
    root().join("models").join(format!("{name}.net"))
}

/// Every seed model name.
pub const SEED_MODELS: &[&str] = &[
    "alexnet",
    "alexnet_paper",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "preact_resnet50",
];

/// Compiles a model file to its parsed graph, panicking with the rendered diagnostic on failure.
pub fn compile(path: &Path) -> netc_compiler::ir::Graph {
    netc_compiler::compile_file(path, &Default::default()).unwrap_or_else(|d| panic!("{d}"))
}

/// Compiles source text (as if it lived at `dir/name`), returning the diagnostic on failure.
pub fn compile_text(text: &str) -> Result<netc_compiler::ir::Graph, netc_compiler::Diagnostic> {
    netc_compiler::compile_source(Path::new("test.net"), text, &Default::default())
}

/// The `netc` binary built for this test run.
pub fn netc() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_netc"))
}

/// `tests/golden/pytorch/<file>`.
pub fn golden_pytorch(file: &str) -> PathBuf {
    root().join("tests").join("golden").join("pytorch").join(file)
}

/// The netc-fill v1 weights of every tensor `graph` expects (training-only parts included), as an
/// in-memory safetensors file: the same values `make_golden.py` put into the PyTorch models.
pub fn filled_weights(graph: &netc_compiler::ir::Graph) -> netc_runtime::WeightFile {
    use netc_runtime::weights::{expected_tensors, to_bytes, OwnedTensor};
    let mut tensors = std::collections::BTreeMap::new();
    for e in expected_tensors(graph) {
        let data = netc_runtime::fill::weight(&e.key, &e.shape).unwrap_or_else(|err| panic!("{err}"));
        tensors.insert(e.key, OwnedTensor::F32 { shape: e.shape, data });
    }
    let bytes = to_bytes(&tensors).expect("serialise");
    drop(tensors);
    netc_runtime::WeightFile::from_bytes(format!("netc-fill v1 weights of {}", graph.name), bytes)
        .expect("valid")
}

/// Runs `graph` with the JIT backend (kernels compiled for the host's default ISA, weights packed
/// from `weights`) on `input` with `threads` threads, returning the first output.
pub fn jit_run(
    graph: &netc_compiler::ir::Graph,
    weights: &netc_runtime::BoundWeights,
    input: &netc_runtime::Tensor,
    threads: usize,
) -> netc_runtime::Tensor {
    jit_run_isa(graph, weights, input, threads, netc_compiler::codegen::IsaChoice::Auto)
}

/// [`jit_run`] with kernels for `isa`.
pub fn jit_run_isa(
    graph: &netc_compiler::ir::Graph,
    weights: &netc_runtime::BoundWeights,
    input: &netc_runtime::Tensor,
    threads: usize,
    isa: netc_compiler::codegen::IsaChoice,
) -> netc_runtime::Tensor {
    use netc_runtime::jit::{pack, Executable, Session, WeightBuf};
    let program = netc_compiler::lower::Program::new(graph.clone()).unwrap_or_else(|e| panic!("{e}"));
    let packed = pack(&program, weights).unwrap_or_else(|e| panic!("{e}"));
    // Every kernel the JIT tests run is also proved in bounds (`codegen::bounds`).
    let options = netc_compiler::codegen::CompileOptions { isa, check_bounds: true, ..Default::default() };
    let exe = Executable::new(program, WeightBuf::owned(packed), options).unwrap_or_else(|e| panic!("{e}"));
    exe.run(&mut Session::new(threads), &[input.view()]).unwrap_or_else(|e| panic!("{e}")).remove(0)
}

/// Every ISA the host supports, narrowest first; prints a visible line for each one it lacks.
pub fn host_isas() -> Vec<netc_compiler::codegen::Isa> {
    use netc_compiler::codegen::Isa;
    for isa in Isa::ALL {
        if !isa.host_supports() {
            eprintln!("skipped {isa}: host lacks {}", isa.missing_features().join(", "));
        }
    }
    Isa::available()
}

/// Asserts `max |got - expected| <= 1e-4 * max |expected|` with equal shapes: the agreement
/// every backend and pass must reach against the reference (f32 kernels summing in another order
/// than the reference's f64 accumulation).
pub fn assert_close(what: &str, got: &netc_runtime::Tensor, expected: &netc_runtime::Tensor) {
    assert_close_above(what, got, expected, 1e-6);
}

/// [`assert_close`] with `max |expected|` taken as at least `floor`: for outputs that may cancel
/// to near zero (a single logit of a random network), whose rounding error follows the size of
/// the terms that cancelled, not of the result.
pub fn assert_close_above(
    what: &str,
    got: &netc_runtime::Tensor,
    expected: &netc_runtime::Tensor,
    floor: f32,
) {
    assert_eq!(got.shape, expected.shape, "{what}: shape");
    let scale = expected.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(floor);
    let diff = got.data.iter().zip(&expected.data).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4 * scale, "{what}: max |diff| {diff} > 1e-4 x max |expected| {scale}");
}

/// Runs `netc` with `args`: exit code (-1 if killed by a signal), standard output, standard error.
pub fn run_netc(args: &[&str]) -> (i32, String, String) {
    let out = netc().args(args).output().expect("netc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A path as `&str` for a command line (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
