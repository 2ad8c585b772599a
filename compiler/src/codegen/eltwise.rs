//! Elementwise kernels: `add`, `relu`, per-channel `affine` (+ReLU), and the copies of a
//! concatenation that is not done in place.
//!
//! Loop nest: every value is a contiguous run of floats per sample (`base + n * stride + i`), so
//! add, ReLU and copies walk runs with f32x4 loads (two vectors per iteration) and a scalar tail.
//! Affine walks the channels of its item, each channel plane a run, with the channel's scale and
//! shift splatted once. Work items: add/ReLU split each sample into chunks of [`CHUNK`] floats;
//! affine into up to 16 groups of channels; concat has one item per input. Items write disjoint
//! output ranges. Inputs may alias the output exactly (in-place ReLU/affine/add): each element is
//! read before it is written, by the same iteration.

use super::cx::{KernelCx, VEC};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Floats per work item of add/ReLU.
pub const CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum EltwiseOp {
    /// `out = in0 + in1`.
    Add,
    /// `out = max(in0, 0)`.
    Relu,
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
            EltwiseOp::Add | EltwiseOp::Relu => self.len.div_ceil(CHUNK).max(1),
            EltwiseOp::Affine { channels, .. } => (*channels).clamp(1, 16),
            EltwiseOp::Concat { lens } => lens.len(),
        }
    }

    pub fn input_count(&self) -> usize {
        match &self.op {
            EltwiseOp::Add => 2,
            EltwiseOp::Relu | EltwiseOp::Affine { .. } => 1,
            EltwiseOp::Concat { lens } => lens.len(),
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
            EltwiseOp::Add | EltwiseOp::Relu => {
                let relu = spec.op == EltwiseOp::Relu;
                let start = cx.b.ins().imul_imm_s(r, CHUNK as i64);
                let ins: Vec<Value> = ins.iter().map(|&p| cx.offset(p, start, 1)).collect();
                let out = cx.offset(out, start, 1);
                let chunks = ips;
                let last_len = spec.len - (chunks - 1) * CHUNK;
                let run = |cx: &mut KernelCx, len: usize| {
                    cx.for_run(len, |cx, ty, i| {
                        let a = load_at(cx, ty, ins[0], i);
                        let y = if relu {
                            cx.relu(a)
                        } else {
                            let b = load_at(cx, ty, ins[1], i);
                            cx.b.ins().fadd(a, b)
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
