//! The `chanvec` path: output channels in the vector lanes, output pixels in the tile rows, for
//! small planes (7x7, 14x14) whose pixels fill vectors badly while their channel counts (multiples
//! of 16) fill them whole. A 7x7 plane is 49 of 64 zmm lanes as columns of the other paths; here a
//! tile is `R` pixels x 32 channels and every lane holds an output.
//!
//! In the terms of the tile contract ([`crate::codegen::tile`]): A is the input (row `r` of the
//! tile is pixel `p0 + r`, whose window starts `sw` floats after pixel `p0 + r - 1`'s:
//! [`RowsA::Strided`]), B is the packed weight panel of 32 channels (the conv layout with
//! [`CHANVEC_PANEL`]-wide panels: `B[k][c]` at `panel + k * 32 + c`, `k = (ci * KH + kh) * KW + kw`),
//! and the K loop is a group per input channel with its `KH*KW` taps at constant offsets, exactly
//! as the row panels run it (1x1 kernels: four channels per group).
//!
//! A work item is (sample, panel of 32 output channels, block of output pixels). Per item:
//! 1. **Fill** (padded convolutions, once per sample and thread): the whole input, zero-padded, in
//!    the scratch, so every tap of every pixel is a constant offset and padding needs no branch.
//!    Unpadded convolutions read the input in place.
//! 2. **K blocks**: the input channels in blocks of `kc` whose slice of the panel (`kc*KH*KW x 32`
//!    floats, at most [`b_slice_bytes`]: 64 KiB on avx512, 8 KiB on avx2 so that it stays in L1)
//!    stays in cache while every pixel tile of the block runs over it (on avx2 every tile over one
//!    half of the panel's channels, then every tile over the other); each tile starts from the
//!    previous block's sums and leaves its raw sums, pixel-major, in the item's accumulator area
//!    (`pixel * 32 + channel`). Meanwhile the block's tiles hint the weights that follow its slice
//!    (the next block's, or the next panel's) into L2, each an equal share at the pace of its K
//!    loop ([`KLoop::prefetch_next`]), so the next block's first tile does not wait on memory:
//!    at batch 1, one thread, avx512, MobileNetV2 took 0.97x the time, EfficientNet-B0 0.97x,
//!    ResNet-50/101 0.99x; batch 8 0.99-1.0x.
//! 3. **Epilogue**: the accumulator area is transposed four pixels by four channels (eight
//!    shuffles) into channel-major vectors, the fused epilogue applied (bias, affine, residual,
//!    post-affine, ReLU, in the IR's order), and stored as runs of four pixels of each output
//!    channel. This is `O(pixels x channels)` work against `O(pixels x channels x K)` FMAs. Without
//!    a residual, the last K block's tiles apply the epilogue themselves in channel lanes on full
//!    vectors ([`in_tile_epilogue`]; an activation such as SiLU costs a few dozen instructions per
//!    vector, four times as many on the transpose's four-lane vectors), and the transpose only
//!    moves values.
//!
//! Sound for any stride, padding and dilation: each accumulator is the k-ascending sum of
//! `x[ci][oy*sh + kh*dh - ph][ox*sw + kw*dw - pw] * w[co][ci][kh][kw]`, the padded copy supplying
//! the zeros, and each output is written once by the item owning its (channel panel, pixel).

use super::plan::CHANVEC_PANEL;
use super::{ConvPlan, ConvSpec, Operands};
use crate::codegen::cx::{KernelCx, LANES, VEC};
use crate::codegen::isa::Isa;
use crate::codegen::rows::{copy_run, zero_run};
use crate::codegen::tile::{
    Axis, ChanVec, Epilogue, KLoop, Piece, RowsA, Tap, TileArgs, TileOut, TileSpec, Tiles,
};
use crate::ir::{Activation, Relu};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// Most bytes of a K block's slice of the weight panel (read once per pixel tile of the block).
///
/// avx512: 64 KiB (a tile reads the whole slice, 128 bytes per K index).
///
/// avx2: 8 KiB, 64 K indices of a 1x1 layer, the block's tiles running one half of the panel at a
/// time ([`ChanVecPlan::halves_outer`]). A tile reads half of each 128-byte row of the slice, one
/// line per K index, and one or two lines of input (a run of pixels of one channel plane) beside
/// it; at 64 KiB the block's tiles swept up to 512 of each per K block, twice L1 (32 KiB), so
/// every tap missed L1 twice. At 8 KiB the half-slice (4 KiB) and the block's input lines stay in
/// L1 while the block's tiles run over them, for the price of storing and reloading the
/// accumulators once per 64 K indices. Measured with `cargo bench --bench kernels -- --isa avx2
/// --chanvec @7` (one thread, Zen 3, AVX2, peak 102 GFLOP/s, medians of three interleaved runs,
/// GFLOP/s before -> after this and the tile split of [`split`]): batch 1, 320->1280 69 -> 91,
/// 960->320 85 -> 91, 960->160 80 -> 88, 576->160 81 -> 90, 1152->320 82 -> 90, 1152->192 76 ->
/// 89, 672->192 89 -> 91, 2048->512 75 -> 85, 512->2048 75 -> 89, 3x3 512->512 71 -> 83; batch 8,
/// 320->1280 62 -> 85, 960->320 70 -> 88, 960->160 68 -> 85, 576->160 78 -> 89, 1152->320 67 ->
/// 86, 1152->192 62 -> 86, 672->192 69 -> 88, 2048->512 61 -> 82, 512->2048 59 -> 84, 3x3
/// 512->512 70 -> 81. 16 KiB slices were 2-10% slower than 8 KiB at batch 8, 4 KiB 2-4% slower at
/// both batches; the halves' order alone is worth 0-3%.
///
/// sse: 64 KiB. Its Cranelift tile is bound by its own instructions, not by L1 misses: 8 KiB
/// slices, halves outside, were 1-3% slower on the same shapes (Zen 3).
fn b_slice_bytes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Sse => 64 * 1024,
        Isa::Avx2 => 8 * 1024,
    }
}
/// Work items per sample worth aiming for (two threads balance at batch 1).
const TARGET_ITEMS: usize = 16;
/// Most pixel tiles in a block (but flat blocks on avx2: [`max_block_tiles`]). A block's tiles
/// are unrolled in the kernel (each with its K loop and transposing epilogue), so this bounds the
/// code: a 56x56 plane in blocks of 14 tiles made 6-12k instructions per kernel and doubled
/// ResNet-50's JIT time, for no measured speed.
const MAX_BLOCK_TILES: usize = 4;

/// Most pixel tiles in a flat block (1x1, stride 1, unpadded: one run of pixels) on `isa`.
///
/// avx2: 10, so a 7x7 plane (10 tiles of 5 and 4 pixels) is one block where the work split allows
/// (16 or more panels of 32 channels per sample; half a plane at 8-15 panels, the split aiming at
/// 16 items per sample), and each K block's half-slice of the weights, in L1
/// ([`b_slice_bytes`]), serves every tile of the plane instead of four: `cargo bench --bench
/// kernels -- --isa avx2 --chanvec`, one thread, Zen 3, medians of three, GFLOP/s at 4 -> 10
/// tiles: batch 1 320->1280 at 7x7 90 -> 94, 960->320 93 -> 94, 1152->320 91 -> 93; batch 8 89
/// -> 91, 90 -> 91, 89 -> 90; 1024->256 at 14x14 unchanged (92 at batch 1, 83 at batch 8).
fn max_block_tiles(isa: Isa) -> usize {
    match isa {
        Isa::Avx2 => 10,
        Isa::Avx512 | Isa::Sse => MAX_BLOCK_TILES,
    }
}

/// A tile of output pixels inside a block: the first pixel (index into the block's pixels and
/// accumulator rows), how many, and its A offset from the block's first window (floats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelTile {
    pub at: usize,
    pub rows: usize,
    pub a: usize,
}

/// The `chanvec` geometry of a convolution kernel.
#[derive(Debug, Clone)]
pub struct ChanVecPlan {
    /// Whether the input is copied, zero-padded, into the scratch first (any padding).
    pub fill: bool,
    /// Columns per row and floats per channel of what the tiles read (the padded copy or the input).
    pub wp: usize,
    pub chan_len: usize,
    /// Output channels per tile (`nv * lanes`) and tiles per panel.
    pub nr: usize,
    pub halves: usize,
    /// Whether a K block runs its tiles one half of the panel at a time (every tile over the first
    /// half's slice, then over the second's; see [`b_slice_bytes`]) rather than both halves of one
    /// tile, then the next tile. The same sums in the same order: only the order of tiles changes.
    pub halves_outer: bool,
    /// Input channels per K block, and K blocks.
    pub kc: usize,
    pub kblocks: usize,
    /// Pixel blocks per sample, pixels of a full block and of the last one.
    pub blocks: usize,
    pub block: usize,
    pub last_block: usize,
    /// A offset between consecutive blocks (floats).
    pub block_a: usize,
    /// The pixel tiles of a full block and of the last one.
    pub tiles: Vec<PixelTile>,
    pub last_tiles: Vec<PixelTile>,
    /// Scratch: the padded input at 0, the accumulators at `acc_at`; `floats` in all.
    pub acc_at: usize,
    pub floats: usize,
}

/// Most tile rows (pixels) per ISA: the accumulators of `rows x 2` vectors, two B vectors and two
/// broadcasts fill the registers (avx512 28 + 4 of 32, avx2 12 + 4 of 16); sse runs 3 x 4 f32x4.
pub fn max_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 14,
        Isa::Avx2 => 6,
        Isa::Sse => 3,
    }
}

/// Output channels per tile row: the lanes of one row's vectors.
pub fn row_channels(isa: Isa) -> usize {
    vectors(isa) * isa.lanes()
}

/// Vectors per tile row (32 channels on avx512, 16 on avx2 and sse).
fn vectors(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Avx2 => 2,
        Isa::Sse => 4,
    }
}

/// `len` pixels in tiles of at most `max` rows, near-balanced (`ceil(len / tiles)` each, the last
/// shorter): `(start, rows)`.
fn split_even(len: usize, max: usize) -> Vec<(usize, usize)> {
    let tiles = len.div_ceil(max);
    let rows = len.div_ceil(tiles);
    (0..len).step_by(rows).map(|s| (s, rows.min(len - s))).collect()
}

/// Fewest tile rows that keep the FMA units busy: a tile of `rows x 2` vectors runs `2 * rows`
/// independent accumulator chains, and two FMA pipes of 4 cycles' latency (Zen 3, Zen 4) need 8
/// in flight, so a shorter tile takes as long as a 4-row one.
const MIN_BUSY_ROWS: usize = 4;
/// A tile's fixed cost in rows' worth of FMA time (its B loads per tap, the call, its epilogue).
const TILE_OVERHEAD_ROWS: f64 = 0.5;

/// `len` pixels in tiles of at most `max` rows: of the near-balanced splits with at most `max`,
/// `max - 1`, ... rows per tile, the one with the least estimated time (each tile costs
/// `max(rows, MIN_BUSY_ROWS) + TILE_OVERHEAD_ROWS`; ties go to taller tiles). A 7x7 plane on avx2
/// (6-row tiles) is then 9 x 5 + 4 pixels instead of 8 x 6 + 1, whose one-row tile ran at a
/// quarter of the FMA rate (two accumulator chains); planes that split well keep `max`.
///
/// avx2 only: avx512 and sse keep [`split_even`]. (avx512's 14-row tiles leave a one-row tile only
/// at planes the models we measure do not have, 15x15 or 18x18 for instance; unmeasured there.)
fn split(isa: Isa, len: usize, max: usize) -> Vec<(usize, usize)> {
    if isa != Isa::Avx2 {
        return split_even(len, max);
    }
    let cost = |tiles: &[(usize, usize)]| -> f64 {
        tiles.iter().map(|&(_, r)| r.max(MIN_BUSY_ROWS) as f64 + TILE_OVERHEAD_ROWS).sum()
    };
    let mut best = split_even(len, max);
    for m in (MIN_BUSY_ROWS.min(max)..max).rev() {
        let tiles = split_even(len, m);
        if cost(&tiles) < cost(&best) {
            best = tiles;
        }
    }
    best
}

/// The geometry and work split of a `chanvec` kernel.
pub(super) fn plan(plan: &mut ConvPlan, spec: &ConvSpec) {
    let c = &spec.op.conv;
    let [cin, h, w] = spec.input;
    let [_, oh, ow] = plan.out;
    let isa = plan.isa;
    let (nv, lanes) = (vectors(isa), isa.lanes());
    let nr = nv * lanes;
    let fill = c.padding != [0, 0];
    let (hp, wp) = if fill { (h + 2 * c.padding[0], w + 2 * c.padding[1]) } else { (h, w) };
    let chan_len = hp * wp;
    // One flat run of pixels when pixel `p` reads input float `p` (1x1, stride 1, unpadded).
    let flat = c.kernel == [1, 1] && c.stride == [1, 1] && !fill;
    let ppg = plan.layout.ppg;
    let max = max_rows(isa);
    let (blocks, block, last_block, block_a, tiles, last_tiles) = if flat {
        // Pixel `p` reads input float `p`: balanced tiles over the whole plane, `per` of them a
        // block (the epilogue handles a partial quad, so tiles need not be multiples of 4).
        let all = split(isa, oh * ow, max);
        let per =
            all.len().div_ceil(TARGET_ITEMS.div_ceil(ppg).clamp(1, all.len())).min(max_block_tiles(isa));
        let blocks = all.len().div_ceil(per);
        let block = all[per - 1].0 + all[per - 1].1;
        let base = (blocks - 1) * block;
        let tiles = |from: &[(usize, usize)], base: usize| -> Vec<PixelTile> {
            from.iter().map(|&(s, rows)| PixelTile { at: s - base, rows, a: s - base }).collect()
        };
        (blocks, block, oh * ow - base, block, tiles(&all[..per], 0), tiles(&all[(blocks - 1) * per..], base))
    } else {
        let row_tiles = split(isa, ow, max);
        let most_rows = (MAX_BLOCK_TILES / row_tiles.len()).max(1);
        let blocks = TARGET_ITEMS.div_ceil(ppg).max(oh.div_ceil(most_rows)).clamp(1, oh);
        let rows = oh.div_ceil(blocks);
        let blocks = oh.div_ceil(rows);
        let block_tiles = |n: usize| -> Vec<PixelTile> {
            (0..n)
                .flat_map(|t| {
                    row_tiles.iter().map(move |&(x0, r)| PixelTile {
                        at: t * ow + x0,
                        rows: r,
                        a: t * c.stride[0] * wp + x0 * c.stride[1],
                    })
                })
                .collect()
        };
        let last_rows = oh - (blocks - 1) * rows;
        (
            blocks,
            rows * ow,
            last_rows * ow,
            rows * c.stride[0] * wp,
            block_tiles(rows),
            block_tiles(last_rows),
        )
    };
    let taps = c.kernel[0] * c.kernel[1];
    let kc_max = (b_slice_bytes(isa) / (taps * CHANVEC_PANEL * 4)).max(1);
    let kblocks = cin.div_ceil(kc_max);
    let kc = cin.div_ceil(kblocks);
    let kblocks = cin.div_ceil(kc);
    // A row's copy also zeroes the next row's left padding: `pw` floats of slack at the end.
    let fill_len = if fill { cin * chan_len + c.padding[1] } else { 0 };
    let acc_at = fill_len.div_ceil(16) * 16;
    plan.mt = max;
    plan.nv = nv;
    plan.tpg = ppg;
    plan.chunks = ppg;
    plan.tiles_per_chunk = 1;
    plan.blocks = blocks;
    plan.block = block;
    plan.kc = kc;
    plan.kblocks = kblocks;
    plan.chanvec = Some(ChanVecPlan {
        fill,
        wp,
        chan_len,
        nr,
        halves: CHANVEC_PANEL / nr,
        halves_outer: isa == Isa::Avx2,
        kc,
        kblocks,
        blocks,
        block,
        last_block,
        block_a,
        tiles,
        last_tiles,
        acc_at,
        // A partial quad reads up to 3 rows past its pixels.
        floats: acc_at + (block + LANES - 1) * CHANVEC_PANEL,
    });
}

/// One item: (sample, panel of output channels, block of pixels). `filled` holds the sample whose
/// padded input this call last copied into the scratch (-1 for none).
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
    let v = plan.chanvec.as_ref().expect("a chanvec plan");
    // Panel-major: consecutive items share their weight panel.
    let (panel, pb) = cx.divmod(r, v.blocks);
    let src = if v.fill {
        let last = cx.b.use_var(filled);
        let stale = cx.b.ins().icmp(IntCC::NotEqual, n, last);
        cx.if_then(stale, |cx| {
            fill(cx, spec, v, ops, n);
            cx.b.def_var(filled, n);
        });
        cx.scratch
    } else {
        cx.offset(ops.input, n, spec.in_stride)
    };
    let block_src = cx.offset(src, pb, v.block_a);
    let panel_b = cx.offset(ops.packed, panel, plan.layout.panel_stride());
    let acc = cx.add_floats(cx.scratch, v.acc_at);
    let panel_epi = cx.offset(ops.packed, panel, CHANVEC_PANEL);
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, pb, (v.blocks - 1) as i64);
    let body = |cx: &mut KernelCx, tiles: &mut Tiles, pixel_tiles: &[PixelTile], pixels: usize| {
        if v.kblocks == 1 {
            // Each tile's sums are final at once: its epilogue runs while they are in L1.
            for t in pixel_tiles {
                k_blocks(
                    cx,
                    tiles,
                    spec,
                    plan,
                    v,
                    block_src,
                    panel_b,
                    panel_epi,
                    acc,
                    std::slice::from_ref(t),
                );
                epilogue(cx, spec, plan, ops, n, panel, pb, t.at, t.rows);
            }
        } else {
            k_blocks(cx, tiles, spec, plan, v, block_src, panel_b, panel_epi, acc, pixel_tiles);
            epilogue(cx, spec, plan, ops, n, panel, pb, 0, pixels);
        }
    };
    if v.blocks == 1 || (v.tiles == v.last_tiles && v.block == v.last_block) {
        body(cx, tiles, &v.tiles, v.block);
    } else {
        cx.if_else_with(
            tiles,
            is_last,
            |cx, tiles| body(cx, tiles, &v.last_tiles, v.last_block),
            |cx, tiles| body(cx, tiles, &v.tiles, v.block),
        );
    }
}

/// Copies sample `n`'s input, zero-padded, to the scratch: channel `ci` at `ci * chan_len`, padded
/// row `y` at `y * wp`.
fn fill(cx: &mut KernelCx, spec: &ConvSpec, v: &ChanVecPlan, ops: Operands, n: Value) {
    let c = &spec.op.conv;
    let [cin, h, w] = spec.input;
    let [ph, pw] = c.padding;
    let wp = v.wp;
    let x = cx.offset(ops.input, n, spec.in_stride);
    cx.for_count(cin, "chanvec fill: channels", |cx, ci| {
        let src = cx.offset(x, ci, h * w);
        let dst = cx.offset(cx.scratch, ci, v.chan_len);
        zero_run(cx, dst, 0, ph * wp + pw);
        cx.for_count(h, "chanvec fill: rows", |cx, y| {
            let s = cx.offset(src, y, w);
            let d = cx.offset(dst, y, wp);
            let d = cx.add_floats(d, (ph * wp) + pw);
            copy_run(cx, s, 0, 1, w, d, 0, w, None);
            // The right padding of this row and the left padding of the next.
            zero_run(cx, d, w, 2 * pw);
        });
        // The bottom rows (the first `pw` floats were zeroed with the last row).
        if ph > 0 {
            zero_run(cx, dst, (ph + h) * wp + pw, ph * wp - pw);
        }
    });
}

/// Every K block of every pixel tile of a block, raw sums into the accumulator area.
#[allow(clippy::too_many_arguments)]
fn k_blocks(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    spec: &ConvSpec,
    plan: &ConvPlan,
    v: &ChanVecPlan,
    block_src: Value,
    panel_b: Value,
    panel_epi: Value,
    acc: Value,
    pixel_tiles: &[PixelTile],
) {
    let c = &spec.op.conv;
    let in_tile = in_tile_epilogue(spec, plan);
    let cin = spec.input[0];
    let [kh_n, kw_n] = c.kernel;
    let (dh, dw) = (c.dilation[0], c.dilation[1]);
    let taps = kh_n * kw_n;
    let kloop = |channels: usize| {
        if kh_n * kw_n == 1 {
            KLoop::strided(channels, v.chan_len, CHANVEC_PANEL, 4)
        } else {
            let tap_list = (0..kh_n)
                .flat_map(|kh| {
                    (0..kw_n).map(move |kw| Tap {
                        a: kh * dh * v.wp + kw * dw,
                        b: (kh * kw_n + kw) * CHANVEC_PANEL,
                    })
                })
                .collect();
            KLoop {
                groups: channels,
                taps: tap_list,
                a_step: v.chan_len,
                b_step: taps * CHANVEC_PANEL,
                tail: Vec::new(),
                prefetch_a: 0,
                prefetch_b: 0,
                prefetch_next: 0,
            }
        }
    };
    let rows_a = RowsA::Strided(c.stride[1]);
    let kc_last = cin - (v.kblocks - 1) * v.kc;
    // While a K block runs, its tiles hint the weights that follow its slice (the next K block's,
    // or after the last one the next panel's) into L2, each tile an equal share, at the pace of
    // its K loop ([`KLoop::prefetch_next`]): the first tile of the next block then reads them from
    // L2 instead of memory.
    let hint_slots = pixel_tiles.len() * v.halves;
    let run = |cx: &mut KernelCx, tiles: &mut Tiles, kb: Value, channels: usize, first: bool, last: bool| {
        let mut kloop = kloop(channels);
        let slice_bytes = v.kc * taps * CHANVEC_PANEL * 4;
        let per_group = slice_bytes.div_ceil(hint_slots * kloop.groups.max(1)).next_multiple_of(64);
        if kloop.groups > 0 {
            kloop.prefetch_next = per_group;
        }
        let share = per_group * kloop.groups;
        let a0 = cx.offset(block_src, kb, v.kc * v.chan_len);
        let b0 = cx.offset(panel_b, kb, v.kc * taps * CHANVEC_PANEL);
        let channels_b = channels * taps * CHANVEC_PANEL * 4;
        let order: Vec<(usize, usize)> = if v.halves_outer {
            (0..v.halves).flat_map(|h| (0..pixel_tiles.len()).map(move |t| (t, h))).collect()
        } else {
            (0..pixel_tiles.len()).flat_map(|t| (0..v.halves).map(move |h| (t, h))).collect()
        };
        for (ti, half) in order {
            let t = &pixel_tiles[ti];
            let slot = ti * v.halves + half;
            let ahead = (kloop.prefetch_next > 0).then(|| cx.add_floats(b0, (channels_b + slot * share) / 4));
            let out_spec = match (&in_tile, last) {
                (Some(epilogue), true) => TileOut::Final {
                    row: CHANVEC_PANEL,
                    pieces: (0..plan.nv).map(|j| vec![Piece::leading(j, plan.lanes, plan.lanes)]).collect(),
                    epilogue: Epilogue {
                        relu_rows: vec![spec.op.relu == Relu::All; t.rows],
                        ..epilogue.clone()
                    },
                    // The accumulator area is read back at once by the transpose.
                    stream: false,
                },
                _ => TileOut::Partial { row: CHANVEC_PANEL },
            };
            let tile_spec = TileSpec {
                isa: plan.isa,
                rows: t.rows,
                rows_a,
                nv: plan.nv,
                kloop: kloop.clone(),
                init: (!first).then_some(CHANVEC_PANEL),
                out: out_spec,
            };
            let a = cx.add_floats(a0, t.a);
            let b = cx.add_floats(b0, half * v.nr);
            let out = cx.add_floats(acc, t.at * CHANVEC_PANEL + half * v.nr);
            let init = (!first).then_some(out);
            let epi = (in_tile.is_some() && last).then(|| cx.add_floats(panel_epi, half * v.nr));
            tiles.emit(cx, &tile_spec, TileArgs { a, b, out, epi, res: None, init, ahead });
        }
    };
    let zero = cx.ic(0);
    if v.kblocks == 1 {
        run(cx, tiles, zero, kc_last, true, true);
        return;
    }
    run(cx, tiles, zero, v.kc, true, false);
    let (one, mid_end) = (cx.ic(1), cx.ic((v.kblocks - 1) as i64));
    cx.for_range(one, mid_end, 1, "chanvec K blocks", |cx, kb| run(cx, tiles, kb, v.kc, false, false));
    run(cx, tiles, mid_end, kc_last, false, true);
}

/// The epilogue the last K block's tiles apply themselves, in channel lanes, when the op has no
/// residual and its ReLU covers every channel or none (the other steps are per channel, which in
/// these tiles is per lane: whole vectors of the packed epilogue constants, [`Axis::Col`]). The
/// transposing epilogue then only moves the finished values to the output planes. Sound: the
/// steps and their order are the op's (`acc * s1 + b1`, `* s2 + b2`, ReLU, activation, with no
/// residual between them), applied to the final sums, and the constants' arrays are padded to
/// whole panels so a panel's last vectors read inside the packed buffer. `None` keeps the whole
/// epilogue in the transpose (a residual is stored pixel-major, the IR's `Relu::First` is a
/// per-channel choice).
fn in_tile_epilogue(spec: &ConvSpec, plan: &ConvPlan) -> Option<Epilogue> {
    if spec.op.residual || matches!(spec.op.relu, Relu::First(_)) {
        return None;
    }
    let col = |at: Option<usize>| at.map(|at| ChanVec { at, axis: Axis::Col });
    let layout = &plan.layout;
    Some(Epilogue {
        s1: col(layout.s1),
        b1: col(layout.b1),
        s2: col(layout.s2),
        b2: col(layout.b2),
        residual: None,
        relu_rows: Vec::new(),
        activation: plan.activation,
    })
}

/// The fused epilogue of `pixels` outputs of the panel's channels from pixel `first` of the block,
/// from the accumulator area (pixel-major) to the output (channel planes): four pixels x four
/// channels at a time (a last partial quad reads accumulator rows past `pixels`, inside the area,
/// and stores only its own lanes).
#[allow(clippy::too_many_arguments)]
fn epilogue(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    ops: Operands,
    n: Value,
    panel: Value,
    pb: Value,
    first: usize,
    pixels: usize,
) {
    let v = plan.chanvec.as_ref().expect("a chanvec plan");
    let [cout, oh, ow] = plan.out;
    let plane = oh * ow;
    let acc = cx.add_floats(cx.scratch, v.acc_at + first * CHANVEC_PANEL);
    let co0 = cx.b.ins().imul_imm_s(panel, CHANVEC_PANEL as i64);
    // Groups of four channels of this panel that exist (`Cout` is a multiple of 4).
    let total = cx.ic(cout as i64);
    let left = cx.b.ins().isub(total, co0);
    let groups = cx.b.ins().ushr_imm_u(left, 2);
    let full = cx.ic((CHANVEC_PANEL / 4) as i64);
    let groups = cx.imin(groups, full);
    let pix0 = cx.b.ins().imul_imm_s(pb, v.block as i64);
    let pix0 = cx.b.ins().iadd_imm_s(pix0, first as i64);
    let y0 = cx.offset(cx.output, n, spec.out_stride);
    let y0 = cx.offset(y0, pix0, 1);
    let r0 = ops.residual.map(|res| {
        let r = cx.offset(res, n, spec.res_stride);
        cx.offset(r, pix0, 1)
    });
    let zero = cx.ic(0);
    // What the tiles applied already is not applied again.
    let in_tile = in_tile_epilogue(spec, plan).is_some();
    let relu = if in_tile { Relu::None } else { spec.op.relu };
    let l = &plan.layout;
    let [s1, b1, s2, b2] = if in_tile { [None; 4] } else { [l.s1, l.b1, l.s2, l.b2] };
    let activation = if in_tile { None } else { spec.op.activation };
    cx.for_range(zero, groups, 1, "chanvec epilogue: channel quads", |cx, q| {
        let c4 = cx.b.ins().imul_imm_s(q, 4);
        let co = cx.b.ins().iadd(co0, c4);
        let epi = cx.offset(ops.packed, co, 1);
        // Per channel j of the quad: its epilogue constants, splatted, and its ReLU flag.
        let chans: Vec<Chan> = (0..4)
            .map(|j| {
                let splat = |cx: &mut KernelCx, at: Option<usize>| at.map(|at| cx.load_splat(epi, at + j));
                let relu = match relu {
                    Relu::None => ReluFlag::Never,
                    Relu::All => ReluFlag::Always,
                    Relu::First(limit) => {
                        let ch = cx.b.ins().iadd_imm_s(co, j as i64);
                        ReluFlag::If(cx.b.ins().icmp_imm_s(IntCC::SignedLessThan, ch, limit as i64))
                    }
                };
                let ch = cx.b.ins().iadd_imm_s(co, j as i64);
                let y = cx.offset(y0, ch, plane);
                let res = r0.map(|r| cx.offset(r, ch, plane));
                Chan {
                    s1: splat(cx, s1),
                    b1: splat(cx, b1),
                    s2: splat(cx, s2),
                    b2: splat(cx, b2),
                    relu,
                    activation,
                    y,
                    res,
                }
            })
            .collect();
        let acc_q = cx.offset(acc, q, 4);
        let quad = |cx: &mut KernelCx, p: Value, stored: usize| {
            let a = cx.offset(acc_q, p, CHANVEC_PANEL);
            let rows = [0, 1, 2, 3].map(|t| cx.load_v(a, t * CHANVEC_PANEL));
            let cols = cx.transpose4(rows);
            for (j, ch) in chans.iter().enumerate() {
                let y = cx.offset(ch.y, p, 1);
                let res = ch.res.map(|r| cx.offset(r, p, 1));
                let out = ch.apply(cx, cols[j], res, stored);
                cx.store_lanes(out, y, 0, stored);
            }
        };
        let quads = pixels / LANES;
        if quads > 0 {
            let (lo, hi) = (cx.ic(0), cx.ic((quads * LANES) as i64));
            cx.for_range(lo, hi, LANES as i64, "chanvec epilogue: pixel quads", |cx, p| quad(cx, p, LANES));
        }
        if pixels % LANES > 0 {
            let p = cx.ic((quads * LANES) as i64);
            quad(cx, p, pixels % LANES);
        }
    });
}

enum ReluFlag {
    Never,
    Always,
    If(Value),
}

/// One output channel's epilogue: constants (splatted), ReLU, and its output/residual rows.
struct Chan {
    s1: Option<Value>,
    b1: Option<Value>,
    s2: Option<Value>,
    b2: Option<Value>,
    relu: ReluFlag,
    /// The fused activation, applied last (the elementwise kernel's code).
    activation: Option<Activation>,
    y: Value,
    res: Option<Value>,
}

impl Chan {
    /// `acc * s1 + b1`, `+ residual`, `* s2 + b2`, ReLU, the activation, for the first `lanes`
    /// pixels of `res`.
    fn apply(&self, cx: &mut KernelCx, acc: Value, res: Option<Value>, lanes: usize) -> Value {
        let mut y = match (self.s1, self.b1) {
            (Some(s), Some(b)) => cx.fma(acc, s, b),
            (Some(s), None) => cx.b.ins().fmul(acc, s),
            (None, Some(b)) => cx.b.ins().fadd(acc, b),
            (None, None) => acc,
        };
        if let Some(r) = res {
            let rv = if lanes == LANES {
                cx.load_v(r, 0)
            } else {
                let mut rv = cx.fconst(VEC, 0.0);
                for l in 0..lanes {
                    let s = cx.load(F32, r, l);
                    rv = cx.b.ins().insertlane(rv, s, l as u8);
                }
                rv
            };
            y = cx.b.ins().fadd(y, rv);
        }
        y = match (self.s2, self.b2) {
            (Some(s), Some(b)) => cx.fma(y, s, b),
            (Some(s), None) => cx.b.ins().fmul(y, s),
            (None, Some(b)) => cx.b.ins().fadd(y, b),
            (None, None) => y,
        };
        y = match self.relu {
            ReluFlag::Never => y,
            ReluFlag::Always => cx.relu(y),
            ReluFlag::If(cond) => {
                let r = cx.relu(y);
                cx.b.ins().select(cond, r, y)
            }
        };
        match self.activation {
            Some(act) => crate::codegen::eltwise::activation(cx, VEC, act, y),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(tiles: &[(usize, usize)]) -> Vec<usize> {
        tiles.iter().map(|&(_, r)| r).collect()
    }

    /// The split covers the run exactly, in order, with at most `max` rows per tile.
    fn covers(tiles: &[(usize, usize)], len: usize, max: usize) {
        let mut next = 0;
        for &(s, r) in tiles {
            assert_eq!(s, next);
            assert!(r >= 1 && r <= max, "{tiles:?}");
            next += r;
        }
        assert_eq!(next, len);
    }

    #[test]
    fn seven_by_seven_planes_on_avx2_have_no_one_row_tile() {
        let tiles = split(Isa::Avx2, 49, max_rows(Isa::Avx2));
        covers(&tiles, 49, 6);
        assert_eq!(rows(&tiles), [5, 5, 5, 5, 5, 5, 5, 5, 5, 4]);
    }

    #[test]
    fn planes_that_split_well_keep_the_tallest_tiles() {
        // 14x14 on avx2: 32 x 6 + 4; avx512 and sse split every plane as before (7x7 on avx512:
        // 13, 13, 13, 10).
        for (len, isa) in
            [(196, Isa::Avx2), (49, Isa::Avx512), (196, Isa::Avx512), (7, Isa::Avx2), (14, Isa::Avx2)]
        {
            let max = max_rows(isa);
            let tiles = split(isa, len, max);
            covers(&tiles, len, max);
            assert_eq!(tiles, split_even(len, max), "{len} on {isa}");
        }
        for len in 1..300 {
            for isa in Isa::ALL {
                covers(&split(isa, len, max_rows(isa)), len, max_rows(isa));
                if isa != Isa::Avx2 {
                    assert_eq!(split(isa, len, max_rows(isa)), split_even(len, max_rows(isa)));
                }
            }
        }
    }
}
