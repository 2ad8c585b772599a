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
//! The code is scalar: pooling is a few percent of a CNN's time; vectorising across output columns
//! needs strided gathers (future work).

use super::cx::KernelCx;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

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
}

pub(crate) fn emit(cx: &mut KernelCx, spec: &PoolSpec) {
    let [c, h, w] = spec.input;
    let [_, oh_n, ow_n] = spec.output;
    let x0 = cx.ptr_at(cx.inputs, 0);
    cx.for_items(|cx, item| {
        let (n, ch) = cx.divmod(item, c);
        let x = cx.offset(x0, n, spec.in_stride);
        let x = cx.offset(x, ch, h * w);
        let y = cx.offset(cx.output, n, spec.out_stride);
        let y = cx.offset(y, ch, oh_n * ow_n);
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
