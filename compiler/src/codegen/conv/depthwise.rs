//! The `depthwise` path: convolutions with one input and one output channel per group
//! (`groups == Cin == Cout`), a square odd `k x k` window, stride 1 or 2, padding `k / 2` and no
//! dilation (the `depthwise` pass's precondition). Each channel's plane is filtered on its own,
//! with output pixels in the vector lanes; the general grouped path instead runs a one-row
//! register tile per channel over a reduction of only `k*k`.
//!
//! Per (sample, channel), with `s` the stride, `p` the padding:
//! 1. **Fill**: the plane is copied into the thread's scratch as `s*s` phase planes of the
//!    zero-padded input (`Hq x Wq`, `Hq = ceil((H + 2p) / s)`, `Wq = ceil((W + 2p) / s)`): padded
//!    pixel `(y, x)` goes to plane `(y % s, x % s)` at `(y / s, x / s)` (stride 2 de-interleaves
//!    columns with vector shuffles). The padding is zeroed once per kernel call and never
//!    written, since every channel fills the same interior positions.
//! 2. **Stencil**: the output is treated as one flat run `o = oy * Wq + ox` (`ox < Wq`), so output
//!    pixel `(oy, ox)`'s tap `(kh, kw)` reads padded pixel `(s*oy + kh, s*ox + kw)`, which is plane
//!    `(kh % s, kw % s)` at flat position `o + (kh / s) * Wq + kw / s`: a constant offset per
//!    tap. All `(OH - 1) * Wq + OW` positions of the plane fill whole vectors (a 7x7 output is 61
//!    positions, 4 zmm, instead of a vector per row), and each vector is `k*k` FMAs of a load and
//!    a broadcast weight ([`DepthwiseSpec`]: assembled on avx2/avx512, f32x4 Cranelift on sse).
//!    Columns `ox >= OW` of the flat run are computed from in-scratch values and never stored.
//! 3. **Epilogue**: per output row, the `OW` valid positions get the fused epilogue in the IR's
//!    order (`y = acc * s1 + b1`, `+ residual`, `* s2 + b2`, ReLU; per-channel scalars) and are
//!    stored contiguously.
//!
//! **Row mode** (avx2/avx512, output rows of at least two vectors, as at 112x112 and 56x56):
//! stages 2 and 3 are one routine ([`DepthwiseRowsSpec`]) that runs the same taps over each output
//! row's `ceil(OW / L)` vectors and stores them with the epilogue straight into the output (row
//! tails masked): a wide row wastes few lanes, and the flat run's trip through the scratch (a
//! 51 KB store and reload per channel at 112x112) would cost more than it saves.
//!
//! A work item is (sample, block of channels): channels are independent, so two threads balance
//! at batch 1 (at least 32 blocks per sample when there are 32 channels).
//!
//! Sound: each stored output is `sum over (kh, kw) of xpad[s*oy + kh][s*ox + kw] * w[c][kh][kw]`
//! with `xpad` the zero-padded input (PyTorch's definition for this geometry), then the epilogue;
//! the phase planes hold exactly `xpad` (borders zero, interior copied), every tap's read of a
//! stored position lies inside its plane (`s*oy + kh < H + 2p`), and each output is written once,
//! by the item owning its channel.

use super::{ConvPlan, ConvSpec, Operands};
use crate::codegen::cx::{KernelCx, VEC};
use crate::codegen::isa::Isa;
use crate::codegen::rows::{copy_run, zero_run};
use crate::codegen::tile::{
    DepthwiseEpilogue, DepthwiseFillSpec, DepthwiseOutSpec, DepthwiseRowsSpec, DepthwiseSpec, Tiles,
};
use crate::ir::Relu;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// Channel blocks per sample worth aiming for (two threads balance at batch 1).
const TARGET_ITEMS: usize = 32;

/// The geometry of a depthwise kernel.
#[derive(Debug, Clone)]
pub struct DepthwisePlan {
    /// Stride and padding (both axes), output `[OH, OW]`.
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
    /// Columns per phase-plane row, floats per phase plane.
    pub wq: usize,
    pub plane_len: usize,
    /// The stencil: tap offsets into the scratch, vectors of the flat output.
    pub stencil: DepthwiseSpec,
    /// Floats of the padded planes and the stencil's reads past them (zeroed once per call).
    pub in_len: usize,
    /// Where the flat output starts in the scratch.
    pub out_at: usize,
    /// Channels per work item.
    pub channels: usize,
    /// Row mode (wide ISAs, rows of at least two vectors): the stencil and epilogue run row by
    /// row into the output ([`DepthwiseRowsSpec`]) instead of through the flat run.
    pub rows_mode: bool,
    /// Scratch floats in all.
    pub floats: usize,
}

impl DepthwisePlan {
    /// Output positions computed per channel (whole vectors of the flat run).
    pub fn computed(&self) -> usize {
        self.stencil.vectors * self.stencil.isa.lanes()
    }
}

/// The geometry and work split of a depthwise kernel.
pub(super) fn plan(plan: &mut ConvPlan, spec: &ConvSpec) {
    let c = &spec.op.conv;
    let [channels, h, w] = spec.input;
    let [_, oh, ow] = plan.out;
    let (k, s, pad) = (c.kernel[0], c.stride[0], c.padding[0]);
    let lanes = plan.isa.lanes();
    let (hq, wq) = ((h + 2 * pad).div_ceil(s), (w + 2 * pad).div_ceil(s));
    let plane_len = hq * wq;
    let taps: Vec<usize> = (0..k)
        .flat_map(|kh| (0..k).map(move |kw| ((kh % s) * s + kw % s) * plane_len + (kh / s) * wq + kw / s))
        .collect();
    let flat = (oh - 1) * wq + ow;
    let vectors = flat.div_ceil(lanes);
    let max_tap = taps.iter().copied().max().unwrap_or(0);
    let rows_mode = plan.isa != Isa::Sse && ow >= 2 * lanes;
    let row_reads = (oh - 1) * wq + max_tap + ow.div_ceil(lanes) * lanes;
    let in_len = (s * s * plane_len).max(max_tap + vectors * lanes).max(row_reads).div_ceil(16) * 16;
    let per_item = channels.div_ceil(TARGET_ITEMS).max(1);
    plan.blocks = channels.div_ceil(per_item);
    plan.block = per_item;
    plan.depthwise = Some(DepthwisePlan {
        stride: s,
        pad,
        oh,
        ow,
        wq,
        plane_len,
        stencil: DepthwiseSpec { isa: plan.isa, taps, vectors },
        in_len,
        out_at: in_len,
        channels: per_item,
        rows_mode,
        floats: in_len + vectors * lanes,
    });
}

/// One work item: sample `n`, channel block `r`.
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
    let d = plan.depthwise.as_ref().expect("a depthwise plan");
    let [channels, h, w] = spec.input;
    // The padding of the phase planes: zeroed once per call (`filled` starts at -1).
    let flag = cx.b.use_var(filled);
    let unset = cx.b.ins().icmp_imm_s(IntCC::SignedLessThan, flag, 0);
    cx.if_then(unset, |cx| {
        zero_run(cx, cx.scratch, 0, d.in_len);
        let zero = cx.ic(0);
        cx.b.def_var(filled, zero);
    });
    let x_n = cx.offset(ops.input, n, spec.in_stride);
    let y_n = cx.offset(cx.output, n, spec.out_stride);
    let res_n = ops.residual.map(|res| cx.offset(res, n, spec.res_stride));
    // Wide ISAs: the fill, the stencil and the epilogue are assembled routines.
    let wide = plan.isa != Isa::Sse;
    let c0 = cx.b.ins().imul_imm_s(r, d.channels as i64);
    let c1 = cx.b.ins().iadd_imm_s(c0, d.channels as i64);
    let all = cx.ic(channels as i64);
    let c1 = cx.imin(c1, all);
    cx.for_range(c0, c1, 1, "depthwise channels", |cx, ch| {
        let x = cx.offset(x_n, ch, h * w);
        if wide {
            let spec = DepthwiseFillSpec {
                isa: plan.isa,
                h,
                w,
                pad: d.pad,
                wq: d.wq,
                stride: d.stride,
                plane_len: d.plane_len,
            };
            tiles.depthwise_fill(cx, &spec, [x, cx.scratch]);
        } else {
            fill(cx, d, x, h, w);
        }
        let weights = cx.offset(ops.packed, ch, plan.layout.k_g);
        let plane = d.oh * d.ow;
        let y = cx.offset(y_n, ch, plane);
        let res = res_n.map(|res| cx.offset(res, ch, plane));
        let layout = &plan.layout;
        let fused = DepthwiseEpilogue {
            s1: layout.s1,
            b1: layout.b1,
            s2: layout.s2,
            b2: layout.b2,
            residual: res.is_some(),
            relu: spec.op.relu != Relu::None,
            activation: plan.activation,
        };
        if d.rows_mode {
            let rows = DepthwiseRowsSpec {
                isa: plan.isa,
                taps: d.stencil.taps.clone(),
                rows: d.oh,
                ow: d.ow,
                wq: d.wq,
                epilogue: fused,
            };
            let epi = cx.offset(ops.packed, ch, 1);
            let null = cx.ic(0);
            tiles.depthwise_rows(cx, &rows, [cx.scratch, weights, y, epi, res.unwrap_or(null)]);
            return;
        }
        let flat = cx.add_floats(cx.scratch, d.out_at);
        tiles.depthwise(cx, &d.stencil, [cx.scratch, weights, flat]);
        if wide {
            let out = DepthwiseOutSpec { isa: plan.isa, rows: d.oh, ow: d.ow, wq: d.wq, epilogue: fused };
            let epi = cx.offset(ops.packed, ch, 1);
            let null = cx.ic(0);
            tiles.depthwise_out(cx, &out, [flat, y, epi, res.unwrap_or(null)]);
        } else {
            epilogue(cx, spec, plan, d, ops.packed, ch, flat, y, res);
        }
    });
}

/// Copies one channel's `h x w` plane at `x` into the phase planes (interior only).
fn fill(cx: &mut KernelCx, d: &DepthwisePlan, x: Value, h: usize, w: usize) {
    let (s, pad) = (d.stride, d.pad);
    let scratch = cx.scratch;
    cx.for_count(h, "depthwise fill rows", |cx, iy| {
        let y = cx.b.ins().iadd_imm_s(iy, pad as i64);
        let (row, phase) = cx.divmod(y, s);
        let plane = cx.offset(scratch, phase, s * d.plane_len);
        let dst = cx.offset(plane, row, d.wq);
        let src = cx.offset(x, iy, w);
        for p in 0..s {
            // Padded columns `s*q + p` inside the input: `q0..=q1`, input column `s*q + p - pad`.
            let q0 = if pad > p { (pad - p).div_ceil(s) } else { 0 };
            if w + pad < p + 1 {
                continue;
            }
            let q1 = (w - 1 + pad - p) / s;
            if q1 < q0 {
                continue;
            }
            let from = s * q0 + p - pad;
            copy_run(cx, src, from, s, w, dst, p * d.plane_len + q0, q1 + 1 - q0, None);
        }
    });
}

/// The fused epilogue of channel `ch` from the flat run at `flat` to its output rows at `y`.
#[allow(clippy::too_many_arguments)]
fn epilogue(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    d: &DepthwisePlan,
    packed: Value,
    ch: Value,
    flat: Value,
    y: Value,
    res: Option<Value>,
) {
    let layout = &plan.layout;
    let epi = cx.offset(packed, ch, 1);
    // Per-channel scalars and their splats.
    let value = |cx: &mut KernelCx, at: Option<usize>| {
        at.map(|at| {
            let s = cx.load_s(epi, at);
            (s, cx.b.ins().splat(VEC, s))
        })
    };
    let (s1, b1, s2, b2) =
        (value(cx, layout.s1), value(cx, layout.b1), value(cx, layout.s2), value(cx, layout.b2));
    let relu = spec.op.relu != Relu::None;
    let pick = |v: Option<(Value, Value)>, vector: bool| v.map(|(s, v)| if vector { v } else { s });
    let ow = d.ow;
    cx.for_count(d.oh, "depthwise epilogue rows", |cx, oy| {
        let src = cx.offset(flat, oy, d.wq);
        let dst = cx.offset(y, oy, ow);
        let res = res.map(|r| cx.offset(r, oy, ow));
        cx.for_run(ow, |cx, ty, i| {
            let vector = ty != F32;
            let at = |cx: &mut KernelCx, base: Value| cx.offset(base, i, 1);
            let p = at(cx, src);
            let mut v = cx.load(ty, p, 0);
            v = cx.affine(v, pick(s1, vector), pick(b1, vector));
            if let Some(r) = res {
                let p = at(cx, r);
                let x = cx.load(ty, p, 0);
                v = cx.b.ins().fadd(v, x);
                v = cx.affine(v, pick(s2, vector), pick(b2, vector));
            }
            if relu {
                v = cx.relu(v);
            }
            if let Some(a) = spec.op.activation {
                v = crate::codegen::eltwise::activation(cx, ty, a, v);
            }
            let p = at(cx, dst);
            cx.store(v, p, 0);
        });
    });
}
