//! # netc: a neural-network graph compiler and runtime, as a library
//!
//! Describe a CNN in a `.net` file, bind torchvision's weights (safetensors), and run it on
//! JIT-compiled kernels for the host's widest vectors. This crate is the one front door: a
//! [`Model`] built once and shared by any number of threads, [`Tensor`]s in and out, one
//! [`Error`] type.
//!
//! ```
//! # fn main() -> Result<(), netc::Error> {
//! # let dir = tempfile::tempdir()?;
//! # let net = dir.path().join("tiny.net");
//! # let weights = dir.path().join("tiny.safetensors");
//! # std::fs::write(&net, "network tiny(image: [3, 16, 16]) {
//! #   image |> conv(8, 3, pad = 1) @conv |> relu |> global_avgpool |> flatten |> linear(10) @fc
//! # }\n")?;
//! # netc::write_random_weights(&net, &weights, 7)?;
//! // A `.net` model and its weights (or `netc::Model::load("resnet50.netc")` for a compiled bundle).
//! let model = netc::Model::from_net(&net, &weights, &netc::Options::default())?;
//! let input = netc::Tensor::new(vec![1, 3, 16, 16], vec![0.5; 3 * 16 * 16])?;
//! let logits = model.run(&input)?;
//! assert_eq!(logits.shape, [1, 10]);
//!
//! // One model, many threads: `run` takes `&self`.
//! let model = std::sync::Arc::new(model);
//! let again = std::thread::spawn({
//!     let (model, input) = (model.clone(), input.clone());
//!     move || model.run(&input)
//! });
//! assert_eq!(again.join().unwrap()?.data, logits.data);
//! # Ok(())
//! # }
//! ```
//!
//! With the default feature `frontend` off (`default-features = false`), the crate runs compiled
//! bundles only ([`Model::load`]) and does not build the `.net` front end (parser, elaborator).
//!
//! A model owns everything it runs on: the compiled kernels, and the packed weights (in memory,
//! or the bundle's memory mapping). Each run takes a [`Session`] (the activation arena, scratch
//! and a persistent worker pool) from a pool inside the model, or the caller's own via
//! [`Model::run_in`]. The crates underneath: `netc-compiler` (language, IR, optimiser, code
//! generator) and `netc-runtime` (weights, bundles, reference interpreter, executor); see the
//! README's crate map.

#[cfg(feature = "frontend")]
mod check;
#[cfg(feature = "frontend")]
mod compile;
mod error;
mod model;
pub mod onnx;
mod summary;

#[cfg(feature = "frontend")]
pub use check::{check_file, check_source};
#[cfg(feature = "frontend")]
pub use compile::{compile_bundle, write_bundle, BundleReport};
pub use error::Error;
#[cfg(feature = "frontend")]
pub use model::write_random_weights;
pub use model::{is_bundle, BoundsCheck, BuildTimes, Model, Options};
pub use netc_compiler::codegen::{Isa, IsaChoice};
pub use netc_runtime::jit::WeightBuf;
pub use netc_runtime::jit::{MicroBatch, Session};
pub use netc_runtime::{Tensor, TensorView};
pub use summary::{summary, LayerRow, Summary};
