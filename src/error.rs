//! [`Error`]: every way loading or running a model can fail, one type.

use std::path::PathBuf;

/// Why a model could not be loaded, compiled or run. Each variant wraps the error of the stage
/// that failed; `Display` gives the full message (a `.net` diagnostic renders with its source
/// line and caret).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `.net` source is malformed or does not check (shapes, arguments, ...).
    #[cfg(feature = "frontend")]
    #[error("{0}")]
    Source(Box<netc_compiler::Diagnostic>),
    /// An optimisation pass failed or was named wrongly.
    #[error(transparent)]
    Optimize(#[from] netc_compiler::passes::PassError),
    /// The graph cannot be lowered to kernels.
    #[error(transparent)]
    Codegen(#[from] netc_compiler::codegen::CodegenError),
    /// The weight file is unreadable, or its tensors do not match the model.
    #[error(transparent)]
    Weights(#[from] netc_runtime::WeightError),
    /// The bundle is unreadable, damaged or of another format version.
    #[error(transparent)]
    Bundle(#[from] netc_runtime::bundle::BundleError),
    /// Compiling or running the kernels failed (input shapes, memory, threads).
    #[error(transparent)]
    Run(#[from] netc_runtime::jit::JitError),
    /// Random weights do not fit in memory.
    #[error(transparent)]
    Init(#[from] netc_runtime::init::InitError),
    /// A tensor's shape and data disagree.
    #[error(transparent)]
    Tensor(#[from] netc_runtime::tensor::TensorError),
    /// The graph cannot be exported to ONNX.
    #[error(transparent)]
    Export(#[from] crate::onnx::ExportError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file is not what the call needs (e.g. a bundle given as a `.net` source).
    #[error("{}: {what}", path.display())]
    Usage { path: PathBuf, what: String },
}

#[cfg(feature = "frontend")]
impl From<netc_compiler::Diagnostic> for Error {
    fn from(d: netc_compiler::Diagnostic) -> Error {
        Error::Source(Box::new(d))
    }
}
