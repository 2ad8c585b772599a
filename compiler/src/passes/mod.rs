//! The inference optimiser: a named, ordered pipeline of graph rewrites.
//!
//! Each pass lives in its own file whose doc comment states the rewrite, its precondition and why it
//! is sound. Passes only ever see and produce graphs that `verify()` accepts; [`optimize`] checks that
//! after every pass when asked to (tests and debug builds do).

mod chanvec;
mod concat_in_place;
mod dead_code;
mod depthwise;
mod fold_batchnorm;
mod fuse_activation;
mod fuse_channel_scale;
mod fuse_epilogue;
mod fuse_prologue;
mod gemm_1x1;
mod legalize;
mod merge_consecutive_1x1;
mod merge_siblings_1x1;
mod slots;
mod winograd;

pub use legalize::legalize;

use crate::codegen::Isa;
use crate::ir::{verify, Graph, VerifyError};
use std::collections::BTreeMap;

/// A graph rewrite.
pub trait Pass: Sync {
    /// The name used by `--disable-pass`, `--stage after:NAME` and `--stats`.
    fn name(&self) -> &'static str;
    /// One line on what the pass does.
    fn summary(&self) -> &'static str;
    /// Rewrites `graph`, returning how many rewrites it made (0: the graph is unchanged). Cost
    /// models plan for kernels of `target` (the result runs correctly on every ISA).
    fn run(&self, graph: &mut Graph, target: Isa) -> usize;
    /// What the pass would decide on `graph` for `target` and why, a line per decision (for
    /// `--stats`; most passes have nothing to add to their node counts).
    fn explain(&self, _graph: &Graph, _target: Isa) -> Vec<String> {
        Vec::new()
    }
}

/// The pipeline, in order.
pub static PIPELINE: &[&dyn Pass] = &[
    &dead_code::DeadCode,
    &fold_batchnorm::FoldBatchNorm,
    &fuse_epilogue::FuseEpilogue,
    &fuse_prologue::FusePrologue,
    &gemm_1x1::Gemm1x1,
    &winograd::Winograd,
    &depthwise::Depthwise,
    &merge_consecutive_1x1::MergeConsecutive1x1,
    &merge_siblings_1x1::MergeSiblings1x1,
    &chanvec::ChanVec,
    &fuse_channel_scale::FuseChannelScale,
    &fuse_activation::FuseActivation,
    &concat_in_place::ConcatInPlace,
];

/// Looks a pass up by name.
pub fn find(name: &str) -> Option<&'static dyn Pass> {
    PIPELINE.iter().copied().find(|p| p.name() == name)
}

/// How to run the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Passes to skip, by name.
    pub disabled: Vec<String>,
    /// Stop after this pass (inclusive).
    pub stop_after: Option<String>,
    /// Run `verify()` after every pass.
    pub verify_each: bool,
    /// The ISA whose kernels the cost models plan for; `None`: the widest this host runs (a bundle
    /// compiled here runs anywhere, its layer choices are tuned for machines like this one).
    pub target: Option<Isa>,
}

impl Options {
    /// The ISA the cost models plan for.
    pub fn target_isa(&self) -> Isa {
        self.target.unwrap_or_else(|| Isa::best().unwrap_or(Isa::Sse))
    }
}

/// Node counts per op label.
pub type OpCounts = BTreeMap<String, usize>;

pub fn op_counts(graph: &Graph) -> OpCounts {
    let mut counts = OpCounts::new();
    for id in graph.node_ids() {
        *counts.entry(graph.node(id).op.label()).or_default() += 1;
    }
    counts
}

/// What one pass did.
#[derive(Debug, Clone)]
pub struct PassStats {
    pub pass: &'static str,
    pub rewrites: usize,
    pub before: OpCounts,
    pub after: OpCounts,
    /// The pass's decisions and their inputs ([`Pass::explain`]).
    pub notes: Vec<String>,
}

/// A pass left a graph that fails `verify()`: a bug in the pass.
#[derive(Debug, thiserror::Error)]
#[error("pass `{pass}` produced an invalid graph: {error}")]
pub struct PassError {
    pub pass: &'static str,
    pub error: VerifyError,
}

/// Runs the pipeline over `graph` in place, returning per-pass statistics.
pub fn optimize(graph: &mut Graph, options: &Options) -> Result<Vec<PassStats>, PassError> {
    let mut stats = Vec::new();
    let target = options.target_isa();
    for pass in PIPELINE {
        if !options.disabled.iter().any(|d| d == pass.name()) {
            let before = op_counts(graph);
            let notes = pass.explain(graph, target);
            let rewrites = pass.run(graph, target);
            if options.verify_each || cfg!(debug_assertions) {
                verify(graph).map_err(|error| PassError { pass: pass.name(), error })?;
            }
            stats.push(PassStats { pass: pass.name(), rewrites, before, after: op_counts(graph), notes });
        }
        if options.stop_after.as_deref() == Some(pass.name()) {
            break;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
