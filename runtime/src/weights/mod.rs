//! Weights: `.safetensors` files memory-mapped and bound to an IR graph by scoped name.
//!
//! * [`WeightFile`] opens and validates a file (or an in-memory buffer): every header entry is
//!   checked against the data section, and every problem is a [`WeightError`] that names the file
//!   and the tensor.
//! * [`bind`] matches the file against the tensors a [`Graph`](netc_compiler::ir::Graph) expects
//!   (key `<node scope>.<suffix>`, see [`expected_tensors`]) and reports every missing, unexpected,
//!   mis-shaped or wrongly typed tensor in one error. f32 data is borrowed straight from the mapping;
//!   f16/bf16 data is converted to f32 on load.
//! * [`write`](mod@write) builds safetensors files and buffers (used by `netc init` and by the tests).

mod bind;
mod file;
pub mod write;

pub use bind::{
    bind, bind_with, expected_tensors, BindOptions, BoundTensor, BoundWeights, ExpectedTensor, MismatchReport,
};
pub use file::{TensorEntry, WeightFile};
pub use safetensors::Dtype;
pub use write::{to_bytes, write_file, write_file_with_metadata, OwnedTensor};

use crate::tensor::Dims;
use std::path::PathBuf;

/// Everything that can go wrong reading or binding weights. Each variant names the file (or the
/// label of an in-memory buffer) and, where there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error(
        "{}: tensor `{tensor}` holds {value} at index {index}: weights must be finite \
         (--allow-nonfinite runs anyway)",
        .path.display()
    )]
    NonFinite { path: PathBuf, tensor: String, index: usize, value: f32 },
    #[error("{}: tensor `{tensor}` holds the variance {value} at index {index}: variances cannot be negative", .path.display())]
    NegativeVariance { path: PathBuf, tensor: String, index: usize, value: f32 },
    /// The OS error is part of the message, not a `source()`: printed once by chain printers.
    #[error("cannot read weight file {}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: truncated safetensors file: {detail}", .path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("{}: corrupt safetensors header: {detail}", .path.display())]
    CorruptHeader { path: PathBuf, detail: String },
    #[error(
        "{}: tensor `{tensor}`: data offsets [{start}, {end}) lie past the end of the data section \
         ({data_len} bytes): the file is truncated or its header is wrong",
        .path.display()
    )]
    OffsetsPastEnd { path: PathBuf, tensor: String, start: usize, end: usize, data_len: usize },
    #[error(
        "{}: tensors `{first}` (bytes [{}, {})) and `{second}` (bytes [{}, {})) overlap",
        .path.display(), .first_range.0, .first_range.1, .second_range.0, .second_range.1
    )]
    Overlap {
        path: PathBuf,
        first: String,
        first_range: (usize, usize),
        second: String,
        second_range: (usize, usize),
    },
    #[error(
        "{}: tensor `{tensor}`: {dtype:?} of shape {} needs {expected} bytes, but its data offsets span {found}",
        .path.display(), Dims(.shape)
    )]
    SizeMismatch {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error(
        "{}: tensor `{tensor}`: its F32 data starts at byte {offset} of the file, not a multiple of 4, so it \
         cannot be read in place; re-save the file with safetensors' own writer, which aligns every tensor",
        .path.display()
    )]
    Misaligned { path: PathBuf, tensor: String, offset: usize },
    #[error("{}: tensor `{tensor}` has dtype {dtype:?}; netc reads F32, F16 and BF16 weights", .path.display())]
    Dtype { path: PathBuf, tensor: String, dtype: Dtype },
    #[error("{0}")]
    Mismatch(Box<MismatchReport>),
    #[error("cannot write weight file {}: {detail}", .path.display())]
    Write { path: PathBuf, detail: String },
}
