//! The kernels' weight buffers from bound weights: each step's weight slots evaluated (folded and
//! merged slots computed from the file's tensors) and packed by [`Program::pack`] into the layout
//! its kernel reads, 64-byte aligned. `netc compile` stores exactly these buffers.

use super::JitError;
use crate::weights::BoundWeights;
use netc_compiler::codegen::AlignedF32;
use netc_compiler::lower::Program;

/// Packs the weights of every step of `program`, in step order.
pub fn pack(program: &Program, weights: &BoundWeights) -> Result<Vec<Vec<AlignedF32>>, JitError> {
    Ok(program.pack(|node, suffix| weights.slot(node, suffix))?)
}
