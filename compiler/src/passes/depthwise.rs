//! Depthwise convolutions get their own kernels.
//!
//! Rewrite: a fused conv of kind `Direct` with one input and one output channel per group
//! (`groups == in_channels == out_channels`, as in MobileNet, EfficientNet and ShuffleNet blocks),
//! a square odd `k x k` window, stride 1 or 2, padding `k / 2`, no dilation and no prologue becomes
//! kind `Depthwise`. Weights and epilogue are unchanged; only the kernel differs: the general
//! grouped path runs a one-row register tile per channel (one output channel of a 12-row panel,
//! a reduction of only `k*k`), the depthwise kernels filter each channel's plane with its output
//! pixels in the vector lanes (see `codegen::conv::depthwise`).
//!
//! Precondition: that geometry ([`FusedConv::depthwise_geometry`]) and no prologue; anything else
//! (dilation, other paddings or strides) keeps the general path.
//!
//! Soundness: the kind is a lowering decision; the convolution computed, its weights and its
//! epilogue are the same (the kernel's tests check it against the reference interpreter on every
//! ISA the host runs).

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{ConvKind, FusedConv, Graph, NodeId, Op};

pub struct Depthwise;

/// Whether the `Depthwise` kernels take this fused convolution.
fn eligible(f: &FusedConv) -> bool {
    f.kind == ConvKind::Direct && f.prologue.is_none() && FusedConv::depthwise_geometry(&f.conv)
}

impl Pass for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise"
    }

    fn summary(&self) -> &'static str {
        "depthwise convs (one channel per group, kxk, stride 1/2) get per-plane kernels, pixels in lanes"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let ids: Vec<NodeId> = graph.node_ids().collect();
        let mut rewrites = 0;
        for id in ids {
            if let Op::FusedConv(f) = &mut graph.node_mut(id).op {
                if eligible(f) {
                    f.kind = ConvKind::Depthwise;
                    rewrites += 1;
                }
            }
        }
        rewrites
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dw(c: usize, k: usize, stride: usize) -> FusedConv {
        let mut f = FusedConv::square(c, c, k, stride, ConvKind::Direct);
        f.conv.groups = c;
        f
    }

    #[test]
    fn depthwise_3x3_and_5x5_at_stride_1_and_2_are_eligible() {
        for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
            assert!(eligible(&dw(32, k, s)), "k {k} stride {s}");
        }
    }

    #[test]
    fn other_geometries_keep_the_general_path() {
        let mut f = dw(32, 3, 1);
        f.conv.dilation = [2, 2];
        assert!(!eligible(&f), "dilated");
        let mut f = dw(32, 3, 1);
        f.conv.padding = [0, 0];
        assert!(!eligible(&f), "unpadded");
        assert!(!eligible(&dw(32, 3, 3)), "stride 3");
        let mut f = dw(32, 3, 1);
        f.conv.groups = 16;
        assert!(!eligible(&f), "two channels per group");
        let mut f = dw(32, 3, 1);
        f.conv.out_channels = 64;
        assert!(!eligible(&f), "channel multiplier 2");
        let mut f = dw(32, 4, 1);
        f.conv.padding = [2, 2];
        assert!(!eligible(&f), "even window");
    }
}
