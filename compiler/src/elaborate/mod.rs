//! From `.net` source to IR: load files (`use`), then elaborate the network into a graph.

pub mod builtins;
pub mod eval;
pub mod loader;
pub mod value;

pub use eval::Options;

use crate::ir::Graph;
use crate::syntax::Diagnostic;
use std::path::Path;

/// Parses and elaborates the network in `path` (and every file it uses) into a verified-shape graph.
pub fn compile_file(path: &Path, options: &Options) -> Result<Graph, Diagnostic> {
    let program = loader::load(path, None)?;
    eval::elaborate(&program, options)
}

/// Like [`compile_file`] for text already in memory; `path` labels diagnostics and anchors `use`.
pub fn compile_source(path: &Path, text: &str, options: &Options) -> Result<Graph, Diagnostic> {
    let program = loader::load(path, Some(text.to_string()))?;
    eval::elaborate(&program, options)
}
