//! Consecutive 1x1 merging: two 1x1 GEMMs with nothing nonlinear between them become one.
//!
//! Rewrite: `B(A(x))` where A and B are 1x1 GEMMs becomes one GEMM with weight `W_B W_A`, bias
//! `W_B b_A + b_B` and stride `s_A * s_B`, keeping A's prologue and B's epilogue.
//!
//! Precondition: A is the only producer B reads (B has no prologue or residual of A), A's output has
//! B as its only reader and is not a graph output, and A has no epilogue beyond its bias (no affine,
//! residual, post-affine or ReLU). And the merge must not add work: the merged GEMM's
//! multiply-adds (`Cin_A * Cout_B` per output pixel of B) at most A's and B's together. A linear
//! expansion folds (`64 -> 256 -> 64`: 4k per pixel merged against 16k + 16k); a pair through a
//! narrow middle stays two GEMMs (MobileNetV2's `960 -> 320 -> 1280` head: 1.23M merged against
//! 0.72M).
//!
//! Soundness: both are linear maps over channels applied pixel by pixel; subsampling commutes with a
//! per-pixel map, so strides multiply; `W_B (W_A x + b_A) + b_B = (W_B W_A) x + (W_B b_A + b_B)`.

use super::{slots, Pass};
use crate::codegen::Isa;
use crate::ir::{ConvKind, FusedConv, Graph, NodeId, Op, Relu, WeightExpr};

pub struct MergeConsecutive1x1;

impl Pass for MergeConsecutive1x1 {
    fn name(&self) -> &'static str {
        "merge-consecutive-1x1"
    }

    fn summary(&self) -> &'static str {
        "two 1x1 GEMMs with nothing nonlinear between them merge into one"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let mut rewrites = 0;
        let order = graph.topo_order().expect("acyclic");
        for a in order {
            if !graph.contains(a) {
                continue;
            }
            let Op::FusedConv(fa) = graph.node(a).op.clone() else { continue };
            let plain_a = is_gemm(&fa)
                && !fa.affine
                && !fa.residual
                && !fa.post_affine
                && fa.relu == Relu::None
                && fa.activation.is_none();
            let Some(b) = graph.sole_consumer(a.value()) else { continue };
            let Op::FusedConv(fb) = graph.node(b).op.clone() else { continue };
            if !plain_a
                || !is_gemm(&fb)
                || fb.prologue.is_some()
                || graph.inputs(b)[0] != a.value()
                || graph.inputs(b)[1..].contains(&a.value())
            {
                continue;
            }
            if !saves_work(graph, a, &fa, b, &fb) {
                continue;
            }
            merge(graph, a, fa, b, fb);
            rewrites += 1;
        }
        rewrites
    }
}

/// Whether one GEMM `Cin_A -> Cout_B` over B's output pixels costs no more multiply-adds than A
/// over its output pixels and B over its own.
fn saves_work(graph: &Graph, a: NodeId, fa: &FusedConv, b: NodeId, fb: &FusedConv) -> bool {
    let pixels = |id: NodeId| graph.shape(id.value()).as_chw().map(|(_, h, w)| h * w);
    let (Some(pa), Some(pb)) = (pixels(a), pixels(b)) else { return false };
    let (cin, mid, cout) = (fa.conv.in_channels, fa.conv.out_channels, fb.conv.out_channels);
    cin * cout * pb <= cin * mid * pa + mid * cout * pb
}

fn is_gemm(f: &FusedConv) -> bool {
    matches!(f.kind, ConvKind::Gemm1x1 | ConvKind::StridedGemm1x1)
}

fn merge(graph: &mut Graph, a: NodeId, fa: FusedConv, b: NodeId, fb: FusedConv) {
    let sa = slots::by_name(graph.node(a));
    let mut sb = slots::by_name(graph.node(b));
    let wb = sb.remove("weight").expect("weight");
    let bias_b = sb.remove("bias").unwrap_or(WeightExpr::Fill { len: fb.conv.out_channels, value: 0.0 });
    let bias = match sa.get("bias") {
        Some(bias_a) => WeightExpr::Add(
            Box::new(WeightExpr::RowDot { x: Box::new(wb.clone()), v: Box::new(bias_a.clone()) }),
            Box::new(bias_b),
        ),
        None => bias_b,
    };
    sb.insert("weight", WeightExpr::MatMul(Box::new(wb), Box::new(sa["weight"].clone())));
    sb.insert("bias", bias);
    if fa.prologue.is_some() {
        sb.insert("pre_scale", sa["pre_scale"].clone());
        sb.insert("pre_shift", sa["pre_shift"].clone());
    }
    let stride = [fa.conv.stride[0] * fb.conv.stride[0], fa.conv.stride[1] * fb.conv.stride[1]];
    let mut conv = fb.conv.clone();
    conv.in_channels = fa.conv.in_channels;
    conv.stride = stride;
    conv.bias = true;
    let kind = if stride == [1, 1] { ConvKind::Gemm1x1 } else { ConvKind::StridedGemm1x1 };
    let op = Op::FusedConv(FusedConv { conv, kind, prologue: fa.prologue, ..fb });
    slots::rebuild(graph.node_mut(b), op, sb);
    let mut inputs = graph.inputs(b);
    inputs[0] = graph.inputs(a)[0];
    graph.set_inputs(b, &inputs);
    graph.remove_node(a);
}
