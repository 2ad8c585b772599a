//! Legalisation for code generation: the minimal rewrite that makes any graph executable by the
//! kernels, whatever passes ran (`-O0`, `--disable-pass`).
//!
//! Rewrite: dropout and training-only parts go ([`DeadCode`](super::dead_code::DeadCode)); a
//! BatchNorm becomes a per-channel affine (not folded: folding is the optimiser's business); a conv
//! becomes a fused conv with no fused step beyond its own bias, a linear a fused linear.
//!
//! Soundness: each rewrite replaces an op by one that computes the same function (see the passes
//! named above for dropout and BatchNorm); a fused conv with no prologue and no epilogue steps is the
//! plain convolution.

use super::dead_code::remove_dead;
use crate::ir::{Affine, ConvKind, FusedConv, FusedLinear, Graph, NodeId, Op, Relu};

/// Rewrites `graph` in place so that every node has a kernel family.
pub fn legalize(graph: &mut Graph) {
    remove_dead(graph);
    let ids: Vec<NodeId> = graph.node_ids().collect();
    for id in ids {
        let node = graph.node_mut(id);
        match node.op.clone() {
            Op::BatchNorm(bn) => {
                let (scale, shift) = super::fold_batchnorm::bn_affine(&node.weights, bn.eps);
                node.op = Op::Affine(Affine { channels: bn.channels, relu: false });
                node.weights = vec![scale, shift];
            }
            Op::Conv(conv) => {
                node.op = Op::FusedConv(FusedConv {
                    conv,
                    kind: ConvKind::Direct,
                    prologue: None,
                    affine: false,
                    residual: false,
                    post_affine: false,
                    relu: Relu::None,
                    activation: None,
                    channel_scale: false,
                });
            }
            Op::Linear(linear) => node.op = Op::FusedLinear(FusedLinear { linear, relu: false }),
            _ => {}
        }
    }
}
