//! The `rowpanel` path: an implicit GEMM over a padded, de-interleaved copy of the input rows a
//! block of output rows needs (every convolution but the direct 1x1 ones: KxK, strided, padded,
//! dilated, grouped).
//!
//! Work item = (sample, block of `RB` output rows, group, chunk of row tiles). The item first fills
//! its scratch: for each input channel of the group and each input row `rho` the block reads
//! (`ih = oh0*sh - ph + rho`), the row is stored as `sw` *phase rows*, phase `f` holding padded
//! columns `f, f + sw, f + 2sw, ...` (zero outside the input). Then output column `ow` of tap
//! `(kh, kw)` reads padded column `ow*sw + kw*dw`, which is phase `(kw*dw) % sw` at column
//! `ow + (kw*dw) / sw`: consecutive output columns are consecutive floats for every stride, and
//! padding needs no branch in the inner loop. The K loop runs over the group's input channels with
//! the `KH*KW` taps unrolled (each a constant offset into the scratch). The fill copies
//! `O(Cin * rows * W)` floats per item against `O(Cout * Cin * KH*KW * OW * RB)` FMAs, a few
//! percent at most, and consecutive items of one call that share their rows (chunks of the same
//! block) fill them once.
//!
//! Why an implicit GEMM on row panels rather than a full im2col: im2col of a 3x3 layer at 56x56
//! writes and re-reads 9x the input (7 MB per sample for 64 channels), far beyond L2; the row panel
//! is `Cin * ((RB-1)*sh + KH) * W` floats (tens of KB) and is reused by every output channel.

use super::{for_cols, nest, tile, Cols, ConvPlan, ConvSpec, Dest, Operands, RowTile, PANEL_ROWS, WHOLE_K};
use crate::codegen::cx::KernelCx;
use crate::codegen::rows::{copy_phases4, copy_run, zero_run};
use crate::codegen::tile::{KLoop, Tap, Tiles};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// One item: (sample, block of output rows, group, chunk of row tiles). `filled` holds the last
/// (sample, block, group) whose rows this call filled into the scratch (-1 for none): an item of
/// the same unit finds them there.
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
    let c = &spec.op.conv;
    let [kh_n, kw_n] = c.kernel;
    let (sh, sw) = (c.stride[0], c.stride[1]);
    let (dh, dw) = (c.dilation[0], c.dilation[1]);
    let [_, oh, ow] = plan.out;
    let nr = plan.nv * plan.lanes;
    // Block-major: consecutive items (claimed together by a thread) share their rows, which are
    // then filled once for all of them.
    let (unit, chunk) = cx.divmod(r, plan.chunks);
    let (rb, g) = cx.divmod(unit, plan.layout.groups);
    let oh0 = cx.b.ins().imul_imm_s(rb, plan.block as i64);
    let units = (plan.blocks * plan.layout.groups) as i64;
    let this = cx.b.ins().imul_imm_s(n, units);
    let this = cx.b.ins().iadd(this, unit);
    let last = cx.b.use_var(filled);
    let stale = cx.b.ins().icmp(IntCC::NotEqual, this, last);
    cx.if_then(stale, |cx| {
        fill_rows(cx, spec, plan, ops, n, g, oh0);
        cx.b.def_var(filled, this);
    });

    // Rows of this block: `block`, or what is left for the last one.
    let last = plan.blocks - 1;
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, rb, last as i64);
    let (rows_full, rows_last) = (cx.ic(plan.block as i64), cx.ic((oh - last * plan.block) as i64));
    let block_rows = cx.b.ins().select(is_last, rows_last, rows_full);

    // Taps of one input channel (or 4 channels for 1x1 kernels), offsets into the scratch.
    let row_len = plan.slots * plan.sw_len;
    let kloop = if kh_n * kw_n == 1 {
        let b = plan.row_at(0, 0).expect("row 0 is read");
        let mut k = KLoop::strided(plan.layout.cin_g, PANEL_ROWS, plan.chan_len, 4);
        for tap in k.taps.iter_mut().chain(k.tail.iter_mut()) {
            tap.b += b;
        }
        k
    } else {
        let mut taps = Vec::new();
        for kh in 0..kh_n {
            for kw in 0..kw_n {
                let q = kw * dw;
                let slot = plan.phase_slot[q % sw].expect("every tap's phase has a slot");
                let row = plan.row_at(kh * dh, slot).expect("every tap's row phase has a slot");
                taps.push(Tap { a: (kh * kw_n + kw) * PANEL_ROWS, b: row + q / sw });
            }
        }
        KLoop {
            groups: plan.layout.cin_g,
            taps,
            a_step: kh_n * kw_n * PANEL_ROWS,
            b_step: plan.chan_len,
            tail: Vec::new(),
            prefetch_a: 0,
            prefetch_b: 0,
            prefetch_next: 0,
        }
    };
    let dest = Dest {
        y: cx.offset(cx.output, n, spec.out_stride),
        res: ops.residual.map(|res| cx.offset(res, n, spec.res_stride)),
        plane: oh * ow,
        stream: None,
    };
    if plan.flat {
        // Tiles over the block's rows as one column axis; the last block may have fewer rows.
        let rows_last = oh - last * plan.block;
        let (full, short) = (plan.flat_tiles(plan.block), plan.flat_tiles(rows_last));
        let block_at = cx.b.ins().imul_imm_s(oh0, ow as i64);
        let emit_block = |cx: &mut KernelCx, tiles: &mut Tiles, flat: &[super::FlatTile]| {
            let mut col_tiles = |cx: &mut KernelCx, body: &mut dyn FnMut(&mut KernelCx, &Cols)| {
                for ft in flat {
                    let b = cx.add_floats(cx.scratch, ft.q0);
                    body(
                        cx,
                        &Cols { b, at: block_at, nv: ft.nv, lanes: plan.lanes, pieces: Some(&ft.pieces) },
                    );
                }
            };
            let mut compute = |cx: &mut KernelCx, rt: &RowTile, cols: &Cols| {
                tile(cx, tiles, plan, &kloop, ops.packed, dest, rt, cols, WHOLE_K)
            };
            nest(cx, plan, ops.packed, spec.op.relu, g, chunk, &mut col_tiles, &mut compute);
        };
        if rows_last == plan.block {
            emit_block(cx, tiles, &full);
        } else {
            cx.if_else_with(
                tiles,
                is_last,
                |cx, t| emit_block(cx, t, &short),
                |cx, t| emit_block(cx, t, &full),
            );
        }
        return;
    }
    let mut col_tiles = |cx: &mut KernelCx, body: &mut dyn FnMut(&mut KernelCx, &Cols)| {
        let zero = cx.ic(0);
        cx.for_range(zero, block_rows, 1, "output rows of the block", |cx, t| {
            let b_row = cx.offset(cx.scratch, t, sh * row_len);
            let out_row = cx.b.ins().iadd(oh0, t);
            let row_at = cx.b.ins().imul_imm_s(out_row, ow as i64);
            let zero = cx.ic(0);
            let full = cx.ic((ow / nr) as i64);
            let tail_col = cx.ic((ow / nr * nr) as i64);
            for_cols(cx, plan, zero, full, Some((tail_col, ow % nr)), &mut |cx, col, nv, lanes| {
                let b = cx.offset(b_row, col, 1);
                let at = cx.b.ins().iadd(row_at, col);
                body(cx, &Cols { b, at, nv, lanes, pieces: None });
            });
        });
    };
    let mut compute = |cx: &mut KernelCx, rt: &RowTile, cols: &Cols| {
        tile(cx, tiles, plan, &kloop, ops.packed, dest, rt, cols, WHOLE_K)
    };
    nest(cx, plan, ops.packed, spec.op.relu, g, chunk, &mut col_tiles, &mut compute);
}

/// Fills the scratch with the padded phase rows of group `g`'s channels for output rows from `oh0`.
/// Scratch float `ci * chan_len + row_at(rho, slot(f)) + col` holds padded input column
/// `col * sw + f` of input row `oh0 * sh - ph + rho` (zero outside the input; see
/// [`ConvPlan::row_at`]).
pub(super) fn fill_rows(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    ops: Operands,
    n: Value,
    g: Value,
    oh0: Value,
) {
    let input = ops.input;
    let c = &spec.op.conv;
    let [_, h, w] = spec.input;
    let (sh, ph, dh) = (c.stride[0], c.padding[0], c.dilation[0]);
    let row_len = plan.slots * plan.sw_len;
    // Scratch rows some tap reads: rho = t*sh + kh*dh.
    let mut needed = vec![false; plan.rows];
    for t in 0..plan.block {
        for kh in 0..c.kernel[0] {
            needed[t * sh + kh * dh] = true;
        }
    }
    let x = cx.offset(input, n, spec.in_stride);
    let ci0 = cx.b.ins().imul_imm_s(g, plan.layout.cin_g as i64);
    let x = cx.offset(x, ci0, h * w);
    let ih0 = cx.b.ins().imul_imm_s(oh0, sh as i64);
    let ih0 = cx.b.ins().iadd_imm_s(ih0, -(ph as i64));
    let packed = plan.layout.pre.map(|_| ops.packed);
    let filled = if plan.flat { plan.chan_len - plan.lanes } else { plan.rows * row_len };
    cx.for_count(plan.layout.cin_g, "fill: input channels", |cx, ci| {
        let src_c = cx.offset(x, ci, h * w);
        let dst_c = cx.offset(cx.scratch, ci, plan.chan_len);
        // The slack after the rows (flat panels) holds zeros, not stale data.
        zero_run(cx, dst_c, filled, plan.chan_len - filled);
        let pro = match (plan.layout.pre, packed) {
            (Some(at), Some(packed)) => {
                let ci_g = cx.b.ins().iadd(ci0, ci);
                let base = cx.add_floats(packed, at);
                let p = cx.offset(base, ci_g, 1);
                let relu = spec.op.prologue == Some(true);
                Some((p, spec.input[0], relu))
            }
            _ => None,
        };
        for run in row_runs(plan, &needed) {
            let note = format!("fill: rows {}, {} apart", run.first, run.rho_step);
            cx.for_count(run.count, &note, |cx, i| {
                // Row rho = first + i * rho_step; its slots start `i * at_step` after the first's.
                let rho = cx.b.ins().imul_imm_s(i, run.rho_step as i64);
                let ih = cx.b.ins().iadd(ih0, rho);
                let ih = cx.b.ins().iadd_imm_s(ih, run.first as i64);
                let dst_r = cx.offset(dst_c, i, run.at_step);
                fill_row(cx, spec, plan, run.first, ih, src_c, dst_r, pro);
            });
        }
    });
}

/// Scratch rows of a block that one run-time loop fills: rows `first + i * rho_step` for `i` in
/// `0..count`, each needed, whose phase slots start `i * at_step` floats after row `first`'s (per-row
/// panels: consecutive rows; flat panels: consecutive rows of one row phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowRun {
    first: usize,
    count: usize,
    rho_step: usize,
    at_step: usize,
}

/// The needed scratch rows as maximal runs ([`RowRun`]), so the fill is a loop per run instead of
/// one unrolled copy per row (a 10-row Winograd block was ~3,700 CLIF instructions, most of a
/// ResNet-50 JIT's time). Sound because [`ConvPlan::row_at`] is affine in the row index within a
/// run: `(rho * slots + slot) * sw_len` for per-row panels, `(p * slots + slot) * plane_len +
/// rho / sh * sw_len` for flat ones, where `p` depends on `rho % sh` only.
fn row_runs(plan: &ConvPlan, needed: &[bool]) -> Vec<RowRun> {
    let (rho_step, at_step) =
        if plan.flat { (plan.row_phase_slot.len(), plan.sw_len) } else { (1, plan.slots * plan.sw_len) };
    let mut runs: Vec<RowRun> = Vec::new();
    for class in 0..rho_step {
        let mut rho = class;
        while rho < needed.len() {
            if needed[rho] {
                match runs.last_mut() {
                    Some(run) if run.first % rho_step == class && run.first + run.count * rho_step == rho => {
                        run.count += 1
                    }
                    _ => runs.push(RowRun { first: rho, count: 1, rho_step, at_step }),
                }
            }
            rho += rho_step;
        }
    }
    runs
}

/// Fills one scratch row of channel `src_c` (the input channel) into `dst_c` (the channel's scratch
/// shifted by the row's place in its run): row `rho`'s layout, input row `ih` (zeros when `ih` is
/// outside the input).
#[allow(clippy::too_many_arguments)]
fn fill_row(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    rho: usize,
    ih: Value,
    src_c: Value,
    dst_c: Value,
    pro: Option<(Value, usize, bool)>,
) {
    let c = &spec.op.conv;
    let [_, h, w] = spec.input;
    let sw = c.stride[1];
    let pw = c.padding[1];
    // 0 <= ih < H as one unsigned compare.
    let inside = cx.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, h as i64);
    let rows_at: Vec<(usize, usize)> = plan
        .phase_slot
        .iter()
        .enumerate()
        .filter_map(|(f, slot)| slot.and_then(|s| plan.row_at(rho, s).map(|at| (f, at))))
        .collect();
    let then_block = cx.b.create_block();
    let else_block = cx.b.create_block();
    let done = cx.b.create_block();
    cx.b.ins().brif(inside, then_block, &[], else_block, &[]);
    cx.b.switch_to_block(then_block);
    cx.b.seal_block(then_block);
    cx.note(then_block, format!("fill: a row of the run from row {rho}, inside the input"));
    let src = cx.offset(src_c, ih, w);
    // Stride 4 with every phase kept (Winograd F(4x4), 11x11/4 stems): the columns every
    // phase has inside the input, four at a time, as 4x4 transposes of the input.
    let bulk = (sw == 4 && rows_at.len() == 4 && pro.is_none())
        .then(|| {
            let c0 = (0..4).map(|f| pw.saturating_sub(f).div_ceil(4)).max().unwrap_or(0);
            // The last chunk reads input columns up to 4c - pw + 15 < W.
            let c_end = ((w + pw).saturating_sub(16) / 4 + 1).min(plan.sw_len);
            let chunks = c_end.saturating_sub(c0) / 4;
            (c0, c0 + 4 * chunks)
        })
        .filter(|(c0, c1)| c1 > c0);
    if let Some((c0, c1)) = bulk {
        let dsts: Vec<usize> = {
            let mut at = [0; 4];
            for &(f, a) in &rows_at {
                at[f] = a;
            }
            at.to_vec()
        };
        copy_phases4(cx, src, c0 * 4 - pw, dst_c, &dsts, c0, (c1 - c0) / 4);
    }
    for &(f, at) in &rows_at {
        // Columns col with 0 <= col*sw + f - pw < W.
        let lo = pw.saturating_sub(f).div_ceil(sw).min(plan.sw_len);
        let hi = (w + pw).saturating_sub(f).div_ceil(sw).clamp(lo, plan.sw_len);
        let d = cx.add_floats(dst_c, at);
        zero_run(cx, d, 0, lo);
        match bulk {
            Some((c0, c1)) => {
                copy_run(cx, src, lo * sw + f - pw, sw, w, d, lo, c0 - lo, pro);
                copy_run(cx, src, c1 * sw + f - pw, sw, w, d, c1, hi - c1, pro);
            }
            None => copy_run(cx, src, lo * sw + f - pw, sw, w, d, lo, hi - lo, pro),
        }
        zero_run(cx, d, hi, plan.sw_len - hi);
    }
    cx.b.ins().jump(done, &[]);
    cx.b.switch_to_block(else_block);
    cx.b.seal_block(else_block);
    cx.note(else_block, format!("fill: a row of the run from row {rho}, in the padding"));
    for &(_, at) in &rows_at {
        zero_run(cx, dst_c, at, plan.sw_len);
    }
    cx.b.ins().jump(done, &[]);
    cx.b.switch_to_block(done);
    cx.b.seal_block(done);
}
