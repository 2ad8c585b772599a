//! [`summary`]: the layers of a model with their output shapes, parameters and MACs (what
//! `netc summary` prints), as data.

use crate::Error;
pub use netc_compiler::ir::{LayerRow, Summary};
use std::path::Path;

/// Summarises the model at `path`, one row per layer in topological order (weight scope name,
/// op, output shape per sample, learnable parameters, multiply-accumulates per sample), with
/// totals.
///
/// A `.net` source is summarised as written; training-only parts (auxiliary classifiers,
/// dropout) are left out unless `train`. A compiled bundle (recognised by content) is summarised
/// as it runs: its optimised graph (BatchNorm folded, layers fused), which has no training-only
/// parts.
pub fn summary(path: impl AsRef<Path>, train: bool) -> Result<Summary, Error> {
    let path = path.as_ref();
    if crate::is_bundle(path) {
        let bundle = netc_runtime::bundle::Bundle::open(path)?;
        return Ok(netc_compiler::ir::summarize(bundle.program()?.graph(), train));
    }
    #[cfg(feature = "frontend")]
    {
        let graph = netc_compiler::compile_file(path, &Default::default())?;
        Ok(netc_compiler::ir::summarize(&graph, train))
    }
    #[cfg(not(feature = "frontend"))]
    Err(Error::Usage {
        path: path.to_path_buf(),
        what: "not a compiled bundle (this build of netc reads bundles only: no `frontend` feature)".into(),
    })
}
