//! Fully connected layers (`FusedLinear`): `y[n] = relu?(W x[n] + b)`, on the register tiles of
//! [`super::tile`] with output features in the vector lanes and samples as tile rows.
//!
//! Layout (ISA-independent): [`pack_linear_weights`] transposes `W [out x in]` into panels of
//! [`PANEL`] outputs: `packed[(p * in + i) * PANEL + l] = W[p * PANEL + l][i]` (zero past `out`),
//! followed by the bias padded to whole panels (`packed[panels * in * PANEL + o]`).
//!
//! As a tile: `C[samples x PANEL] = X[samples x in] * Wp[in x PANEL]`, A = the input rows (one per
//! sample, `in_stride` apart, each element broadcast), B = one panel (a K step reads `PANEL`
//! consecutive floats), the bias a per-column epilogue vector, then ReLU. Work item = (block of
//! [`LinearPlan::rows`] samples, panel): a batch reads `W` once per block of samples instead of
//! once per sample; the last block may hold fewer samples, and the item picks the tile variant
//! for the samples it has (the kernel receives the batch size). At batch 1 the layer is a
//! matrix-vector product bound by reading `W` once.

use super::cx::KernelCx;
use super::isa::Isa;
use super::tile::{Axis, ChanVec, Epilogue, KLoop, Piece, RowsA, TileArgs, TileOut, TileSpec, Tiles};
use super::CodegenError;
use crate::ir::FusedLinear;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::InstBuilder;

/// Output features per panel.
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

/// The ISA-dependent choices of a linear kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearPlan {
    pub isa: Isa,
    /// Samples per tile (rows), and vectors per panel.
    pub rows: usize,
    pub nv: usize,
}

impl LinearPlan {
    /// Samples per tile: as many as the registers hold beside a panel's accumulators (8 for
    /// avx512's 2 vectors per panel, 3 for avx2's 4, 1 for sse's 8).
    pub fn new(isa: Isa) -> LinearPlan {
        let nv = PANEL / isa.lanes();
        let rows = match isa {
            Isa::Sse => 1,
            Isa::Avx2 => 3,
            Isa::Avx512 => 8,
        };
        LinearPlan { isa, rows, nv }
    }

    /// Work items of a batch of `n`: blocks of samples times panels.
    pub fn work_items(&self, spec: &LinearSpec, n: usize) -> usize {
        n.div_ceil(self.rows) * spec.panels()
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

/// The tile of `rows` samples over panel columns `0..valid` (`valid < PANEL` for the last panel).
fn tile_spec(spec: &LinearSpec, plan: LinearPlan, rows: usize, valid: usize) -> TileSpec {
    let l = &spec.op.linear;
    let lanes = plan.isa.lanes();
    let pieces = (0..plan.nv)
        .map(|j| {
            let hi = valid.saturating_sub(j * lanes).min(lanes);
            if hi == 0 {
                Vec::new()
            } else {
                vec![Piece::leading(j, lanes, hi)]
            }
        })
        .collect();
    TileSpec {
        isa: plan.isa,
        rows,
        rows_a: RowsA::Strided(spec.in_stride),
        nv: plan.nv,
        kloop: KLoop::strided(l.in_features, 1, PANEL, 4),
        init: None,
        out: TileOut::Final {
            row: spec.out_stride,
            pieces,
            epilogue: Epilogue {
                b1: l.bias.then_some(ChanVec { at: 0, axis: Axis::Col }),
                relu_rows: vec![spec.op.relu; rows],
                ..Epilogue::default()
            },
            stream: false,
        },
    }
}

pub(crate) fn emit(cx: &mut KernelCx, tiles: &mut Tiles, spec: &LinearSpec, plan: LinearPlan) {
    let l = &spec.op.linear;
    let (inn, out) = (l.in_features, l.out_features);
    let panels = spec.panels();
    let x0 = cx.ptr_at(cx.inputs, 0);
    let w0 = cx.ptr_at(cx.weights, 0);
    let batch = cx.batch;
    let tail = out - (panels - 1) * PANEL;
    cx.for_items(|cx, item| {
        let (block, p) = cx.divmod(item, panels);
        let n0 = cx.b.ins().imul_imm_s(block, plan.rows as i64);
        let x = cx.offset(x0, n0, spec.in_stride);
        let w = cx.offset(w0, p, inn * PANEL);
        let bias = cx.add_floats(w0, panels * inn * PANEL);
        let bias = cx.offset(bias, p, PANEL);
        let y = cx.offset(cx.output, n0, spec.out_stride);
        let y = cx.offset(y, p, PANEL);
        let args = TileArgs { a: x, b: w, out: y, epi: Some(bias), res: None, init: None, ahead: None };
        // The tile of `rows` samples, for the last (partial) panel or the others.
        let run = |cx: &mut KernelCx, tiles: &mut Tiles, rows: usize| {
            let full = tile_spec(spec, plan, rows, PANEL);
            if tail == PANEL {
                tiles.emit(cx, &full, args);
            } else {
                let last = cx.b.ins().icmp_imm_s(IntCC::Equal, p, (panels - 1) as i64);
                let part = tile_spec(spec, plan, rows, tail);
                cx.if_else_with(
                    tiles,
                    last,
                    |cx, t| t.emit(cx, &part, args),
                    |cx, t| t.emit(cx, &full, args),
                );
            }
        };
        if plan.rows == 1 {
            run(cx, tiles, 1);
            return;
        }
        // A full block of samples, or the last block's remainder.
        let left = cx.b.ins().isub(batch, n0);
        let is_full = cx.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, plan.rows as i64);
        cx.if_else_with(
            tiles,
            is_full,
            |cx, t| run(cx, t, plan.rows),
            |cx, t| {
                for rows in 1..plan.rows {
                    let here = cx.b.ins().icmp_imm_s(IntCC::Equal, left, rows as i64);
                    cx.if_else_with(t, here, |cx, t| run(cx, t, rows), |_, _| {});
                }
            },
        );
    });
}
