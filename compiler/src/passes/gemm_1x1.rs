//! 1x1 convolutions as GEMMs.
//!
//! Rewrite: a fused conv with a 1x1 kernel, no padding, no dilation and one group becomes kind
//! `Gemm1x1` (stride 1: a GEMM over channels, `[Cout x Cin] x [Cin x H*W]`, with no im2col) or
//! `StridedGemm1x1` (stride s: the input subsampled every s pixels, then the same GEMM).
//!
//! Precondition: exactly that geometry; the kind is a lowering decision, the function is unchanged.
//!
//! Soundness: a 1x1 unpadded convolution is, pixel by pixel, the matrix product of its weight
//! `[Cout, Cin]` with the input's channel vector at the pixel the stride selects.

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{ConvKind, Graph, NodeId, Op};

pub struct Gemm1x1;

impl Pass for Gemm1x1 {
    fn name(&self) -> &'static str {
        "gemm-1x1"
    }

    fn summary(&self) -> &'static str {
        "1x1 convs become channel GEMMs (strided ones: subsample + GEMM)"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let ids: Vec<NodeId> = graph.node_ids().collect();
        let mut rewrites = 0;
        for id in ids {
            if let Op::FusedConv(f) = &mut graph.node_mut(id).op {
                let c = &f.conv;
                if f.kind == ConvKind::Direct
                    && c.kernel == [1, 1]
                    && c.padding == [0, 0]
                    && c.dilation == [1, 1]
                    && c.groups == 1
                {
                    f.kind = if c.stride == [1, 1] { ConvKind::Gemm1x1 } else { ConvKind::StridedGemm1x1 };
                    rewrites += 1;
                }
            }
        }
        rewrites
    }
}
