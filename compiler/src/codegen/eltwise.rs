//! Elementwise kernels: `add`, `mul`, `relu` and the other activations, per-channel `affine`
//! (+ReLU) and per-channel scaling (squeeze-and-excitation), the copies of a concatenation that is
//! not done in place, and channel shuffle.
//!
//! Loop nest: every value is a contiguous run of floats per sample (`base + n * stride + i`), so
//! add, mul, activations and copies walk runs with f32x4 loads (two vectors per iteration) and a
//! scalar tail. Affine and per-channel scaling walk the channels of their item, each channel plane a
//! run, with the channel's factor splatted once; channel shuffle copies whole planes, output
//! channel `j` from input channel `(j % g) * (C / g) + j / g`. Work items: add/mul/activations split
//! each sample into chunks of [`CHUNK`] floats; affine, scaling and shuffle into up to 16 groups of
//! channels; concat has one item per input. Items write disjoint output ranges, and every address is
//! inside the run or plane it walks, so the bounds check proves them. Inputs may alias the output
//! exactly (in-place activations/affine/add/mul, the memory plan only allows it for an input of the
//! output's shape): each element is read before it is written, by the same iteration. Shuffle never
//! runs in place (it reads other channels than it writes).
//!
//! ## Activations
//! Clamp (`relu6`, `hardtanh`), hardsigmoid and hardswish are PyTorch's f32 operations in PyTorch's
//! order (`min(max(x + 3, 0), 6) / 6`, `x * that / 6`, with a true division), so they equal the
//! reference interpreter bit for bit; `min`/`max` are the single-instruction forms that return a NaN
//! `x`, so NaN propagates as in PyTorch.
//!
//! Sigmoid and SiLU use `e = exp(-|x|)`: `sigmoid(x) = 1 / (1 + e)` for `x >= 0` and `e / (1 + e)`
//! for `x < 0` (never `exp` of a positive number, so nothing overflows and small results keep
//! their relative accuracy), one true division, and `silu(x) = x * sigmoid(x)`. `exp` is the
//! softmax kernels' ([`super::softmax::exp`]): range reduction `a = n ln2 + r` with `n = round(a /
//! ln2)` and `r = a - n ln2` in two FMAs (Cody-Waite, `ln2` split so `n * hi` is exact), `|r| <=
//! ln2 / 2`, `e^r` by the degree-5 minimax polynomial [`super::softmax::EXP_POLY`] in Horner form
//! (relative error 1.75e-7 as evaluated in f32), `2^n` built in the exponent bits. Below `-87.3`, `e` is taken as 0 (the true
//! value is under 1.3e-38: sigmoid's absolute error is below that, SiLU's below `|x|` times that).
//! Measured against f64 on 2^20 evenly spaced points of `[-87, 87]` plus 4096 points around 0
//! (test `sigmoid_and_silu_match_f64`, which enforces 4e-7): max relative error of sigmoid 2.80e-7
//! (at x = -10.95) and of SiLU 3.07e-7 (at x = -14.43), about 2.5 ulp (1.75e-7 and 2.12e-7 with
//! the degree-7 Taylor polynomial used before, which cost two FMAs more per `exp`), the same with the sse, avx2
//! and avx512 kernels on a Zen 4 host. NaN in gives NaN out; `sigmoid(+inf) = 1`,
//! `sigmoid(-inf) = 0`.

use super::cx::{KernelCx, VEC};
use crate::ir::Activation;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Floats per work item of add/mul/activations.
pub const CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum EltwiseOp {
    /// `out = in0 + in1`.
    Add,
    /// `out = max(in0, 0)`.
    Relu,
    /// `out = act(in0)` (see the module documentation).
    Activation(Activation),
    /// `out = in0 * in1`.
    Mul,
    /// `out = in0 * in1[c]` on channel planes of `plane` floats (`in1` holds `channels` floats
    /// per sample).
    ScaleChannels { channels: usize, plane: usize },
    /// Channel shuffle of `channels` planes of `plane` floats in `groups` groups.
    Shuffle { channels: usize, plane: usize, groups: usize },
    /// `out = in0 * scale[c] + shift[c]` (then ReLU), channel planes of `plane` floats.
    /// Weights: `[scale, shift]`, `channels` floats each.
    Affine { channels: usize, plane: usize, relu: bool },
    /// Concatenation: input `i` (`lens[i]` floats per sample) goes to output offset
    /// `sum(lens[..i])`.
    Concat { lens: Vec<usize> },
}

/// An elementwise kernel: the op, the floats per sample of the output, and sample strides.
#[derive(Debug, Clone, PartialEq)]
pub struct EltwiseSpec {
    pub op: EltwiseOp,
    pub len: usize,
    pub in_strides: Vec<usize>,
    pub out_stride: usize,
}

impl EltwiseSpec {
    pub fn items_per_sample(&self) -> usize {
        match &self.op {
            EltwiseOp::Add | EltwiseOp::Relu | EltwiseOp::Activation(_) | EltwiseOp::Mul => {
                self.len.div_ceil(CHUNK).max(1)
            }
            EltwiseOp::Affine { channels, .. }
            | EltwiseOp::ScaleChannels { channels, .. }
            | EltwiseOp::Shuffle { channels, .. } => (*channels).clamp(1, 16),
            EltwiseOp::Concat { lens } => lens.len(),
        }
    }

    pub fn input_count(&self) -> usize {
        match &self.op {
            EltwiseOp::Add | EltwiseOp::Mul | EltwiseOp::ScaleChannels { .. } => 2,
            EltwiseOp::Relu
            | EltwiseOp::Activation(_)
            | EltwiseOp::Affine { .. }
            | EltwiseOp::Shuffle { .. } => 1,
            EltwiseOp::Concat { lens } => lens.len(),
        }
    }

    /// Floats per sample of input `i`.
    pub fn input_len(&self, i: usize) -> usize {
        match &self.op {
            EltwiseOp::Concat { lens } => lens[i],
            EltwiseOp::ScaleChannels { channels, .. } if i == 1 => *channels,
            _ => self.len,
        }
    }
}

pub(crate) fn emit(cx: &mut KernelCx, spec: &EltwiseSpec) {
    let ips = spec.items_per_sample();
    let inputs: Vec<Value> = (0..spec.input_count()).map(|i| cx.ptr_at(cx.inputs, i)).collect();
    let weights = match spec.op {
        EltwiseOp::Affine { .. } => Some((cx.ptr_at(cx.weights, 0), cx.ptr_at(cx.weights, 1))),
        _ => None,
    };
    cx.for_items(|cx, item| {
        let (n, r) = cx.divmod(item, ips);
        let ins: Vec<Value> =
            inputs.iter().zip(&spec.in_strides).map(|(&p, &s)| cx.offset(p, n, s)).collect();
        let out = cx.offset(cx.output, n, spec.out_stride);
        match &spec.op {
            EltwiseOp::Add | EltwiseOp::Relu | EltwiseOp::Activation(_) | EltwiseOp::Mul => {
                let start = cx.b.ins().imul_imm_s(r, CHUNK as i64);
                let ins: Vec<Value> = ins.iter().map(|&p| cx.offset(p, start, 1)).collect();
                let out = cx.offset(out, start, 1);
                let chunks = ips;
                let last_len = spec.len - (chunks - 1) * CHUNK;
                let run = |cx: &mut KernelCx, len: usize| {
                    cx.for_run(len, |cx, ty, i| {
                        let a = load_at(cx, ty, ins[0], i);
                        let y = match &spec.op {
                            EltwiseOp::Relu => cx.relu(a),
                            EltwiseOp::Activation(act) => activation(cx, ty, *act, a),
                            EltwiseOp::Mul => {
                                let b = load_at(cx, ty, ins[1], i);
                                cx.b.ins().fmul(a, b)
                            }
                            _ => {
                                let b = load_at(cx, ty, ins[1], i);
                                cx.b.ins().fadd(a, b)
                            }
                        };
                        store_at(cx, y, out, i);
                    })
                };
                if chunks == 1 {
                    run(cx, last_len);
                } else {
                    let is_last = cx.b.ins().icmp_imm_s(
                        cranelift_codegen::ir::condcodes::IntCC::Equal,
                        r,
                        (chunks - 1) as i64,
                    );
                    if_else(cx, is_last, |cx| run(cx, last_len), |cx| run(cx, CHUNK));
                }
            }
            EltwiseOp::Affine { channels, plane, relu } => {
                let (scale, shift) = weights.expect("affine has weights");
                let per = channels.div_ceil(ips);
                let lo = cx.b.ins().imul_imm_s(r, per as i64);
                let hi = cx.b.ins().iadd_imm_s(lo, per as i64);
                let max = cx.ic(*channels as i64);
                let hi = cx.imin(hi, max);
                cx.for_range(lo, hi, 1, "channels", |cx, c| {
                    let s = cx.offset(scale, c, 1);
                    let t = cx.offset(shift, c, 1);
                    let (s, t) = (cx.load_s(s, 0), cx.load_s(t, 0));
                    let (sv, tv) = (cx.b.ins().splat(VEC, s), cx.b.ins().splat(VEC, t));
                    let x = cx.offset(ins[0], c, *plane);
                    let y = cx.offset(out, c, *plane);
                    cx.for_run(*plane, |cx, ty, i| {
                        let (s, t) = if ty == F32 { (s, t) } else { (sv, tv) };
                        let a = load_at(cx, ty, x, i);
                        let mut v = cx.fma(a, s, t);
                        if *relu {
                            v = cx.relu(v);
                        }
                        store_at(cx, v, y, i);
                    });
                });
            }
            EltwiseOp::ScaleChannels { channels, plane } => {
                let (lo, hi) = channel_range(cx, r, *channels, ips);
                cx.for_range(lo, hi, 1, "channels", |cx, c| {
                    let f = cx.offset(ins[1], c, 1);
                    let f = cx.load_s(f, 0);
                    let fv = cx.b.ins().splat(VEC, f);
                    let x = cx.offset(ins[0], c, *plane);
                    let y = cx.offset(out, c, *plane);
                    cx.for_run(*plane, |cx, ty, i| {
                        let a = load_at(cx, ty, x, i);
                        let v = cx.b.ins().fmul(a, if ty == F32 { f } else { fv });
                        store_at(cx, v, y, i);
                    });
                });
            }
            EltwiseOp::Shuffle { channels, plane, groups } => {
                let (lo, hi) = channel_range(cx, r, *channels, ips);
                let per = channels / groups;
                cx.for_range(lo, hi, 1, "output channels", |cx, j| {
                    // Output channel `j = i * groups + k` comes from input channel `k * per + i`.
                    let (i, k) = cx.divmod(j, *groups);
                    let from = cx.b.ins().imul_imm_s(k, per as i64);
                    let from = cx.b.ins().iadd(from, i);
                    let x = cx.offset(ins[0], from, *plane);
                    let y = cx.offset(out, j, *plane);
                    cx.for_run(*plane, |cx, ty, i| {
                        let v = load_at(cx, ty, x, i);
                        store_at(cx, v, y, i);
                    });
                });
            }
            EltwiseOp::Concat { lens } => {
                let mut at = 0;
                for (k, &len) in lens.iter().enumerate() {
                    let this =
                        cx.b.ins().icmp_imm_s(cranelift_codegen::ir::condcodes::IntCC::Equal, r, k as i64);
                    let src = ins[k];
                    let dst = cx.add_floats(out, at);
                    cx.if_then(this, |cx| {
                        cx.for_run(len, |cx, ty, i| {
                            let v = load_at(cx, ty, src, i);
                            store_at(cx, v, dst, i);
                        })
                    });
                    at += len;
                }
            }
        }
    });
}

/// Channels `lo..hi` of work item `r` of `items` (per sample) over `channels` channels.
fn channel_range(cx: &mut KernelCx, r: Value, channels: usize, items: usize) -> (Value, Value) {
    let per = channels.div_ceil(items);
    let lo = cx.b.ins().imul_imm_s(r, per as i64);
    let hi = cx.b.ins().iadd_imm_s(lo, per as i64);
    let max = cx.ic(channels as i64);
    let hi = cx.imin(hi, max);
    (lo, hi)
}

/// `cond ? a : b` lane by lane, `cond` the result of an `fcmp` on values of type `ty`.
fn select(cx: &mut KernelCx, ty: Type, cond: Value, a: Value, b: Value) -> Value {
    if ty == F32 {
        cx.b.ins().select(cond, a, b)
    } else {
        let mask = cx.bitcast(ty, cond);
        cx.b.ins().bitselect(mask, a, b)
    }
}

/// `act(x)` for one vector or scalar `x` of type `ty` (see the module documentation). The
/// convolution epilogues of the Cranelift kernels call this too (fused activations); the assembled
/// x86 tiles mirror it instruction for instruction with the same constants.
pub(crate) fn activation(cx: &mut KernelCx, ty: Type, act: Activation, x: Value) -> Value {
    match act {
        Activation::Clamp { min, max } => {
            // An absent bound is no instruction at all.
            let v = match min {
                Some(min) => {
                    let lo = cx.fconst(ty, min);
                    cx.max(lo, x)
                }
                None => x,
            };
            match max {
                Some(max) => {
                    let hi = cx.fconst(ty, max);
                    cx.min(hi, v)
                }
                None => v,
            }
        }
        Activation::Hardsigmoid | Activation::Hardswish => {
            let (zero, three, six) = (cx.fconst(ty, 0.0), cx.fconst(ty, 3.0), cx.fconst(ty, 6.0));
            let v = cx.b.ins().fadd(x, three);
            let v = cx.max(zero, v);
            let v = cx.min(six, v);
            let v = if act == Activation::Hardswish { cx.b.ins().fmul(x, v) } else { v };
            cx.b.ins().fdiv(v, six)
        }
        Activation::Sigmoid | Activation::Silu => {
            let s = sigmoid(cx, ty, x);
            if act == Activation::Silu {
                cx.b.ins().fmul(x, s)
            } else {
                s
            }
        }
    }
}

/// Below this, `exp` is taken as 0 (the true value is under 1.3e-38).
pub(crate) const EXP_MIN: f32 = super::softmax::EXP_LO;

/// `sigmoid(x)`: `num / (1 + e)` with `e = exp(-|x|)`, `num = x < 0 ? e : 1`; NaN stays NaN.
fn sigmoid(cx: &mut KernelCx, ty: Type, x: Value) -> Value {
    let (zero, one, floor) = (cx.fconst(ty, 0.0), cx.fconst(ty, 1.0), cx.fconst(ty, EXP_MIN));
    let a = cx.b.ins().fabs(x);
    let a = cx.b.ins().fneg(a);
    let e = super::softmax::exp(cx, ty, a);
    let under = cx.b.ins().fcmp(FloatCC::LessThan, a, floor);
    let e = select(cx, ty, under, zero, e);
    let negative = cx.b.ins().fcmp(FloatCC::LessThan, x, zero);
    let num = select(cx, ty, negative, e, one);
    let den = cx.b.ins().fadd(one, e);
    let s = cx.b.ins().fdiv(num, den);
    let nan = cx.b.ins().fcmp(FloatCC::Unordered, x, x);
    select(cx, ty, nan, x, s)
}

fn load_at(cx: &mut KernelCx, ty: Type, base: Value, i: Value) -> Value {
    let p = cx.offset(base, i, 1);
    cx.load(ty, p, 0)
}

fn store_at(cx: &mut KernelCx, v: Value, base: Value, i: Value) {
    let p = cx.offset(base, i, 1);
    cx.store(v, p, 0);
}

/// `if cond { a } else { b }`.
pub(crate) fn if_else(
    cx: &mut KernelCx,
    cond: Value,
    a: impl FnOnce(&mut KernelCx),
    b: impl FnOnce(&mut KernelCx),
) {
    let (yes, no, done) = (cx.b.create_block(), cx.b.create_block(), cx.b.create_block());
    cx.b.ins().brif(cond, yes, &[], no, &[]);
    cx.b.switch_to_block(yes);
    cx.b.seal_block(yes);
    a(cx);
    cx.b.ins().jump(done, &[]);
    cx.b.switch_to_block(no);
    cx.b.seal_block(no);
    b(cx);
    cx.b.ins().jump(done, &[]);
    cx.b.switch_to_block(done);
    cx.b.seal_block(done);
}
