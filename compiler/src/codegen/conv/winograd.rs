//! The `winograd` path: 3x3 stride-1 convolutions by Winograd's minimal filtering F(m x m, 3x3)
//! (the math: [`crate::ir::winograd`]; the choice of `m`: the `winograd` pass).
//!
//! The output is cut into `m x m` tiles, `TH x TW` of them. A work item is (sample, block of `RB`
//! tile rows, chunk of output channels); the items of one block share its transformed input:
//!
//! 1. **Fill** (once per block and thread, as the row panels do): the padded input rows the block
//!    reads, split into `m x m` phase planes (row phase `r % m`, column phase `c % m`), so element
//!    `(i, j)` of every tile of a tile row is one contiguous run (see [`ConvPlan::row_at`]). The
//!    tiles of the block are one *flat* axis `q = tile_row * (TW + 1) + tile_col` (the extra column
//!    per row is padding that no output keeps): element `(i, j)` of tile `q` is at the constant
//!    offset `row_at(i, j % m) + j / m` plus `q`, so a vector load reads it for `lanes` tiles.
//! 2. **Input transform** (same): `V = B^T d B` for every channel and vector of tiles, into
//!    `V[point][channel][c]`, the tiles compacted (`c = tile_row * TW + tile_col`: the padding
//!    columns' lanes are dropped when storing), `T` floats per row (the block's tiles rounded up to
//!    whole vectors).
//! 3. **GEMMs**: for each of the `a^2` points, `M[point][co][q] = sum_ci U[point][co][ci] *
//!    V[point][ci][q]` on the register tiles (A: the point's packed weight panels, B: `V[point]`,
//!    raw accumulators stored to `M`).
//! 4. **Output transform** per output channel and vector of tiles: `Y = A^T M A`, each output row's
//!    vectors interleaved so the tiles' pixels sit side by side, the fused epilogue (bias, affine,
//!    residual, post-affine, ReLU), and the store as contiguous pieces of output rows (tiles past
//!    the plane's edge store only their inside pixels; padding columns nothing).
//!
//! Scratch per thread: the fill, `V` (`a^2 x Cin x T`), `M` (`a^2 x chunk x T`) and a temporary
//! area for the transforms. Blocks are sized so `V` stays within
//! [`BLOCK_BYTES`](crate::ir::winograd::BLOCK_BYTES) (see [`crate::ir::winograd::block`]).

use super::plan::{ConvPath, PANEL_ROWS};
use super::{for_row_tiles, rowpanel, ConvPlan, ConvSpec, Operands};
use crate::codegen::cx::KernelCx;
use crate::codegen::tile::{
    Axis, ChanVec, Epilogue, InputTransformSpec, KLoop, OutputTransformSpec, Piece, RowsA, TileArgs, TileOut,
    TileSpec, Tiles,
};
use crate::ir::{ConvKind, WinogradTile};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// How far ahead of the K loop the GEMMs prefetch their weights, per panel (see
/// [`KLoop::prefetch_a`]). The transformed weights are `a^2 / 9` times the layer's and, on small
/// planes, each is read for one or a few vectors of tiles: at batch 1 a 14x14 layer streams them
/// from L3 or memory at one weight per FMA, and the hardware prefetchers, which stop at every 4 KiB
/// page, leave the FMAs waiting. 1 KiB ahead (about 20 K steps of a 24-row tile) measured 10-15%
/// faster on a 256-channel 14x14 layer and 5-10% on a 512-channel 7x7 one at batch 1 and one
/// thread, 6% at batch 8; 2-4 KiB gained less.
const WEIGHT_PREFETCH_BYTES: usize = 1024;

// Beyond that short hint, each GEMM tile hints the weight panels the chunk reads next into L2 while
// it runs ([`KLoop::prefetch_next`]: the panels after its own at the same point, or the chunk's
// first ones at the next point), so a tile's worth of weights is always in flight. On ResNet-34
// at batch 1 (avx512, one thread, 5 interleaved rounds) that took 38.8-40.4 ms to 36.4-37.8 ms
// (0.93-0.94x), ResNet-34 at batch 8 0.96x and ResNet-50 at batch 1 0.99x; hinting into L1 instead
// (`prefetcht0`) gained almost nothing, and covering the next tile in half the K loop was slower.
// With `NETC_ISA=avx2` (6-row tiles, two to a panel: both hint the next panel) ResNet-34 took
// 0.91x at batch 1 and 0.95x at batch 8.

/// The Winograd geometry of a convolution kernel.
#[derive(Debug, Clone)]
pub struct WinogradPlan {
    pub tile: WinogradTile,
    /// Tiles per output column and row.
    pub th: usize,
    pub tw: usize,
    /// Floats per row of `V` and `M`: the full block's tile columns in whole vectors.
    pub t_pad: usize,
    /// Rows of `M`: the output channels of a chunk, whole register tiles.
    pub co_rows: usize,
    /// Scratch layout, in floats: the fill at 0, then `V`, `M`, the transforms' temporary area.
    pub v_at: usize,
    pub m_at: usize,
    pub tmp_at: usize,
    pub floats: usize,
}

impl WinogradPlan {
    /// Columns of the flat tile axis for a block of `rows` tile rows.
    pub fn cols(&self, rows: usize, sw_len: usize) -> usize {
        (rows - 1) * sw_len + self.tw
    }
}

/// The geometry, fill and work split of a Winograd kernel (the scratch layout waits for the chunk
/// size: [`finish`]).
pub(super) fn plan(plan: &mut ConvPlan, spec: &ConvSpec, tile: WinogradTile) {
    let [_, oh, ow] = plan.out;
    let (m, a, lanes) = (tile.m(), tile.alpha(), plan.lanes);
    let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
    let sw_len = tw + (a - 1) / m;
    let cin = plan.layout.cin_g;
    let (rb, t) = crate::ir::winograd::block(tile, cin, th, tw, lanes);
    // The GEMM tile: wide, or narrow when a block is one vector.
    let (mt, nv) = super::default_tile(plan.isa, ConvPath::RowPanel, t);
    plan.mt = mt;
    plan.nv = nv;
    plan.tpg = plan.layout.cout_g.div_ceil(mt);
    plan.block = rb;
    plan.blocks = th.div_ceil(rb);
    // The fill: the input rows of `rb` tile rows as a flat panel of an `a x a`, stride-`m`
    // window, every row and column phase kept.
    plan.flat = true;
    plan.phase_slot = (0..m).map(Some).collect();
    plan.slots = m;
    plan.row_phase_slot = (0..m).map(Some).collect();
    plan.sw_len = sw_len;
    plan.rows = (rb - 1) * m + a;
    plan.plane_len = plan.rows.div_ceil(m) * sw_len;
    plan.chan_len = m * m * plan.plane_len + lanes;
    plan.winograd =
        Some(WinogradPlan { tile, th, tw, t_pad: t, co_rows: 0, v_at: 0, m_at: 0, tmp_at: 0, floats: 0 });
    let _ = spec;
}

/// The scratch layout, once the chunk size is known.
pub(super) fn finish(plan: &mut ConvPlan) {
    let cin = plan.layout.cin_g;
    let fill = cin * plan.chan_len;
    let co_rows = plan.tiles_per_chunk * plan.mt;
    let lanes = plan.lanes;
    if let Some(w) = plan.winograd.as_mut() {
        let points = w.tile.alpha() * w.tile.alpha();
        w.co_rows = co_rows;
        w.v_at = fill;
        w.m_at = w.v_at + points * cin * w.t_pad;
        w.tmp_at = w.m_at + points * co_rows * w.t_pad;
        w.floats = w.tmp_at + 2 * points * lanes;
    }
}

/// The fill's view of the convolution: an `a x a` window with stride `m` over the same input and
/// padding.
fn fill_spec(spec: &ConvSpec, tile: WinogradTile) -> ConvSpec {
    let mut s = spec.clone();
    s.op.conv.kernel = [tile.alpha(); 2];
    s.op.conv.stride = [tile.m(); 2];
    s.op.kind = ConvKind::Direct;
    s
}

/// One item: (sample, block of tile rows, chunk of output channels). `filled` holds the last
/// (sample, block) whose transformed input this call computed (-1 for none).
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
    let w = plan.winograd.as_ref().expect("a Winograd plan");
    let (m, a) = (w.tile.m(), w.tile.alpha());
    let points = a * a;
    let lanes = plan.lanes;
    let cin = plan.layout.cin_g;
    let [_, oh, ow] = plan.out;
    let vectors = w.t_pad / lanes;
    let (rb, chunk) = cx.divmod(r, plan.chunks);
    // Steps 1 and 2, once per (sample, block) in this call.
    let this = cx.b.ins().imul_imm_s(n, plan.blocks as i64);
    let this = cx.b.ins().iadd(this, rb);
    let last = cx.b.use_var(filled);
    let stale = cx.b.ins().icmp(IntCC::NotEqual, this, last);
    let tmp = cx.add_floats(cx.scratch, w.tmp_at);
    let v_base = cx.add_floats(cx.scratch, w.v_at);
    cx.if_else_with(
        tiles,
        stale,
        |cx, tiles| {
            let g = cx.ic(0);
            let row0 = cx.b.ins().imul_imm_s(rb, plan.block as i64);
            rowpanel::fill_rows(cx, &fill_spec(spec, w.tile), plan, ops, n, g, row0);
            let offsets: Vec<usize> = (0..a * a)
                .map(|e| {
                    let (i, j) = (e / a, e % a);
                    plan.row_at(i, j % m).expect("every phase is kept") + j / m
                })
                .collect();
            // Vectors over the flat axis (tile rows `sw_len` apart, padding columns between); their
            // tiles' lanes are stored compacted, tile `ty * tw + tx` at column `ty * tw + tx`.
            let flat_cols = w.cols(plan.block, plan.sw_len);
            let mut next = 0;
            for v in 0..flat_cols.div_ceil(lanes) {
                let kept: Vec<u8> = (0..lanes)
                    .filter(|&l| {
                        let q = v * lanes + l;
                        q < flat_cols && q % plan.sw_len < w.tw
                    })
                    .map(|l| l as u8)
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                let input = InputTransformSpec {
                    isa: plan.isa,
                    tile: w.tile,
                    offsets: offsets.clone(),
                    channels: cin,
                    src_stride: plan.chan_len,
                    dst_stride: w.t_pad,
                    point_stride: cin * w.t_pad,
                    lanes: kept.clone(),
                };
                let src = cx.add_floats(cx.scratch, v * lanes);
                let dst = cx.add_floats(v_base, next);
                tiles.input_transform(cx, &input, [src, dst, tmp]);
                next += kept.len();
            }
            cx.b.def_var(filled, this);
        },
        |_, _| {},
    );
    // Step 3: the GEMMs of every point, into M.
    let m_base = cx.add_floats(cx.scratch, w.m_at);
    let chunk_row0 = cx.b.ins().imul_imm_s(chunk, (plan.tiles_per_chunk * plan.mt) as i64);
    let g = cx.ic(0);
    let layout = &plan.layout;
    let mut kloop = KLoop::strided(cin, PANEL_ROWS, w.t_pad, 4);
    kloop.prefetch_a = WEIGHT_PREFETCH_BYTES;
    // Each tile hints the weight panels that the chunk reads next while it runs: the panels after
    // its own at this point, or the chunk's first ones at the next point. A tile of `mt < 12` rows
    // shares its panel with the chunk's other tiles of that panel, which hint the same next panel.
    let panels_per_tile = (plan.mt / PANEL_ROWS).max(1);
    let tiles_per_panel = (PANEL_ROWS / plan.mt).max(1);
    kloop.prefetch_next = (panels_per_tile * kloop.a_step * 4).next_multiple_of(64);
    let panel_of = |cx: &mut KernelCx, tile: Value| {
        if tiles_per_panel > 1 {
            cx.b.ins().udiv_imm_s(tile, tiles_per_panel as i64)
        } else {
            cx.b.ins().imul_imm_s(tile, panels_per_tile as i64)
        }
    };
    let chunk_tile0 = cx.b.ins().imul_imm_s(chunk, plan.tiles_per_chunk as i64);
    let chunk_panel0 = panel_of(cx, chunk_tile0);
    let chunk_last_panel = {
        let end = cx.b.ins().iadd_imm_s(chunk_tile0, plan.tiles_per_chunk as i64);
        let tpg = cx.ic(plan.tpg as i64);
        let end = cx.imin(end, tpg);
        let last = cx.b.ins().iadd_imm_s(end, -1);
        panel_of(cx, last)
    };
    let nr = plan.nv * lanes;
    cx.for_count(points, "winograd: points", |cx, x| {
        let a_shift = cx.b.ins().imul_imm_s(x, (layout.point_stride() * 4) as i64);
        let b_point = cx.offset(v_base, x, cin * w.t_pad);
        let m_point = cx.offset(m_base, x, w.co_rows * w.t_pad);
        for_row_tiles(cx, plan, ops.packed, spec.op.relu, g, chunk, &mut |cx, rt| {
            let a_tile = cx.b.ins().iadd(rt.a, a_shift);
            let ahead = {
                let panel = panel_of(cx, rt.index);
                let last = cx.b.ins().icmp(IntCC::Equal, panel, chunk_last_panel);
                let following = cx.b.ins().iadd_imm_s(panel, panels_per_tile as i64);
                let next_x = cx.b.ins().iadd_imm_s(x, 1);
                let next_panel = cx.b.ins().select(last, chunk_panel0, following);
                let next_x = cx.b.ins().select(last, next_x, x);
                let at = cx.offset(ops.packed, next_panel, layout.panel_stride());
                Some(cx.offset(at, next_x, layout.point_stride()))
            };
            let rel = cx.b.ins().isub(rt.co, chunk_row0);
            let c_rows = cx.offset(m_point, rel, w.t_pad);
            for col in (0..w.t_pad).step_by(nr) {
                let nv = (w.t_pad - col).min(nr) / lanes;
                let spec = TileSpec {
                    isa: plan.isa,
                    rows: rt.rows,
                    rows_a: RowsA::Panels { rows: PANEL_ROWS, stride: layout.panel_stride() },
                    nv,
                    kloop: kloop.clone(),
                    init: None,
                    out: TileOut::Partial { row: w.t_pad },
                };
                let b = cx.add_floats(b_point, col);
                let out = cx.add_floats(c_rows, col);
                tiles.emit(
                    cx,
                    &spec,
                    TileArgs { a: a_tile, b, out, epi: None, res: None, init: None, ahead },
                );
            }
        });
    });
    // Step 4: the output transform of every channel of the chunk, vector by vector.
    let y0 = cx.offset(cx.output, n, spec.out_stride);
    let res0 = ops.residual.map(|res| cx.offset(res, n, spec.res_stride));
    let plane = oh * ow;
    // The block's first output pixel.
    let pix0 = cx.b.ins().imul_imm_s(rb, (plan.block * m * ow) as i64);
    let row_vec = |at: Option<usize>| at.map(|at| ChanVec { at, axis: Axis::Row });
    let last_rows = w.th - (plan.blocks - 1) * plan.block;
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, rb, (plan.blocks - 1) as i64);
    let transform_rows = |cx: &mut KernelCx, tiles: &mut Tiles, rows_in_block: usize, last_block: bool| {
        for_row_tiles(cx, plan, ops.packed, spec.op.relu, g, chunk, &mut |cx, rt| {
            for r in 0..rt.rows {
                let co = cx.b.ins().iadd_imm_s(rt.co, r as i64);
                let rel = cx.b.ins().isub(co, chunk_row0);
                let src = cx.offset(m_base, rel, w.t_pad);
                let y = cx.offset(y0, co, plane);
                let y = cx.offset(y, pix0, 1);
                let res = res0.map(|res| {
                    let res = cx.offset(res, co, plane);
                    cx.offset(res, pix0, 1)
                });
                let epi = cx.offset(ops.packed, rt.chan, 1);
                let epi = cx.add_floats(epi, r);
                for v in 0..vectors {
                    let out_spec = OutputTransformSpec {
                        isa: plan.isa,
                        tile: w.tile,
                        point_stride: w.co_rows * w.t_pad,
                        pieces: store_pieces(plan, w, v, rows_in_block, last_block),
                        epilogue: Epilogue {
                            s1: row_vec(layout.s1),
                            b1: row_vec(layout.b1),
                            s2: row_vec(layout.s2),
                            b2: row_vec(layout.b2),
                            residual: res.map(|_| plane),
                            relu_rows: vec![rt.relu_rows[r]],
                            activation: plan.activation,
                        },
                    };
                    let src_v = cx.add_floats(src, v * lanes);
                    let null = cx.ic(0);
                    tiles.output_transform(cx, &out_spec, [src_v, y, epi, res.unwrap_or(null), tmp]);
                }
            }
        });
    };
    if last_rows == plan.block && w.th * m <= oh {
        transform_rows(cx, tiles, plan.block, false);
    } else {
        cx.if_else_with(
            tiles,
            is_last,
            |cx, t| transform_rows(cx, t, last_rows, true),
            |cx, t| transform_rows(cx, t, plan.block, false),
        );
    }
}

/// Where the interleaved vectors of vector `v` of a block store (see [`OutputTransformSpec`]):
/// `[i][k]` lists the pieces of interleaved vector `k` of output row `i`, offsets from the block's
/// first output pixel. Lane columns are compacted tiles (`ty * tw + tx`); a lane is stored when its
/// tile is in a tile row the block has and its pixel is inside the output (the last tile row and
/// column may be cut by the plane's edge).
fn store_pieces(
    plan: &ConvPlan,
    w: &WinogradPlan,
    v: usize,
    rows_in_block: usize,
    last_block: bool,
) -> Vec<Vec<Vec<Piece>>> {
    let [_, oh, ow] = plan.out;
    let (m, lanes) = (w.tile.m(), plan.lanes);
    // Output rows left below the block's first row, when it is the plane's last block.
    let rows_left = if last_block { oh - (plan.blocks - 1) * plan.block * m } else { usize::MAX };
    (0..m)
        .map(|i| {
            (0..m)
                .map(|k| {
                    let mut pieces: Vec<Piece> = Vec::new();
                    for l in 0..lanes {
                        let (c, j) = (v * lanes + k * lanes / m + l / m, l % m);
                        let (ty, tx) = (c / w.tw, c % w.tw);
                        let (y, x) = (ty * m + i, tx * m + j);
                        if ty >= rows_in_block || y >= rows_left || x >= ow {
                            continue;
                        }
                        let at = (y * ow + x) as isize - l as isize;
                        match pieces.last_mut() {
                            Some(p) if p.at == at && p.hi == l => p.hi = l + 1,
                            _ => pieces.push(Piece { lo: l, hi: l + 1, at }),
                        }
                    }
                    pieces
                })
                .collect()
        })
        .collect()
}
