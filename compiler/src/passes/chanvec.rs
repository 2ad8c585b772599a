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
//! Cost model (inputs and decisions: `netc ir --stats`), for the kernels of the target ISA
//! (`--tune-for`, default the compiling host's widest): each layout's expected share of the FMA
//! peak. Pixels in lanes: `RATE x` the share of used lanes over the plane (whole planes as one run
//! for 1x1 stride-1 layers, else the best blocks of rows laid end to end, as those kernels tile
//! them) `x`, for 1x1 GEMMs that pack B, the share of used rows of their output-channel tiles (12
//! rows on avx512, 6 on avx2; a GEMM reading B in place, `codegen::reads_b_in_place`, computes
//! only the rows it has).
//! Channels in lanes: the share of used lanes of its channel rows (32 or 16 channels) `x
//! K / (K + E)`, the transposing epilogue costing `E` multiply-adds of the reduction per output.
//! `ChanVec` wins when its estimate is at least `MARGIN` higher. `RATE`, `E` and `MARGIN` are fitted
//! per ISA on the 1x1 layers of ResNet-50 (`cargo bench --bench kernels -- --chanvec 1x1`, one
//! thread, Zen 4): avx512 channels-in-lanes runs at 55% of peak for K = 64, 84% for K = 128, 92-95%
//! for K = 256, 96-97% for K = 512 and 99% for K >= 1024 (`E` = 20; K = 64 is worse than the fit
//! but loses either way), pixels-in-lanes at ~95% of its lane share; avx2 at 45%, 74%, 84-86%,
//! 88-90% and 95-96% (`E` = 48) against ~93%. Measured winners on avx512 against the packing GEMM:
//! 256->64 and 256->128 at 56x56, K >= 512 at 28x28, every K >= 256 at 14x14 and 7x7; on avx2
//! only K >= 1024. Against the GEMM reading B in place, the 56x56 and 28x28 layers go to the GEMM
//! (256->64 at 56x56: 99% against 96%; 512->128 at 28x28: 99% against 98%, a tie the model
//! leaves to chanvec) and K >= 1024 at 14x14 stays channels in lanes (99% against 92%).

use super::winograd::lane_share_in;
use super::Pass;
use crate::codegen::{chanvec_row_channels, default_tile, reads_b_in_place, ConvPath, Isa};
use crate::ir::{ConvKind, FusedConv, Graph, NodeId, Op};

pub struct ChanVec;

/// Most bytes of a zero-padded input copy (per thread).
pub const FILL_BYTES: usize = 4 << 20;

/// The cost model's constants for one ISA's kernels (see the module doc).
struct Fit {
    /// Share of peak of the pixels-in-lanes kernels per share of used lanes and rows.
    pixel_rate: f64,
    /// The transposing epilogue's cost per output, in multiply-adds of the reduction.
    epilogue_k: f64,
    /// How much higher the channels-in-lanes estimate must be to be chosen.
    margin: f64,
}

fn fit(target: Isa) -> Fit {
    match target {
        Isa::Avx512 => Fit { pixel_rate: 0.95, epilogue_k: 20.0, margin: 0.0 },
        // Not fitted on sse: its kernels are the avx2 ones' shape at a quarter of the width.
        Isa::Avx2 | Isa::Sse => Fit { pixel_rate: 0.93, epilogue_k: 48.0, margin: 0.03 },
    }
}

impl Pass for ChanVec {
    fn name(&self) -> &'static str {
        "chanvec"
    }

    fn summary(&self) -> &'static str {
        "convs on small planes put output channels in the vector lanes, pixels in the tile rows"
    }

    fn explain(&self, graph: &Graph, target: Isa) -> Vec<String> {
        let mut notes = Vec::new();
        for id in graph.node_ids() {
            let node = graph.node(id);
            let (Op::FusedConv(f), Some((_, oh, ow))) = (&node.op, node.shape.as_chw()) else { continue };
            if !eligible(f, input_chw(graph, id)) {
                continue;
            }
            let (pixels, channels) = estimates(f, oh, ow, target);
            let choice = if channels >= pixels + fit(target).margin { "chanvec" } else { "pixels in lanes" };
            notes.push(format!(
                "{}: {} channels @{oh}x{ow}, K {}, for {target}: pixels in lanes {:.0}% of peak, channels {:.0}% -> {choice}",
                node.name,
                f.conv.out_channels,
                reduction(f),
                100.0 * pixels,
                100.0 * channels
            ));
        }
        notes
    }

    fn run(&self, graph: &mut Graph, target: Isa) -> usize {
        let ids: Vec<NodeId> = graph.node_ids().collect();
        let mut rewrites = 0;
        for id in ids {
            let input = input_chw(graph, id);
            let node = graph.node_mut(id);
            let Some((_, oh, ow)) = node.shape.as_chw() else { continue };
            let Op::FusedConv(f) = &mut node.op else { continue };
            if eligible(f, input) && chooses(f, oh, ow, target) {
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

/// Multiply-adds per output.
fn reduction(f: &FusedConv) -> usize {
    let c = &f.conv;
    c.in_channels / c.groups * c.kernel[0] * c.kernel[1]
}

/// Whether an eligible convolution with a `oh x ow` output takes channels in lanes on `target`.
fn chooses(f: &FusedConv, oh: usize, ow: usize, target: Isa) -> bool {
    let (pixels, channels) = estimates(f, oh, ow, target);
    channels >= pixels + fit(target).margin
}

/// `(pixels, channels)`: the expected share of `target`'s FMA peak with pixels in the lanes
/// (the kernel the layer has now) and with channels in the lanes.
fn estimates(f: &FusedConv, oh: usize, ow: usize, target: Isa) -> (f64, f64) {
    let c = &f.conv;
    let fit = fit(target);
    let lanes = target.lanes();
    let (lane_share, path) = if f.kind == ConvKind::Gemm1x1 {
        (lane_share_in(lanes, 1, oh * ow, 0), ConvPath::Direct1x1)
    } else {
        (lane_share_in(lanes, oh, ow, (c.kernel[1] - 1) * c.dilation[1] / c.stride[1]), ConvPath::RowPanel)
    };
    let cout = c.out_channels;
    let used = |per: usize| cout as f64 / (cout.div_ceil(per) * per) as f64;
    // A 1x1 GEMM packing B runs its edge tiles of output channels as slowly as whole ones (it
    // packs B for them all the same); reading B in place, or as row panels, hardly costs more than
    // the rows computed (64 channels in 12-row tiles: 256->64 at 56x56 runs at 79% of peak as a
    // packing GEMM, 99% reading B in place; the 3->64 stem at 93% as a row panel).
    let packs = path == ConvPath::Direct1x1 && !reads_b_in_place(target, cout, oh * ow);
    let rows = if packs { used(default_tile(target, path, ow).0) } else { 1.0 };
    let pixels = fit.pixel_rate * lane_share * rows;
    let k = reduction(f) as f64;
    let channels = used(chanvec_row_channels(target)) * k / (k + fit.epilogue_k);
    (pixels, channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kind: ConvKind, cin: usize, cout: usize, k: usize, stride: usize) -> FusedConv {
        FusedConv::square(cin, cout, k, stride, kind)
    }

    #[test]
    fn seven_by_seven_planes_take_channels_in_lanes_on_every_isa() {
        let f = conv(ConvKind::Gemm1x1, 2048, 512, 1, 1);
        assert!(eligible(&f, Some((2048, 7, 7))));
        for isa in Isa::ALL {
            assert!(chooses(&f, 7, 7, isa), "{isa}: {:?}", estimates(&f, 7, 7, isa));
        }
    }

    #[test]
    fn long_reductions_on_14x14_planes_take_channels_in_lanes_on_every_isa() {
        // 196 pixels fill 13 16-lane vectors to 94%, and K = 1024 makes the epilogue cheap.
        let f = conv(ConvKind::Gemm1x1, 1024, 256, 1, 1);
        for isa in Isa::ALL {
            assert!(chooses(&f, 14, 14, isa), "{isa}: {:?}", estimates(&f, 14, 14, isa));
        }
    }

    /// Short reductions on full planes, and medium ones at large planes. Measured on avx512, one
    /// thread: 256 -> 64 at 56x56 runs at 99% (batch 1) and 93% (batch 8) of peak as a GEMM
    /// reading B in place, 96% and 84% with channels in lanes; 144 -> 32 at 28x28 (MobileNetV2's
    /// projection) at 97% against 92%.
    #[test]
    fn short_and_medium_reductions_on_large_planes_keep_pixels_in_lanes() {
        for (cin, cout, hw) in [(64, 256, 56), (128, 512, 28), (256, 64, 56), (144, 32, 28)] {
            let f = conv(ConvKind::Gemm1x1, cin, cout, 1, 1);
            for isa in Isa::ALL {
                assert!(
                    !chooses(&f, hw, hw, isa),
                    "{cin}->{cout}@{hw} {isa}: {:?}",
                    estimates(&f, hw, hw, isa)
                );
            }
        }
    }

    #[test]
    fn odd_channel_counts_and_groups_are_not_eligible() {
        assert!(!eligible(&conv(ConvKind::Direct, 64, 100, 3, 1), Some((64, 7, 7))));
        let mut g = conv(ConvKind::Direct, 64, 64, 3, 1);
        g.conv.groups = 2;
        assert!(!eligible(&g, Some((64, 7, 7))));
    }
}
