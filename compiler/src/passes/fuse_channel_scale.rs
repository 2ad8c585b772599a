//! Channel-scale fusion: squeeze-and-excitation's `x * s` moves into the 1x1 convolutions that
//! read it.
//!
//! Rewrite: `conv(x * s)`, where `s` is `[C, 1, 1]` per sample (one factor per channel of `x`) and
//! every reader of the product is a 1x1 GEMM convolution, becomes `conv` with `channel_scale`,
//! reading `x` and `s` (as its last input); the `mul` node goes. The kernel scales the weights
//! instead of the input: `W'[co][ci] = W[co][ci] * s[ci]`, `Cout x Cin` multiplies per sample
//! against `C x H x W` for the product, which also no longer writes and re-reads a feature map
//! (EfficientNet-B0's projections after its squeeze-and-excitation blocks; see
//! `codegen::conv::direct`).
//!
//! Precondition: every reader is a fused conv of kind `Gemm1x1` (a stride-1 1x1 convolution the
//! `gemm-1x1` pass gave to the direct GEMM kernels, and `chanvec`, which runs before, left there: a
//! channels-in-lanes or strided kernel keeps the separate product) without a prologue or a channel
//! scale, reading the product only as its main input (port 0); the product is not a graph output.
//!
//! Soundness: a 1x1 unpadded convolution reads each input value once per output channel, as the
//! factor of `W[co][ci]`, so `sum_ci W[co][ci] * (x[ci] * s[ci]) = sum_ci (W[co][ci] * s[ci]) *
//! x[ci]` (the same products, associated differently; the bias and every epilogue step come after
//! the sum).

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{ConvKind, Graph, NodeId, Op};

pub struct FuseChannelScale;

impl Pass for FuseChannelScale {
    fn name(&self) -> &'static str {
        "fuse-channel-scale"
    }

    fn summary(&self) -> &'static str {
        "a per-channel product x * s feeding only 1x1 GEMMs moves into their weights, per sample"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let products: Vec<NodeId> = graph
            .node_ids()
            .filter(|&id| matches!(graph.node(id).op, Op::Mul) && per_channel(graph, id))
            .collect();
        let mut rewrites = 0;
        for id in products {
            let out = id.value();
            let readers = graph.consumers(out);
            let fits = |r: &NodeId| match &graph.node(*r).op {
                Op::FusedConv(f) => {
                    let inputs = graph.inputs(*r);
                    f.kind == ConvKind::Gemm1x1
                        && f.prologue.is_none()
                        && !f.channel_scale
                        && inputs[0] == out
                        && inputs[1..].iter().all(|&v| v != out)
                }
                _ => false,
            };
            if readers.is_empty() || graph.is_output(out) || !readers.iter().all(fits) {
                continue;
            }
            let operands = graph.inputs(id);
            let (x, factors) = (operands[0], operands[1]);
            let mut unique = readers.clone();
            unique.dedup();
            for reader in unique {
                let node = graph.node_mut(reader);
                let Op::FusedConv(f) = &mut node.op else { unreachable!() };
                f.channel_scale = true;
                let mut inputs = graph.inputs(reader);
                inputs[0] = x;
                inputs.push(factors);
                graph.set_inputs(reader, &inputs);
            }
            graph.remove_node(id);
            rewrites += 1;
        }
        rewrites
    }
}

/// Whether the `mul` node `id` scales a feature map by one factor per channel (`[C, H, W] * [C, 1,
/// 1]`, the only broadcast the op has).
fn per_channel(graph: &Graph, id: NodeId) -> bool {
    let inputs = graph.inputs(id);
    let (x, s) = (graph.shape(inputs[0]), graph.shape(inputs[1]));
    s.is_channel_factors_of(x) && x != s
}
