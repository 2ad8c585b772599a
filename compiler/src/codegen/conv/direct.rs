//! The `gemm1x1` path: 1x1 convolutions as GEMMs over channels on packed B tiles, or on B read in
//! place with a prefetch ahead (see the parent module for the loop nest, why B is packed and when
//! it is not).

use super::{
    for_cols, for_row_tiles, tile, Cols, ConvLayout, ConvPlan, ConvSpec, Dest, KPart, Operands, PANEL_ROWS,
};
use crate::codegen::cx::{KernelCx, LANES, VEC};
use crate::codegen::tile::{KLoop, Tiles};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// The prologue applied while packing: `x * pre_scale[ci] + pre_shift[ci]`, then ReLU.
#[derive(Clone, Copy)]
struct Prologue {
    /// `pre_scale` of the block's first channel; `pre_shift` is `cin` floats further.
    scale: Value,
    cin: usize,
    relu: bool,
}

/// One item of the direct 1x1 path: (sample, chunk of row tiles, block of column tiles).
/// `filled` holds the sample whose channel-scaled weights the scratch keeps (`channel_scale`).
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
    if plan.gemv {
        return gemv(cx, spec, plan, ops, n, r);
    }
    let [_, oh, ow] = plan.out;
    let p_total = oh * ow;
    let [cin, h, w] = spec.input;
    let plane_in = h * w;
    let stride = spec.op.conv.stride;
    let nr = plan.nv * plan.lanes;
    // Chunk-major: consecutive items (claimed together by a thread) share their chunk of A, which
    // then stays in L2 across pixel blocks.
    let (chunk, pb) = cx.divmod(r, plan.blocks);
    let px0 = cx.b.ins().imul_imm_s(pb, plan.block as i64);
    // Tiles of this block: every block but the last holds `block` pixels.
    let last = plan.blocks - 1;
    let last_len = p_total - last * plan.block;
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, pb, last as i64);
    let (t_full, t_last) = (cx.ic((plan.block / nr) as i64), cx.ic((last_len / nr) as i64));
    let full = cx.b.ins().select(is_last, t_last, t_full);
    let x = cx.offset(ops.input, n, spec.in_stride);
    let dest = Dest {
        y: cx.offset(cx.output, n, spec.out_stride),
        res: ops.residual.map(|res| cx.offset(res, n, spec.res_stride)),
        plane: p_total,
        stream: plan.stream_from.map(|from| stream_condition(cx, plan.lanes, from, ops.residual)),
    };
    let tail_cols = last_len % nr;
    let tail_col = last * plan.block + last_len / nr * nr;
    // K blocks: `kblocks - 1` of `kc` channels, then the rest. The packed B slice has rows of
    // `nr` floats, whatever the tile's width.
    let (kc, kb_n) = (plan.kc, plan.kblocks);
    let kc_last = cin - (kb_n - 1) * kc;
    let k_mid = KLoop::strided(kc, PANEL_ROWS, nr, 4);
    let k_last = KLoop::strided(kc_last, PANEL_ROWS, nr, 4);
    let b_tile = cx.scratch;
    let partials = cx.add_floats(cx.scratch, kc * nr);
    // Partial sums of row `co` of this chunk at `partials + (co - chunk_row0) * nr`.
    let chunk_row0 = cx.b.ins().imul_imm_s(chunk, (plan.tiles_per_chunk * plan.mt) as i64);
    let g = cx.ic(0);
    let relu = spec.op.relu;
    // A: the packed weight panels, or with a channel scale their copy scaled by this sample's
    // factors, made once per sample and thread (see [`scale_panels`]).
    let a_base = match (plan.scaled_a, ops.scale) {
        (Some(at), Some(scale)) => {
            let copy = cx.add_floats(cx.scratch, at);
            let last = cx.b.use_var(filled);
            let stale = cx.b.ins().icmp(IntCC::NotEqual, n, last);
            cx.if_then(stale, |cx| {
                let factors = cx.offset(scale, n, spec.scale_stride);
                scale_panels(cx, ops.packed, copy, factors, &plan.layout, cin);
                cx.b.def_var(filled, n);
            });
            copy
        }
        _ => ops.packed,
    };
    let pre = plan.layout.pre.map(|at| {
        let scale = cx.add_floats(ops.packed, at);
        Prologue { scale, cin, relu: spec.op.prologue == Some(true) }
    });
    let mut col_body = |cx: &mut KernelCx, col: Value, nv: usize, lanes: usize| {
        let cols_valid = plan.lanes * (nv - 1) + lanes;
        // Pack rows `k0..k0 + rows` (`src` points at row `k0`), then run every row tile of the
        // chunk over them, reading the same K range of A (`a_k0` bytes into each panel).
        let mut k_block = |cx: &mut KernelCx,
                           k0: Value,
                           a_k0: Value,
                           rows: usize,
                           kloop: &KLoop,
                           first: bool,
                           fin: bool| {
            let src = cx.offset(x, k0, plane_in);
            let pre = pre.map(|p| Prologue { scale: cx.offset(p.scale, k0, 1), ..p });
            // A whole tile of a plan reading B in place reads rows `k0..k0 + rows` of its columns
            // where they are (stride 1, no prologue: the values the pack would copy), hinting the
            // next tile's lines of each row; the tail tile is packed.
            let in_place = plan.b_in_place.filter(|_| cols_valid == nr);
            let (b, kloop) = match in_place {
                Some(ahead) => {
                    let mut k = KLoop::strided(rows, PANEL_ROWS, plane_in, 4);
                    k.prefetch_b = ahead;
                    (cx.offset(src, col, 1), k)
                }
                None => (b_tile, kloop.clone()),
            };
            if in_place.is_none() {
                if stride == [1, 1] {
                    let src = cx.offset(src, col, 1);
                    pack_b_tile(cx, src, plane_in, b_tile, nr, rows, cols_valid, pre);
                } else {
                    let sub = Subsample { ow, sh: stride[0], sw: stride[1], w };
                    pack_b_tile_strided(cx, src, plane_in, b_tile, nr, rows, col, cols_valid, sub, pre);
                }
            }
            for_row_tiles(cx, plan, a_base, relu, g, chunk, &mut |cx, rt| {
                let rel = cx.b.ins().isub(rt.co, chunk_row0);
                let part = cx.offset(partials, rel, nr);
                let kpart =
                    KPart { init: (!first).then_some((part, nr)), partial_out: (!fin).then_some((part, nr)) };
                let cols = Cols { b, at: col, nv, lanes, pieces: None };
                let a = cx.b.ins().iadd(rt.a, a_k0);
                let rt = super::RowTile {
                    a,
                    chan: rt.chan,
                    co: rt.co,
                    index: rt.index,
                    rows: rt.rows,
                    relu_rows: rt.relu_rows.clone(),
                };
                tile(cx, tiles, plan, &kloop, ops.packed, dest, &rt, &cols, kpart);
            });
        };
        let zero = cx.ic(0);
        if kb_n == 1 {
            k_block(cx, zero, zero, kc_last, &k_last, true, true);
        } else {
            k_block(cx, zero, zero, kc, &k_mid, true, false);
            cx.for_count(kb_n - 2, "middle K blocks", |cx, i| {
                let kb = cx.b.ins().iadd_imm_s(i, 1);
                let k0 = cx.b.ins().imul_imm_s(kb, kc as i64);
                let a_k0 = cx.b.ins().imul_imm_s(k0, (PANEL_ROWS * 4) as i64);
                k_block(cx, k0, a_k0, kc, &k_mid, false, false);
            });
            let k0 = cx.ic(((kb_n - 1) * kc) as i64);
            let a_k0 = cx.ic(((kb_n - 1) * kc * PANEL_ROWS * 4) as i64);
            k_block(cx, k0, a_k0, kc_last, &k_last, false, true);
        }
    };
    for_cols(cx, plan, px0, full, None, &mut col_body);
    if tail_cols > 0 {
        // Only the last block has a tail.
        cx.if_then(is_last, |cx| {
            let col = cx.ic(tail_col as i64);
            col_body(cx, col, tail_cols.div_ceil(plan.lanes), (tail_cols - 1) % plan.lanes + 1);
        });
    }
}

/// A 1x1 convolution of a one-pixel plane (squeeze-and-excitation's two convolutions of the pooled
/// vector) as a matrix-vector product, one item per weight panel of [`PANEL_ROWS`] output
/// channels: for each input channel `k`, the panel's row of weights (`PANEL_ROWS` consecutive
/// floats) times the splatted `x[k]` is added to the panel's accumulator vectors; then `y = acc *
/// s1 + b1`, ReLU and the activation, as the tiles' epilogue computes them, and the rows that are
/// output channels are stored. The plan takes this path only without a residual, prologue or
/// channel scale and with a ReLU of all channels or none (what those layers have). Sound as the
/// tiles: each output is the k-ascending sum of `W[co][k] * x[k]` (the panels' padding rows are
/// zero and never stored), and each item writes only its panel's channels.
fn gemv(cx: &mut KernelCx, spec: &ConvSpec, plan: &ConvPlan, ops: Operands, n: Value, panel: Value) {
    let cin = spec.input[0];
    let cout = spec.op.conv.out_channels;
    let layout = &plan.layout;
    let x = cx.offset(ops.input, n, spec.in_stride);
    let a = cx.offset(ops.packed, panel, layout.panel_stride());
    let vectors = PANEL_ROWS / LANES;
    let zero = cx.fconst(VEC, 0.0);
    let accs: Vec<Variable> = (0..vectors).map(|_| cx.var(VEC, zero)).collect();
    cx.for_count(cin, "gemv: input channels", |cx, k| {
        let xk = cx.offset(x, k, 1);
        let xk = cx.load_splat(xk, 0);
        let row = cx.offset(a, k, PANEL_ROWS);
        for (j, acc) in accs.iter().enumerate() {
            let w = cx.load_v(row, j * LANES);
            let sum = cx.b.use_var(*acc);
            let sum = cx.fma(w, xk, sum);
            cx.b.def_var(*acc, sum);
        }
    });
    let row0 = cx.b.ins().imul_imm_s(panel, PANEL_ROWS as i64);
    let epi = cx.offset(ops.packed, row0, 1);
    let y = cx.offset(cx.output, n, spec.out_stride);
    let y = cx.offset(y, row0, 1);
    // Rows of this panel that are output channels: all but in the last panel.
    let last = layout.ppg - 1;
    let last_rows = cout - last * PANEL_ROWS;
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, panel, last as i64);
    for (j, acc) in accs.iter().enumerate() {
        let mut v = cx.b.use_var(*acc);
        if let Some(s1) = layout.s1 {
            let s = cx.load_v(epi, s1 + j * LANES);
            v = cx.b.ins().fmul(v, s);
        }
        if let Some(b1) = layout.b1 {
            let b = cx.load_v(epi, b1 + j * LANES);
            v = cx.b.ins().fadd(v, b);
        }
        if spec.op.relu == crate::ir::Relu::All {
            v = cx.relu(v);
        }
        if let Some(act) = spec.op.activation {
            v = crate::codegen::eltwise::activation(cx, VEC, act, v);
        }
        let rows = |all: usize| all.saturating_sub(j * LANES).min(LANES);
        let (whole, tail) = (rows(PANEL_ROWS), rows(last_rows));
        let store = |cx: &mut KernelCx, count: usize| {
            if count == LANES {
                cx.store(v, y, j * LANES);
            } else {
                for l in 0..count {
                    let e = cx.b.ins().extractlane(v, l as u8);
                    cx.store(e, y, j * LANES + l);
                }
            }
        };
        if whole == tail {
            store(cx, whole);
        } else {
            crate::codegen::eltwise::if_else(cx, is_last, |cx| store(cx, tail), |cx| store(cx, whole));
        }
    }
}

/// Squeeze-and-excitation's scale folded into the weights: `conv(x * f) = conv'(x)` with
/// `W'[co][ci] = W[co][ci] * f[ci]` (a 1x1 convolution sums `W[co][ci] * x[ci][p] * f[ci]` over
/// `ci`; the bias and epilogue are after the sum and unchanged). Copies the `panels` packed panels
/// (`Cin` rows of [`PANEL_ROWS`] channels each, row `ci` scaled by `factors[ci]`) from `packed` to
/// `dst`, so the tiles read A from there exactly as from the packed weights (and B in place as
/// before). `Cout x Cin` multiplies per sample and thread against the layer's `Cout x Cin x
/// pixels` multiply-adds, where scaling the input would cost `Cin x pixels` and a second pass over
/// it. The sum is associated differently from `conv(x * f)` (`(W f) x` against `W (f x)`): the
/// same rounding error bound.
fn scale_panels(
    cx: &mut KernelCx,
    packed: Value,
    dst: Value,
    factors: Value,
    layout: &ConvLayout,
    cin: usize,
) {
    let (panels, stride) = (layout.ppg, layout.panel_stride());
    cx.for_count(cin, "channel factors", |cx, ci| {
        let f = cx.offset(factors, ci, 1);
        let f = cx.load_splat(f, 0);
        let row = cx.b.ins().imul_imm_s(ci, PANEL_ROWS as i64);
        let src = cx.offset(packed, row, 1);
        let to = cx.offset(dst, row, 1);
        cx.for_count(panels, "panels", |cx, p| {
            let src = cx.offset(src, p, stride);
            let to = cx.offset(to, p, stride);
            for i in (0..PANEL_ROWS).step_by(LANES) {
                let w = cx.load_v(src, i);
                let w = cx.b.ins().fmul(w, f);
                cx.store(w, to, i);
            }
        });
    });
}

/// Whether this call stores its outputs non-temporally (an `i8`): the batch is at least `from`
/// samples, the output base is aligned to the vector (with the plan's layout condition, so is every
/// whole output vector: [`ConvPlan::stream_from`]), and the output is not also the residual.
fn stream_condition(cx: &mut KernelCx, lanes: usize, from: usize, residual: Option<Value>) -> Value {
    let big = cx.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, cx.batch, from as i64);
    let misaligned = cx.b.ins().band_imm_s(cx.output, (lanes * 4 - 1) as i64);
    let aligned = cx.b.ins().icmp_imm_s(IntCC::Equal, misaligned, 0);
    let ok = cx.b.ins().band(big, aligned);
    match residual {
        Some(res) => {
            let apart = cx.b.ins().icmp(IntCC::NotEqual, cx.output, res);
            cx.b.ins().band(ok, apart)
        }
        None => ok,
    }
}

/// How output pixels map to input pixels in a strided 1x1 convolution: output `(oy, ox)` (flat
/// `oy * ow + ox`) reads input `(oy * sh, ox * sw)` of rows `w` floats long.
#[derive(Clone, Copy)]
struct Subsample {
    ow: usize,
    sh: usize,
    sw: usize,
    w: usize,
}

/// The prologue's scale and shift of row `k` (splatted to `ty`), if any.
fn prologue_of(
    cx: &mut KernelCx,
    pre: Option<Prologue>,
    k: Value,
    ty: cranelift_codegen::ir::Type,
) -> Option<(Value, Value, bool)> {
    pre.map(|p| {
        let at = cx.offset(p.scale, k, 1);
        let (s, t) = (cx.load_s(at, 0), cx.load_s(at, p.cin));
        if ty == F32 {
            (s, t, p.relu)
        } else {
            (cx.b.ins().splat(ty, s), cx.b.ins().splat(ty, t), p.relu)
        }
    })
}

fn apply(cx: &mut KernelCx, x: Value, p: Option<(Value, Value, bool)>) -> Value {
    match p {
        Some((s, t, relu)) => {
            let y = cx.fma(x, s, t);
            if relu {
                cx.relu(y)
            } else {
                y
            }
        }
        None => x,
    }
}

/// [`pack_b_tile`] for a strided 1x1 convolution: lane `i` of the tile (output pixel `col + i`) is
/// gathered from its input pixel. Lanes outer, rows inner: each lane's input offset is computed
/// once (one division by `ow`) and the row loop is then a scalar copy with constant strides.
/// Lanes `cols..nr` are zeroed.
#[allow(clippy::too_many_arguments)]
fn pack_b_tile_strided(
    cx: &mut KernelCx,
    src: Value,
    row_stride: usize,
    dst: Value,
    nr: usize,
    rows: usize,
    col: Value,
    cols: usize,
    sub: Subsample,
    pre: Option<Prologue>,
) {
    let zero = cx.fconst(F32, 0.0);
    for lane in 0..nr {
        let d = cx.add_floats(dst, lane);
        if lane >= cols {
            cx.for_count(rows, "pack B: zero lane", |cx, k| {
                let dk = cx.offset(d, k, nr);
                cx.store(zero, dk, 0);
            });
            continue;
        }
        let p = cx.b.ins().iadd_imm_s(col, lane as i64);
        let (oy, ox) = cx.divmod(p, sub.ow);
        let s = cx.offset(src, oy, sub.sh * sub.w);
        let s = cx.offset(s, ox, sub.sw);
        cx.for_count(rows, "pack B: gather lane", |cx, k| {
            let sk = cx.offset(s, k, row_stride);
            let dk = cx.offset(d, k, nr);
            let v = cx.load_s(sk, 0);
            let pro = prologue_of(cx, pre, k, F32);
            let v = apply(cx, v, pro);
            cx.store(v, dk, 0);
        });
    }
}

/// Copies `rows` rows of one column tile of B (`src + k * row_stride`, `cols` floats each) to
/// `dst + k * nr`, applying the prologue; lanes `cols..nr` are zero, so the K loop reads whole
/// vectors (and no stale NaN or denormal) from the scratch.
#[allow(clippy::too_many_arguments)]
fn pack_b_tile(
    cx: &mut KernelCx,
    src: Value,
    row_stride: usize,
    dst: Value,
    nr: usize,
    rows: usize,
    cols: usize,
    pre: Option<Prologue>,
) {
    let (zv, zs) = (cx.fconst(VEC, 0.0), cx.fconst(F32, 0.0));
    cx.for_count(rows, "pack B rows", |cx, k| {
        let s = cx.offset(src, k, row_stride);
        let d = cx.offset(dst, k, nr);
        let pv = prologue_of(cx, pre, k, VEC);
        for i in 0..cols / LANES {
            let v = cx.load_v(s, i * LANES);
            let v = apply(cx, v, pv);
            cx.store(v, d, i * LANES);
        }
        let ps = prologue_of(cx, pre, k, F32);
        for i in cols / LANES * LANES..cols {
            let v = cx.load_s(s, i);
            let v = apply(cx, v, ps);
            cx.store(v, d, i);
        }
        for i in cols..cols.div_ceil(LANES) * LANES {
            cx.store(zs, d, i);
        }
        for i in cols.div_ceil(LANES)..nr / LANES {
            cx.store(zv, d, i * LANES);
        }
    });
}
