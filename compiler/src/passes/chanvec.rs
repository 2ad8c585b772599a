//! Small planes put output channels in the vector lanes.
//!
//! Rewrite: a fused conv of kind `Direct`, `Gemm1x1` or `StridedGemm1x1` with one group, no
//! prologue and a multiple of 16 output channels becomes kind `ChanVec` when its output plane fills
//! 16-lane vectors clearly worse than its output channels fill 32-channel panels (a 7x7 plane is
//! 49 outputs in 64 lanes, 77%; 512 channels fill their panels whole). Weights and epilogue are
//! unchanged; only the kernel's loop nest differs (see `codegen::conv::chanvec`).
//!
//! Precondition: that geometry, and a padded input of at most [`FILL_BYTES`] (the kernel keeps
//! one zero-padded copy of a sample's input per thread).
//!
//! Soundness: the kind is a lowering decision; the convolution computed, its weights and its
//! epilogue are the same (the kernel's tests check it against the definition on every ISA).
//!
//! Cost model (inputs and decisions: `netc ir --stats`): the share of computed lanes that hold
//! outputs, for pixels in 16-lane vectors (whole planes as one run for 1x1 stride-1 layers, else
//! the best blocks of rows laid end to end, as the other kernels tile them) against channels in
//! 32-channel panels, the latter discounted by the transposing epilogue (`K / (K + EPILOGUE_K)`
//! for a reduction of `K` multiply-adds per output). `ChanVec` wins when its share is at least
//! [`MARGIN`] higher.

use super::winograd::lane_share;
use super::Pass;
use crate::ir::{ConvKind, FusedConv, Graph, NodeId, Op};

pub struct ChanVec;

/// The share of useful lanes `ChanVec` must gain to be chosen.
const MARGIN: f64 = 0.05;
/// The transposing epilogue's cost per output, in multiply-adds of the reduction. Measured on the
/// kernels: a 1x1 conv with K = 64 runs at ~70% of the pixels-in-lanes kernel's rate on a plane both
/// fill whole, one with K = 256 at ~89%; `K / (K + 32)` matches both.
const EPILOGUE_K: f64 = 32.0;
/// Most bytes of a zero-padded input copy (per thread).
pub const FILL_BYTES: usize = 4 << 20;

impl Pass for ChanVec {
    fn name(&self) -> &'static str {
        "chanvec"
    }

    fn summary(&self) -> &'static str {
        "convs on small planes put output channels in the vector lanes, pixels in the tile rows"
    }

    fn explain(&self, graph: &Graph) -> Vec<String> {
        let mut notes = Vec::new();
        for id in graph.node_ids() {
            let node = graph.node(id);
            let (Op::FusedConv(f), Some((_, oh, ow))) = (&node.op, node.shape.as_chw()) else { continue };
            if !eligible(f, input_chw(graph, id)) {
                continue;
            }
            let (pixels, channels) = shares(f, oh, ow);
            let choice = if channels >= pixels + MARGIN { "chanvec" } else { "pixels in lanes" };
            notes.push(format!(
                "{}: {} channels @{oh}x{ow}: lanes used by pixels {:.0}%, by channels {:.0}% -> {choice}",
                node.name,
                f.conv.out_channels,
                100.0 * pixels,
                100.0 * channels
            ));
        }
        notes
    }

    fn run(&self, graph: &mut Graph) -> usize {
        let ids: Vec<NodeId> = graph.node_ids().collect();
        let mut rewrites = 0;
        for id in ids {
            let input = input_chw(graph, id);
            let node = graph.node_mut(id);
            let Some((_, oh, ow)) = node.shape.as_chw() else { continue };
            let Op::FusedConv(f) = &mut node.op else { continue };
            if !eligible(f, input) {
                continue;
            }
            let (pixels, channels) = shares(f, oh, ow);
            if channels >= pixels + MARGIN {
                f.kind = ConvKind::ChanVec;
                rewrites += 1;
            }
        }
        rewrites
    }
}

/// `[C, H, W]` of a node's first input.
fn input_chw(graph: &Graph, id: NodeId) -> Option<(usize, usize, usize)> {
    graph.inputs(id).first().and_then(|&v| graph.shape(v).as_chw())
}

/// Whether the `ChanVec` kernels take this convolution (its input `[C, H, W]`).
fn eligible(f: &FusedConv, input: Option<(usize, usize, usize)>) -> bool {
    let c = &f.conv;
    let Some((cin, h, w)) = input else { return false };
    let fill = (h + 2 * c.padding[0]) * (w + 2 * c.padding[1]) * cin * 4;
    matches!(f.kind, ConvKind::Direct | ConvKind::Gemm1x1 | ConvKind::StridedGemm1x1)
        && c.groups == 1
        && f.prologue.is_none()
        && c.out_channels % 16 == 0
        && (c.padding == [0, 0] || fill <= FILL_BYTES)
}

/// `(pixels, channels)`: the share of used lanes with pixels in 16-lane vectors, and with
/// channels in 32-channel panels discounted by the epilogue's cost.
fn shares(f: &FusedConv, oh: usize, ow: usize) -> (f64, f64) {
    let c = &f.conv;
    let pixels = if f.kind == ConvKind::Gemm1x1 {
        lane_share(1, oh * ow, 0)
    } else {
        lane_share(oh, ow, (c.kernel[1] - 1) * c.dilation[1] / c.stride[1])
    };
    let cout = c.out_channels;
    let k = (c.in_channels / c.groups * c.kernel[0] * c.kernel[1]) as f64;
    (pixels, cout as f64 / (cout.div_ceil(32) * 32) as f64 * k / (k + EPILOGUE_K))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Conv2d, Relu};

    fn conv(kind: ConvKind, cin: usize, cout: usize, k: usize, stride: usize) -> FusedConv {
        FusedConv {
            conv: Conv2d {
                in_channels: cin,
                out_channels: cout,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [k / 2, k / 2],
                dilation: [1, 1],
                groups: 1,
                bias: true,
            },
            kind,
            prologue: None,
            affine: false,
            residual: false,
            post_affine: false,
            relu: Relu::All,
        }
    }

    #[test]
    fn seven_by_seven_planes_take_channels_in_lanes() {
        let f = conv(ConvKind::Gemm1x1, 2048, 512, 1, 1);
        let (pixels, channels) = shares(&f, 7, 7);
        assert!((pixels - 49.0 / 64.0).abs() < 1e-9 && (channels - 2048.0 / 2080.0).abs() < 1e-9);
        assert!(channels >= pixels + MARGIN);
        assert!(eligible(&f, Some((2048, 7, 7))));
    }

    #[test]
    fn short_reductions_on_nearly_full_planes_keep_pixels_in_lanes() {
        // 14x14 = 196 pixels fill 13 vectors to 94%; with K = 256 the epilogue costs more than
        // the lanes gained.
        let f = conv(ConvKind::Gemm1x1, 256, 1024, 1, 1);
        let (pixels, channels) = shares(&f, 14, 14);
        assert!(channels < pixels + MARGIN, "{pixels} {channels}");
    }

    #[test]
    fn large_planes_keep_pixels_in_lanes() {
        let f = conv(ConvKind::Gemm1x1, 64, 256, 1, 1);
        let (pixels, channels) = shares(&f, 56, 56);
        assert!(channels < pixels + MARGIN);
    }

    #[test]
    fn odd_channel_counts_and_groups_are_not_eligible() {
        assert!(!eligible(&conv(ConvKind::Direct, 64, 100, 3, 1), Some((64, 7, 7))));
        let mut g = conv(ConvKind::Direct, 64, 64, 3, 1);
        g.conv.groups = 2;
        assert!(!eligible(&g, Some((64, 7, 7))));
    }
}
