//! Prologue fusion: a per-channel affine (with its ReLU) that feeds only 1x1 convolutions moves into
//! their input reads.
//!
//! Rewrite: `conv(relu?(x * s + t))` for every reader of a standalone affine becomes one fused conv with
//! a prologue that applies `relu?(x * s + t)` to each input value as it is read; the affine node goes.
//! This is where pre-activation ResNet's BatchNorm-after-sum lands: `relu(bn1(x))` feeds `conv1` (and
//! the projection shortcut), both 1x1.
//!
//! Precondition: every reader is a fused conv without a prologue, unpadded and ungrouped, that reads the
//! affine's output as its main input (port 0), and the output is not a graph output.
//!
//! Soundness: without padding every value the convolution reads is a transformed input value, so
//! transforming on read computes the same function; with padding the zeros would be transformed too,
//! which is why padded convolutions are excluded.

use super::{slots, Pass};
use crate::codegen::Isa;
use crate::ir::{Graph, NodeId, Op};

pub struct FusePrologue;

impl Pass for FusePrologue {
    fn name(&self) -> &'static str {
        "fuse-prologue"
    }

    fn summary(&self) -> &'static str {
        "a per-channel affine (+relu) feeding only unpadded convs moves into their input reads"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let affines: Vec<NodeId> =
            graph.node_ids().filter(|&id| matches!(graph.node(id).op, Op::Affine(_))).collect();
        let mut rewrites = 0;
        for id in affines {
            let out = id.value();
            let readers = graph.consumers(out);
            let fits = |r: &NodeId| match &graph.node(*r).op {
                Op::FusedConv(f) => {
                    let inputs = graph.inputs(*r);
                    f.prologue.is_none()
                        && f.conv.padding == [0, 0]
                        && f.conv.groups == 1
                        && inputs[0] == out
                        && inputs[1..].iter().all(|&v| v != out)
                }
                _ => false,
            };
            if readers.is_empty() || graph.is_output(out) || !readers.iter().all(fits) {
                continue;
            }
            let Op::Affine(affine) = graph.node(id).op.clone() else { unreachable!() };
            let affine_slots = slots::by_name(graph.node(id));
            let source = graph.inputs(id)[0];
            let mut unique = readers.clone();
            unique.dedup();
            for reader in unique {
                let node = graph.node_mut(reader);
                let Op::FusedConv(mut f) = node.op.clone() else { unreachable!() };
                f.prologue = Some(affine.relu);
                let mut s = slots::by_name(node);
                s.insert("pre_scale", affine_slots["scale"].clone());
                s.insert("pre_shift", affine_slots["shift"].clone());
                slots::rebuild(node, Op::FusedConv(f), s);
                let mut inputs = graph.inputs(reader);
                inputs[0] = source;
                graph.set_inputs(reader, &inputs);
            }
            graph.remove_node(id);
            rewrites += 1;
        }
        rewrites
    }
}
