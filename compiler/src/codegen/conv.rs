//! Convolution kernels (`FusedConv`): work decomposition, the padded row panel, and the drivers that
//! run the GEMM tiles of [`super::gemm`] over it.
//!
//! Two paths, chosen by [`ConvPlan::new`]:
//!
//! **Direct 1x1** (`Gemm1x1` or `StridedGemm1x1`, unpadded, ungrouped, without a prologue): per
//! sample, `out[Cout x P] = W[Cout x Cin] * B[Cin x P]` with `P = OH*OW`. Row `ci` of B is channel
//! plane `ci` of the input, subsampled for a stride (output pixel `(oy, ox)` reads input pixel
//! `(oy*sh, ox*sw)`). Work item = (sample, block of column tiles, chunk of panels); inside:
//! `for tile in block { for kb in K blocks { pack; for panel in chunk { K loop over kc } } }`.
//! *pack* copies (for a stride: gathers) the tile's `kc x NR` slice of B (rows `kb*kc..`, columns of the tile) into the
//! scratch, row after row (`kc * NR` contiguous floats, zero lanes past a tail tile's columns):
//! read in place, one tile's rows are `H*W` floats apart, each on its own page, and at 56x56
//! (12.5 KB apart) they fall into a quarter of the L1 sets, so the tile did not stay in L1 across
//! the panels and every row cost a TLB walk. Packed, the K loop reads 64 consecutive bytes per K
//! step from L1. K blocks (`kc <= KC_MAX` channels) keep that slice plus one A panel slice inside
//! L1 for large `Cin`; between blocks each panel's raw accumulators go to a partial-sum area of the
//! scratch and come back as the next block's initial values, so every output is still the
//! k-ascending sum over all `Cin` (the epilogue runs after the last block only). The chunk of A
//! panels (re-read once per tile and K block) is sized to stay in L2.
//!
//! **Row panel** (every other convolution: KxK, strided, padded, dilated, grouped, or with a
//! prologue): an implicit GEMM over a padded, de-interleaved copy of the input rows a block of output
//! rows needs. Work item = (sample, block of `RB` output rows, group, chunk of panels). The item
//! first fills its scratch: for each input channel of the group and each input row `rho` the block
//! reads (`ih = oh0*sh - ph + rho`), the row is stored as `sw` *phase rows*, phase `f` holding padded
//! columns `f, f + sw, f + 2sw, ...` (zero outside the input; the prologue affine+ReLU applied on
//! the way). Then output column `ow` of tap `(kh, kw)` reads padded column `ow*sw + kw*dw`, which is
//! phase `(kw*dw) % sw` at column `ow + (kw*dw) / sw`: consecutive output columns are consecutive
//! floats for every stride, and padding needs no branch in the inner loop. The K loop runs over the
//! group's input channels with the `KH*KW` taps unrolled (each a constant offset into the scratch).
//! The fill copies `O(Cin * rows * W)` floats per item against `O(Cout * Cin * KH*KW * OW * RB)`
//! FMAs, a few percent at most.
//!
//! Why an implicit GEMM on row panels rather than a full im2col: im2col of a 3x3 layer at 56x56
//! writes and re-reads 9x the input (7 MB per sample for 64 channels), far beyond L2; the row panel
//! is `Cin * ((RB-1)*sh + KH) * W` floats (tens of KB) and is reused by every output channel.
//!
//! Output columns: `OW / NR` full tiles and one tail tile of `OW % NR` columns (full vectors plus a
//! lane-by-lane last vector), so no tile ever overlaps another or writes outside its item.
//!
//! Work items are independent (disjoint outputs, private scratch), so any split of `begin..end`
//! across threads is valid; `items_per_sample` is sized for at least 16 items per sample when the
//! layer is big enough, so two threads balance at batch 1.

use super::cx::{KernelCx, LANES};
use super::gemm::{
    emit_epilogue_store, emit_kloop, load_lanes, store_partial, Epilogue, KLoop, Tap, TileShape,
};
use super::CodegenError;
use crate::ir::{ConvKind, FusedConv, Relu};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

/// A convolution kernel request: the fused op, the per-sample input shape, and where values live
/// (`*_stride`: floats between samples of the input, output and residual values, from the memory
/// plan; element `(n, i)` of a value is at `base + n * stride + i`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    pub op: FusedConv,
    /// `[C, H, W]` of the input.
    pub input: [usize; 3],
    pub in_stride: usize,
    pub out_stride: usize,
    pub res_stride: usize,
    /// Register tile `(rows, vectors)` to use instead of the measured default (for tuning).
    pub tile: Option<(usize, usize)>,
    /// Loop order (`true`: column tiles outside panels) instead of the default (for tuning; the
    /// direct 1x1 path always runs tiles outside panels, as it packs one tile at a time).
    pub order: Option<bool>,
}

impl ConvSpec {
    /// A spec for contiguous values (strides equal to the per-sample sizes).
    pub fn contiguous(op: FusedConv, input: [usize; 3]) -> Result<ConvSpec, CodegenError> {
        let mut spec = ConvSpec {
            op,
            input,
            in_stride: input.iter().product(),
            out_stride: 0,
            res_stride: 0,
            tile: None,
            order: None,
        };
        let [c, h, w] = spec.output()?;
        spec.out_stride = c * h * w;
        spec.res_stride = spec.out_stride;
        Ok(spec)
    }

    /// `[Cout, OH, OW]`, PyTorch's formula.
    pub fn output(&self) -> Result<[usize; 3], CodegenError> {
        let c = &self.op.conv;
        let [_, h, w] = self.input;
        let dim = |i: usize, n: usize| {
            let span = c.dilation[i] * (c.kernel[i] - 1) + 1;
            (n + 2 * c.padding[i]).checked_sub(span).map(|x| x / c.stride[i] + 1)
        };
        match (dim(0, h), dim(1, w)) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok([c.out_channels, oh, ow]),
            _ => Err(CodegenError::Unsupported(format!(
                "convolution window larger than the padded input {:?}",
                self.input
            ))),
        }
    }
}

/// Which loop nest a convolution compiles to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPath {
    Direct1x1,
    RowPanel,
}

/// Every compile-time decision about one convolution kernel; the packer and the generator both
/// derive from it, so the packed layout and the code always agree.
#[derive(Debug, Clone)]
pub struct ConvPlan {
    pub path: ConvPath,
    /// Panel height (output channels per tile) and vectors per tile row.
    pub mr: usize,
    pub nv: usize,
    pub groups: usize,
    pub cin_g: usize,
    pub cout_g: usize,
    /// K per group: `cin_g * KH * KW`.
    pub k_g: usize,
    /// Panels per group (the last may be partial).
    pub ppg: usize,
    pub out: [usize; 3],
    /// Packed layout (float offsets): A panels at 0, then the epilogue vectors (`groups * ppg * mr`
    /// each), then `pre_scale`, `pre_shift` (`Cin` each).
    pub s1: Option<usize>,
    pub b1: Option<usize>,
    pub s2: Option<usize>,
    pub b2: Option<usize>,
    pub pre: Option<usize>,
    pub packed_len: usize,
    /// Work split: chunks of panels per group, and either pixel blocks (direct) or row blocks.
    pub chunks: usize,
    pub panels_per_chunk: usize,
    /// Loop order inside an item: column tiles outside panels (see `nest`).
    pub tiles_outer: bool,
    pub blocks: usize,
    /// Pixels (direct) or output rows (row panel) per block.
    pub block: usize,
    // Row panel geometry.
    /// Phase rows kept per input row, and the slot of each phase (`None`: no tap reads it).
    pub phase_slot: Vec<Option<usize>>,
    pub slots: usize,
    /// Floats per phase row, per scratch row (`slots * sw_len`), per channel.
    pub sw_len: usize,
    pub rows: usize,
    pub chan_len: usize,
    /// Direct path: input channels per K block and the number of K blocks (the last block holds
    /// `Cin - (kblocks - 1) * kc` channels).
    pub kc: usize,
    pub kblocks: usize,
}

/// Register tile (rows x vectors) per path, measured on this machine (`cargo bench --bench kernels
/// -- --sweep`): 3 output channels x 16 columns (12 accumulators) beat 6x8, 5x8, 4x12, 3x12 and 2x24
/// on most ResNet-50 shapes. Per K step it needs 3 splats and 9 multiplicand copies for 12 FMAs
/// (6x8: 6 splats, 6 copies), and 4 B vectors read by the FMAs themselves.
pub const DIRECT_TILE: (usize, usize) = (3, 4);
pub const ROW_TILE: (usize, usize) = (3, 4);
/// Work items per sample worth aiming for (balance over 2+ threads at batch 1).
const TARGET_ITEMS: usize = 16;
/// Packed A up to this size is read from L2 once per column tile (tiles outside panels).
const A_IN_L2_BYTES: usize = 512 * 1024;
/// Direct path: most input channels per K block (a packed `KC_MAX x 16` B slice is 16 KB, plus a
/// 3 KB A panel slice: both stay in the 48 KB L1).
const KC_MAX: usize = 256;

impl ConvPlan {
    pub fn new(spec: &ConvSpec) -> Result<ConvPlan, CodegenError> {
        let op = &spec.op;
        let c = &op.conv;
        let out = spec.output()?;
        let [cin, _, _] = spec.input;
        if cin != c.in_channels {
            return Err(CodegenError::Unsupported(format!(
                "input has {cin} channels, conv expects {}",
                c.in_channels
            )));
        }
        let g = c.groups;
        if g == 0 || cin % g != 0 || c.out_channels % g != 0 {
            return Err(CodegenError::Unsupported(format!(
                "groups = {g} must divide {cin} and {}",
                c.out_channels
            )));
        }
        if g > 1 && matches!(op.relu, Relu::First(_)) {
            return Err(CodegenError::Unsupported("a partial ReLU on a grouped convolution".into()));
        }
        if op.prologue.is_some() && (c.padding != [0, 0] || c.kernel != [1, 1] || g != 1) {
            return Err(CodegenError::Unsupported(
                "a prologue needs an unpadded, ungrouped 1x1 convolution".into(),
            ));
        }
        let path = if matches!(op.kind, ConvKind::Gemm1x1 | ConvKind::StridedGemm1x1)
            && op.prologue.is_none()
            && g == 1
            && c.kernel == [1, 1]
            && c.padding == [0, 0]
        {
            ConvPath::Direct1x1
        } else {
            ConvPath::RowPanel
        };
        let (mr, nv) = spec.tile.unwrap_or(match path {
            ConvPath::Direct1x1 => DIRECT_TILE,
            ConvPath::RowPanel => ROW_TILE,
        });
        if mr == 0 || nv == 0 || mr * nv + 2 > 16 {
            return Err(CodegenError::Unsupported(format!(
                "register tile {mr}x{nv} does not fit 16 registers"
            )));
        }
        let (cin_g, cout_g) = (cin / g, c.out_channels / g);
        let k_g = cin_g * c.kernel[0] * c.kernel[1];
        let ppg = cout_g.div_ceil(mr);
        let rows_total = g * ppg * mr;
        let mut len = g * ppg * k_g * mr;
        let mut section = |present: bool| {
            present.then(|| {
                let at = len;
                len += rows_total;
                at
            })
        };
        // Without a residual the post-affine folds into s1/b1 (see `pack`).
        let fold_post = !op.residual;
        let s1 = section(op.affine || (fold_post && op.post_affine));
        let b1 = section(c.bias || op.affine || (fold_post && op.post_affine));
        let s2 = section(!fold_post && op.post_affine);
        let b2 = section(!fold_post && op.post_affine);
        let pre = op.prologue.is_some().then(|| {
            let at = len;
            len += 2 * cin;
            at
        });
        let mut plan = ConvPlan {
            path,
            mr,
            nv,
            groups: g,
            cin_g,
            cout_g,
            k_g,
            ppg,
            out,
            s1,
            b1,
            s2,
            b2,
            pre,
            packed_len: len,
            chunks: 1,
            panels_per_chunk: ppg,
            tiles_outer: spec.order.unwrap_or(g * ppg * k_g * mr * 4 <= A_IN_L2_BYTES),
            blocks: 1,
            block: 0,
            phase_slot: Vec::new(),
            slots: 0,
            sw_len: 0,
            rows: 0,
            chan_len: 0,
            kc: k_g,
            kblocks: 1,
        };
        let [_, oh, ow] = out;
        match path {
            ConvPath::Direct1x1 => {
                let nr = nv * LANES;
                let tiles = (oh * ow).div_ceil(nr);
                // Tiles are packed one by one, so the block size only sets the work split: aim for
                // 2 * TARGET_ITEMS items, after splitting A into chunks that fit in L2.
                let a_chunks = (ppg * k_g * mr * 4).div_ceil(A_IN_L2_BYTES).clamp(1, ppg);
                let blocks = (2 * TARGET_ITEMS).div_ceil(a_chunks).clamp(1, tiles);
                plan.block = tiles.div_ceil(blocks) * nr;
                plan.blocks = (oh * ow).div_ceil(plan.block);
                plan.tiles_outer = true;
                plan.kblocks = cin.div_ceil(KC_MAX);
                plan.kc = cin.div_ceil(plan.kblocks);
                // A multiple of 4 (the K loop's unroll) when the last block stays non-empty.
                let kc4 = plan.kc.div_ceil(4) * 4;
                if (plan.kblocks - 1) * kc4 < cin {
                    plan.kc = kc4;
                }
                plan.chunks = a_chunks;
            }
            ConvPath::RowPanel => {
                let (sh, sw) = (c.stride[0], c.stride[1]);
                let (dh, dw) = (c.dilation[0], c.dilation[1]);
                plan.block = 64usize.div_ceil(ow).clamp(1, oh);
                plan.blocks = oh.div_ceil(plan.block);
                let mut phase_slot = vec![None; sw];
                let mut slots = 0;
                for kw in 0..c.kernel[1] {
                    let f = (kw * dw) % sw;
                    if phase_slot[f].is_none() {
                        phase_slot[f] = Some(slots);
                        slots += 1;
                    }
                }
                let max_shift = (c.kernel[1] - 1) * dw / sw;
                plan.phase_slot = phase_slot;
                plan.slots = slots;
                plan.sw_len = (ow + max_shift + LANES - 1).div_ceil(LANES) * LANES;
                plan.rows = (plan.block - 1) * sh + (c.kernel[0] - 1) * dh + 1;
                plan.chan_len = plan.rows * slots * plan.sw_len;
            }
        }
        let units = plan.blocks * g;
        plan.chunks = TARGET_ITEMS.div_ceil(units).max(plan.chunks).clamp(1, ppg);
        plan.panels_per_chunk = ppg.div_ceil(plan.chunks);
        plan.chunks = ppg.div_ceil(plan.panels_per_chunk);
        Ok(plan)
    }

    pub fn items_per_sample(&self) -> usize {
        self.blocks * self.groups * self.chunks
    }

    pub fn scratch_floats(&self) -> usize {
        match self.path {
            ConvPath::Direct1x1 => {
                let nr = self.nv * LANES;
                let partials = if self.kblocks > 1 { self.panels_per_chunk * self.mr * nr } else { 0 };
                self.kc * nr + partials
            }
            ConvPath::RowPanel => self.cin_g * self.chan_len,
        }
    }

    /// Runs of consecutive panels (within a group) sharing the tile height and ReLU rows.
    fn panel_classes(&self, relu: Relu) -> Vec<(usize, usize, usize, Vec<bool>)> {
        let mut classes: Vec<(usize, usize, usize, Vec<bool>)> = Vec::new();
        for p in 0..self.ppg {
            let rows = (self.cout_g - p * self.mr).min(self.mr);
            let relu_rows: Vec<bool> = (0..rows)
                .map(|r| match relu {
                    Relu::None => false,
                    Relu::All => true,
                    Relu::First(n) => p * self.mr + r < n,
                })
                .collect();
            match classes.last_mut() {
                Some((_, end, r, rr)) if *r == rows && *rr == relu_rows => *end = p + 1,
                _ => classes.push((p, p + 1, rows, relu_rows)),
            }
        }
        classes
    }
}

/// Emits the kernel body for `spec`.
pub(crate) fn emit(cx: &mut KernelCx, spec: &ConvSpec, plan: &ConvPlan) {
    let input = cx.ptr_at(cx.inputs, 0);
    let residual = spec.op.residual.then(|| cx.ptr_at(cx.inputs, 1));
    let packed = cx.ptr_at(cx.weights, 0);
    let ips = plan.items_per_sample();
    cx.for_items(|cx, item| {
        let (n, r) = cx.divmod(item, ips);
        match plan.path {
            ConvPath::Direct1x1 => direct_item(cx, spec, plan, input, residual, packed, n, r),
            ConvPath::RowPanel => row_item(cx, spec, plan, input, residual, packed, n, r),
        }
    });
}

/// One panel of output channels, as the tile code needs it.
struct Panel {
    /// Packed A panel.
    a: Value,
    /// Index of the panel's first row in the per-channel epilogue vectors.
    chan: Value,
    /// First output channel.
    co: Value,
    rows: usize,
    relu_rows: Vec<bool>,
}

/// One tile of output columns: its B base, its offset inside an output channel plane, its width.
#[derive(Clone, Copy)]
struct Cols {
    b: Value,
    at: Value,
    nv: usize,
    lanes: usize,
}

/// The panels of chunk `chunk` of group `g`, one class at a time.
fn for_panels(
    cx: &mut KernelCx,
    plan: &ConvPlan,
    packed: Value,
    relu: Relu,
    g: Value,
    chunk: Value,
    body: &mut dyn FnMut(&mut KernelCx, &Panel),
) {
    let lo = cx.b.ins().imul_imm_s(chunk, plan.panels_per_chunk as i64);
    let hi = cx.b.ins().iadd_imm_s(lo, plan.panels_per_chunk as i64);
    for (start, end, rows, relu_rows) in plan.panel_classes(relu) {
        let (a, b) = (cx.ic(start as i64), cx.ic(end as i64));
        let from = cx.imax(lo, a);
        let to = cx.imin(hi, b);
        cx.for_range(from, to, 1, &format!("panels {start}..{end} ({rows} rows)"), |cx, p| {
            let gp = cx.b.ins().imul_imm_s(g, plan.ppg as i64);
            let gp = cx.b.ins().iadd(gp, p);
            let a = cx.offset(packed, gp, plan.k_g * plan.mr);
            let chan = cx.b.ins().imul_imm_s(gp, plan.mr as i64);
            let co = cx.b.ins().imul_imm_s(g, plan.cout_g as i64);
            let pm = cx.b.ins().imul_imm_s(p, plan.mr as i64);
            let co = cx.b.ins().iadd(co, pm);
            body(cx, &Panel { a, chan, co, rows, relu_rows: relu_rows.clone() });
        });
    }
}

/// Column tiles of one row: `full` run-time-counted tiles of `4*nv` columns from `col0`, then a
/// tail of `tail.1` columns at `tail.0`. `body(col, nv, last_lanes)`.
fn for_cols(
    cx: &mut KernelCx,
    nv: usize,
    col0: Value,
    full: Value,
    tail: Option<(Value, usize)>,
    body: &mut dyn FnMut(&mut KernelCx, Value, usize, usize),
) {
    let nr = nv * LANES;
    let zero = cx.ic(0);
    cx.for_range(zero, full, 1, "column tiles", |cx, t| {
        let off = cx.b.ins().imul_imm_s(t, nr as i64);
        let col = cx.b.ins().iadd(col0, off);
        body(cx, col, nv, LANES);
    });
    if let Some((col, cols)) = tail {
        if cols > 0 {
            body(cx, col, cols.div_ceil(LANES), (cols - 1) % LANES + 1);
        }
    }
}

/// Emits every column tile of an item, calling the visitor with each.
type TileLoop<'a> = dyn FnMut(&mut KernelCx, &mut dyn FnMut(&mut KernelCx, Cols)) + 'a;

/// Emits the tile loops in the plan's order: column tiles outside panels (`tiles_outer`: one B
/// tile stays in L1 while every panel of A streams past) or panels outside tiles (one A panel stays
/// in L1 while the B block streams past).
#[allow(clippy::too_many_arguments)]
fn nest(
    cx: &mut KernelCx,
    plan: &ConvPlan,
    packed: Value,
    relu: Relu,
    g: Value,
    chunk: Value,
    tiles: &mut TileLoop,
    compute: &mut dyn FnMut(&mut KernelCx, &Panel, Cols),
) {
    if plan.tiles_outer {
        tiles(cx, &mut |cx, cols| {
            for_panels(cx, plan, packed, relu, g, chunk, &mut |cx, panel| compute(cx, panel, cols))
        });
    } else {
        for_panels(cx, plan, packed, relu, g, chunk, &mut |cx, panel| {
            tiles(cx, &mut |cx, cols| compute(cx, panel, cols))
        });
    }
}

/// How a tile's K loop relates to the K blocks of the direct path: the whole K at once, or one
/// block whose accumulators start from / end in a partial-sum area (`(base, row stride)`).
#[derive(Clone, Copy)]
struct KPart {
    init: Option<(Value, usize)>,
    partial_out: Option<(Value, usize)>,
}

const WHOLE_K: KPart = KPart { init: None, partial_out: None };

/// The K loop, epilogue and store of one tile; `y`, `res`: the sample's output and residual.
/// With `part.partial_out`, the raw accumulators are stored there instead (not the last K block).
#[allow(clippy::too_many_arguments)]
fn tile(
    cx: &mut KernelCx,
    plan: &ConvPlan,
    kloop: &KLoop,
    packed: Value,
    exact_loads: bool,
    y: Value,
    res: Option<Value>,
    plane: usize,
    panel: &Panel,
    cols: Cols,
    part: KPart,
) {
    let shape = TileShape { rows: panel.rows, mr: plan.mr, nv: cols.nv, last_lanes: cols.lanes, exact_loads };
    let acc = emit_kloop(cx, shape, panel.a, cols.b, kloop, part.init);
    if let Some((base, row)) = part.partial_out {
        store_partial(cx, &acc, base, row);
        return;
    }
    let y_c = cx.offset(y, panel.co, plane);
    let out = cx.offset(y_c, cols.at, 1);
    let res_t = res.map(|r| {
        let r_c = cx.offset(r, panel.co, plane);
        (cx.offset(r_c, cols.at, 1), plane)
    });
    let epi = Epilogue { s1: plan.s1, b1: plan.b1, s2: plan.s2, b2: plan.b2, residual: res_t };
    emit_epilogue_store(cx, shape, acc, packed, panel.chan, &epi, &panel.relu_rows, out, plane);
}

/// One item of the direct 1x1 path (see the module documentation for the loop nest).
#[allow(clippy::too_many_arguments)]
fn direct_item(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    input: Value,
    residual: Option<Value>,
    packed: Value,
    n: Value,
    r: Value,
) {
    let [_, oh, ow] = plan.out;
    let p_total = oh * ow;
    let [cin, h, w] = spec.input;
    let plane_in = h * w;
    let stride = spec.op.conv.stride;
    let nr = plan.nv * LANES;
    let (pb, chunk) = cx.divmod(r, plan.chunks);
    let px0 = cx.b.ins().imul_imm_s(pb, plan.block as i64);
    // Tiles of this block: every block but the last holds `block` pixels.
    let last = plan.blocks - 1;
    let last_len = p_total - last * plan.block;
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, pb, last as i64);
    let (t_full, t_last) = (cx.ic((plan.block / nr) as i64), cx.ic((last_len / nr) as i64));
    let full = cx.b.ins().select(is_last, t_last, t_full);
    let x = cx.offset(input, n, spec.in_stride);
    let y = cx.offset(cx.output, n, spec.out_stride);
    let res = residual.map(|res| cx.offset(res, n, spec.res_stride));
    let tail_cols = last_len % nr;
    let tail_col = last * plan.block + last_len / nr * nr;
    // K blocks: `kblocks - 1` of `kc` channels, then the rest. The packed B slice has rows of
    // `nr` floats, whatever the tile's width.
    let (kc, kb_n) = (plan.kc, plan.kblocks);
    let kc_last = cin - (kb_n - 1) * kc;
    let k_mid = KLoop::strided(kc, plan.mr, nr, 4);
    let k_last = KLoop::strided(kc_last, plan.mr, nr, 4);
    let b_tile = cx.scratch;
    let partials = cx.add_floats(cx.scratch, kc * nr);
    // Partial sums of panel row `co` of this chunk at `partials + (co - chunk_row0) * nr`.
    let chunk_row0 = cx.b.ins().imul_imm_s(chunk, (plan.panels_per_chunk * plan.mr) as i64);
    let g = cx.ic(0);
    let relu = spec.op.relu;
    let mut col_body = |cx: &mut KernelCx, col: Value, nv: usize, lanes: usize| {
        let src = x;
        // Pack rows `k0..k0 + rows` (`src` points at row `k0`), then run every panel of the chunk
        // over them, reading the same rows of A (`a_k0` = `k0 * mr` floats into each panel).
        let k_block = |cx: &mut KernelCx,
                       src: Value,
                       a_k0: Value,
                       rows: usize,
                       kloop: &KLoop,
                       first: bool,
                       fin: bool| {
            if stride == [1, 1] {
                let src = cx.offset(src, col, 1);
                pack_b_tile(cx, src, plane_in, b_tile, nr, rows, nv, lanes);
            } else {
                let sub = Subsample { ow, sh: stride[0], sw: stride[1], w };
                pack_b_tile_strided(cx, src, plane_in, b_tile, nr, rows, col, 4 * (nv - 1) + lanes, nv, sub);
            }
            for_panels(cx, plan, packed, relu, g, chunk, &mut |cx, panel| {
                let rel = cx.b.ins().isub(panel.co, chunk_row0);
                let part = cx.offset(partials, rel, nr);
                let kpart =
                    KPart { init: (!first).then_some((part, nr)), partial_out: (!fin).then_some((part, nr)) };
                let cols = Cols { b: b_tile, at: col, nv, lanes };
                let a = cx.b.ins().iadd(panel.a, a_k0);
                let panel = Panel {
                    a,
                    chan: panel.chan,
                    co: panel.co,
                    rows: panel.rows,
                    relu_rows: panel.relu_rows.clone(),
                };
                tile(cx, plan, kloop, packed, false, y, res, p_total, &panel, cols, kpart);
            });
        };
        let zero = cx.ic(0);
        if kb_n == 1 {
            k_block(cx, src, zero, kc_last, &k_last, true, true);
        } else {
            k_block(cx, src, zero, kc, &k_mid, true, false);
            cx.for_count(kb_n - 2, "middle K blocks", |cx, i| {
                let kb = cx.b.ins().iadd_imm_s(i, 1);
                let s = cx.offset(src, kb, kc * plane_in);
                let a_k0 = cx.b.ins().imul_imm_s(kb, (kc * plan.mr * 4) as i64);
                k_block(cx, s, a_k0, kc, &k_mid, false, false);
            });
            let s = cx.add_floats(src, (kb_n - 1) * kc * plane_in);
            let a_k0 = cx.ic(((kb_n - 1) * kc * plan.mr * 4) as i64);
            k_block(cx, s, a_k0, kc_last, &k_last, false, true);
        }
    };
    for_cols(cx, plan.nv, px0, full, None, &mut col_body);
    if tail_cols > 0 {
        // Only the last block has a tail.
        cx.if_then(is_last, |cx| {
            let col = cx.ic(tail_col as i64);
            col_body(cx, col, tail_cols.div_ceil(LANES), (tail_cols - 1) % LANES + 1);
        });
    }
}

/// How output pixels map to input pixels in a strided 1x1 convolution: output `(oy, ox)` (flat
/// `oy * ow + ox`) reads input `(oy * sh, ox * sw)` of rows `w` floats long.
#[derive(Clone, Copy)]
struct Subsample {
    ow: usize,
    sh: usize,
    sw: usize,
    w: usize,
}

/// [`pack_b_tile`] for a strided 1x1 convolution: lane `i` of the tile (output pixel `col + i`) is
/// gathered from its input pixel. Lanes outer, rows inner: each lane's input offset is computed
/// once (one division by `ow`) and the row loop is then a scalar copy with constant strides.
/// Lanes `cols..4*nv` are zeroed.
#[allow(clippy::too_many_arguments)]
fn pack_b_tile_strided(
    cx: &mut KernelCx,
    src: Value,
    row_stride: usize,
    dst: Value,
    nr: usize,
    rows: usize,
    col: Value,
    cols: usize,
    nv: usize,
    sub: Subsample,
) {
    use cranelift_codegen::ir::types::F32;
    let zero = cx.fconst(F32, 0.0);
    for lane in 0..nv * LANES {
        let d = cx.add_floats(dst, lane);
        if lane >= cols {
            cx.for_count(rows, "pack B: zero lane", |cx, k| {
                let dk = cx.offset(d, k, nr);
                cx.store(zero, dk, 0);
            });
            continue;
        }
        let p = cx.b.ins().iadd_imm_s(col, lane as i64);
        let (oy, ox) = cx.divmod(p, sub.ow);
        let s = cx.offset(src, oy, sub.sh * sub.w);
        let s = cx.offset(s, ox, sub.sw);
        cx.for_count(rows, "pack B: gather lane", |cx, k| {
            let sk = cx.offset(s, k, row_stride);
            let dk = cx.offset(d, k, nr);
            let v = cx.load_s(sk, 0);
            cx.store(v, dk, 0);
        });
    }
}

/// Copies `rows` rows of one column tile of B (`src + k * row_stride`, `4 * (nv - 1) + lanes`
/// floats each) to `dst + k * nr`, as whole vectors: lanes past the tile's columns are zero, so the
/// K loop reads full vectors (and no stale NaN or denormal) from the scratch.
#[allow(clippy::too_many_arguments)]
fn pack_b_tile(
    cx: &mut KernelCx,
    src: Value,
    row_stride: usize,
    dst: Value,
    nr: usize,
    rows: usize,
    nv: usize,
    lanes: usize,
) {
    cx.for_count(rows, "pack B rows", |cx, k| {
        let s = cx.offset(src, k, row_stride);
        let d = cx.offset(dst, k, nr);
        for j in 0..nv {
            let l = if j + 1 == nv { lanes } else { LANES };
            let v = load_lanes(cx, s, j * LANES, l);
            cx.store(v, d, j * LANES);
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn row_item(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    input: Value,
    residual: Option<Value>,
    packed: Value,
    n: Value,
    r: Value,
) {
    let c = &spec.op.conv;
    let [kh_n, kw_n] = c.kernel;
    let (sh, sw) = (c.stride[0], c.stride[1]);
    let (dh, dw) = (c.dilation[0], c.dilation[1]);
    let [_, oh, ow] = plan.out;
    let nr = plan.nv * LANES;
    let (rb, rest) = cx.divmod(r, plan.groups * plan.chunks);
    let (g, chunk) = cx.divmod(rest, plan.chunks);
    let oh0 = cx.b.ins().imul_imm_s(rb, plan.block as i64);
    fill_rows(cx, spec, plan, input, n, g, oh0);

    // Rows of this block: `block`, or what is left for the last one.
    let last = plan.blocks - 1;
    let is_last = cx.b.ins().icmp_imm_s(IntCC::Equal, rb, last as i64);
    let (rows_full, rows_last) = (cx.ic(plan.block as i64), cx.ic((oh - last * plan.block) as i64));
    let block_rows = cx.b.ins().select(is_last, rows_last, rows_full);

    // Taps of one input channel (or 4 channels for 1x1 kernels), offsets into the scratch.
    let row_len = plan.slots * plan.sw_len;
    let kloop = if kh_n * kw_n == 1 {
        KLoop::strided(plan.cin_g, plan.mr, plan.chan_len, 4)
    } else {
        let mut taps = Vec::new();
        for kh in 0..kh_n {
            for kw in 0..kw_n {
                let q = kw * dw;
                let slot = plan.phase_slot[q % sw].expect("every tap's phase has a slot");
                taps.push(Tap {
                    a: (kh * kw_n + kw) * plan.mr,
                    b: kh * dh * row_len + slot * plan.sw_len + q / sw,
                });
            }
        }
        KLoop {
            groups: plan.cin_g,
            taps,
            a_step: kh_n * kw_n * plan.mr,
            b_step: plan.chan_len,
            tail: Vec::new(),
        }
    };
    let y = cx.offset(cx.output, n, spec.out_stride);
    let res = residual.map(|res| cx.offset(res, n, spec.res_stride));
    let plane = oh * ow;
    let nv = plan.nv;
    let mut tiles = |cx: &mut KernelCx, body: &mut dyn FnMut(&mut KernelCx, Cols)| {
        let zero = cx.ic(0);
        cx.for_range(zero, block_rows, 1, "output rows of the block", |cx, t| {
            let b_row = cx.offset(cx.scratch, t, sh * row_len);
            let out_row = cx.b.ins().iadd(oh0, t);
            let row_at = cx.b.ins().imul_imm_s(out_row, ow as i64);
            let zero = cx.ic(0);
            let full = cx.ic((ow / nr) as i64);
            let tail_col = cx.ic((ow / nr * nr) as i64);
            for_cols(cx, nv, zero, full, Some((tail_col, ow % nr)), &mut |cx, col, nv, lanes| {
                let b = cx.offset(b_row, col, 1);
                let at = cx.b.ins().iadd(row_at, col);
                body(cx, Cols { b, at, nv, lanes });
            });
        });
    };
    let mut compute = |cx: &mut KernelCx, panel: &Panel, cols: Cols| {
        tile(cx, plan, &kloop, packed, false, y, res, plane, panel, cols, WHOLE_K)
    };
    nest(cx, plan, packed, spec.op.relu, g, chunk, &mut tiles, &mut compute);
}

/// Fills the scratch with the padded phase rows of group `g`'s channels for output rows from `oh0`.
/// Scratch float `ci * chan_len + rho * slots * sw_len + slot(f) * sw_len + col` holds padded input
/// column `col * sw + f` of input row `oh0 * sh - ph + rho` (zero outside the input).
fn fill_rows(
    cx: &mut KernelCx,
    spec: &ConvSpec,
    plan: &ConvPlan,
    input: Value,
    n: Value,
    g: Value,
    oh0: Value,
) {
    let c = &spec.op.conv;
    let [_, h, w] = spec.input;
    let (sh, sw) = (c.stride[0], c.stride[1]);
    let (ph, pw) = (c.padding[0], c.padding[1]);
    let dh = c.dilation[0];
    let row_len = plan.slots * plan.sw_len;
    // Scratch rows some tap reads: rho = t*sh + kh*dh.
    let mut needed = vec![false; plan.rows];
    for t in 0..plan.block {
        for kh in 0..c.kernel[0] {
            needed[t * sh + kh * dh] = true;
        }
    }
    let x = cx.offset(input, n, spec.in_stride);
    let ci0 = cx.b.ins().imul_imm_s(g, plan.cin_g as i64);
    let x = cx.offset(x, ci0, h * w);
    let ih0 = cx.b.ins().imul_imm_s(oh0, sh as i64);
    let ih0 = cx.b.ins().iadd_imm_s(ih0, -(ph as i64));
    let packed = plan.pre.map(|_| cx.ptr_at(cx.weights, 0));
    cx.for_count(plan.cin_g, "fill: input channels", |cx, ci| {
        let src_c = cx.offset(x, ci, h * w);
        let dst_c = cx.offset(cx.scratch, ci, plan.chan_len);
        let pro = match (plan.pre, packed) {
            (Some(at), Some(packed)) => {
                let ci_g = cx.b.ins().iadd(ci0, ci);
                let base = cx.add_floats(packed, at);
                let p = cx.offset(base, ci_g, 1);
                let relu = spec.op.prologue == Some(true);
                Some((p, spec.input[0], relu))
            }
            _ => None,
        };
        for (rho, _) in needed.iter().enumerate().filter(|(_, &need)| need) {
            let ih = cx.b.ins().iadd_imm_s(ih0, rho as i64);
            // 0 <= ih < H as one unsigned compare.
            let inside = cx.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, h as i64);
            let dst = cx.add_floats(dst_c, rho * row_len);
            let then_block = cx.b.create_block();
            let else_block = cx.b.create_block();
            let done = cx.b.create_block();
            cx.b.ins().brif(inside, then_block, &[], else_block, &[]);
            cx.b.switch_to_block(then_block);
            cx.b.seal_block(then_block);
            cx.note(then_block, format!("fill: row {rho} inside the input"));
            let src = cx.offset(src_c, ih, w);
            for (f, slot) in plan.phase_slot.iter().enumerate() {
                let Some(slot) = slot else { continue };
                // Columns col with 0 <= col*sw + f - pw < W.
                let lo = pw.saturating_sub(f).div_ceil(sw).min(plan.sw_len);
                let hi = (w + pw).saturating_sub(f).div_ceil(sw).clamp(lo, plan.sw_len);
                let d = cx.add_floats(dst, slot * plan.sw_len);
                zero_run(cx, d, 0, lo);
                copy_run(cx, src, lo * sw + f - pw, sw, d, lo, hi - lo, pro);
                zero_run(cx, d, hi, plan.sw_len - hi);
            }
            cx.b.ins().jump(done, &[]);
            cx.b.switch_to_block(else_block);
            cx.b.seal_block(else_block);
            cx.note(else_block, format!("fill: row {rho} in the padding"));
            zero_run(cx, dst, 0, row_len);
            cx.b.ins().jump(done, &[]);
            cx.b.switch_to_block(done);
            cx.b.seal_block(done);
        }
    });
}

/// Stores `len` zeros at `dst + at`.
fn zero_run(cx: &mut KernelCx, dst: Value, at: usize, len: usize) {
    use super::cx::VEC;
    use cranelift_codegen::ir::types::F32;
    let zv = cx.fconst(VEC, 0.0);
    let zs = cx.fconst(F32, 0.0);
    let vecs = len / LANES;
    if vecs > 8 {
        let base = cx.add_floats(dst, at);
        cx.for_count(vecs, "zero fill", |cx, i| {
            let p = cx.offset(base, i, LANES);
            cx.store(zv, p, 0);
        });
    } else {
        for v in 0..vecs {
            cx.store(zv, dst, at + v * LANES);
        }
    }
    for s in vecs * LANES..len {
        cx.store(zs, dst, at + s);
    }
}

/// Copies `len` floats from `src + from + i*step` to `dst + at + i`, applying the prologue
/// (`x * pre_scale + pre_shift`, ReLU) when given as `(pointer to pre_scale[ci], Cin, relu)`.
#[allow(clippy::too_many_arguments)]
fn copy_run(
    cx: &mut KernelCx,
    src: Value,
    from: usize,
    step: usize,
    dst: Value,
    at: usize,
    len: usize,
    pro: Option<(Value, usize, bool)>,
) {
    use super::cx::VEC;
    use cranelift_codegen::ir::types::F32;
    let pro_vals = |cx: &mut KernelCx, ty| {
        pro.map(|(p, cin, relu)| {
            let (s, b) = (cx.load_s(p, 0), cx.load_s(p, cin));
            if ty == F32 {
                (s, b, relu)
            } else {
                (cx.b.ins().splat(VEC, s), cx.b.ins().splat(VEC, b), relu)
            }
        })
    };
    let apply = |cx: &mut KernelCx, x: Value, p: Option<(Value, Value, bool)>| match p {
        Some((s, b, relu)) => {
            let y = cx.b.ins().fma(x, s, b);
            if relu {
                cx.relu(y)
            } else {
                y
            }
        }
        None => x,
    };
    let src = cx.add_floats(src, from);
    let dst = cx.add_floats(dst, at);
    if step == 1 {
        let vecs = len / LANES;
        let pv = pro_vals(cx, VEC);
        if vecs > 0 {
            cx.for_count(vecs, "fill: copy vectors", |cx, i| {
                let s = cx.offset(src, i, LANES);
                let d = cx.offset(dst, i, LANES);
                let v = cx.load_v(s, 0);
                let v = apply(cx, v, pv);
                cx.store(v, d, 0);
            });
        }
        let ps = pro_vals(cx, F32);
        for i in vecs * LANES..len {
            let v = cx.load_s(src, i);
            let v = apply(cx, v, ps);
            cx.store(v, dst, i);
        }
    } else {
        let ps = pro_vals(cx, F32);
        cx.for_count(len, "fill: gather stride", |cx, i| {
            let s = cx.offset(src, i, step);
            let d = cx.offset(dst, i, 1);
            let v = cx.load_s(s, 0);
            let v = apply(cx, v, ps);
            cx.store(v, d, 0);
        });
    }
}
