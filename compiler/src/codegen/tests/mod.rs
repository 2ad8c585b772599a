//! Kernel tests: every kernel family against plain Rust loops (f64 accumulation) on awkward shapes.
//!
//! Tolerance: a kernel sums in f32, in a different order than the reference; the error of an f32
//! sum of `K` terms is bounded by about `K * eps * sum(|terms|)`, and in practice is far below that
//! (errors cancel). Each check allows `1e-5 * (1 + magnitude)` where `magnitude` is the sum of
//! absolute values of the terms that produced the element (computed by the reference), so large
//! reductions get a proportionally larger budget, never a looser relative one.

mod bounds;
mod conv;
mod eltwise;
mod linear;
mod lrn;
mod models;
mod pool;
mod softmax;
mod tile;

use super::{
    compile, CompileOptions, CompiledKernels, Isa, IsaChoice, KernelArgs, KernelRequest, KernelSpec,
};

/// A small deterministic generator (xorshift64*), values in [-1, 1).
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Compiles one kernel for the host's widest ISA.
pub(super) fn compile_one(spec: KernelSpec) -> CompiledKernels {
    compile_for(spec, Isa::best().expect("the host runs some ISA"))
}

/// Compiles one kernel for `isa`.
pub(super) fn compile_for(spec: KernelSpec, isa: Isa) -> CompiledKernels {
    compile(
        &[KernelRequest { name: "test".into(), spec }],
        CompileOptions {
            keep_clif: true,
            isa: IsaChoice::Fixed(isa),
            check_bounds: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("compile failed for {isa}: {e}"))
}

/// Every ISA the host supports; prints a visible line for each one it lacks.
pub(super) fn host_isas() -> Vec<Isa> {
    for isa in Isa::ALL {
        if !isa.host_supports() {
            eprintln!("skipped {isa}: host lacks {}", isa.missing_features().join(", "));
        }
    }
    Isa::available()
}

/// Runs kernel 0 of `k` over a batch of `n`, splitting the items into two ranges (as two threads
/// would), and returns the output buffer (`out_len` floats, pre-filled with a sentinel so writes
/// outside the value show up).
pub(super) fn run(
    k: &CompiledKernels,
    n: usize,
    inputs: &[&[f32]],
    weights: &[&[f32]],
    out_len: usize,
) -> Vec<f32> {
    let ins: Vec<*const f32> = inputs.iter().map(|s| s.as_ptr()).collect();
    let mut out = vec![f32::from_bits(0x7fc0_1234); out_len];
    call_in_chunks(k, n, ins, weights, &mut out);
    out
}

/// [`run`] with the output written over input `alias`, as a memory plan that places a value in the
/// buffer of an input dying at that node runs it: the output buffer starts as `init` (the aliased
/// input's values) and input `alias` points at it.
pub(super) fn run_in_place(
    k: &CompiledKernels,
    n: usize,
    inputs: &[&[f32]],
    alias: usize,
    weights: &[&[f32]],
    init: Vec<f32>,
) -> Vec<f32> {
    let mut out = init;
    let mut ins: Vec<*const f32> = inputs.iter().map(|s| s.as_ptr()).collect();
    ins[alias] = out.as_ptr();
    call_in_chunks(k, n, ins, weights, &mut out);
    out
}

/// Calls kernel 0 of `k` over a batch of `n` into `out` in chunks run one after the other, with a
/// NaN-filled scratch: about the first half of the items in one call without a set-up memo, then
/// the rest item by item sharing one (as an executor's thread runs its claims). An input may point
/// into `out` (an in-place run).
pub(super) fn call_in_chunks(
    k: &CompiledKernels,
    n: usize,
    ins: Vec<*const f32>,
    weights: &[&[f32]],
    out: &mut [f32],
) {
    let kernel = &k.kernels[0];
    // NaN-filled: a kernel must not read scratch it did not write (but for lanes it discards).
    let mut scratch = vec![f32::NAN; kernel.scratch_floats().max(1)];
    let ws: Vec<*const f32> = weights.iter().map(|s| s.as_ptr()).collect();
    let mut args = KernelArgs {
        inputs: &ins,
        output: out.as_mut_ptr(),
        weights: &ws,
        scratch: scratch.as_mut_ptr(),
        batch: n,
        setup: std::ptr::null_mut(),
    };
    let items = kernel.work_items(n);
    let mid = items / 2 + items % 3 / 2;
    // SAFETY: the buffers are sized by the tests for the spec and batch `n`; the scratch holds
    // `scratch_floats()` floats and the calls run one after the other. An input may point into
    // `out` (an in-place run), which the kernel then reads and writes.
    unsafe { kernel.call(&args, 0, mid) };
    // The rest item by item, as an executor's chunks on one thread: sharing a set-up memo, so a
    // call skips the fill or transform its predecessor left in the scratch when (and only when)
    // its item needs the same one.
    let mut setup = -1i64;
    args.setup = &mut setup;
    for item in mid..items {
        // SAFETY: as above.
        unsafe { kernel.call(&args, item, item + 1) };
    }
}

/// Asserts `got` matches `want` within `1e-5 * (1 + mag)` element-wise.
pub(super) fn assert_close(what: &str, got: &[f32], want: &[f64], mag: &[f64]) {
    assert_close_scaled(what, got, want, mag, 1.0);
}

/// [`assert_close`] with the tolerance multiplied by `slack` (algorithms that round more, such as
/// Winograd's).
pub(super) fn assert_close_scaled(what: &str, got: &[f32], want: &[f64], mag: &[f64], slack: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = slack * 1e-5 * (1.0 + m);
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: got {g}, want {w} (tolerance {tol:e})");
    }
}
