//! The `depthwise` path: convolutions with one input and one output channel per group
//! (`groups == Cin == Cout`), a square odd `k x k` window, stride 1 or 2, padding `k / 2` and no
//! dilation (the `depthwise` pass's precondition). Each channel's plane is filtered on its own,
//! with output pixels in the vector lanes; the general grouped path instead runs a one-row
//! register tile per channel over a reduction of only `k*k`.
//!
//! Per (sample, channel), with `s` the stride, `p` the padding:
//! 1. **Fill**: the plane is copied into the thread's scratch as `s*s` phase planes of the
//!    zero-padded input (`Hq x Wq`, `Hq = ceil((H + 2p) / s)`, `Wq = ceil((W + 2p) / s)`): padded
//!    pixel `(y, x)` goes to plane `(y % s, x % s)` at `(y / s, x / s)` (stride 2 de-interleaves
//!    columns with vector shuffles). The padding is zeroed once per kernel call and never
//!    written, since every channel fills the same interior positions.
//! 2. **Stencil**: the output is treated as one flat run `o = oy * Wq + ox` (`ox < Wq`), so output
//!    pixel `(oy, ox)`'s tap `(kh, kw)` reads padded pixel `(s*oy + kh, s*ox + kw)`, which is plane
//!    `(kh % s, kw % s)` at flat position `o + (kh / s) * Wq + kw / s`: a constant offset per
//!    tap. All `(OH - 1) * Wq + OW` positions of the plane fill whole vectors (a 7x7 output is 61
//!    positions, 4 zmm, instead of a vector per row), and each vector is `k*k` FMAs of a load and
//!    a broadcast weight ([`DepthwiseSpec`]: assembled on avx2/avx512, f32x4 Cranelift on sse).
//!    Columns `ox >= OW` of the flat run are computed from in-scratch values and never stored.
//! 3. **Epilogue**: per output row, the `OW` valid positions get the fused epilogue in the IR's
//!    order (`y = acc * s1 + b1`, `+ residual`, `* s2 + b2`, ReLU; per-channel scalars) and are
//!    stored contiguously.
//!
//! **Row mode** (avx2/avx512, output rows of at least two vectors, as at 112x112 and 56x56, and
//! on avx512 also rows of more than one vector, as at 28x28):
//! stages 2 and 3 are one routine ([`DepthwiseRowsSpec`]) that runs the same taps over each output
//! row's `ceil(OW / L)` vectors and stores them with the epilogue straight into the output (row
//! tails masked): a wide row wastes few lanes, and the flat run's trip through the scratch (a
//! 51 KB store and reload per channel at 112x112) would cost more than it saves.
//!
//! **Direct rows** (avx512 row mode): no fill at all. The row routine reads the channel's input
//! plane itself ([`DepthwiseDirectSpec`]): a tap whose input row lies in the padding is left out of
//! the edge rows' code, and a tap whose lanes reach into the padding columns (the first vector's
//! left taps, the last vector's right taps) loads the input with those lanes zero-masked, which
//! adds `0 * w` as the padding would. The fill's copy and the stencil's wait for it were 10-18% of
//! these layers (one thread, batch 1, fill left out as an experiment: 144 channels SiLU at 56x56
//! 0.299 -> 0.267 ms, ReLU6 0.145 -> 0.119). At stride 2 the routine loads each input row's
//! columns once and splits them into even and odd columns in registers (`vpermi2ps`), the taps at
//! `kw >= 2` being lane shifts of those (`valignd`), instead of filling four phase planes.
//!
//! **Rows at once** (the direct rows; rows of up to 4 vectors for 3x3 and 6 for 5x5: [`at_once`],
//! fewer at stride 2 where the column split takes ten registers): the routine computes several
//! output rows per step ([`DepthwiseDirectSpec::rows`]), walking the input rows they read, so that
//! each input vector it loads (and at stride 2 splits) feeds every output row of the step that
//! reads it (a 5x5 window: up to five at stride 1, three at stride 2) instead of one tap of one
//! row. Row by row, each FMA loaded an unaligned vector, most spanning two cache lines. One
//! thread, batch 1 (micro-nets, medians of five interleaved runs against the fill and phase-plane
//! rows or row-by-row direct rows): stride 1, 5x5 SiLU, 240 channels at 28x28 0.138 -> 0.098 ms;
//! 3x3, 192 channels SiLU at 28x28 0.061 -> 0.043, ReLU6 0.036 -> 0.022 (there it replaced
//! lane-shifted taps over a fill, which had beaten row-by-row direct rows), 144 channels ReLU6 at
//! 56x56 0.123 -> 0.083; stride 2, 5x5 SiLU 56 -> 28 (144 channels) 0.108 -> 0.073, 3x3 ReLU6 56 ->
//! 28 (144 channels) 0.045 -> 0.031, 112 -> 56 (96 channels) ReLU6 0.110 -> 0.085, SiLU 0.149 ->
//! 0.122. Rows of 7 vectors (112x112) keep one row at a time at stride 1 (two measured slower).
//! (Several rows at once over the phase planes, each distinct vector of the step's taps loaded
//! once, took the stride-2 5x5 layer only to 0.095 ms.)
//!
//! **Bands** (row mode on avx2): the plane is filled and filtered in bands of `band` output rows
//! ([`band_rows`]: the most whose phase planes fit in [`BAND_BYTES`], 8 KB, so the fill's stores
//! are still in L1 when the stencil reads them back; a whole 112x112 plane is 52 KB, its stride-2
//! phase planes 53 KB). Band rows `oy0..oy0 + rows` need padded rows `y0 = s*oy0` to
//! `y1 = s*(oy0 + rows - 1) + k`, which the band's fill writes as band-relative padded rows
//! `0..y1 - y0` of the same `ceil((s*(band - 1) + k) / s) x Wq` phase planes: the input rows among
//! them copied, the padding rows (above the input in the first band, below it in the last ones)
//! stored as zeros, since an earlier band left input rows there. `y0` is even for stride 2, so
//! a band-relative row has the phase of the absolute one, and the taps' offsets are the
//! whole-plane ones with the band's plane length. Bands of one shape run in a counted loop
//! ([`BandRun`]). On this Zen 4 host (micro-nets, batch 8, one thread) 8 KB bands took the
//! 112 -> 56 stride-2 layers from 6.6 to 2.7-3.4 ms (96 channels, SiLU) and from 4.5 to 2.1-2.5 ms
//! (ReLU6); 3-5 KB and 12-28 KB bands were slower.
//!
//! **Pipelined channels** (avx512 flat path, flat runs of at most [`PIPELINED_FLOATS`], as at
//! 14x14 and 7x7): with two slots of phase planes and of flat runs, step `c` of an item's
//! channels fills channel `c + 1`, runs channel `c`'s stencil and channel `c - 1`'s epilogue
//! ([`flat_pipelined`]), so no routine reads back the stores of the one just before it (on a small
//! plane that wait, not the arithmetic, was most of the time: 7x7 layers ran 26-35% faster). On
//! avx2 the same order measured no faster on this host (its masked `vmaskmovps` stores dominate),
//! so avx2 keeps the plain order.
//!
//! **Fused flat epilogue** (avx512 flat path without a residual, flat runs of at most
//! [`FUSED_VECTORS`]): stages 2 and 3 are one routine ([`DepthwiseFlatSpec`]) that keeps the flat
//! run's vectors in registers, applies the epilogue to them and compacts each vector's output
//! pixels with a register `vcompressps` into consecutive stores of the output: no flat run in the
//! scratch, and 5 epilogue vectors instead of 7 for a 7x7 output. Its taps are lane shifts
//! (`valignd`) of aligned source vectors held in registers rather than unaligned loads. With a
//! sigmoid, SiLU or hard activation (each about 20 instructions a vector), the ReLU and the
//! activation are **deferred** ([`DepthwiseActSpec`]): the stencil stores `acc * s1 + b1`, and each
//! group of `defer` consecutive channels of the item (the fewest whose outputs are whole vectors,
//! 16 at 7x7 and 4 at 14x14, at most the item's), then the channels after the last whole group,
//! get the activation in place over their contiguous outputs in full vectors: 49 vectors per 16
//! channels of 7x7 instead of 80. One thread, batch 1 (micro-nets, SiLU): 1152 channels 5x5 at
//! 7x7 0.115 -> 0.083 ms, 3x3 0.071 -> 0.043 ms; 672 channels 5x5 at 14x14 0.184 -> 0.157 ms.
//!
//! **Lanes mode** (AVX2, no residual, outputs up to 28x28: [`LANES_MODE_COLUMNS`]): the channels,
//! not the pixels, are the vector lanes. Each work item is one group of eight channels (fewer in
//! the last group of a count that is no multiple of eight), and one routine
//! ([`DepthwiseLanesSpec`], [`crate::codegen::tile::x86::lanes`]) transposes the group's weights
//! and input planes into pixel vectors in the scratch (padded, so every tap is an aligned load at
//! a constant offset), runs the stencil with the per-channel weights and epilogue values as whole
//! vectors, and transposes the output back into the channels' planes, in bands of output rows
//! whose scratch fits the L1 ([`LANES_BAND_BYTES`], the bands of row mode). A 7-wide row no longer
//! wastes lanes, and no load spans two cache lines. The scratch's border columns are zeroed once
//! per call, like the phase planes'; each band zeroes its padding rows.
//!
//! A work item is (sample, block of channels): channels are independent, so two threads balance
//! at batch 1 (at least 32 blocks per sample when there are 32 channels).
//!
//! Sound: each stored output is `sum over (kh, kw) of xpad[s*oy + kh][s*ox + kw] * w[c][kh][kw]`
//! with `xpad` the zero-padded input (PyTorch's definition for this geometry), then the epilogue;
//! the phase planes hold exactly `xpad` (borders zero, interior copied), every tap's read of a
//! stored position lies inside its plane (`s*oy + kh < H + 2p`), and each output is written once,
//! by the item owning its channel (a deferred activation runs once over each of the item's
//! channels, after its stencil stored it: the groups and the rest partition `c0..c1`). In row
//! mode a band's planes hold exactly the padded rows `y0..y1` of `xpad` when its stencil runs: the
//! fill writes every one of those rows (input rows copied, padding rows zeroed) and never the
//! border columns, and a stored output of the band reads only rows `s*oy + kh < y1`. Direct rows
//! compute the same sum with the padding's terms (zero products) left out or masked to zero: see
//! [`crate::codegen::tile::x86::depthwise::assemble_direct`].

use super::{ConvPlan, ConvSpec, Operands};
use crate::codegen::cx::{KernelCx, VEC};
use crate::codegen::isa::Isa;
use crate::codegen::rows::{copy_run, zero_run};
use crate::codegen::tile::PostActivation;
use crate::codegen::tile::{
    DepthwiseActSpec, DepthwiseDirectSpec, DepthwiseEpilogue, DepthwiseFillSpec, DepthwiseFlatSpec,
    DepthwiseLanesSpec, DepthwiseOutSpec, DepthwiseRowsSpec, DepthwiseSpec, Tiles,
};
use crate::ir::{Activation, Relu};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// Channel blocks per sample worth aiming for (two threads balance at batch 1).
const TARGET_ITEMS: usize = 32;

/// The longest flat run (floats) whose channels are software-pipelined ([`flat_pipelined`]): up
/// to 14x14 outputs. At 28x28 the pipeline measured slower than the plain order (one thread,
/// batch 8: 2.2 -> 2.5 ms for a 5x5 layer of 240 channels), at 14x14 and 7x7 faster (7x7, 1152
/// channels: 1.20 -> 0.93 ms; 14x14, 480 channels: 0.63 -> 0.56 ms).
const PIPELINED_FLOATS: usize = 256;

/// The most flat-run vectors whose epilogue is fused into the stencil ([`DepthwiseFlatSpec`]: one
/// unrolled routine, a compress mask per vector): flat runs of up to 512 floats, 16x16 outputs.
const FUSED_VECTORS: usize = 32;

/// Accumulators of the output rows computed at once with a 3x3 window, whose nine weights then
/// stay in registers beside the epilogue's: 8 (one thread, batch 1, 192 channels SiLU at 28x28
/// (four rows at once) 0.043 ms, 12 accumulators 0.048 (the weights no longer fit); 32 channels
/// ReLU6 at 112x112, one row or two of seven vectors, 0.081 -> 0.086).
const AT_ONCE_3X3: usize = 8;

/// Accumulators of the output rows computed at once with a 5x5 window, whose weights are broadcast
/// operands anyway: 12 (one thread, batch 1, SiLU: 240 channels at 28x28 0.106 ms with 8, 0.098
/// with 12, 0.099 with 16; 48 channels at 56x56 0.103 -> 0.093). At stride 2 the direct rows have
/// registers for 11 beside an activation's (measured at stride 2 over phase planes only).
const AT_ONCE_WIDE: usize = 12;

/// AVX2 computes depthwise layers of fewer output columns than this with the channels in the
/// vector lanes ([`DepthwiseLanesSpec`]): up to 28x28. One thread, batch 1, Zen 3 (EfficientNet-B0
/// and MobileNetV2 layers against the flat path and row mode): 5x5 SiLU, 672 channels at 14x14
/// 0.325 -> 0.227 ms, 1152 at 7x7 0.208 -> 0.099, 240 at 28x28 0.406 -> 0.316, stride 2 56 -> 28
/// (144 channels) 0.323 -> 0.250; 3x3 ReLU6, 192 channels at 28x28 0.112 -> 0.091, 480 at 14x14
/// (SiLU) 0.160 -> 0.112. Wider outputs keep row mode: in bands (below), MobileNetV2's 56x56 layer
/// (144 channels) took 0.211 -> 0.267 ms, its stride-2 112 -> 56 layer 0.256 -> 0.321, its 112x112
/// one 0.205 -> 0.320 (the transposes cost more than the lanes row mode wastes there).
const LANES_MODE_COLUMNS: usize = 32;

/// Bytes of scratch a lanes-mode band aims at, its padded input rows and its output rows (eight
/// channels per position), so that both stay in the L1 between the phases: 24 KB (Zen 3, 32 KB
/// L1; one thread, batch 1, MobileNetV2's stride-2 56 -> 28 layer: whole plane 0.126 ms, 16 KB
/// bands 0.114, 24 KB 0.100, 48 KB 0.134).
const LANES_BAND_BYTES: usize = 24 * 1024;

/// Bytes of phase planes a row-mode band aims to fill (see [`band_rows`]).
const BAND_BYTES: usize = 8 * 1024;

/// A run of consecutive row-mode bands of the same shape: band `i < count` computes output rows
/// `oy0 + i * band ..` (`rows` of them) from input rows `i0 + i * stride * band ..` (`h` of them),
/// which its fill writes as band-relative padded rows `top..top + h` of `padded` (the others zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandRun {
    pub count: usize,
    pub oy0: usize,
    pub rows: usize,
    pub i0: usize,
    pub h: usize,
    pub top: usize,
    pub padded: usize,
}

/// The geometry of a depthwise kernel.
#[derive(Debug, Clone)]
pub struct DepthwisePlan {
    /// Stride and padding (both axes), output `[OH, OW]`.
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
    /// Columns per phase-plane row, floats per phase plane (of a band in row mode).
    pub wq: usize,
    pub plane_len: usize,
    /// The stencil: tap offsets into the scratch, vectors of the flat output (row mode: the taps
    /// into a band's planes, and the vectors computed per channel).
    pub stencil: DepthwiseSpec,
    /// Floats of the padded planes and the stencil's reads past them (zeroed once per call).
    pub in_len: usize,
    /// Where the flat output starts in the scratch.
    pub out_at: usize,
    /// Channels per work item.
    pub channels: usize,
    /// Row mode (wide ISAs, rows of at least two vectors; avx512 also 17-31 columns): the stencil
    /// and epilogue run row by row into the output ([`DepthwiseRowsSpec`]) instead of through the
    /// flat run, band by band.
    pub rows_mode: bool,
    /// Row mode: output rows per band, and the bands in runs of the same shape.
    pub band: usize,
    pub bands: Vec<BandRun>,
    /// Phase-plane and flat-run slots: two when the channels are software-pipelined (AVX-512's
    /// flat path on small planes, [`flat_pipelined`]), else one.
    pub slots: usize,
    /// The flat path's epilogue is fused into the stencil ([`DepthwiseFlatSpec`]; AVX-512, no
    /// residual): no flat run in the scratch.
    pub fused: bool,
    /// Row mode on AVX-512 (stride 1, or stride 2 while the rows' accumulators fit beside the
    /// column split's registers): the stencil reads the input plane itself
    /// ([`DepthwiseDirectSpec`]), no fill, no bands and no scratch.
    pub direct: bool,
    /// Direct rows: output rows computed at once ([`at_once`], [`DepthwiseDirectSpec::rows`]); 1
    /// otherwise.
    pub at_once: usize,
    /// With an activation costlier than a clamp, on AVX-512's fused flat path: the ReLU and the activation are deferred to runs over the
    /// contiguous outputs of `defer` channels ([`DepthwiseActSpec`]); 0 when they stay in the
    /// stencil's epilogue.
    pub defer: usize,
    /// Lanes mode (AVX2, no residual, fewer than [`LANES_MODE_COLUMNS`] output columns): each
    /// work item is one group of up to eight channels computed with the channels in the lanes
    /// ([`DepthwiseLanesSpec`]); the planar fields above are unused.
    pub lanes: bool,
    /// Scratch floats in all.
    pub floats: usize,
}

impl DepthwisePlan {
    /// Output positions computed per channel (whole vectors of the flat run).
    pub fn computed(&self) -> usize {
        self.stencil.vectors * self.stencil.isa.lanes()
    }
}

/// Output rows per row-mode band: the most whose `s * s` phase planes (`ceil((s * (rows - 1) + k)
/// / s)` rows of `wq` floats each) fit in [`BAND_BYTES`], at least one and at most `oh`.
fn band_rows(s: usize, k: usize, wq: usize, oh: usize) -> usize {
    let bytes = |rows: usize| s * s * (s * (rows - 1) + k).div_ceil(s) * wq * 4;
    let mut rows = 1;
    while rows < oh && bytes(rows + 1) <= BAND_BYTES {
        rows += 1;
    }
    rows
}

/// The row-mode bands of `oh` output rows, `band` per band (the last may be shorter), grouped into
/// runs of the same shape. Band rows `oy0..oy0 + rows` read padded rows `y0 = s * oy0` up to
/// `y1 = s * (oy0 + rows - 1) + k`, of which input rows `max(y0, p) - p .. min(y1, h + p) - p`.
fn bands(h: usize, k: usize, s: usize, p: usize, oh: usize, band: usize) -> Vec<BandRun> {
    let mut runs: Vec<BandRun> = Vec::new();
    let mut oy0 = 0;
    while oy0 < oh {
        let rows = band.min(oh - oy0);
        let (y0, y1) = (s * oy0, s * (oy0 + rows - 1) + k);
        let (i0, i1) = (y0.max(p) - p, y1.min(h + p) - p);
        let shape = BandRun { count: 1, oy0, rows, i0, h: i1 - i0, top: i0 + p - y0, padded: y1 - y0 };
        match runs.last_mut() {
            Some(r)
                if (r.rows, r.h, r.top, r.padded) == (rows, shape.h, shape.top, shape.padded)
                    && r.oy0 + r.count * band == oy0
                    && r.i0 + r.count * s * band == i0 =>
            {
                r.count += 1
            }
            _ => runs.push(shape),
        }
        oy0 += rows;
    }
    runs
}

/// Output rows of `per_row` vectors that AVX-512 row mode computes at once with a `k x k` window:
/// as many as [`AT_ONCE_3X3`] or [`AT_ONCE_WIDE`] accumulators hold, at least one.
fn at_once(per_row: usize, k: usize) -> usize {
    let accumulators = if k <= 3 { AT_ONCE_3X3 } else { AT_ONCE_WIDE };
    (accumulators / per_row).max(1)
}

/// A depthwise layer's sizes: channels, input and output plane, window, stride, padding, the
/// ISA's lanes and the phase planes' columns.
#[derive(Clone, Copy)]
struct Geometry {
    channels: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    s: usize,
    pad: usize,
    lanes: usize,
    wq: usize,
}

impl Geometry {
    fn of(plan: &ConvPlan, spec: &ConvSpec) -> Geometry {
        let c = &spec.op.conv;
        let [channels, h, w] = spec.input;
        let [_, oh, ow] = plan.out;
        let (k, s, pad) = (c.kernel[0], c.stride[0], c.padding[0]);
        let wq = (w + 2 * pad).div_ceil(s);
        Geometry { channels, h, w, oh, ow, k, s, pad, lanes: plan.isa.lanes(), wq }
    }
}

/// The geometry and work split of a depthwise kernel.
pub(super) fn plan(plan: &mut ConvPlan, spec: &ConvSpec) {
    let g = Geometry::of(plan, spec);
    let Geometry { channels, h, oh, ow, k, s, pad, lanes, wq, .. } = g;
    // Lanes mode on AVX2 up to 28x28 outputs (see [`LANES_MODE_COLUMNS`]).
    if plan.isa == Isa::Avx2 && !spec.op.residual && ow < LANES_MODE_COLUMNS {
        lanes_plan(plan, spec, g);
        return;
    }
    // Row mode for rows of two vectors or more; on AVX-512 (k-masked tails) also for rows of
    // 17-31 columns (28x28: one thread, batch 8, 192 channels 0.53 -> 0.45 ms, 5x5 stride 2
    // 1.8 -> 1.6 ms).
    let rows_mode = plan.isa != Isa::Sse && (ow >= 2 * lanes || (plan.isa == Isa::Avx512 && ow > lanes));
    // A sigmoid, SiLU or hard activation: about 20 instructions a vector, against a clamp's two.
    let costly = matches!(spec.op.activation, Some(a) if !matches!(a, Activation::Clamp { .. }));
    // AVX-512 row mode: straight from the input, no fill ([`DepthwiseDirectSpec`]), several output
    // rows at once ([`at_once`]). (Row by row at stride 1 it measured faster than the fill and the
    // rows routine only with a costly activation or rows of more than two vectors; the shifted taps
    // kept ReLU6 layers at 28x28. Several rows at once beat both there: one thread, batch 1, ReLU6,
    // 192 channels at 28x28 0.034 -> 0.021 ms against the shifted taps.) At stride 2, while the
    // rows' accumulators fit beside the column split's registers.
    let per_row = ow.div_ceil(lanes);
    let stride2_accumulators =
        crate::codegen::tile::x86::depthwise::stride2_accumulators(plan.activation.is_some());
    let direct = rows_mode && plan.isa == Isa::Avx512 && (s == 1 || per_row <= stride2_accumulators);
    let band = if rows_mode { band_rows(s, k, wq, oh) } else { oh };
    let hq = if rows_mode { (s * (band - 1) + k).div_ceil(s) } else { (h + 2 * pad).div_ceil(s) };
    let plane_len = hq * wq;
    let taps: Vec<usize> = (0..k)
        .flat_map(|kh| (0..k).map(move |kw| ((kh % s) * s + kw % s) * plane_len + (kh / s) * wq + kw / s))
        .collect();
    let max_tap = taps.iter().copied().max().unwrap_or(0);
    let (vectors, reads) = if rows_mode {
        (oh * per_row, DepthwiseRowsSpec::reads(plan.isa, &taps, band, ow, wq))
    } else {
        let vectors = ((oh - 1) * wq + ow).div_ceil(lanes);
        (vectors, max_tap + vectors * lanes)
    };
    let in_len = if direct { 0 } else { (s * s * plane_len).max(reads).div_ceil(16) * 16 };
    // AVX-512's flat path on small planes keeps two of each ([`flat_pipelined`]).
    let pipelined = plan.isa == Isa::Avx512 && !rows_mode && vectors * lanes <= PIPELINED_FLOATS;
    let slots = if pipelined { 2 } else { 1 };
    let fused = plan.isa == Isa::Avx512
        && !rows_mode
        && !spec.op.residual
        && vectors <= FUSED_VECTORS
        && crate::codegen::tile::x86::depthwise::flat_fits(&taps);
    let flat = if rows_mode || fused { 0 } else { slots * vectors * lanes };
    let per_item = channels.div_ceil(TARGET_ITEMS).max(1);
    // The fewest channels whose outputs are whole vectors (at most 16), at most an item's.
    // (Row mode deferring its activation at 28 and 56 columns measured no faster: one thread, batch
    // 1, SiLU, 240 channels 5x5 at 28x28 0.238 -> 0.246 ms, 144 channels 3x3 at 56x56 0.298 ->
    // 0.311 ms.)
    let defer = if fused && costly {
        (1..=lanes).find(|g| g * oh * ow % lanes == 0).unwrap_or(lanes).min(per_item)
    } else {
        0
    };
    plan.blocks = channels.div_ceil(per_item);
    plan.block = per_item;
    plan.depthwise = Some(DepthwisePlan {
        stride: s,
        pad,
        oh,
        ow,
        wq,
        plane_len,
        stencil: DepthwiseSpec { isa: plan.isa, taps, vectors },
        in_len,
        out_at: in_len,
        channels: per_item,
        rows_mode,
        band,
        bands: if rows_mode && !direct { bands(h, k, s, pad, oh, band) } else { Vec::new() },
        direct,
        at_once: match (direct, s) {
            (false, _) => 1,
            (true, 1) => at_once(per_row, k),
            (true, _) => at_once(per_row, k).min(stride2_accumulators / per_row),
        },
        slots,
        fused,
        defer,
        lanes: false,
        floats: slots * in_len + flat,
    });
}

/// The lanes-mode plan ([`DepthwisePlan::lanes`]): one item per group of `L` channels, the
/// bands of [`lanes_band_rows`], the scratch of the tallest band's layout.
fn lanes_plan(plan: &mut ConvPlan, spec: &ConvSpec, g: Geometry) {
    let Geometry { channels, h, w, oh, ow, k, s, pad, lanes, wq } = g;
    let band = lanes_band_rows(s, k, w + 2 * pad, ow, oh);
    let bands = bands(h, k, s, pad, oh, band);
    let layout = lanes_spec(spec, plan, lanes, band, &bands[0]).layout();
    plan.block = lanes;
    plan.blocks = channels.div_ceil(lanes);
    plan.depthwise = Some(DepthwisePlan {
        stride: s,
        pad,
        oh,
        ow,
        wq,
        plane_len: 0,
        stencil: DepthwiseSpec { isa: plan.isa, taps: Vec::new(), vectors: 0 },
        in_len: layout.weights_at,
        out_at: 0,
        channels: lanes,
        rows_mode: false,
        band,
        bands,
        direct: false,
        at_once: 1,
        slots: 1,
        fused: false,
        defer: 0,
        lanes: true,
        floats: layout.floats,
    });
}

/// One work item: sample `n`, channel block `r`.
#[allow(clippy::too_many_arguments)]
pub(super) fn item(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    spec: &ConvSpec,
    plan: &ConvPlan,
    ops: Operands,
    n: Value,
    r: Value,
    filled: Variable,
) {
    let d = plan.depthwise.as_ref().expect("a depthwise plan");
    let [channels, h, w] = spec.input;
    // The padding of the phase planes: zeroed once per call (`filled` starts at -1).
    let flag = cx.b.use_var(filled);
    let unset = cx.b.ins().icmp_imm_s(IntCC::SignedLessThan, flag, 0);
    cx.if_then(unset, |cx| {
        zero_run(cx, cx.scratch, 0, d.slots * d.in_len);
        let zero = cx.ic(0);
        cx.b.def_var(filled, zero);
    });
    let x_n = cx.offset(ops.input, n, spec.in_stride);
    let y_n = cx.offset(cx.output, n, spec.out_stride);
    let res_n = ops.residual.map(|res| cx.offset(res, n, spec.res_stride));
    // Wide ISAs: the fill, the stencil and the epilogue are assembled routines.
    let wide = plan.isa != Isa::Sse;
    let c0 = cx.b.ins().imul_imm_s(r, d.channels as i64);
    let c1 = cx.b.ins().iadd_imm_s(c0, d.channels as i64);
    let all = cx.ic(channels as i64);
    let c1 = cx.imin(c1, all);
    if d.lanes {
        lanes_item(cx, tiles, spec, plan, ops.packed, [x_n, y_n], r);
        return;
    }
    if d.slots == 2 {
        flat_pipelined(cx, tiles, spec, plan, d, ops.packed, [x_n, y_n], res_n, [c0, c1]);
        return;
    }
    cx.for_range(c0, c1, 1, "depthwise channels", |cx, ch| {
        let x = cx.offset(x_n, ch, h * w);
        let weights = cx.offset(ops.packed, ch, plan.layout.k_g);
        let plane = d.oh * d.ow;
        let y = cx.offset(y_n, ch, plane);
        let res = res_n.map(|res| cx.offset(res, ch, plane));
        let layout = &plan.layout;
        let fused = DepthwiseEpilogue {
            s1: layout.s1,
            b1: layout.b1,
            s2: layout.s2,
            b2: layout.b2,
            residual: res.is_some(),
            relu: spec.op.relu != Relu::None,
            activation: plan.activation,
        };
        let fill_spec = |top: usize, rows: usize, h: usize| DepthwiseFillSpec {
            isa: plan.isa,
            h,
            w,
            pad: d.pad,
            top,
            rows,
            wq: d.wq,
            stride: d.stride,
            plane_len: d.plane_len,
        };
        if d.direct {
            let epi = cx.offset(ops.packed, ch, 1);
            let direct = DepthwiseDirectSpec {
                isa: plan.isa,
                k: spec.op.conv.kernel[0],
                h,
                w,
                stride: d.stride,
                rows: d.at_once,
                epilogue: fused,
            };
            let null = cx.ic(0);
            tiles.depthwise_direct(cx, &direct, [x, weights, y, epi, res.unwrap_or(null)]);
            return;
        }
        if d.rows_mode {
            // Band by band: the band's padded rows into the scratch (L1-sized), then its output rows.
            let epi = cx.offset(ops.packed, ch, 1);
            for run in &d.bands {
                cx.for_count(run.count, "depthwise bands", |cx, i| {
                    let xb = cx.offset(x, i, d.stride * d.band * w);
                    let xb = cx.add_floats(xb, run.i0 * w);
                    tiles.depthwise_fill(cx, &fill_spec(run.top, run.padded, run.h), [xb, cx.scratch]);
                    let yb = cx.offset(y, i, d.band * d.ow);
                    let yb = cx.add_floats(yb, run.oy0 * d.ow);
                    let rb = match res {
                        Some(r) => {
                            let rb = cx.offset(r, i, d.band * d.ow);
                            cx.add_floats(rb, run.oy0 * d.ow)
                        }
                        None => cx.ic(0),
                    };
                    let rows = DepthwiseRowsSpec {
                        isa: plan.isa,
                        taps: d.stencil.taps.clone(),
                        rows: run.rows,
                        ow: d.ow,
                        wq: d.wq,
                        epilogue: fused.clone(),
                    };
                    tiles.depthwise_rows(cx, &rows, [cx.scratch, weights, yb, epi, rb]);
                });
            }
            return;
        }
        if wide {
            tiles.depthwise_fill(cx, &fill_spec(d.pad, d.pad + h, h), [x, cx.scratch]);
        } else {
            fill(cx, d, x, h, w);
        }
        if d.fused {
            let epi = cx.offset(ops.packed, ch, 1);
            tiles.depthwise_flat(cx, &flat_spec(d, fused), [cx.scratch, weights, y, epi]);
            deferred(cx, tiles, spec, d, y_n, c0, ch);
            return;
        }
        let flat = cx.add_floats(cx.scratch, d.out_at);
        tiles.depthwise(cx, &d.stencil, [cx.scratch, weights, flat]);
        if wide {
            let out = DepthwiseOutSpec { isa: plan.isa, rows: d.oh, ow: d.ow, wq: d.wq, epilogue: fused };
            let epi = cx.offset(ops.packed, ch, 1);
            let null = cx.ic(0);
            tiles.depthwise_out(cx, &out, [flat, y, epi, res.unwrap_or(null)]);
        } else {
            epilogue(cx, spec, plan, d, ops.packed, ch, flat, y, res);
        }
    });
    deferred_rest(cx, tiles, spec, d, y_n, [c0, c1]);
}

/// Output rows per lanes-mode band: the most whose padded input rows and output (eight channels
/// per position) fit in [`LANES_BAND_BYTES`], at least one and at most `oh`.
fn lanes_band_rows(s: usize, k: usize, wp: usize, ow: usize, oh: usize) -> usize {
    let bytes = |rows: usize| ((s * (rows - 1) + k) * wp + rows * ow) * 8 * 4;
    let mut rows = 1;
    while rows < oh && bytes(rows + 1) <= LANES_BAND_BYTES {
        rows += 1;
    }
    rows
}

/// The lanes-mode routine of `channels` channels (at most the ISA's lanes) of this convolution,
/// for the bands of `run`, the layer's bands being `band` rows tall.
fn lanes_spec(
    spec: &ConvSpec,
    plan: &ConvPlan,
    channels: usize,
    band: usize,
    run: &BandRun,
) -> DepthwiseLanesSpec {
    let c = &spec.op.conv;
    let layout = &plan.layout;
    let [_, h, w] = spec.input;
    DepthwiseLanesSpec {
        isa: plan.isa,
        k: c.kernel[0],
        stride: c.stride[0],
        h,
        w,
        channels,
        band,
        rows: run.rows,
        in_rows: run.h,
        top: run.top,
        epilogue: DepthwiseEpilogue {
            s1: layout.s1,
            b1: layout.b1,
            s2: layout.s2,
            b2: layout.b2,
            residual: false,
            relu: spec.op.relu != Relu::None,
            activation: plan.activation,
        },
    }
}

/// A lanes-mode work item: channel group `r` (channels `r * L ..`, `L` of them or, for the last
/// group of a channel count that is no multiple of `L`, the rest) of the sample at `x_n`, `y_n`.
/// The group's size is compared on `r` itself, so the bounds check sees each call's channels.
#[allow(clippy::too_many_arguments)]
fn lanes_item(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    spec: &ConvSpec,
    plan: &ConvPlan,
    packed: Value,
    [x_n, y_n]: [Value; 2],
    r: Value,
) {
    let lanes = plan.isa.lanes();
    let [channels, h, w] = spec.input;
    let [_, oh, ow] = plan.out;
    let k_g = plan.layout.k_g;
    let d = plan.depthwise.as_ref().expect("a depthwise plan");
    let s = d.stride;
    let call = |cx: &mut KernelCx, tiles: &mut Tiles, n: usize| {
        let c0 = cx.b.ins().imul_imm_s(r, lanes as i64);
        let x = cx.offset(x_n, c0, h * w);
        let weights = cx.offset(packed, c0, k_g);
        let y = cx.offset(y_n, c0, oh * ow);
        let epi = cx.offset(packed, c0, 1);
        for run in &d.bands {
            cx.for_count(run.count, "depthwise lanes bands", |cx, i| {
                let xb = cx.offset(x, i, s * d.band * w);
                let xb = cx.add_floats(xb, run.i0 * w);
                let yb = cx.offset(y, i, d.band * ow);
                let yb = cx.add_floats(yb, run.oy0 * ow);
                let lanes_spec = lanes_spec(spec, plan, n, d.band, run);
                tiles.depthwise_lanes(cx, &lanes_spec, [xb, weights, yb, epi, cx.scratch]);
            });
        }
    };
    let whole = channels / lanes;
    let rest = channels % lanes;
    if rest == 0 {
        call(cx, tiles, lanes);
        return;
    }
    let full = cx.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, whole as i64);
    cx.if_then(full, |cx| call(cx, tiles, lanes));
    let last = cx.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, r, whole as i64);
    cx.if_then(last, |cx| call(cx, tiles, rest));
}

/// The flat path on AVX-512, software-pipelined over the item's channels `c0..c1`: step
/// `ch` fills channel `ch + 1` into the other of two phase-plane slots, runs channel `ch`'s stencil
/// into its flat-run slot (`(ch - c0) % 2` each) and channel `ch - 1`'s epilogue from the other
/// flat slot. A routine so reads what an earlier step stored, not the stores just before it (a
/// vector load spanning several recent stores cannot be forwarded from them and waits for them to
/// reach the cache).
#[allow(clippy::too_many_arguments)]
fn flat_pipelined(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    spec: &ConvSpec,
    plan: &ConvPlan,
    d: &DepthwisePlan,
    packed: Value,
    [x_n, y_n]: [Value; 2],
    res_n: Option<Value>,
    [c0, c1]: [Value; 2],
) {
    let [_, h, w] = spec.input;
    let plane = d.oh * d.ow;
    let layout = &plan.layout;
    let flat_len = d.stencil.vectors * d.stencil.isa.lanes();
    let fill_spec = DepthwiseFillSpec {
        isa: plan.isa,
        h,
        w,
        pad: d.pad,
        top: d.pad,
        rows: d.pad + h,
        wq: d.wq,
        stride: d.stride,
        plane_len: d.plane_len,
    };
    let out_spec = DepthwiseOutSpec {
        isa: plan.isa,
        rows: d.oh,
        ow: d.ow,
        wq: d.wq,
        epilogue: DepthwiseEpilogue {
            s1: layout.s1,
            b1: layout.b1,
            s2: layout.s2,
            b2: layout.b2,
            residual: res_n.is_some(),
            relu: spec.op.relu != Relu::None,
            activation: plan.activation,
        },
    };
    // Slot `par` (0 or 1) of the planes and of the flat run.
    let planes = |cx: &mut KernelCx, par: Value| cx.offset(cx.scratch, par, d.in_len);
    let flat = |cx: &mut KernelCx, par: Value| {
        let f = cx.offset(cx.scratch, par, flat_len);
        cx.add_floats(f, 2 * d.in_len)
    };
    let fill = |cx: &mut KernelCx, tiles: &mut Tiles, ch: Value, par: Value| {
        let x = cx.offset(x_n, ch, h * w);
        let dst = planes(cx, par);
        tiles.depthwise_fill(cx, &fill_spec, [x, dst]);
    };
    let out = |cx: &mut KernelCx, tiles: &mut Tiles, ch: Value, par: Value| {
        let src = flat(cx, par);
        let y = cx.offset(y_n, ch, plane);
        let epi = cx.offset(packed, ch, 1);
        let res = match res_n {
            Some(r) => cx.offset(r, ch, plane),
            None => cx.ic(0),
        };
        tiles.depthwise_out(cx, &out_spec, [src, y, epi, res]);
    };
    let zero = cx.ic(0);
    fill(cx, tiles, c0, zero);
    cx.for_range(c0, c1, 1, "depthwise channels", |cx, ch| {
        let k = cx.b.ins().isub(ch, c0);
        let par = cx.b.ins().band_imm_u(k, 1);
        let one = cx.ic(1);
        let other = cx.b.ins().isub(one, par);
        let next = cx.b.ins().iadd_imm_s(ch, 1);
        let more = cx.b.ins().icmp(IntCC::SignedLessThan, next, c1);
        cx.if_then(more, |cx| fill(cx, tiles, next, other));
        let weights = cx.offset(packed, ch, layout.k_g);
        let src = planes(cx, par);
        if d.fused {
            let y = cx.offset(y_n, ch, plane);
            let epi = cx.offset(packed, ch, 1);
            tiles.depthwise_flat(cx, &flat_spec(d, out_spec.epilogue.clone()), [src, weights, y, epi]);
            deferred(cx, tiles, spec, d, y_n, c0, ch);
            return;
        }
        let dst = flat(cx, par);
        tiles.depthwise(cx, &d.stencil, [src, weights, dst]);
        let started = cx.b.ins().icmp(IntCC::SignedGreaterThan, ch, c0);
        cx.if_then(started, |cx| {
            let prev = cx.b.ins().iadd_imm_s(ch, -1);
            out(cx, tiles, prev, other);
        });
    });
    if d.fused {
        deferred_rest(cx, tiles, spec, d, y_n, [c0, c1]);
        return;
    }
    let last = cx.b.ins().iadd_imm_s(c1, -1);
    let k = cx.b.ins().isub(last, c0);
    let par = cx.b.ins().band_imm_u(k, 1);
    out(cx, tiles, last, par);
}

/// The deferred activation of `n` channels' outputs.
fn act_spec(spec: &ConvSpec, d: &DepthwisePlan, n: usize) -> DepthwiseActSpec {
    DepthwiseActSpec {
        isa: d.stencil.isa,
        len: n * d.oh * d.ow,
        relu: spec.op.relu != Relu::None,
        activation: PostActivation(spec.op.activation.expect("a deferred activation")),
    }
}

/// After channel `ch`'s fused stencil (channels `c0..` of the item at `y_n`): when `ch` completes a
/// group of `defer` channels counted from `c0`, the group's deferred activation. The group's first
/// channel `ch + 1 - defer` is compared with `c0` (always true when the group is complete), so the
/// bounds check knows it lies in the item.
fn deferred(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    spec: &ConvSpec,
    d: &DepthwisePlan,
    y_n: Value,
    c0: Value,
    ch: Value,
) {
    if d.defer == 0 {
        return;
    }
    let plane = d.oh * d.ow;
    let first = cx.b.ins().iadd_imm_s(ch, 1 - d.defer as i64);
    let inside = cx.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, first, c0);
    cx.if_then(inside, |cx| {
        let k = cx.b.ins().isub(first, c0);
        let at_group = cx.b.ins().urem_imm_u(k, d.defer as i64);
        let complete = cx.b.ins().icmp_imm_s(IntCC::Equal, at_group, 0);
        cx.if_then(complete, |cx| {
            let y = cx.offset(y_n, first, plane);
            tiles.depthwise_act(cx, &act_spec(spec, d, d.defer), y);
        });
    });
}

/// After an item's channels `c0..c1`: the deferred activation of the channels after its last
/// complete group, `(c1 - c0) % defer` of them (one of two values known when compiling: a whole
/// item's or the last item's).
fn deferred_rest(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    spec: &ConvSpec,
    d: &DepthwisePlan,
    y_n: Value,
    [c0, c1]: [Value; 2],
) {
    if d.defer == 0 {
        return;
    }
    let plane = d.oh * d.ow;
    let channels = spec.input[0];
    let last = channels - (channels.div_ceil(d.channels) - 1) * d.channels;
    let mut rests = vec![d.channels % d.defer, last % d.defer];
    rests.sort_unstable();
    rests.dedup();
    let count = cx.b.ins().isub(c1, c0);
    let rest = cx.b.ins().urem_imm_u(count, d.defer as i64);
    for n in rests.into_iter().filter(|&n| n > 0) {
        let this = cx.b.ins().icmp_imm_s(IntCC::Equal, rest, n as i64);
        cx.if_then(this, |cx| {
            let first = cx.b.ins().iadd_imm_s(c1, -(n as i64));
            let inside = cx.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, first, c0);
            cx.if_then(inside, |cx| {
                let y = cx.offset(y_n, first, plane);
                tiles.depthwise_act(cx, &act_spec(spec, d, n), y);
            });
        });
    }
}

/// The epilogue a stencil applies: without the ReLU and the activation when they are deferred.
fn undeferred(d: &DepthwisePlan, mut epilogue: DepthwiseEpilogue) -> DepthwiseEpilogue {
    if d.defer > 0 {
        epilogue.relu = false;
        epilogue.activation = None;
    }
    epilogue
}

/// The fused flat stencil and epilogue of the plan (the ReLU and activation left out when they are
/// deferred).
fn flat_spec(d: &DepthwisePlan, epilogue: DepthwiseEpilogue) -> DepthwiseFlatSpec {
    let epilogue = undeferred(d, epilogue);
    DepthwiseFlatSpec {
        isa: d.stencil.isa,
        taps: d.stencil.taps.clone(),
        vectors: d.stencil.vectors,
        oh: d.oh,
        ow: d.ow,
        wq: d.wq,
        epilogue,
    }
}

/// Copies one channel's `h x w` plane at `x` into the phase planes (interior only).
fn fill(cx: &mut KernelCx, d: &DepthwisePlan, x: Value, h: usize, w: usize) {
    let (s, pad) = (d.stride, d.pad);
    let scratch = cx.scratch;
    cx.for_count(h, "depthwise fill rows", |cx, iy| {
        let y = cx.b.ins().iadd_imm_s(iy, pad as i64);
        let (row, phase) = cx.divmod(y, s);
        let plane = cx.offset(scratch, phase, s * d.plane_len);
        let dst = cx.offset(plane, row, d.wq);
        let src = cx.offset(x, iy, w);
        for p in 0..s {
            // Padded columns `s*q + p` inside the input: `q0..=q1`, input column `s*q + p - pad`.
            let q0 = if pad > p { (pad - p).div_ceil(s) } else { 0 };
            if w + pad < p + 1 {
                continue;
            }
            let q1 = (w - 1 + pad - p) / s;
            if q1 < q0 {
                continue;
            }
            let from = s * q0 + p - pad;
            copy_run(cx, src, from, s, w, dst, p * d.plane_len + q0, q1 + 1 - q0, None);
        }
    });
}

/// The fused epilogue of channel `ch` from the flat run at `flat` to its output rows at `y`.
#[allow(clippy::too_many_arguments)]
fn epilogue(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    d: &DepthwisePlan,
    packed: Value,
    ch: Value,
    flat: Value,
    y: Value,
    res: Option<Value>,
) {
    let layout = &plan.layout;
    let epi = cx.offset(packed, ch, 1);
    // Per-channel scalars and their splats.
    let value = |cx: &mut KernelCx, at: Option<usize>| {
        at.map(|at| {
            let s = cx.load_s(epi, at);
            (s, cx.b.ins().splat(VEC, s))
        })
    };
    let (s1, b1, s2, b2) =
        (value(cx, layout.s1), value(cx, layout.b1), value(cx, layout.s2), value(cx, layout.b2));
    let relu = spec.op.relu != Relu::None;
    let pick = |v: Option<(Value, Value)>, vector: bool| v.map(|(s, v)| if vector { v } else { s });
    let ow = d.ow;
    cx.for_count(d.oh, "depthwise epilogue rows", |cx, oy| {
        let src = cx.offset(flat, oy, d.wq);
        let dst = cx.offset(y, oy, ow);
        let res = res.map(|r| cx.offset(r, oy, ow));
        cx.for_run(ow, |cx, ty, i| {
            let vector = ty != F32;
            let at = |cx: &mut KernelCx, base: Value| cx.offset(base, i, 1);
            let p = at(cx, src);
            let mut v = cx.load(ty, p, 0);
            v = cx.affine(v, pick(s1, vector), pick(b1, vector));
            if let Some(r) = res {
                let p = at(cx, r);
                let x = cx.load(ty, p, 0);
                v = cx.b.ins().fadd(v, x);
                v = cx.affine(v, pick(s2, vector), pick(b2, vector));
            }
            if relu {
                v = cx.relu(v);
            }
            if let Some(a) = spec.op.activation {
                v = crate::codegen::eltwise::activation(cx, ty, a, v);
            }
            let p = at(cx, dst);
            cx.store(v, p, 0);
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bands cover every output row once, in order; each band's fill writes exactly the padded
    /// rows its output rows read (`y0..y1`), the input rows among them at their padded position,
    /// and consecutive bands of a run are `band` output rows and `stride * band` input rows apart.
    #[test]
    fn bands_cover_the_output_and_read_their_padded_rows() {
        for (h, k, s) in [(112, 3, 1), (112, 3, 2), (97, 5, 1), (101, 5, 2), (7, 5, 1), (2, 3, 2), (1, 3, 1)]
        {
            let p = k / 2;
            let oh = (h + 2 * p - k) / s + 1;
            for band in [1, 2, 3, 7, 16, oh] {
                let mut next = 0;
                for run in bands(h, k, s, p, oh, band) {
                    for i in 0..run.count {
                        let (oy0, i0) = (run.oy0 + i * band, run.i0 + i * s * band);
                        assert_eq!(oy0, next, "h {h} k {k} s {s} band {band}");
                        assert!(run.rows <= band && oy0 + run.rows <= oh);
                        // Padded rows y0..y1 are the band's rows 0..padded; input row iy is padded row iy + p.
                        let (y0, y1) = (s * oy0, s * (oy0 + run.rows - 1) + k);
                        assert_eq!(run.padded, y1 - y0);
                        let inside: Vec<usize> = (y0..y1).filter(|&y| y >= p && y < h + p).collect();
                        assert_eq!(inside.first().map(|&y| y - p), Some(i0));
                        assert_eq!(inside.len(), run.h);
                        assert_eq!(i0 + p - y0, run.top);
                        next = oy0 + run.rows;
                    }
                }
                assert_eq!(next, oh, "h {h} k {k} s {s} band {band}");
            }
        }
    }

    /// A band's phase planes fit in [`BAND_BYTES`] (or it is one row), and it is as tall as that allows.
    #[test]
    fn bands_are_the_tallest_that_fit() {
        for (s, k, wq, oh) in
            [(1, 3, 114, 112), (2, 3, 57, 56), (1, 5, 71, 97), (2, 5, 40, 51), (1, 3, 4000, 9)]
        {
            let bytes = |rows: usize| s * s * (s * (rows - 1) + k).div_ceil(s) * wq * 4;
            let b = band_rows(s, k, wq, oh);
            assert!(b >= 1 && b <= oh);
            assert!(b == 1 || bytes(b) <= BAND_BYTES);
            assert!(b == oh || bytes(b + 1) > BAND_BYTES);
        }
    }
}
