//! The kernels' weight buffers, from bound weights: each node's weight slots are evaluated (folded
//! and merged slots computed from the file's tensors) and packed into the layout its kernel reads
//! (`netc_compiler::codegen::pack`), 64-byte aligned. `netc compile` stores exactly these buffers.

use super::{kernel_specs, JitError};
use crate::weights::BoundWeights;
use netc_compiler::codegen::{pack_conv_weights, pack_linear_weights, AlignedF32, KernelSpec};
use netc_compiler::ir::Graph;
use netc_compiler::lower;

/// Packs the weights of every kernel of `graph`, in [`kernel_specs`] order (the graph is legalised
/// first, as [`super::Executable::new`] does).
pub fn pack(graph: &Graph, weights: &BoundWeights) -> Result<Vec<Vec<AlignedF32>>, JitError> {
    let mut graph = graph.clone();
    netc_compiler::passes::legalize(&mut graph);
    let graph = &graph;
    let plan = lower::plan(graph);
    let mut out = Vec::new();
    for (id, spec) in kernel_specs(graph, &plan)? {
        let node = graph.node(id);
        let slots = node
            .op
            .weights()
            .iter()
            .map(|s| {
                weights.slot(node, s.suffix).ok_or_else(|| JitError::Weights {
                    node: node.name.clone(),
                    what: format!("slot `{}` is not bound", s.suffix),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[f32]> = slots.iter().map(|s| &**s).collect();
        let err = |e: netc_compiler::codegen::CodegenError| JitError::Weights {
            node: node.name.clone(),
            what: e.to_string(),
        };
        let buffers = match &spec {
            KernelSpec::Conv(c) => vec![AlignedF32::from_slice(&pack_conv_weights(c, &refs).map_err(err)?)],
            KernelSpec::Linear(l) => {
                vec![AlignedF32::from_slice(&pack_linear_weights(l, &refs).map_err(err)?)]
            }
            _ => {
                spec.weight_layout().iter().zip(&refs).map(|(_, data)| AlignedF32::from_slice(data)).collect()
            }
        };
        out.push(buffers);
    }
    Ok(out)
}
