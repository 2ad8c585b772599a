//! Code generation with Cranelift: one native kernel per executable IR node.
//!
//! ## Kernel ABI
//! Every kernel is a [`KernelFn`]:
//! `extern "C" fn(inputs, output, weights, scratch, begin, end)`.
//! - `inputs[i]` points at element `(0, 0)` of the node's `i`-th input value (for the memory plan's
//!   placements: `arena + buffer.offset * N + placement.offset`, in floats); sample `n` of a value
//!   starts `n * sample_stride` floats further, with the strides baked into the spec.
//! - `output` likewise for the node's output value.
//! - `weights[j]`: the kernel's weight buffers, as listed by [`KernelSpec::weight_layout`] (packed
//!   conv/linear weights from [`pack`], or plain per-channel vectors).
//! - `scratch`: per-thread memory of [`KernelSpec::scratch_floats`] floats (may be null when 0).
//! - `begin..end`: the work items to run. A batch of `N` has `N * items_per_sample()` items, item
//!   `i` belonging to sample `i / items_per_sample()`. Items write disjoint outputs and only read
//!   inputs, weights and their own scratch, so an executor may split `0..N*items_per_sample()` into
//!   any ranges and run them on different threads (each with its own scratch).
//!
//! Shapes, strides, padding and offsets are compile-time constants of each kernel; the batch size
//! is not (it only scales the item range), so one compilation serves every batch size.
//!
//! ## Families
//! [`conv`] + [`gemm`] (every `FusedConv`), [`linear`], [`pool`], [`lrn`], [`eltwise`] (add, ReLU,
//! affine, copies for concatenation), [`softmax`]. Views (`Slice`, `Flatten`, in-place `Concat`,
//! `Input`, `Dropout`) need no kernel: see [`KernelSpec::for_node`].

pub mod conv;
mod cx;
pub mod gemm;
pub mod isa;
pub mod jit;
pub mod pack;

pub use conv::{ConvPlan, ConvSpec};
pub use jit::{compile, CompileOptions, CompiledKernel, CompiledKernels, KernelArgs, KernelRequest};
pub use pack::{pack_conv_weights, AlignedF32};

use cranelift_jit::JITModule;
use cx::KernelCx;

/// The entry point of every kernel (see the module documentation for the contract).
///
/// # Safety
/// `inputs` must hold as many valid pointers as the node has inputs, each valid for reads of the
/// whole value for every sample the items `begin..end` touch (sample strides as in the spec);
/// `weights` likewise for the buffers of [`KernelSpec::weight_layout`]; `output` valid for writes
/// of those samples; `scratch` valid for reads and writes of `scratch_floats()` floats and used by
/// no one else during the call; `end <= N * items_per_sample()`.
pub type KernelFn = unsafe extern "C" fn(
    inputs: *const *const f32,
    output: *mut f32,
    weights: *const *const f32,
    scratch: *mut f32,
    begin: u64,
    end: u64,
);

/// Errors of code generation.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("this machine cannot run netc's kernels: {0} (x86-64 with AVX2 and FMA is required)")]
    UnsupportedHost(String),
    #[error("unsupported kernel: {0}")]
    Unsupported(String),
    #[error("weights do not fit the kernel: {0}")]
    Weights(String),
    #[error("Cranelift failed: {0}")]
    Cranelift(String),
}

/// What one kernel computes, with every shape and stride it is specialised for.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelSpec {
    Conv(ConvSpec),
}

impl KernelSpec {
    /// Work items per sample (see the module documentation).
    pub fn items_per_sample(&self) -> usize {
        match self {
            KernelSpec::Conv(s) => ConvPlan::new(s).map_or(1, |p| p.items_per_sample()),
        }
    }

    /// Floats of per-thread scratch.
    pub fn scratch_floats(&self) -> usize {
        match self {
            KernelSpec::Conv(s) => ConvPlan::new(s).map_or(0, |p| p.scratch_floats()),
        }
    }

    /// Number of input pointers the kernel reads.
    pub fn input_count(&self) -> usize {
        match self {
            KernelSpec::Conv(s) => 1 + s.op.residual as usize,
        }
    }

    /// The weight buffers the kernel expects, in order, with their lengths in floats.
    pub fn weight_layout(&self) -> Vec<(&'static str, usize)> {
        match self {
            KernelSpec::Conv(s) => {
                vec![(
                    "packed conv weights (pack_conv_weights)",
                    ConvPlan::new(s).map_or(0, |p| p.packed_len),
                )]
            }
        }
    }

    /// One line for dumps.
    pub fn describe(&self) -> String {
        match self {
            KernelSpec::Conv(s) => match ConvPlan::new(s) {
                Ok(p) => format!(
                    "{} {:?} -> {:?}, {:?} path, tile {}x{}, {} items/sample, scratch {} floats",
                    s.op_label(),
                    s.input,
                    p.out,
                    p.path,
                    p.mr,
                    p.nv * cx::LANES,
                    p.items_per_sample(),
                    p.scratch_floats()
                ),
                Err(e) => e.to_string(),
            },
        }
    }

    /// Which Cranelift optimisation level the family is compiled with (see [`isa::OptLevel`]).
    pub fn opt_level(&self) -> isa::OptLevel {
        match self {
            KernelSpec::Conv(_) => isa::OptLevel::None,
        }
    }

    fn emit(&self, cx: &mut KernelCx, _module: &mut JITModule) -> Result<(), CodegenError> {
        match self {
            KernelSpec::Conv(s) => {
                let plan = ConvPlan::new(s)?;
                conv::emit(cx, s, &plan);
            }
        }
        Ok(())
    }
}

impl ConvSpec {
    fn op_label(&self) -> String {
        crate::ir::Op::FusedConv(self.op.clone()).label()
    }
}

mod helpers {
    /// Extern helpers kernels may call, by symbol name.
    pub fn symbols() -> Vec<(&'static str, *const u8)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
