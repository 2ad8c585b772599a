//! Softmax over a feature vector: `y_i = exp(x_i - max) / sum_j exp(x_j - max)`.
//!
//! Loop nest per work item (one sample): three passes over the run of `len` floats, f32x4 with a
//! scalar tail: the maximum; `e_i = exp(x_i - max)` stored to the output while summing; the output
//! scaled by `1 / sum`.
//!
//! `exp` is inline: `x = clamp(x, -87.3, 0)`, `n = round(x * log2(e))`, `r = x - n * ln2` (ln 2 split
//! in a high and a low part, two FMAs, so `r` is exact to ~1 ulp), `e^r` by the degree-5 polynomial
//! [`EXP_POLY`] on `|r| <= ln2/2` (the minimax fit of the relative error: 7.5e-8 in exact arithmetic,
//! 1.75e-7 as evaluated in f32), and `2^n` built in the exponent bits. The relative error of `exp`
//! is about 2 ulp (~2.4e-7); inputs below `max - 87.3` give
//! `~1.6e-38` instead of a smaller number or zero, an absolute error under 2e-38 per element.

use super::cx::{KernelCx, IVEC, VEC};
use cranelift_codegen::ir::types::{F32, I32};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxSpec {
    pub len: usize,
    pub in_stride: usize,
    pub out_stride: usize,
}

pub(crate) fn emit(cx: &mut KernelCx, spec: &SoftmaxSpec) {
    let x0 = cx.ptr_at(cx.inputs, 0);
    cx.for_items(|cx, n| {
        let x = cx.offset(x0, n, spec.in_stride);
        let y = cx.offset(cx.output, n, spec.out_stride);
        // Pass 1: maximum (a vector of partial maxima, then the lanes).
        let ninf = cx.fconst(VEC, f32::NEG_INFINITY);
        let mv = cx.var(VEC, ninf);
        let ninf_s = cx.fconst(F32, f32::NEG_INFINITY);
        let ms = cx.var(F32, ninf_s);
        cx.for_run(spec.len, |cx, ty, i| {
            let p = cx.offset(x, i, 1);
            let v = cx.load(ty, p, 0);
            let var = if ty == F32 { ms } else { mv };
            let m = cx.b.use_var(var);
            let m = cx.max(m, v);
            cx.b.def_var(var, m);
        });
        let (m_v, m_s) = (cx.b.use_var(mv), cx.b.use_var(ms));
        let m_h = cx.hmax(m_v);
        let max = cx.max(m_h, m_s);
        let max_v = cx.b.ins().splat(VEC, max);
        // Pass 2: exponentials and their sum.
        let zv = cx.fconst(VEC, 0.0);
        let sv = cx.var(VEC, zv);
        let zs = cx.fconst(F32, 0.0);
        let ss = cx.var(F32, zs);
        cx.for_run(spec.len, |cx, ty, i| {
            let p = cx.offset(x, i, 1);
            let v = cx.load(ty, p, 0);
            let m = if ty == F32 { max } else { max_v };
            let d = cx.b.ins().fsub(v, m);
            let e = exp(cx, ty, d);
            let q = cx.offset(y, i, 1);
            cx.store(e, q, 0);
            let var = if ty == F32 { ss } else { sv };
            let s = cx.b.use_var(var);
            let s = cx.b.ins().fadd(s, e);
            cx.b.def_var(var, s);
        });
        let (s_v, s_s) = (cx.b.use_var(sv), cx.b.use_var(ss));
        let s_h = cx.hsum(s_v);
        let sum = cx.b.ins().fadd(s_h, s_s);
        let one = cx.fconst(F32, 1.0);
        let inv = cx.b.ins().fdiv(one, sum);
        let inv_v = cx.b.ins().splat(VEC, inv);
        // Pass 3: normalise.
        cx.for_run(spec.len, |cx, ty, i| {
            let q = cx.offset(y, i, 1);
            let e = cx.load(ty, q, 0);
            let k = if ty == F32 { inv } else { inv_v };
            let r = cx.b.ins().fmul(e, k);
            cx.store(r, q, 0);
        });
    });
}

/// `exp`'s inputs are clamped to `[EXP_LO, 0]`.
pub(crate) const EXP_LO: f32 = -87.3;
/// `-ln 2 = NEG_LN2_HI + NEG_LN2_LO`, `NEG_LN2_HI` exact in few bits so `n * NEG_LN2_HI` is exact.
pub(crate) const NEG_LN2_HI: f32 = -0.693_359_4;
pub(crate) const NEG_LN2_LO: f32 = 2.121_944_4e-4;
/// `e^r` on `|r| <= ln2/2` to degree 5, highest degree first (Horner form): the polynomial of
/// least maximum relative error (Remez), its coefficients rounded to f32 with the constant term
/// exactly 1 (`exp(0) = 1`) and then nudged by a few ulps to the least worst error of f32 Horner
/// steps with FMAs: 1.75e-7 (7.5e-8 before rounding). Derived by `scripts/exp_poly.py`. Degree 5
/// instead of a degree-7 Taylor polynomial of similar accuracy: two FMAs fewer in every `exp`,
/// which is most of a fused SiLU's cost.
pub(crate) const EXP_POLY: [f32; 6] =
    [0.008_297_655, 0.041_915_413, 0.166_677_55, 0.499_989_93, 0.999_999_64, 1.0];
/// `2^n` is `(n + EXP_BIAS) << 23` in the exponent bits.
pub(crate) const EXP_BIAS: i32 = 127;

/// `exp(x)` for `x <= 0` (see the module documentation for the accuracy). The assembled tiles'
/// copy (`tile::x86`, fused activations) uses the same constants in the same order.
pub(crate) fn exp(cx: &mut KernelCx, ty: Type, x: Value) -> Value {
    let lo = cx.fconst(ty, EXP_LO);
    let hi = cx.fconst(ty, 0.0);
    let x = cx.max(x, lo);
    let x = cx.min(x, hi);
    let log2e = cx.fconst(ty, std::f32::consts::LOG2_E);
    let t = cx.b.ins().fmul(x, log2e);
    let n = cx.b.ins().nearest(t);
    let neg_hi = cx.fconst(ty, NEG_LN2_HI);
    let neg_lo = cx.fconst(ty, NEG_LN2_LO);
    let r = cx.fma(n, neg_hi, x);
    let r = cx.fma(n, neg_lo, r);
    let mut p = cx.fconst(ty, EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        let c = cx.fconst(ty, c);
        p = cx.fma(p, r, c);
    }
    // 2^n: (n + 127) << 23 in the exponent bits.
    let bias = EXP_BIAS as i64;
    let ni =
        if ty == F32 { cx.b.ins().fcvt_to_sint_sat(I32, n) } else { cx.b.ins().fcvt_to_sint_sat(IVEC, n) };
    let b = if ty == F32 {
        cx.b.ins().iconst(I32, bias)
    } else {
        let s = cx.b.ins().iconst(I32, bias);
        cx.b.ins().splat(IVEC, s)
    };
    let e = cx.b.ins().iadd(ni, b);
    let e = cx.b.ins().ishl_imm_s(e, 23);
    let scale = cx.bitcast(ty, e);
    cx.b.ins().fmul(p, scale)
}
