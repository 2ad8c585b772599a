//! BatchNorm folding.
//!
//! Rewrite: `bn(conv(x))` becomes one conv with weight `W * s` (per output channel) and bias
//! `b * s + (beta - mean * s)`, where `s = gamma / sqrt(running_var + eps)`; likewise for linear. A
//! BatchNorm that does not directly follow a conv or linear (pre-activation ResNet: after a residual
//! sum) becomes a per-channel affine `x * s + (beta - mean * s)`, which later passes fuse into a
//! neighbouring kernel.
//!
//! Precondition for folding: the conv's output is read by the BatchNorm alone and is not a graph
//! output (otherwise the unnormalised value is still needed).
//!
//! Soundness: at inference BatchNorm is the affine map `y = x * s + (beta - mean * s)` per channel, and
//! for a convolution `(W * x + b) * s + t = (W * s) * x + (b * s + t)` channel by channel. The folded
//! weights are symbolic ([`WeightExpr`]) and evaluated once, in f64, at load time.

use super::{slots, Pass};
use crate::codegen::Isa;
use crate::ir::{Affine, Graph, NodeId, Op, WeightExpr};

pub struct FoldBatchNorm;

/// The BatchNorm's affine form `(scale, shift)` from its four tensors.
pub fn bn_affine(weights: &[WeightExpr], eps: f64) -> (WeightExpr, WeightExpr) {
    let [gamma, beta, mean, var] = weights else { panic!("pass bug: batchnorm has 4 weight slots") };
    let scale = WeightExpr::BnScale { gamma: Box::new(gamma.clone()), var: Box::new(var.clone()), eps };
    let shift = WeightExpr::Sub(
        Box::new(beta.clone()),
        Box::new(WeightExpr::Mul(Box::new(mean.clone()), Box::new(scale.clone()))),
    );
    (scale, shift)
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn summary(&self) -> &'static str {
        "BatchNorm folds into the conv/linear before it; any other BatchNorm becomes a per-channel affine"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let bns: Vec<NodeId> =
            graph.node_ids().filter(|&id| matches!(graph.node(id).op, Op::BatchNorm(_))).collect();
        for &bn in &bns {
            let Op::BatchNorm(params) = graph.node(bn).op.clone() else { unreachable!() };
            let (scale, shift) = bn_affine(&graph.node(bn).weights, params.eps);
            let input = graph.inputs(bn)[0];
            let producer = input.producer();
            let foldable = graph.sole_consumer(input) == Some(bn)
                && matches!(graph.node(producer).op, Op::Conv(_) | Op::Linear(_));
            if foldable {
                let node = graph.node_mut(producer);
                let mut slots = slots::by_name(node);
                let bias =
                    slots.remove("bias").unwrap_or(WeightExpr::Fill { len: params.channels, value: 0.0 });
                let weight = slots.remove("weight").expect("conv/linear weight");
                slots.insert(
                    "weight",
                    WeightExpr::ScaleRows { x: Box::new(weight), s: Box::new(scale.clone()) },
                );
                slots.insert(
                    "bias",
                    WeightExpr::Add(
                        Box::new(WeightExpr::Mul(Box::new(bias), Box::new(scale))),
                        Box::new(shift),
                    ),
                );
                let op = match node.op.clone() {
                    Op::Conv(mut c) => {
                        c.bias = true;
                        Op::Conv(c)
                    }
                    Op::Linear(mut l) => {
                        l.bias = true;
                        Op::Linear(l)
                    }
                    _ => unreachable!(),
                };
                slots::rebuild(node, op, slots);
                graph.replace_uses(bn.value(), input);
                graph.remove_node(bn);
            } else {
                let node = graph.node_mut(bn);
                node.op = Op::Affine(Affine { channels: params.channels, relu: false });
                node.weights = vec![scale, shift];
            }
        }
        bns.len()
    }
}
