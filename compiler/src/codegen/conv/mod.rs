//! Convolution kernels (`FusedConv`): work decomposition, and the drivers that run register tiles
//! ([`super::tile`]) over packed B tiles or padded row panels.
//!
//! Two paths (algorithms), chosen by the optimiser's [`ConvKind`](crate::ir::ConvKind) (see
//! [`ConvPath::of`]); every path runs on every ISA, the ISA only changing the tile:
//!
//! **`gemm1x1`** ([`direct`]; `Gemm1x1` or `StridedGemm1x1`, unpadded, ungrouped): per sample,
//! `out[Cout x P] = W[Cout x Cin] * B[Cin x P]` with `P = OH*OW`. Row `ci` of B is channel plane
//! `ci` of the input, subsampled for a stride (output pixel `(oy, ox)` reads input pixel
//! `(oy*sh, ox*sw)`), with the prologue (pre-activation BN+ReLU) applied on the way. Work item =
//! (sample, chunk of row tiles, block of column tiles; consecutive items share a chunk of A); inside: `for column tile in block { for kb
//! in K blocks { pack; for row tile in chunk { K loop over kc } } }`. *pack* copies (for a stride:
//! gathers) the tile's `kc x NR` slice of B into the scratch, row after row (`kc * NR` contiguous
//! floats, zero lanes past a tail tile's columns): read in place, one tile's rows are `H*W` floats
//! apart, each on its own page, and at 56x56 (12.5 KB apart) they fall into a quarter of the L1
//! sets. Packed, the K loop reads consecutive bytes per K step from L1. On avx2/avx512 a layer
//! with few row tiles at a plane of at least four column tiles ([`reads_b_in_place`]) skips the
//! copy for its whole tiles: the tile reads B straight from the channel rows (row `k` at
//! `x + k * H*W + col`, inside the sample for a whole tile) and prefetches the same rows' lines one
//! column tile ahead, which is what the copy was waiting for (its `Cin` concurrent streams defeat
//! the hardware prefetchers); the tail tile is still packed, its zero lanes keeping the K loop's
//! whole-vector reads inside the scratch. K blocks (`kc <= KC_MAX`
//! channels) keep that slice near L1 for large `Cin`; between blocks each tile's raw accumulators
//! go to a partial-sum area of the scratch and come back as the next block's initial values, so
//! every output is still the k-ascending sum over all `Cin` (the epilogue runs after the last block
//! only). The chunk of A (re-read once per tile and K block) is sized to stay in L2. A call whose
//! output would not stay in the last-level cache anyway (batch x output bytes over a threshold,
//! [`ConvPlan::stream_from`]) stores it non-temporally when the layout keeps every output vector
//! aligned and the output is not the residual (checked at run time), and fences before returning:
//! at large planes with few channels the layer is bound by memory traffic, and streaming saves
//! the read for ownership of every output line. A channel scale (squeeze-and-excitation's factors,
//! `FusedConv::channel_scale`) scales a copy of the weight panels once per sample and thread
//! (`direct::scale_panels`), which the tiles then read as A. A one-pixel plane (the
//! squeeze-and-excitation convolutions of the pooled vector) runs as a matrix-vector product, one
//! weight panel per item (`direct::gemv`).
//!
//! **`rowpanel`** ([`rowpanel`]; every other convolution: KxK, strided, padded, dilated, grouped):
//! an implicit GEMM over a padded, de-interleaved copy of the input rows a block of output rows
//! needs; see that module.
//!
//! **`depthwise`** ([`depthwise`]; depthwise layers the `depthwise` pass chose): each channel's
//! plane filtered on its own, output pixels of the whole plane in the vector lanes.
//!
//! **`winograd`** ([`winograd`]; 3x3 stride-1 layers the `winograd` pass chose): Winograd's
//! minimal filtering, its `a^2` GEMMs on the same register tiles.
//!
//! Output channels: tiles of `mt` rows ([`ConvPlan::mt`]) read the ISA-independent packed panels of
//! [`PANEL_ROWS`] channels. Output columns: `OW / NR` full tiles and one tail tile of `OW % NR`
//! columns whose last vector is stored masked, so no tile ever overlaps another or writes outside
//! its item.
//!
//! Work items are independent (disjoint outputs, private scratch), so any split of `begin..end`
//! across threads is valid; `items_per_sample` is sized for at least 16 items per sample when the
//! layer is big enough, so two threads balance at batch 1.

pub mod chanvec;
pub mod depthwise;
mod direct;
mod plan;
mod rowpanel;
pub mod winograd;

pub use plan::{
    default_tile, reads_b_in_place, ConvLayout, ConvPath, ConvPlan, FlatTile, CHANVEC_PANEL, PANEL_ROWS,
};

use super::cx::{mem, KernelCx};
use super::tile::{Axis, ChanVec, Epilogue, KLoop, Piece, RowsA, TileArgs, TileOut, TileSpec, Tiles};
use super::CodegenError;
use crate::ir::{FusedConv, Relu};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};

/// A convolution kernel request: the fused op, the per-sample input shape, and where values live
/// (`*_stride`: floats between samples of the input, output and residual values, from the memory
/// plan; element `(n, i)` of a value is at `base + n * stride + i`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    pub op: FusedConv,
    /// `[C, H, W]` of the input.
    pub input: [usize; 3],
    pub in_stride: usize,
    pub out_stride: usize,
    pub res_stride: usize,
    /// Floats between samples of the `channel_scale` factors (0 without them).
    pub scale_stride: usize,
    /// Register tile `(rows, vectors)` to use instead of the measured default (for tuning).
    pub tile: Option<(usize, usize)>,
    /// Loop order (`true`: column tiles outside row tiles) instead of the default (for tuning; the
    /// direct 1x1 path always runs column tiles outside, as it packs one tile at a time).
    pub order: Option<bool>,
    /// Output bytes per call from which the direct path streams its outputs past the cache,
    /// instead of the default (see [`ConvPlan::stream_from`]; for tests and tuning).
    pub stream_bytes: Option<usize>,
}

impl ConvSpec {
    /// A spec for contiguous values (strides equal to the per-sample sizes).
    pub fn contiguous(op: FusedConv, input: [usize; 3]) -> Result<ConvSpec, CodegenError> {
        let scale_stride = if op.channel_scale { op.conv.in_channels } else { 0 };
        let mut spec = ConvSpec {
            op,
            input,
            in_stride: input.iter().product(),
            out_stride: 0,
            res_stride: 0,
            scale_stride,
            tile: None,
            order: None,
            stream_bytes: None,
        };
        let [c, h, w] = spec.output()?;
        spec.out_stride = c * h * w;
        spec.res_stride = spec.out_stride;
        Ok(spec)
    }

    /// `[Cout, OH, OW]`, PyTorch's formula.
    pub fn output(&self) -> Result<[usize; 3], CodegenError> {
        let c = &self.op.conv;
        let [_, h, w] = self.input;
        let dim = |i: usize, n: usize| {
            let span = c.dilation[i] * (c.kernel[i] - 1) + 1;
            (n + 2 * c.padding[i]).checked_sub(span).map(|x| x / c.stride[i] + 1)
        };
        match (dim(0, h), dim(1, w)) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok([c.out_channels, oh, ow]),
            _ => Err(CodegenError::Unsupported(format!(
                "convolution window larger than the padded input {:?}",
                self.input
            ))),
        }
    }
}

/// Emits the kernel body for `spec`.
pub(crate) fn emit(cx: &mut KernelCx, tiles: &mut Tiles, spec: &ConvSpec, plan: &ConvPlan) {
    let input = cx.ptr_at(cx.inputs, 0);
    let residual = spec.op.residual.then(|| cx.ptr_at(cx.inputs, 1));
    let scale = spec.op.channel_scale.then(|| cx.ptr_at(cx.inputs, spec.op.scale_port()));
    let packed = cx.ptr_at(cx.weights, 0);
    let ips = plan.items_per_sample();
    let ops = Operands { input, residual, scale, packed };
    let none = cx.ic(-1);
    let filled = cx.var(I64, none);
    // What the scratch holds: the caller's memo when it passes one (a previous call of this kernel
    // on this thread; see `KernelArgs::setup`), read before the first item and given back after
    // each. (Inside the item loop: the entry block must jump straight to it, see `bounds`.)
    let has_memo = (plan.path != ConvPath::Direct1x1 || spec.op.channel_scale)
        .then(|| cx.b.ins().icmp_imm_s(IntCC::NotEqual, cx.setup, 0));
    let begin = cx.begin;
    // Some outputs may be stored non-temporally: weakly ordered, so fence them before returning
    // (the caller then signals completion to the threads that read them).
    let streams = plan.stream_from.is_some();
    cx.for_items(|cx, item| {
        if let Some(has_memo) = has_memo {
            let first = cx.b.ins().icmp(IntCC::Equal, item, begin);
            let recall = cx.b.ins().band(first, has_memo);
            cx.if_then(recall, |cx| {
                let last = cx.b.ins().load(I64, mem(), cx.setup, 0);
                cx.b.def_var(filled, last);
            });
        }
        let (n, r) = cx.divmod(item, ips);
        match plan.path {
            ConvPath::Direct1x1 => direct::item(cx, tiles, spec, plan, ops, n, r, filled),
            ConvPath::RowPanel => rowpanel::item(cx, tiles, spec, plan, ops, n, r, filled),
            ConvPath::Winograd(_) => winograd::item(cx, tiles, spec, plan, ops, n, r, filled),
            ConvPath::ChanVec => chanvec::item(cx, tiles, spec, plan, ops, n, r, filled),
            ConvPath::Depthwise => depthwise::item(cx, tiles, spec, plan, ops, n, r, filled),
        }
        if let Some(has_memo) = has_memo {
            cx.if_then(has_memo, |cx| {
                let last = cx.b.use_var(filled);
                cx.b.ins().store(mem(), last, cx.setup, 0);
            });
        }
    });
    if streams {
        cx.b.ins().fence();
    }
}

/// The kernel's operand pointers (batch bases).
#[derive(Clone, Copy)]
struct Operands {
    input: Value,
    residual: Option<Value>,
    /// The `channel_scale` factors.
    scale: Option<Value>,
    packed: Value,
}

/// One tile of output channels, as the tile code needs it.
struct RowTile {
    /// A of the tile's first row (inside its packed panel).
    a: Value,
    /// Index of the tile's first row in the per-channel epilogue vectors.
    chan: Value,
    /// First output channel.
    co: Value,
    /// The tile's index among its group's row tiles.
    index: Value,
    rows: usize,
    relu_rows: Vec<bool>,
}

/// One tile of output columns: its B base, its offset inside an output channel plane, its width
/// (`nv` vectors, the last with `lanes` valid lanes, stored contiguously), or explicit pieces per
/// vector relative to `at` (a flat row panel's tiles span several output rows).
#[derive(Clone)]
struct Cols<'p> {
    b: Value,
    at: Value,
    nv: usize,
    lanes: usize,
    pieces: Option<&'p [Vec<Piece>]>,
}

/// The row tiles of chunk `chunk` of group `g`, one class at a time.
#[allow(clippy::too_many_arguments)]
fn for_row_tiles(
    cx: &mut KernelCx,
    plan: &ConvPlan,
    packed: Value,
    relu: Relu,
    g: Value,
    chunk: Value,
    body: &mut dyn FnMut(&mut KernelCx, &RowTile),
) {
    let layout = &plan.layout;
    let lo = cx.b.ins().imul_imm_s(chunk, plan.tiles_per_chunk as i64);
    let hi = cx.b.ins().iadd_imm_s(lo, plan.tiles_per_chunk as i64);
    for (start, end, rows, relu_rows) in plan.tile_classes(relu) {
        let (a, b) = (cx.ic(start as i64), cx.ic(end as i64));
        let from = cx.imax(lo, a);
        let to = cx.imin(hi, b);
        cx.for_range(from, to, 1, &format!("row tiles {start}..{end} ({rows} rows)"), |cx, t| {
            // First row `t * mt` of the group: panel `t*mt / 12`, row `t*mt % 12` in it.
            let (panel, row_in_panel) = if plan.mt >= PANEL_ROWS {
                let p = cx.b.ins().imul_imm_s(t, (plan.mt / PANEL_ROWS) as i64);
                (p, None)
            } else {
                let (p, q) = cx.divmod(t, PANEL_ROWS / plan.mt);
                (p, Some(q))
            };
            let gp = cx.b.ins().imul_imm_s(g, layout.ppg as i64);
            let gp = cx.b.ins().iadd(gp, panel);
            let mut a = cx.offset(packed, gp, layout.panel_stride());
            if let Some(q) = row_in_panel {
                a = cx.offset(a, q, plan.mt);
            }
            let row0 = cx.b.ins().imul_imm_s(t, plan.mt as i64);
            let chan = cx.b.ins().imul_imm_s(g, (layout.ppg * PANEL_ROWS) as i64);
            let chan = cx.b.ins().iadd(chan, row0);
            let co = cx.b.ins().imul_imm_s(g, layout.cout_g as i64);
            let co = cx.b.ins().iadd(co, row0);
            body(cx, &RowTile { a, chan, co, index: t, rows, relu_rows: relu_rows.clone() });
        });
    }
}

/// Column tiles of one row: `full` run-time-counted tiles of `nv` vectors from `col0`, then a tail
/// of `tail.1` columns at `tail.0`. `body(col, nv, last_lanes)`.
fn for_cols(
    cx: &mut KernelCx,
    plan: &ConvPlan,
    col0: Value,
    full: Value,
    tail: Option<(Value, usize)>,
    body: &mut dyn FnMut(&mut KernelCx, Value, usize, usize),
) {
    let (nv, lanes) = (plan.nv, plan.lanes);
    let nr = nv * lanes;
    let zero = cx.ic(0);
    cx.for_range(zero, full, 1, "column tiles", |cx, t| {
        let off = cx.b.ins().imul_imm_s(t, nr as i64);
        let col = cx.b.ins().iadd(col0, off);
        body(cx, col, nv, lanes);
    });
    if let Some((col, cols)) = tail {
        if cols > 0 {
            body(cx, col, cols.div_ceil(lanes), (cols - 1) % lanes + 1);
        }
    }
}

/// Emits every column tile of an item, calling the visitor with each.
type TileLoop<'a> = dyn FnMut(&mut KernelCx, &mut dyn FnMut(&mut KernelCx, &Cols)) + 'a;

/// Emits the tile loops in the plan's order: column tiles outside row tiles (`tiles_outer`: one B
/// tile stays in L1 while A streams past) or row tiles outside (one slice of A stays in L1 while
/// the B block streams past).
#[allow(clippy::too_many_arguments)]
fn nest(
    cx: &mut KernelCx,
    plan: &ConvPlan,
    packed: Value,
    relu: Relu,
    g: Value,
    chunk: Value,
    tiles: &mut TileLoop,
    compute: &mut dyn FnMut(&mut KernelCx, &RowTile, &Cols),
) {
    if plan.tiles_outer {
        tiles(cx, &mut |cx, cols| {
            for_row_tiles(cx, plan, packed, relu, g, chunk, &mut |cx, rt| compute(cx, rt, cols))
        });
    } else {
        for_row_tiles(cx, plan, packed, relu, g, chunk, &mut |cx, rt| {
            tiles(cx, &mut |cx, cols| compute(cx, rt, cols))
        });
    }
}

/// How a tile's K loop relates to the K blocks of the direct path: the whole K at once, or one
/// block whose accumulators start from / end in a partial-sum area (`(base, row stride)`).
#[derive(Clone, Copy)]
struct KPart {
    init: Option<(Value, usize)>,
    partial_out: Option<(Value, usize)>,
}

const WHOLE_K: KPart = KPart { init: None, partial_out: None };

/// Where a tile's outputs go: the sample's output and residual bases and the channel plane size,
/// and, if the outputs may be streamed, the run-time condition (an `i8`) under which they are
/// (see [`ConvPlan::stream_from`]).
#[derive(Clone, Copy)]
struct Dest {
    y: Value,
    res: Option<Value>,
    plane: usize,
    stream: Option<Value>,
}

/// The K loop, epilogue and store of one tile. With `part.partial_out`, the raw accumulators are
/// stored there instead (not the last K block).
#[allow(clippy::too_many_arguments)]
fn tile(
    cx: &mut KernelCx,
    tiles: &mut Tiles,
    plan: &ConvPlan,
    kloop: &KLoop,
    packed: Value,
    dest: Dest,
    rt: &RowTile,
    cols: &Cols,
    part: KPart,
) {
    let lanes = plan.lanes;
    let layout = &plan.layout;
    let rows_a = RowsA::Panels { rows: PANEL_ROWS, stride: layout.panel_stride() };
    let (out, epi, res, out_spec) = match part.partial_out {
        Some((base, row)) => (base, None, None, TileOut::Partial { row }),
        None => {
            let y_c = cx.offset(dest.y, rt.co, dest.plane);
            let out = cx.offset(y_c, cols.at, 1);
            let res = dest.res.map(|r| {
                let r_c = cx.offset(r, rt.co, dest.plane);
                cx.offset(r_c, cols.at, 1)
            });
            let epi = cx.offset(packed, rt.chan, 1);
            let row_vec = |at: Option<usize>| at.map(|at| ChanVec { at, axis: Axis::Row });
            let pieces = match cols.pieces {
                Some(p) => p.to_vec(),
                None => (0..cols.nv)
                    .map(|j| {
                        vec![Piece::leading(j, lanes, if j + 1 == cols.nv { cols.lanes } else { lanes })]
                    })
                    .collect(),
            };
            let epilogue = Epilogue {
                s1: row_vec(layout.s1),
                b1: row_vec(layout.b1),
                s2: row_vec(layout.s2),
                b2: row_vec(layout.b2),
                residual: res.map(|_| dest.plane),
                relu_rows: rt.relu_rows.clone(),
                activation: plan.activation,
            };
            let out_spec = TileOut::Final { row: dest.plane, pieces, epilogue, stream: false };
            (out, Some(epi), res, out_spec)
        }
    };
    let spec = TileSpec {
        isa: plan.isa,
        rows: rt.rows,
        rows_a,
        nv: cols.nv,
        kloop: kloop.clone(),
        init: part.init.map(|(_, row)| row),
        out: out_spec,
    };
    let args =
        TileArgs { a: rt.a, b: cols.b, out, epi, res, init: part.init.map(|(base, _)| base), ahead: None };
    match (dest.stream, &spec.out) {
        (Some(stream), TileOut::Final { .. }) => {
            let mut streamed = spec.clone();
            if let TileOut::Final { stream, .. } = &mut streamed.out {
                *stream = true;
            }
            cx.if_else_with(
                tiles,
                stream,
                |cx, tiles| tiles.emit(cx, &streamed, args),
                |cx, tiles| tiles.emit(cx, &spec, args),
            );
        }
        _ => tiles.emit(cx, &spec, args),
    }
}
