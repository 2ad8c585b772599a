//! Sibling 1x1 merging: 1x1 GEMMs that read the same value become one wider GEMM.
//!
//! Rewrite: fused 1x1 convs that read the same input with the same stride and the same prologue
//! (GoogLeNet's 3x3/5x5 reductions; a ResNet projection shortcut next to a 1x1 conv of equal stride)
//! become one GEMM whose weight rows are theirs stacked (`ConcatRows`), whose bias is theirs stacked
//! (zeros where one had none), and each former conv's readers now read a channel slice (a view) of the
//! merged output. Members followed by ReLU are placed first, so the merged ReLU covers a prefix of the
//! channels.
//!
//! Precondition: members have no affine, residual or post-affine step; their outputs are not graph
//! outputs and do not feed a concat (a branch that feeds a concat directly is left alone, so that it
//! can write into the concat's buffer instead).
//!
//! Soundness: output channel `o` of a 1x1 conv depends only on weight row `o`, bias `o` and the input;
//! stacking rows computes every member's channels unchanged, side by side.

use super::{slots, Pass};
use crate::codegen::Isa;
use crate::ir::{ChannelSlice, ConvKind, FusedConv, Graph, Node, NodeId, Op, Relu, ValueId, WeightExpr};
use std::collections::HashMap;

pub struct MergeSiblings1x1;

/// Members are grouped by (input, stride, prologue as text): equal keys can share one GEMM.
type GroupKey = (ValueId, [usize; 2], Option<(bool, String)>);

impl Pass for MergeSiblings1x1 {
    fn name(&self) -> &'static str {
        "merge-siblings-1x1"
    }

    fn summary(&self) -> &'static str {
        "sibling 1x1 GEMMs reading one value merge into one wider GEMM; branches read channel slices"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let mut groups: HashMap<GroupKey, Vec<NodeId>> = HashMap::new();
        let order = graph.topo_order().expect("acyclic");
        for &id in &order {
            let node = graph.node(id);
            let Op::FusedConv(f) = &node.op else { continue };
            let mergeable = matches!(f.kind, ConvKind::Gemm1x1 | ConvKind::StridedGemm1x1)
                && !f.affine
                && !f.residual
                && !f.post_affine
                && !matches!(f.relu, Relu::First(_))
                && f.activation.is_none()
                && !graph.is_output(id.value())
                && graph.consumers(id.value()).iter().all(|c| !matches!(graph.node(*c).op, Op::Concat(_)));
            if !mergeable {
                continue;
            }
            let prologue = f.prologue.map(|relu| {
                let s = slots::by_name(node);
                (relu, format!("{} {}", s["pre_scale"], s["pre_shift"]))
            });
            groups.entry((graph.inputs(id)[0], f.conv.stride, prologue)).or_default().push(id);
        }
        let mut groups: Vec<Vec<NodeId>> = groups.into_values().filter(|g| g.len() > 1).collect();
        groups.sort();
        let merged = groups.len();
        for members in groups {
            merge(graph, members);
        }
        merged
    }
}

fn merge(graph: &mut Graph, mut members: Vec<NodeId>) {
    // ReLU members first, so the merged ReLU covers a prefix of the channels.
    members.sort_by_key(|&id| match &graph.node(id).op {
        Op::FusedConv(f) if f.relu == Relu::All => (0, id),
        _ => (1, id),
    });
    let fused: Vec<FusedConv> = members
        .iter()
        .map(|&id| match &graph.node(id).op {
            Op::FusedConv(f) => f.clone(),
            _ => unreachable!(),
        })
        .collect();
    let first = &fused[0];
    let total: usize = fused.iter().map(|f| f.conv.out_channels).sum();
    let with_relu: usize = fused.iter().filter(|f| f.relu == Relu::All).map(|f| f.conv.out_channels).sum();
    let any_bias = fused.iter().any(|f| f.conv.bias);
    let mut conv = first.conv.clone();
    conv.out_channels = total;
    conv.bias = any_bias;
    let relu = match with_relu {
        0 => Relu::None,
        n if n == total => Relu::All,
        n => Relu::First(n),
    };
    let op = Op::FusedConv(FusedConv { conv, relu, ..first.clone() });
    let member_slots: Vec<_> = members.iter().map(|&id| slots::by_name(graph.node(id))).collect();
    let mut merged_slots = HashMap::new();
    merged_slots
        .insert("weight", WeightExpr::ConcatRows(member_slots.iter().map(|s| s["weight"].clone()).collect()));
    if any_bias {
        let biases = member_slots
            .iter()
            .zip(&fused)
            .map(|(s, f)| {
                s.get("bias").cloned().unwrap_or(WeightExpr::Fill { len: f.conv.out_channels, value: 0.0 })
            })
            .collect();
        merged_slots.insert("bias", WeightExpr::ConcatRows(biases));
    }
    if first.prologue.is_some() {
        merged_slots.insert("pre_scale", member_slots[0]["pre_scale"].clone());
        merged_slots.insert("pre_shift", member_slots[0]["pre_shift"].clone());
    }
    let names: Vec<String> = members.iter().map(|&id| graph.node(id).name.clone()).collect();
    let template = graph.node(members[0]).clone();
    let mut node = Node {
        op: op.clone(),
        weights: Vec::new(),
        name: names.join("|"),
        scope: None,
        instance: common_prefix(members.iter().map(|&id| &graph.node(id).instance)),
        shape: template.shape.clone(),
        training_only: false,
    };
    slots::rebuild(&mut node, op, merged_slots);
    let (c, h, w) = template.shape.as_chw().expect("conv output is [C, H, W]");
    node.shape = crate::ir::Shape::chw(total, h, w);
    let _ = c;
    let inputs = graph.inputs(members[0]);
    let merged = graph.add_node(node, &inputs);
    let mut start = 0;
    for (&id, f) in members.iter().zip(&fused) {
        let len = f.conv.out_channels;
        let member = graph.node(id).clone();
        let slice = Node {
            op: Op::Slice(ChannelSlice { start, len }),
            weights: Vec::new(),
            name: member.name.clone() + ".slice",
            scope: None,
            instance: member.instance.clone(),
            shape: member.shape.clone(),
            training_only: false,
        };
        let slice = graph.add_node(slice, &[merged.value()]);
        graph.replace_uses(id.value(), slice.value());
        graph.remove_node(id);
        start += len;
    }
}

fn common_prefix<'a>(mut lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    let Some(first) = lists.next() else { return Vec::new() };
    let mut prefix = first.clone();
    for l in lists {
        let n = prefix.iter().zip(l).take_while(|(a, b)| a == b).count();
        prefix.truncate(n);
    }
    prefix
}
