//! netc-runtime: weights, the reference interpreter, the executor and tensor I/O.
//!
//! * [`weights`]: memory-mapped safetensors files bound to an IR graph by scoped name.
//! * [`reference`](mod@reference): the reference interpreter, the oracle for every optimisation and kernel.
//! * [`init`]: deterministic He initialisation (`netc init`).
//! * [`fill`]: "netc-fill v1", the generator shared with the PyTorch golden-file script.
//! * [`io`]: `.npy` tensors, images with torchvision's ImageNet preprocessing, atomic writes.
//! * [`classes`]: the ImageNet class names.
//!
//! `unsafe` appears only at three boundaries: memory-mapping weight files ([`WeightFile::open`]) and
//! compiled bundles ([`bundle::Bundle::open`]), and calling JIT-compiled kernels (`jit::threads`).

#![deny(unsafe_code)]

pub mod bundle;
pub mod classes;
pub mod fill;
pub mod init;
pub mod io;
pub mod reference;
pub mod tensor;
pub mod weights;

pub use tensor::{Tensor, TensorView};
pub use weights::{bind, bind_with, BoundWeights, WeightError, WeightFile};
pub mod jit;
