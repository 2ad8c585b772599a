//! Local response normalisation across channels (PyTorch's `LocalResponseNorm`):
//! `y_c = x_c / (k + alpha / size * sum_{c' = c - size/2}^{c + (size-1)/2} x_{c'}^2) ^ beta`,
//! channels outside `0..C` counting as zero (the divisor is always `size`).
//!
//! Loop nest per work item (one sample, a chunk of [`PIXELS`] pixels): `for c { for pixel vector
//! { sum = sum_{c' in window(c)} x_{c'}^2 (FMA); d = sum * alpha/size + k; y = x_c / d^beta } }`,
//! f32x4 over pixels with a scalar tail. `d^beta` is exact-rounding-level for the common exponents
//! (`0.75 = sqrt(d) * sqrt(sqrt(d))`, `0.5`, `1`) and otherwise calls `f32::powf` lane by lane.

use super::cx::{KernelCx, VEC};
use super::eltwise::if_else;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Type, Value};
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};

/// Pixels per work item.
pub const PIXELS: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct LrnSpec {
    pub channels: usize,
    /// Pixels per channel (`H * W`).
    pub plane: usize,
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
    pub in_stride: usize,
    pub out_stride: usize,
}

impl LrnSpec {
    pub fn items_per_sample(&self) -> usize {
        self.plane.div_ceil(PIXELS).max(1)
    }
}

pub(crate) fn emit(
    cx: &mut KernelCx,
    module: &mut JITModule,
    spec: &LrnSpec,
) -> Result<(), super::CodegenError> {
    let powf = if [0.75, 0.5, 1.0].contains(&spec.beta) {
        None
    } else {
        let mut sig = Signature::new(cx.b.func.signature.call_conv);
        sig.params.extend([AbiParam::new(F32), AbiParam::new(F32)]);
        sig.returns.push(AbiParam::new(F32));
        let id = module
            .declare_function(super::helpers::POWF, Linkage::Import, &sig)
            .map_err(|e| super::CodegenError::Cranelift(e.to_string()))?;
        Some(module.declare_func_in_func(id, cx.b.func))
    };
    let ips = spec.items_per_sample();
    let (c_n, plane) = (spec.channels, spec.plane);
    let x0 = cx.ptr_at(cx.inputs, 0);
    cx.for_items(|cx, item| {
        let (n, chunk) = cx.divmod(item, ips);
        let start = cx.b.ins().imul_imm_s(chunk, PIXELS as i64);
        let x = cx.offset(x0, n, spec.in_stride);
        let x = cx.offset(x, start, 1);
        let y = cx.offset(cx.output, n, spec.out_stride);
        let y = cx.offset(y, start, 1);
        let last_len = plane - (ips - 1) * PIXELS;
        let run = |cx: &mut KernelCx, len: usize| {
            let zero = cx.ic(0);
            let c_hi = cx.ic(c_n as i64);
            cx.for_range(zero, c_hi, 1, "channels", |cx, c| {
                let lo = cx.b.ins().iadd_imm_s(c, -((spec.size / 2) as i64));
                let zero = cx.ic(0);
                let lo = cx.imax(lo, zero);
                let hi = cx.b.ins().iadd_imm_s(c, ((spec.size - 1) / 2 + 1) as i64);
                let top = cx.ic(c_n as i64);
                let hi = cx.imin(hi, top);
                let xc = cx.offset(x, c, plane);
                let yc = cx.offset(y, c, plane);
                cx.for_run(len, |cx, ty, i| {
                    let z = cx.fconst(ty, 0.0);
                    let sum = cx.var(ty, z);
                    cx.for_range(lo, hi, 1, "window channels", |cx, cc| {
                        let p = cx.offset(x, cc, plane);
                        let p = cx.offset(p, i, 1);
                        let v = cx.load(ty, p, 0);
                        let s = cx.b.use_var(sum);
                        let s = cx.fma(v, v, s);
                        cx.b.def_var(sum, s);
                    });
                    let s = cx.b.use_var(sum);
                    let a = cx.fconst(ty, (spec.alpha / spec.size as f64) as f32);
                    let k = cx.fconst(ty, spec.k as f32);
                    let d = cx.fma(s, a, k);
                    let d = pow(cx, ty, d, spec.beta, powf);
                    let p = cx.offset(xc, i, 1);
                    let v = cx.load(ty, p, 0);
                    let r = cx.b.ins().fdiv(v, d);
                    let q = cx.offset(yc, i, 1);
                    cx.store(r, q, 0);
                });
            });
        };
        if ips == 1 {
            run(cx, last_len);
        } else {
            let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, chunk, (ips - 1) as i64);
            let run2 = run;
            if_else(cx, is_last, |cx| run2(cx, last_len), |cx| run2(cx, PIXELS));
        }
    });
    Ok(())
}

/// `d ^ beta` for `d > 0`.
fn pow(
    cx: &mut KernelCx,
    ty: Type,
    d: Value,
    beta: f64,
    powf: Option<cranelift_codegen::ir::FuncRef>,
) -> Value {
    match powf {
        None if beta == 1.0 => d,
        None if beta == 0.5 => cx.b.ins().sqrt(d),
        None => {
            let s = cx.b.ins().sqrt(d);
            let q = cx.b.ins().sqrt(s);
            cx.b.ins().fmul(s, q)
        }
        Some(f) => {
            let b = cx.b.ins().f32const(beta as f32);
            if ty == F32 {
                let call = cx.b.ins().call(f, &[d, b]);
                cx.b.inst_results(call)[0]
            } else {
                let mut out = cx.fconst(VEC, 0.0);
                for lane in 0..4u8 {
                    let x = cx.b.ins().extractlane(d, lane);
                    let call = cx.b.ins().call(f, &[x, b]);
                    let r = cx.b.inst_results(call)[0];
                    out = cx.b.ins().insertlane(out, r, lane);
                }
                out
            }
        }
    }
}
