//! Fully connected layers (`FusedLinear`): `y[n] = relu?(W x[n] + b)`, vectorised over output
//! features.
//!
//! Layout: [`pack_linear_weights`] transposes `W [out x in]` into panels of [`PANEL`] outputs:
//! `packed[(p * in + i) * PANEL + l] = W[p * PANEL + l][i]` (zero past `out`), followed by the bias
//! padded to whole panels (`packed[panels * in * PANEL + o]`).
//!
//! Loop nest per work item (one sample, one panel): `for i in 0..in (unrolled 2) { x = splat(x[i]);
//! for v in 0..PANEL/4 { acc[v] = fma(x, W[p][i][4v..4v+4], acc[v]) } }`, then `+ bias`, ReLU, and
//! the store (lane by lane for the last, partial panel). Eight independent accumulators cover the
//! FMA latency; weights are read straight from memory by the FMA (`vfmadd132ps x, acc, [w]`), so
//! the tile needs 8 accumulators + the splat + one copy of it.
//!
//! At batch 1 the layer is a matrix-vector product bound by reading `W` once; items are (sample,
//! panel), so a batch reads `W` once per sample (blocking samples is future work).

use super::cx::{KernelCx, LANES, VEC};
use super::gemm::store_lanes;
use super::CodegenError;
use crate::ir::FusedLinear;
use cranelift_codegen::ir::InstBuilder;
use cranelift_frontend::Variable;

/// Output features per panel (8 vectors).
pub const PANEL: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct LinearSpec {
    pub op: FusedLinear,
    pub in_stride: usize,
    pub out_stride: usize,
}

impl LinearSpec {
    pub fn panels(&self) -> usize {
        self.op.linear.out_features.div_ceil(PANEL)
    }

    pub fn packed_len(&self) -> usize {
        self.panels() * PANEL * (self.op.linear.in_features + 1)
    }
}

/// Packs `[weight, bias?]` (PyTorch layout) into the panel layout above.
pub fn pack_linear_weights(spec: &LinearSpec, weights: &[&[f32]]) -> Result<Vec<f32>, CodegenError> {
    let l = &spec.op.linear;
    let (inn, out) = (l.in_features, l.out_features);
    let want = 1 + l.bias as usize;
    if weights.len() != want {
        return Err(CodegenError::Weights(format!(
            "linear takes {want} weight tensors, got {}",
            weights.len()
        )));
    }
    if weights[0].len() != inn * out {
        return Err(CodegenError::Weights(format!(
            "linear weight: expected {} floats, got {}",
            inn * out,
            weights[0].len()
        )));
    }
    if l.bias && weights[1].len() != out {
        return Err(CodegenError::Weights(format!(
            "linear bias: expected {out} floats, got {}",
            weights[1].len()
        )));
    }
    let mut packed = vec![0f32; spec.packed_len()];
    for o in 0..out {
        let (p, lane) = (o / PANEL, o % PANEL);
        for i in 0..inn {
            packed[(p * inn + i) * PANEL + lane] = weights[0][o * inn + i];
        }
        if l.bias {
            packed[spec.panels() * inn * PANEL + o] = weights[1][o];
        }
    }
    Ok(packed)
}

pub(crate) fn emit(cx: &mut KernelCx, spec: &LinearSpec) {
    let l = &spec.op.linear;
    let (inn, out) = (l.in_features, l.out_features);
    let panels = spec.panels();
    let nv = PANEL / LANES;
    let x0 = cx.ptr_at(cx.inputs, 0);
    let w0 = cx.ptr_at(cx.weights, 0);
    cx.for_items(|cx, item| {
        let (n, p) = cx.divmod(item, panels);
        let x = cx.offset(x0, n, spec.in_stride);
        let w = cx.offset(w0, p, inn * PANEL);
        let zero = cx.fconst(VEC, 0.0);
        let acc: Vec<Variable> = (0..nv).map(|_| cx.var(VEC, zero)).collect();
        let xp = cx.var(cranelift_codegen::ir::types::I64, x);
        let wp = cx.var(cranelift_codegen::ir::types::I64, w);
        let step = |cx: &mut KernelCx, xb, wb, k: usize| {
            let s = cx.load_splat(xb, k);
            for (v, &a) in acc.iter().enumerate() {
                let wv = cx.load_v(wb, k * PANEL + v * LANES);
                let old = cx.b.use_var(a);
                let new = cx.b.ins().fma(s, wv, old);
                cx.b.def_var(a, new);
            }
        };
        cx.for_count(inn / 2, "input features (2 per iteration)", |cx, _| {
            let (xb, wb) = (cx.b.use_var(xp), cx.b.use_var(wp));
            step(cx, xb, wb, 0);
            step(cx, xb, wb, 1);
            let x2 = cx.add_floats(xb, 2);
            let w2 = cx.add_floats(wb, 2 * PANEL);
            cx.b.def_var(xp, x2);
            cx.b.def_var(wp, w2);
        });
        if inn % 2 == 1 {
            let (xb, wb) = (cx.b.use_var(xp), cx.b.use_var(wp));
            step(cx, xb, wb, 0);
        }
        let bias = cx.add_floats(w0, panels * inn * PANEL);
        let bias = cx.offset(bias, p, PANEL);
        let y = cx.offset(cx.output, n, spec.out_stride);
        let y = cx.offset(y, p, PANEL);
        let store_panel = |cx: &mut KernelCx, outputs: usize| {
            for (v, &a) in acc.iter().enumerate().take(outputs.div_ceil(LANES)) {
                let mut r = cx.b.use_var(a);
                if l.bias {
                    let b = cx.load_v(bias, v * LANES);
                    r = cx.b.ins().fadd(r, b);
                }
                if spec.op.relu {
                    r = cx.relu(r);
                }
                store_lanes(cx, r, y, v * LANES, (outputs - v * LANES).min(LANES));
            }
        };
        let tail = out - (panels - 1) * PANEL;
        if tail == PANEL {
            store_panel(cx, PANEL);
        } else {
            let last =
                cx.b.ins().icmp_imm_s(cranelift_codegen::ir::condcodes::IntCC::Equal, p, (panels - 1) as i64);
            super::eltwise::if_else(cx, last, |cx| store_panel(cx, tail), |cx| store_panel(cx, PANEL));
        }
    });
}
