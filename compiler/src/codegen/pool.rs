//! Pooling: max and average (PyTorch's `ceil_mode`, padding and `count_include_pad` semantics) and
//! adaptive average pooling.
//!
//! Loop nest per work item (one channel plane of one sample): `for oh { for ow { window } }`. For
//! max/avg pooling the `KH x KW` window is unrolled: each tap's row and column are clamped into
//! the input for the load (so no load leaves the plane) and the loaded value is replaced by the
//! identity (`-inf` for max, `0` for sum) when the tap lies in the padding or past the input (a
//! ceil-mode window). The average divides by PyTorch's count: with `count_include_pad`, the window
//! clipped to the *padded* input `(min(hs + KH, H + ph) - hs) * (min(ws + KW, W + pw) - ws)`;
//! without, the number of taps inside the input. Adaptive pooling uses PyTorch's bins
//! `[floor(o * H / OH), ceil((o + 1) * H / OH))` with run-time loops over the bin.
//!
//! Max pooling runs on vectors over output columns ([`MaxRows`]): the item first copies its plane
//! into padded, phase-split rows in the scratch (as the convolution row panels do: for a column
//! stride `sw`, phase `f` holds padded columns `f, f + sw, ...`; padding, and the rows and columns
//! a ceil-mode window overhangs, hold `-inf`), so output column `ow` of tap `(kh, kw)` is column
//! `ow + (kw*dw) / sw` of phase `(kw*dw) % sw` and four consecutive outputs are one vector load
//! per tap, with no branch. A NaN anywhere in a window makes the output NaN, as in PyTorch. Average
//! and adaptive pooling stay scalar, except a mean over a whole plane ([`plane_mean`]): global
//! average pooling, which squeeze-and-excitation blocks run on the large planes of a network.
//!
//! With dilation 1 (every seed model's max pools) a faster path runs first ([`row_max_plane`]):
//! per output row, the column-wise maximum of the window's rows into one padded phase row, then
//! the maximum along it, `KH + KW` vector loads per four outputs instead of `KH * KW` and no
//! per-tap NaN test; a plane in which it saw a NaN is recomputed by the exact path above.
//! Pooling kernels are compiled without Cranelift's egraph optimiser ([`super::KernelSpec::opt_level`]):
//! the generator already places address arithmetic outside the loops, and the optimiser was seen
//! to sink it back into the innermost loop (row clamps and plane offsets recomputed per vector).

use super::cx::{KernelCx, LANES, VEC};
use super::rows::{copy_run, fill_run};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I32X4, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
    Adaptive,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub kind: PoolKind,
    /// `[C, H, W]` and `[C, OH, OW]`.
    pub input: [usize; 3],
    pub output: [usize; 3],
    /// Window geometry (ignored by adaptive pooling).
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub in_stride: usize,
    pub out_stride: usize,
}

impl PoolSpec {
    pub fn items_per_sample(&self) -> usize {
        self.input[0]
    }

    /// Whether every output is the mean of a whole input plane: adaptive pooling to 1x1, or an
    /// unpadded average pool whose one window is the plane (the count is then `H * W` whether or
    /// not padding counts). Squeeze-and-excitation and every classifier head pool this way.
    pub fn is_global_mean(&self) -> bool {
        let [_, h, w] = self.input;
        let one_output = self.output[1..] == [1, 1];
        match self.kind {
            PoolKind::Adaptive => one_output,
            PoolKind::Avg { .. } => one_output && self.kernel == [h, w] && self.padding == [0, 0],
            PoolKind::Max => false,
        }
    }

    /// Floats of per-thread scratch (the padded rows of a max pool).
    pub fn scratch_floats(&self) -> usize {
        match self.kind {
            PoolKind::Max => MaxRows::new(self).floats(),
            _ => 0,
        }
    }
}

/// The padded, phase-split rows of one channel plane of a max pool.
struct MaxRows {
    /// Padded rows: `(OH - 1) * sh + (KH - 1) * dh + 1`, padded row `r` being input row `r - ph`.
    rows: usize,
    /// The slot of each column phase (`None`: no tap reads it), and slots per row.
    phase_slot: Vec<Option<usize>>,
    slots: usize,
    /// Floats per phase row: whole vectors over `OW` plus the largest tap shift.
    sw_len: usize,
}

impl MaxRows {
    fn new(spec: &PoolSpec) -> MaxRows {
        let [_, oh, ow] = spec.output;
        let ([kh, kw], [sh, sw], [dh, dw]) = (spec.kernel, spec.stride, spec.dilation);
        let (phase_slot, slots) = super::rows::phase_slots(kw, dw, sw);
        let max_shift = (kw - 1) * dw / sw;
        MaxRows {
            rows: (oh - 1) * sh + (kh - 1) * dh + 1,
            phase_slot,
            slots,
            sw_len: (ow.div_ceil(LANES) * LANES + max_shift).div_ceil(LANES) * LANES,
        }
    }

    fn row_len(&self) -> usize {
        self.slots * self.sw_len
    }

    fn floats(&self) -> usize {
        self.rows * self.row_len()
    }
}

pub(crate) fn emit(cx: &mut KernelCx, spec: &PoolSpec) {
    if spec.kind == PoolKind::Max {
        return emit_max(cx, spec);
    }
    let [c, h, w] = spec.input;
    let [_, oh_n, ow_n] = spec.output;
    let global = spec.is_global_mean();
    let x0 = cx.ptr_at(cx.inputs, 0);
    cx.for_items(|cx, item| {
        let (n, ch) = cx.divmod(item, c);
        let x = cx.offset(x0, n, spec.in_stride);
        let x = cx.offset(x, ch, h * w);
        let y = cx.offset(cx.output, n, spec.out_stride);
        let y = cx.offset(y, ch, oh_n * ow_n);
        if global {
            let v = plane_mean(cx, x, h * w);
            cx.store(v, y, 0);
            return;
        }
        let zero = cx.ic(0);
        let oh_hi = cx.ic(oh_n as i64);
        cx.for_range(zero, oh_hi, 1, "output rows", |cx, oh| {
            let zero = cx.ic(0);
            let ow_hi = cx.ic(ow_n as i64);
            cx.for_range(zero, ow_hi, 1, "output columns", |cx, ow| {
                let v = match spec.kind {
                    PoolKind::Adaptive => adaptive(cx, spec, x, oh, ow),
                    _ => window(cx, spec, x, oh, ow),
                };
                let at = cx.b.ins().imul_imm_s(oh, ow_n as i64);
                let at = cx.b.ins().iadd(at, ow);
                let p = cx.offset(y, at, 1);
                cx.store(v, p, 0);
            });
        });
    });
}

/// The mean of the `len` consecutive floats at `x`: four vector accumulators over runs of 16
/// floats (independent additions, so the loop runs at load throughput rather than at one `fadd`
/// latency per element, as the per-bin scalar loop does), then the remaining vectors into the first
/// accumulator and the scalar tail on its own, summed as `((a0 + a1) + (a2 + a3))` across lanes plus
/// the tail. Sound: a sum in another order of the same terms (f32 rounding differs from the
/// reference's f64 sum within the pooling tests' tolerance), divided by the count as PyTorch does.
fn plane_mean(cx: &mut KernelCx, x: Value, len: usize) -> Value {
    const UNROLL: usize = 4;
    let zero = cx.fconst(VEC, 0.0);
    let acc: Vec<Variable> = (0..UNROLL).map(|_| cx.var(VEC, zero)).collect();
    let chunks = len / (UNROLL * LANES);
    if chunks > 0 {
        let (lo, hi) = (cx.ic(0), cx.ic((chunks * UNROLL * LANES) as i64));
        cx.for_range(lo, hi, (UNROLL * LANES) as i64, "plane sum", |cx, i| {
            let p = cx.offset(x, i, 1);
            for (k, &a) in acc.iter().enumerate() {
                let v = cx.load_v(p, k * LANES);
                let s = cx.b.use_var(a);
                let s = cx.b.ins().fadd(s, v);
                cx.b.def_var(a, s);
            }
        });
    }
    let mut at = chunks * UNROLL * LANES;
    while len - at >= LANES {
        let v = cx.load_v(x, at);
        let s = cx.b.use_var(acc[0]);
        let s = cx.b.ins().fadd(s, v);
        cx.b.def_var(acc[0], s);
        at += LANES;
    }
    let [a0, a1, a2, a3] = [0, 1, 2, 3].map(|k| cx.b.use_var(acc[k]));
    let lo = cx.b.ins().fadd(a0, a1);
    let hi = cx.b.ins().fadd(a2, a3);
    let all = cx.b.ins().fadd(lo, hi);
    let mut sum = cx.hsum(all);
    for t in at..len {
        let v = cx.load_s(x, t);
        sum = cx.b.ins().fadd(sum, v);
    }
    let count = cx.fconst(F32, len as f32);
    cx.b.ins().fdiv(sum, count)
}

/// One tap coordinate: `start + k * d`, whether it lies inside `0..size`, and the clamped index.
fn tap(cx: &mut KernelCx, start: Value, k: usize, d: usize, size: usize) -> (Value, Value) {
    let i = cx.b.ins().iadd_imm_s(start, (k * d) as i64);
    let inside = cx.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, i, size as i64);
    let zero = cx.ic(0);
    let top = cx.ic(size as i64 - 1);
    let lo = cx.imax(i, zero);
    let clamped = cx.imin(lo, top);
    (inside, clamped)
}

fn window(cx: &mut KernelCx, spec: &PoolSpec, x: Value, oh: Value, ow: Value) -> Value {
    let [_, h, w] = spec.input;
    let [kh_n, kw_n] = spec.kernel;
    let is_max = spec.kind == PoolKind::Max;
    let hs = cx.b.ins().imul_imm_s(oh, spec.stride[0] as i64);
    let hs = cx.b.ins().iadd_imm_s(hs, -(spec.padding[0] as i64));
    let ws = cx.b.ins().imul_imm_s(ow, spec.stride[1] as i64);
    let ws = cx.b.ins().iadd_imm_s(ws, -(spec.padding[1] as i64));
    let identity = cx.fconst(F32, if is_max { f32::NEG_INFINITY } else { 0.0 });
    let rows: Vec<(Value, Value)> = (0..kh_n).map(|k| tap(cx, hs, k, spec.dilation[0], h)).collect();
    let cols: Vec<(Value, Value)> = (0..kw_n).map(|k| tap(cx, ws, k, spec.dilation[1], w)).collect();
    let mut acc = identity;
    for &(row_in, row) in &rows {
        let row_ptr = cx.offset(x, row, w);
        for &(col_in, col) in &cols {
            let p = cx.offset(row_ptr, col, 1);
            let v = cx.load_s(p, 0);
            let inside = cx.b.ins().band(row_in, col_in);
            let v = cx.b.ins().select(inside, v, identity);
            acc = if is_max { cx.max(acc, v) } else { cx.b.ins().fadd(acc, v) };
        }
    }
    let PoolKind::Avg { count_include_pad } = spec.kind else { return acc };
    let count = if count_include_pad {
        // The window clipped to the padded input.
        let span = |cx: &mut KernelCx, start: Value, k: usize, size: usize, pad: usize| {
            let end = cx.b.ins().iadd_imm_s(start, k as i64);
            let limit = cx.ic((size + pad) as i64);
            let end = cx.imin(end, limit);
            cx.b.ins().isub(end, start)
        };
        let a = span(cx, hs, kh_n, h, spec.padding[0]);
        let b = span(cx, ws, kw_n, w, spec.padding[1]);
        cx.b.ins().imul(a, b)
    } else {
        let count = |cx: &mut KernelCx, taps: &[(Value, Value)]| {
            let mut n = cx.ic(0);
            for &(inside, _) in taps {
                let one = cx.b.ins().uextend(I64, inside);
                n = cx.b.ins().iadd(n, one);
            }
            n
        };
        let a = count(cx, &rows);
        let b = count(cx, &cols);
        cx.b.ins().imul(a, b)
    };
    let count = cx.b.ins().fcvt_from_sint(F32, count);
    cx.b.ins().fdiv(acc, count)
}

fn adaptive(cx: &mut KernelCx, spec: &PoolSpec, x: Value, oh: Value, ow: Value) -> Value {
    let [_, h, w] = spec.input;
    let [_, oh_n, ow_n] = spec.output;
    // [floor(o * size / out), ceil((o + 1) * size / out))
    let bin = |cx: &mut KernelCx, o: Value, size: usize, out: usize| {
        let a = cx.b.ins().imul_imm_s(o, size as i64);
        let start = cx.b.ins().udiv_imm_u(a, out as i64);
        let b = cx.b.ins().iadd_imm_s(a, (size + out - 1) as i64);
        let end = cx.b.ins().udiv_imm_u(b, out as i64);
        (start, end)
    };
    let (hs, he) = bin(cx, oh, h, oh_n);
    let (ws, we) = bin(cx, ow, w, ow_n);
    let zero = cx.fconst(F32, 0.0);
    let sum = cx.var(F32, zero);
    cx.for_range(hs, he, 1, "bin rows", |cx, ih| {
        let row = cx.offset(x, ih, w);
        cx.for_range(ws, we, 1, "bin columns", |cx, iw| {
            let p = cx.offset(row, iw, 1);
            let v = cx.load_s(p, 0);
            let s = cx.b.use_var(sum);
            let s = cx.b.ins().fadd(s, v);
            cx.b.def_var(sum, s);
        });
    });
    let a = cx.b.ins().isub(he, hs);
    let b = cx.b.ins().isub(we, ws);
    let count = cx.b.ins().imul(a, b);
    let count = cx.b.ins().fcvt_from_sint(F32, count);
    let s = cx.b.use_var(sum);
    cx.b.ins().fdiv(s, count)
}

/// Max pooling: the row-max fast path where it applies, else the exact padded-rows path.
fn emit_max(cx: &mut KernelCx, spec: &PoolSpec) {
    let [c, h, w] = spec.input;
    let [_, oh_n, ow_n] = spec.output;
    let fast = row_max_applies(spec);
    let x0 = cx.ptr_at(cx.inputs, 0);
    cx.for_items(|cx, item| {
        let (n, ch) = cx.divmod(item, c);
        let x = cx.offset(x0, n, spec.in_stride);
        let x = cx.offset(x, ch, h * w);
        let y = cx.offset(cx.output, n, spec.out_stride);
        let y = cx.offset(y, ch, oh_n * ow_n);
        if fast {
            let saw_nan = row_max_plane(cx, spec, x, y);
            cx.if_then(saw_nan, |cx| exact_plane(cx, spec, x, y));
        } else {
            exact_plane(cx, spec, x, y);
        }
    });
}

/// One channel plane by padded phase rows with a NaN test per tap (see the module documentation).
fn exact_plane(cx: &mut KernelCx, spec: &PoolSpec, x: Value, y: Value) {
    let [_, h, w] = spec.input;
    let [_, oh_n, ow_n] = spec.output;
    let ([kh_n, kw_n], [sh, sw], [dh, dw]) = (spec.kernel, spec.stride, spec.dilation);
    let [ph, pw] = spec.padding;
    let m = MaxRows::new(spec);
    let row_len = m.row_len();
    {
        // Fill: padded row r is input row r - ph; phase f, column col is padded column col*sw + f.
        let (r0, r1) = (cx.ic(0), cx.ic(m.rows as i64));
        cx.for_range(r0, r1, 1, "fill: padded rows", |cx, r| {
            let dst = cx.offset(cx.scratch, r, row_len);
            let ih = cx.b.ins().iadd_imm_s(r, -(ph as i64));
            // 0 <= ih < H as one unsigned compare.
            let inside = cx.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, h as i64);
            cx.if_else_with(
                &mut (),
                inside,
                |cx, _| {
                    let src = cx.offset(x, ih, w);
                    for (f, slot) in m.phase_slot.iter().enumerate() {
                        let Some(slot) = slot else { continue };
                        let lo = pw.saturating_sub(f).div_ceil(sw).min(m.sw_len);
                        let hi = (w + pw).saturating_sub(f).div_ceil(sw).clamp(lo, m.sw_len);
                        let at = slot * m.sw_len;
                        fill_run(cx, dst, at, lo, f32::NEG_INFINITY);
                        copy_run(cx, src, lo * sw + f - pw, sw, w, dst, at + lo, hi - lo, None);
                        fill_run(cx, dst, at + hi, m.sw_len - hi, f32::NEG_INFINITY);
                    }
                },
                |cx, _| fill_run(cx, dst, 0, row_len, f32::NEG_INFINITY),
            );
        });
        // Max over the taps, four output columns at a time.
        let neg_inf = cx.fconst(VEC, f32::NEG_INFINITY);
        let nan = cx.fconst(VEC, f32::NAN);
        let zero = cx.ic(0);
        let oh_hi = cx.ic(oh_n as i64);
        cx.for_range(zero, oh_hi, 1, "output rows", |cx, oh| {
            let top = cx.offset(cx.scratch, oh, sh * row_len);
            let out_row = cx.b.ins().imul_imm_s(oh, ow_n as i64);
            let out_row = cx.offset(y, out_row, 1);
            // One vector of outputs at float `col` of the row: `lanes` of its lanes stored.
            let vector = |cx: &mut KernelCx, col: Value, lanes: usize| {
                let base = cx.offset(top, col, 1);
                let mut acc = neg_inf;
                let mut any_nan: Option<Value> = None;
                for kh in 0..kh_n {
                    for kw in 0..kw_n {
                        let q = kw * dw;
                        let slot = m.phase_slot[q % sw].expect("every tap's phase has a slot");
                        let x = cx.load_v(base, kh * dh * row_len + slot * m.sw_len + q / sw);
                        acc = cx.max(acc, x);
                        let unordered = cx.b.ins().fcmp(FloatCC::Unordered, x, x);
                        any_nan = Some(match any_nan {
                            Some(a) => cx.b.ins().bor(a, unordered),
                            None => unordered,
                        });
                    }
                }
                if let Some(mask) = any_nan {
                    let mask = cx.bitcast(VEC, mask);
                    acc = cx.b.ins().bitselect(mask, nan, acc);
                }
                let out = cx.offset(out_row, col, 1);
                cx.store_lanes(acc, out, 0, lanes);
            };
            for_output_vectors(cx, ow_n, "output vectors", vector);
        });
    }
}

/// Whether the row-max fast path ([`row_max_plane`]) computes `spec` exactly: dilation 1, and
/// every window holds at least one input row (so clamping its row indices into the input only
/// repeats rows it holds, which leaves the maximum unchanged). PyTorch's constraints (padding at
/// most half the kernel, a ceil-mode window starting inside the input) imply the latter.
fn row_max_applies(spec: &PoolSpec) -> bool {
    let [_, h, _] = spec.input;
    let [_, oh, _] = spec.output;
    let ([kh, _], [sh, _], [ph, _]) = (spec.kernel, spec.stride, spec.padding);
    spec.dilation == [1, 1] && ph < kh && (oh - 1) * sh < h + ph
}

/// Max pooling of one channel plane in two passes per output row, without a per-tap NaN test:
/// the column-wise maximum of the `KH` input rows of the window (row indices clamped into the
/// input, see [`row_max_applies`]) goes into one padded phase row as the exact path's, then `KW`
/// vector loads per four outputs take the maximum along the row. `KH + KW` loads per output
/// vector instead of `KH * KW`, and no scratch copy of the whole plane. `maxps` does not
/// propagate NaN, so every loaded input vector is tested for NaN (one compare per two vectors)
/// and the returned flag says whether any was; the caller then recomputes the plane exactly.
fn row_max_plane(cx: &mut KernelCx, spec: &PoolSpec, x: Value, y: Value) -> Value {
    let [_, h, w] = spec.input;
    let [_, oh_n, ow_n] = spec.output;
    let ([kh_n, kw_n], [sh, sw]) = (spec.kernel, spec.stride);
    let [ph, pw] = spec.padding;
    // One padded row of the exact path's layout (its phase slots and row length).
    let rm = MaxRows::new(spec);
    let no_nan = cx.fconst(VEC, 0.0);
    let nan_v = cx.var(VEC, no_nan);
    let no = cx.b.ins().iconst(I8, 0);
    let nan_s = cx.var(I8, no);
    let (zero, oh_hi) = (cx.ic(0), cx.ic(oh_n as i64));
    cx.for_range(zero, oh_hi, 1, "row max: output rows", |cx, oh| {
        let hs = cx.b.ins().imul_imm_s(oh, sh as i64);
        let hs = cx.b.ins().iadd_imm_s(hs, -(ph as i64));
        let (first, last) = (cx.ic(0), cx.ic(h as i64 - 1));
        let rows: Vec<Value> = (0..kh_n)
            .map(|k| {
                let r = cx.b.ins().iadd_imm_s(hs, k as i64);
                let r = cx.imax(r, first);
                let r = cx.imin(r, last);
                cx.offset(x, r, w)
            })
            .collect();
        let dst = cx.scratch;
        for (f, slot) in rm.phase_slot.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let lo = pw.saturating_sub(f).div_ceil(sw).min(rm.sw_len);
            let hi = (w + pw).saturating_sub(f).div_ceil(sw).clamp(lo, rm.sw_len);
            let at = slot * rm.sw_len;
            fill_run(cx, dst, at, lo, f32::NEG_INFINITY);
            let run = MaxRun { from: lo * sw + f - pw, step: sw, row: w, at: at + lo, len: hi - lo };
            max_rows_run(cx, &rows, &run, dst, (nan_v, nan_s));
            fill_run(cx, dst, at + hi, rm.sw_len - hi, f32::NEG_INFINITY);
        }
        let out_row = cx.b.ins().imul_imm_s(oh, ow_n as i64);
        let out_row = cx.offset(y, out_row, 1);
        let vector = |cx: &mut KernelCx, col: Value, lanes: usize| {
            let base = cx.offset(dst, col, 1);
            let mut acc = None;
            for q in 0..kw_n {
                let slot = rm.phase_slot[q % sw].expect("every tap's phase has a slot");
                let v = cx.load_v(base, slot * rm.sw_len + q / sw);
                acc = Some(max_into(cx, acc, v));
            }
            let out = cx.offset(out_row, col, 1);
            cx.store_lanes(acc.expect("a window has a tap"), out, 0, lanes);
        };
        for_output_vectors(cx, ow_n, "row max: output vectors", vector);
    });
    let v = cx.b.use_var(nan_v);
    let v = cx.bitcast(I32X4, v);
    let any_v = cx.b.ins().vany_true(v);
    let any_s = cx.b.use_var(nan_s);
    cx.b.ins().bor(any_v, any_s)
}

/// A run of one phase row: `len` floats from columns `from + i * step` of input rows of `row`
/// floats, stored from `at` of the scratch row.
struct MaxRun {
    from: usize,
    step: usize,
    row: usize,
    at: usize,
    len: usize,
}

/// Stores at `dst + run.at + i` the maximum over `rows` of `row[run.from + i * run.step]`, and
/// ORs into `nan` (a vector and a scalar flag) whether any loaded float is NaN. Reads stay inside
/// each row. Stride 1 is one vector load per row and four outputs; stride 2 de-interleaves two
/// vectors per row and four outputs; other strides gather float by float.
fn max_rows_run(cx: &mut KernelCx, rows: &[Value], run: &MaxRun, dst: Value, nan: (Variable, Variable)) {
    let srcs: Vec<Value> = rows.iter().map(|&r| cx.add_floats(r, run.from)).collect();
    let dst = cx.add_floats(dst, run.at);
    let per_vector = match run.step {
        1 => Some(LANES),
        2 => Some(2 * LANES),
        _ => None,
    };
    // Whole vectors whose loads stay inside the row.
    let vecs =
        per_vector.map_or(0, |floats| (run.len / LANES).min(run.row.saturating_sub(run.from) / floats));
    if vecs > 0 {
        cx.for_count(vecs, "row max: column maxima", |cx, i| {
            let floats = per_vector.expect("a vector path");
            let mut tested: Vec<Value> = Vec::new();
            let mut halves = [None, None];
            for &s in &srcs {
                let s = cx.offset(s, i, floats);
                for (half, acc) in halves.iter_mut().enumerate().take(floats / LANES) {
                    let v = cx.load_v(s, half * LANES);
                    tested.push(v);
                    *acc = Some(max_into(cx, *acc, v));
                }
            }
            for pair in tested.chunks(2) {
                let unordered = cx.b.ins().fcmp(FloatCC::Unordered, pair[0], pair[pair.len() - 1]);
                let unordered = cx.bitcast(VEC, unordered);
                let seen = cx.b.use_var(nan.0);
                let seen = cx.b.ins().bor(seen, unordered);
                cx.b.def_var(nan.0, seen);
            }
            let v = match halves {
                [Some(a), Some(b)] => cx.shuffle(a, b, [0, 2, 4, 6]),
                [Some(a), None] => a,
                _ => unreachable!("at least one row"),
            };
            let d = cx.offset(dst, i, LANES);
            cx.store(v, d, 0);
        });
    }
    let done = vecs * LANES;
    let srcs: Vec<Value> = srcs.iter().map(|&s| cx.add_floats(s, done * run.step)).collect();
    let dst = cx.add_floats(dst, done);
    cx.for_count(run.len - done, "row max: gathered columns", |cx, i| {
        let mut acc = None;
        for &s in &srcs {
            let s = cx.offset(s, i, run.step);
            let v = cx.load_s(s, 0);
            let unordered = cx.b.ins().fcmp(FloatCC::Unordered, v, v);
            let seen = cx.b.use_var(nan.1);
            let seen = cx.b.ins().bor(seen, unordered);
            cx.b.def_var(nan.1, seen);
            acc = Some(max_into(cx, acc, v));
        }
        let d = cx.offset(dst, i, 1);
        cx.store(acc.expect("at least one row"), d, 0);
    });
}

/// `max(acc, v)`, or `v` for the first value of a chain.
fn max_into(cx: &mut KernelCx, acc: Option<Value>, v: Value) -> Value {
    match acc {
        Some(a) => cx.max(a, v),
        None => v,
    }
}

/// Calls `vector(cx, col, lanes)` for each vector of an output row of `width` floats: a loop over
/// the whole vectors (`lanes = LANES`), then the partial one at the end, if any.
fn for_output_vectors(
    cx: &mut KernelCx,
    width: usize,
    note: &str,
    mut vector: impl FnMut(&mut KernelCx, Value, usize),
) {
    let full = width / LANES;
    if full > 0 {
        let (v0, v1) = (cx.ic(0), cx.ic((full * LANES) as i64));
        cx.for_range(v0, v1, LANES as i64, note, |cx, col| vector(cx, col, LANES));
    }
    if width % LANES > 0 {
        let col = cx.ic((full * LANES) as i64);
        vector(cx, col, width % LANES);
    }
}
