//! Vertical fusion: the elementwise work after a conv or linear moves into its epilogue.
//!
//! Rewrite: every conv becomes a fused conv (its bias is an epilogue step) and every linear a fused
//! linear; then, repeatedly, a fused conv absorbs the single reader of its output when that reader is
//! - a per-channel affine, before any residual (`affine`) or after it (`post_affine`),
//! - a residual `add`: the other operand becomes the conv's second input, read in the epilogue,
//! - a `relu` (also an affine's own ReLU),
//!
//! in the epilogue order affine, add, post-affine, relu; a fused linear absorbs a following ReLU, and a
//! standalone affine absorbs a following ReLU.
//!
//! Precondition: the absorbed node is the only reader of the conv's output and that output is not a
//! graph output, so no one else needs the intermediate value; steps are only appended in epilogue order.
//!
//! Soundness: the fused node computes exactly the composition it replaces, element by element, on the
//! same inputs; the other operand of an absorbed add does not depend on the conv (the add was the conv's
//! only reader), so adding it as an input keeps the graph acyclic.

use super::{slots, Pass};
use crate::codegen::Isa;
use crate::ir::{ConvKind, FusedConv, FusedLinear, Graph, NodeId, Op, Relu};
use std::collections::HashMap;

pub struct FuseEpilogue;

impl Pass for FuseEpilogue {
    fn name(&self) -> &'static str {
        "fuse-epilogue"
    }

    fn summary(&self) -> &'static str {
        "conv/linear + bias + affine + residual add + relu become one node"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let mut rewrites = 0;
        let ids: Vec<NodeId> = graph.node_ids().collect();
        for &id in &ids {
            let op = match &graph.node(id).op {
                Op::Conv(c) => Op::FusedConv(FusedConv {
                    conv: c.clone(),
                    kind: ConvKind::Direct,
                    prologue: None,
                    affine: false,
                    residual: false,
                    post_affine: false,
                    relu: Relu::None,
                    activation: None,
                    channel_scale: false,
                }),
                Op::Linear(l) => Op::FusedLinear(FusedLinear { linear: l.clone(), relu: false }),
                _ => continue,
            };
            graph.node_mut(id).op = op;
            rewrites += 1;
        }
        loop {
            let mut changed = 0;
            let order = graph.topo_order().expect("passes keep the graph acyclic");
            let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
            for id in order {
                if graph.contains(id) && absorb_reader(graph, id, &position) {
                    changed += 1;
                }
            }
            if changed == 0 {
                break;
            }
            rewrites += changed;
        }
        rewrites
    }
}

/// Tries to fuse the single reader of `id`'s output into `id`; true when it did.
///
/// When both operands of a residual add could absorb it, the one that has no 1x1 sibling does (so the
/// other stays free to merge with its sibling into one GEMM: ResNet's projection next to `conv1`), and
/// otherwise the one computed later in `position` (topological) order.
fn absorb_reader(graph: &mut Graph, id: NodeId, position: &HashMap<NodeId, usize>) -> bool {
    let out = id.value();
    let Some(reader) = graph.sole_consumer(out) else { return false };
    let reader_op = graph.node(reader).op.clone();
    let mut op = graph.node(id).op.clone();
    if matches!(&op, Op::FusedConv(f) if f.activation.is_some()) {
        // Nothing follows a fused activation in the epilogue.
        return false;
    }
    let mut slots = slots::by_name(graph.node(id));
    let mut new_inputs = None;
    match (&mut op, &reader_op) {
        (Op::FusedConv(f), Op::Relu) if f.relu == Relu::None => f.relu = Relu::All,
        (Op::FusedConv(f), Op::Affine(a)) if f.relu == Relu::None && !f.post_affine => {
            let reader_slots = slots::by_name(graph.node(reader));
            let (scale, shift) = (reader_slots["scale"].clone(), reader_slots["shift"].clone());
            if f.residual {
                f.post_affine = true;
                slots.insert("post_scale", scale);
                slots.insert("post_shift", shift);
            } else if !f.affine {
                f.affine = true;
                slots.insert("scale", scale);
                slots.insert("shift", shift);
            } else {
                return false;
            }
            if a.relu {
                f.relu = Relu::All;
            }
        }
        (Op::FusedConv(f), Op::Add)
            if !f.residual && !f.channel_scale && !f.post_affine && f.relu == Relu::None =>
        {
            let operands = graph.inputs(reader);
            let other = if operands[0] == out { operands[1] } else { operands[0] };
            let later = |v: crate::ir::ValueId| position.get(&v.producer()).copied().unwrap_or(usize::MAX);
            let other_fusable = graph.sole_consumer(other) == Some(reader)
                && matches!(graph.node(other.producer()).op, Op::FusedConv(ref o) if !o.residual && !o.post_affine && o.relu == Relu::None);
            let prefer_other = match (has_1x1_sibling(graph, id), has_1x1_sibling(graph, other.producer())) {
                (true, false) => true,
                (false, true) => false,
                _ => later(other) > later(out),
            };
            if other == out || (other_fusable && prefer_other) {
                return false;
            }
            f.residual = true;
            let mut inputs = graph.inputs(id);
            inputs.push(other);
            new_inputs = Some(inputs);
        }
        (Op::FusedLinear(f), Op::Relu) if !f.relu => f.relu = true,
        (Op::Affine(a), Op::Relu) if !a.relu => a.relu = true,
        _ => return false,
    }
    slots::rebuild(graph.node_mut(id), op, slots);
    if let Some(inputs) = new_inputs {
        graph.set_inputs(id, &inputs);
    }
    graph.replace_uses(reader.value(), out);
    graph.remove_node(reader);
    true
}

/// Whether `id` is a 1x1 unpadded conv that another such conv, reading the same input with the same
/// stride, could merge with (see `merge-siblings-1x1`).
fn has_1x1_sibling(graph: &Graph, id: NodeId) -> bool {
    let one_by_one = |op: &Op| match op {
        Op::FusedConv(f) => {
            let c = &f.conv;
            (c.kernel == [1, 1] && c.padding == [0, 0] && c.dilation == [1, 1] && c.groups == 1)
                .then_some(c.stride)
        }
        _ => None,
    };
    let Some(stride) = one_by_one(&graph.node(id).op) else { return false };
    let input = graph.inputs(id)[0];
    graph.consumers(input).into_iter().any(|c| c != id && one_by_one(&graph.node(c).op) == Some(stride))
}
