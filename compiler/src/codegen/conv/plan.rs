//! Every compile-time decision about one convolution kernel: the packed weight layout (the same on
//! every ISA, so bundles are portable) and, per ISA, the tile, the work split and the scratch.
//! The packer and the generator both derive from these structures, so layout and code agree.

use super::ConvSpec;
use crate::codegen::isa::{zmm_doubles_peak, Isa};
use crate::codegen::tile::{x86, Piece, PostActivation};
use crate::codegen::CodegenError;
use crate::ir::{ConvKind, Relu, WinogradTile};

/// Output channels per packed A panel. Every ISA's tile height divides it or is a multiple of it,
/// so one packed layout serves every tile: a tile of `mt` rows reads rows `r % 12` of panels
/// `r / 12` (see [`crate::codegen::tile::RowsA::Panels`]).
pub const PANEL_ROWS: usize = 12;

/// Output channels per packed B panel of a `chanvec` convolution (its weights are the B operand:
/// channels in the vector lanes). Every ISA's tile width divides it: avx512 reads a whole panel
/// (two zmm), avx2 and sse half of one (two ymm, four xmm).
pub const CHANVEC_PANEL: usize = 32;

/// Which loop nest a convolution compiles to (the algorithm: the optimiser's [`ConvKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPath {
    /// `gemm1x1`: a GEMM over channels on packed B tiles, no im2col.
    Direct1x1,
    /// `rowpanel`: an implicit GEMM over a padded copy of the input rows.
    RowPanel,
    /// `winograd`: Winograd's minimal filtering over a padded copy of the input rows (see
    /// [`super::winograd`]).
    Winograd(WinogradTile),
    /// `chanvec`: output channels in the vector lanes, output pixels in the tile rows (see
    /// [`super::chanvec`]).
    ChanVec,
    /// `depthwise`: one channel per group, each plane filtered on its own with output pixels in
    /// the vector lanes (see [`super::depthwise`]).
    Depthwise,
}

impl ConvPath {
    /// The algorithm's name in kernel names (`conv.gemm1x1.avx512`).
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Direct1x1 => "gemm1x1",
            ConvPath::RowPanel => "rowpanel",
            ConvPath::Winograd(_) => "winograd",
            ConvPath::ChanVec => "chanvec",
            ConvPath::Depthwise => "depthwise",
        }
    }

    /// The path of a fused convolution, from the algorithm the optimiser chose.
    ///
    /// A strided 1x1 convolution runs as a row panel: its fill subsamples the input with vector
    /// de-interleaves (once per item, for every channel), and a flat panel over the subsampled
    /// rows has no padding columns to waste lanes on.
    pub fn of(spec: &ConvSpec) -> ConvPath {
        let c = &spec.op.conv;
        match spec.op.kind {
            ConvKind::Winograd(tile) => return ConvPath::Winograd(tile),
            ConvKind::ChanVec => return ConvPath::ChanVec,
            ConvKind::Depthwise => return ConvPath::Depthwise,
            _ => {}
        }
        if spec.op.kind == ConvKind::Gemm1x1 && c.groups == 1 && c.kernel == [1, 1] && c.padding == [0, 0] {
            ConvPath::Direct1x1
        } else {
            ConvPath::RowPanel
        }
    }
}

/// The packed weights of a convolution (ISA-independent, see [`crate::codegen::pack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLayout {
    pub groups: usize,
    pub cin_g: usize,
    pub cout_g: usize,
    /// K per group: `cin_g * KH * KW`.
    pub k_g: usize,
    /// Output channels per packed panel: [`PANEL_ROWS`], or [`CHANVEC_PANEL`] for `chanvec`.
    pub panel: usize,
    /// Panels of `panel` output channels per group (the last may be partial).
    pub ppg: usize,
    /// Weight matrices: 1, or `a*a` for a Winograd convolution (one `Cout x Cin` matrix per point
    /// of the transformed tile, each packed in panels, [`ConvLayout::point_stride`] apart).
    pub points: usize,
    /// Float offsets of the epilogue vectors (`groups * ppg * panel` each, indexed by
    /// `g * ppg * PANEL_ROWS + channel in group`) and of `pre_scale`, `pre_shift` (`Cin` each).
    pub s1: Option<usize>,
    pub b1: Option<usize>,
    pub s2: Option<usize>,
    pub b2: Option<usize>,
    pub pre: Option<usize>,
    pub packed_len: usize,
}

impl ConvLayout {
    pub fn new(spec: &ConvSpec) -> Result<ConvLayout, CodegenError> {
        let op = &spec.op;
        let c = &op.conv;
        spec.output()?;
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
        if op.kind == ConvKind::ChanVec && (g != 1 || op.prologue.is_some()) {
            return Err(CodegenError::Unsupported("a chanvec convolution with groups or a prologue".into()));
        }
        if op.kind == ConvKind::Depthwise
            && (!crate::ir::FusedConv::depthwise_geometry(c) || op.prologue.is_some())
        {
            return Err(CodegenError::Unsupported(
                "a depthwise kernel needs one channel per group, a square odd window, stride 1 or 2, padding k/2, no dilation and no prologue".into(),
            ));
        }
        if op.channel_scale && (ConvPath::of(spec) != ConvPath::Direct1x1 || op.prologue.is_some()) {
            return Err(CodegenError::Unsupported(
                "a channel scale needs the 1x1 GEMM path and no prologue".into(),
            ));
        }
        if op.prologue.is_some() && (c.padding != [0, 0] || c.kernel != [1, 1] || g != 1) {
            return Err(CodegenError::Unsupported(
                "a prologue needs an unpadded, ungrouped 1x1 convolution".into(),
            ));
        }
        let (cin_g, cout_g) = (cin / g, c.out_channels / g);
        let (k_g, points) = match op.kind {
            ConvKind::Winograd(tile) => (cin_g, tile.alpha() * tile.alpha()),
            _ => (cin_g * c.kernel[0] * c.kernel[1], 1),
        };
        // Depthwise: one channel per group and panel, so a channel's `k*k` taps are consecutive
        // floats and its epilogue values sit at index `g`.
        let panel = match op.kind {
            ConvKind::ChanVec => CHANVEC_PANEL,
            ConvKind::Depthwise => 1,
            _ => PANEL_ROWS,
        };
        let ppg = cout_g.div_ceil(panel);
        let rows_total = g * ppg * panel;
        let mut len = points * g * ppg * k_g * panel;
        let mut section = |present: bool, size: usize| {
            present.then(|| {
                let at = len;
                len += size;
                at
            })
        };
        // Without a residual the post-affine folds into s1/b1 (see `pack`).
        let fold_post = !op.residual;
        let s1 = section(op.affine || (fold_post && op.post_affine), rows_total);
        let b1 = section(c.bias || op.affine || (fold_post && op.post_affine), rows_total);
        let s2 = section(!fold_post && op.post_affine, rows_total);
        let b2 = section(!fold_post && op.post_affine, rows_total);
        let pre = section(op.prologue.is_some(), 2 * cin);
        Ok(ConvLayout {
            groups: g,
            cin_g,
            cout_g,
            k_g,
            panel,
            ppg,
            points,
            s1,
            b1,
            s2,
            b2,
            pre,
            packed_len: len,
        })
    }

    /// Floats between consecutive A panels.
    pub fn panel_stride(&self) -> usize {
        self.k_g * self.panel
    }

    /// Floats between the weight matrices of consecutive Winograd points.
    pub fn point_stride(&self) -> usize {
        self.groups * self.ppg * self.panel_stride()
    }
}

/// Register tile (rows x vectors) per ISA and path, measured on ResNet-50's shapes
/// (`cargo bench --bench kernels -- --sweep`). Rows divide [`PANEL_ROWS`] or are multiples of it.
/// - sse: 3 x 4 vectors (3x16): beat 6x8, 5x8, 4x12, 3x12 and 2x24 with f32x4.
/// - avx2: 6 x 2 ymm (6x16): 12 accumulators, 2 B vectors, 2 broadcasts of the 16 registers.
/// - avx512: 12 x 2 zmm (12x32): 24 accumulators, 2 B vectors, 2 broadcasts of the 32.
///
/// Rows of a narrow output (at most one vector wide) take one vector per row instead, with twice
/// the rows: avx512 24x16 (embedded broadcasts), avx2 12x8, so 7- and 14-wide planes do not run
/// mostly empty lanes.
pub fn default_tile(isa: Isa, path: ConvPath, ow: usize) -> (usize, usize) {
    let narrow = path == ConvPath::RowPanel && ow <= isa.lanes();
    match (isa, narrow) {
        (Isa::Sse, _) => (3, 4),
        (Isa::Avx2, false) => (6, 2),
        (Isa::Avx2, true) => (12, 1),
        (Isa::Avx512, false) => (12, 2),
        (Isa::Avx512, true) => (24, 1),
    }
}

/// Work items per sample worth aiming for (balance over 2+ threads at batch 1).
const TARGET_ITEMS: usize = 16;
/// Packed A up to this size is read from L2 once per column tile (tiles outside panels).
const A_IN_L2_BYTES: usize = 512 * 1024;
/// Direct path: most input channels per K block (a packed `KC_MAX x 32` B slice is 32 KB; with a
/// slice of A it stays in L1/L2).
const KC_MAX: usize = 256;

/// Direct path: a kernel call writing at least this many output bytes stores them non-temporally
/// (when aligned and not in place, see [`ConvPlan::stream_from`]): that much output does not stay
/// in the last-level cache (32 MiB, shared) for the next layer anyway, and streaming it saves the
/// read for ownership of every output line (a third of the traffic of an output-bound layer).
const STREAM_BYTES: usize = 16 << 20;

/// Direct path: most row tiles (of the default tile) for which whole column tiles read B in place
/// (see [`reads_b_in_place`]): each row tile reads the B tile again from its strided rows.
const B_IN_PLACE_ROW_TILES: usize = 24;

/// Whether the direct 1x1 path's whole column tiles read B in place from the input's channel rows
/// instead of a packed copy, for a stride-1 layer without a prologue with `cout` output channels and
/// a `plane`-pixel output (avx2/avx512; the SSE tile has no prefetch).
///
/// Packing a tile copies `Cin` rows of `NR` floats, each from its own channel plane: at large
/// planes and batches those are `Cin` concurrent streams from L3 or memory, which the hardware
/// prefetchers do not follow, and the copy's stores stall behind its loads, so the layer waited on
/// memory (144->24 at 56x56, batch 8: 44% of the FMA peak on one avx512 thread). Read in place,
/// every tap also prefetches its rows' lines one column tile ahead
/// ([`crate::codegen::tile::KLoop::prefetch_b`]), and the copy is gone: 86% there, and 92-99% at
/// batch 1 for every Zen 4 shape measured with up to 24 row tiles (`cargo bench --bench kernels`;
/// 64->256 at 56x56 and 128->512 at 28x28 unchanged). More row tiles re-read B from its strided
/// rows too often (avx2, 256->1024 at 14x14: 85% -> 69%), and planes under four tiles (7x7) run
/// slower than packed (their rows share lines and leave the tail tile packed anyway).
pub fn reads_b_in_place(isa: Isa, cout: usize, plane: usize) -> bool {
    let (mt, nv) = default_tile(isa, ConvPath::Direct1x1, plane);
    let nr = nv * isa.lanes();
    isa != Isa::Sse && cout.div_ceil(mt) <= B_IN_PLACE_ROW_TILES && plane >= 4 * nr
}

/// The register tile of a direct 1x1 GEMM reading B in place ([`reads_b_in_place`]).
///
/// avx512 where a zmm FMA does not double the peak (Zen 4, [`zmm_doubles_peak`]): 12 x 1 zmm
/// (12x16, embedded broadcasts), a B tile of one cache line per input channel, whose `Cin` lines
/// stay in L1 for the next row tile where the default 12x32's twice as many do not (one Zen 4
/// thread, batch 8: 144->24 at 56x56 105-112 GFLOP/s against 83-91, 24->144 112 against 103,
/// 64->256 99 against 81; batch 1 equal or better on every shape measured).
///
/// avx512 where zmm FMAs double the peak (AMD from Zen 5 on, and Intel's AVX-512 cores as that
/// predicate counts them; measured on Zen 5 only): the default 12 x 2 zmm. Two zmm FMAs a cycle
/// need two operands a cycle: 12x16 loads 13 (12 broadcasts and a B vector) for 12 FMAs and waits
/// on the load ports, 12x32 loads 14 for 24 (one Zen 5 thread, `cargo bench --bench kernels --
/// --sweep 1x1`, batch 1: 672->112 at 14x14 72% -> 82% of peak, 576->96 at 14x14 75% -> 87%,
/// 144->24 at 56x56 81% -> 90%, 16->96 at 112x112 69% -> 84%, 256->64 at 56x56 81% -> 95%;
/// batch 8: 144->24 at 56x56 80% -> 91%, 24->144 75% -> 90%, 672->112 at 14x14 74% -> 86%).
///
/// avx2 keeps 6 x 2 ymm (12 x 1 ymm, without embedded broadcasts, was 10-25% slower).
fn in_place_tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 if !zmm_doubles_peak() => (12, 1),
        _ => default_tile(isa, ConvPath::Direct1x1, usize::MAX),
    }
}

/// Most column tiles per flat block (each is a separate tile variant).
const MAX_FLAT_TILES: usize = 16;
/// Most scratch bytes of a flat block.
const FLAT_SCRATCH_BYTES: usize = 256 * 1024;

/// A column tile of a flat row panel (see [`ConvPlan::flat_tiles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatTile {
    /// First column of the block's column axis (and B offset into the scratch rows).
    pub q0: usize,
    pub nv: usize,
    pub pieces: Vec<Vec<Piece>>,
}

/// The ISA-dependent plan of a convolution kernel.
#[derive(Debug, Clone)]
pub struct ConvPlan {
    pub isa: Isa,
    pub path: ConvPath,
    pub layout: ConvLayout,
    /// Tile rows (output channels) and vectors per tile row; `lanes` floats per vector.
    pub mt: usize,
    pub nv: usize,
    pub lanes: usize,
    /// Row tiles per group (the last may be partial).
    pub tpg: usize,
    pub out: [usize; 3],
    /// Work split: chunks of row tiles per group, and either pixel blocks (direct) or row blocks.
    pub chunks: usize,
    pub tiles_per_chunk: usize,
    /// Loop order inside an item: column tiles outside row tiles (see `nest`).
    pub tiles_outer: bool,
    pub blocks: usize,
    /// Pixels (direct) or output rows (row panel) per block.
    pub block: usize,
    // Row panel geometry.
    /// Whether the block's output rows form one column axis (stride 1 only; see
    /// [`ConvPlan::flat_tiles`]) instead of tiles per output row.
    pub flat: bool,
    /// Phase rows kept per input row, and the slot of each phase (`None`: no tap reads it).
    pub phase_slot: Vec<Option<usize>>,
    pub slots: usize,
    /// Floats per phase row, per channel.
    pub sw_len: usize,
    /// Flat panels: the slot of each row phase (`rho % sh`; `None`: no tap reads it), and floats
    /// per (row phase, column phase) plane of `ceil(rows / sh)` phase rows.
    pub row_phase_slot: Vec<Option<usize>>,
    pub plane_len: usize,
    pub rows: usize,
    pub chan_len: usize,
    /// Direct path: input channels per K block and the number of K blocks (the last block holds
    /// `Cin - (kblocks - 1) * kc` channels).
    pub kc: usize,
    pub kblocks: usize,
    /// Direct path: the smallest batch from which the outputs are streamed past the cache
    /// ([`crate::codegen::tile::TileOut::Final`]'s `stream`; `None`: never). Only on the assembled
    /// ISAs, and only for layouts where every whole output vector is vector-aligned once the
    /// output base is (channel planes and the sample stride a multiple of the vector); the kernel
    /// checks the base's alignment, and that the output is not the residual (in place, the lines
    /// were just read: a normal store is cheaper), at run time.
    pub stream_from: Option<usize>,
    /// Direct path: whole column tiles read B in place from the input rows (not packed), with
    /// this many bytes of software prefetch ahead ([`crate::codegen::tile::KLoop::prefetch_b`]).
    pub b_in_place: Option<usize>,
    /// Direct path on a one-pixel plane: one weight panel per item, as a matrix-vector product
    /// (see `direct::gemv`).
    pub gemv: bool,
    /// Direct path with a `channel_scale`: where in the scratch (floats) the weight panels scaled
    /// by the sample's channel factors are kept (see `direct`).
    pub scaled_a: Option<usize>,
    /// The Winograd path's own geometry.
    pub winograd: Option<super::winograd::WinogradPlan>,
    /// The activation every kernel path applies last in its epilogue (from the op).
    pub activation: Option<PostActivation>,
    /// The chanvec path's own geometry.
    pub chanvec: Option<super::chanvec::ChanVecPlan>,
    /// The depthwise path's own geometry.
    pub depthwise: Option<super::depthwise::DepthwisePlan>,
}

impl ConvPlan {
    pub fn new(spec: &ConvSpec, isa: Isa) -> Result<ConvPlan, CodegenError> {
        let layout = ConvLayout::new(spec)?;
        let c = &spec.op.conv;
        let out = spec.output()?;
        let [cin, _, _] = spec.input;
        let [_, oh, ow] = out;
        let path = ConvPath::of(spec);
        let lanes = isa.lanes();
        let plain_1x1 = path == ConvPath::Direct1x1 && c.stride == [1, 1] && spec.op.prologue.is_none();
        let in_place = plain_1x1 && reads_b_in_place(isa, layout.cout_g, oh * ow);
        let (mt, nv) = spec.tile.unwrap_or_else(|| match in_place {
            true => in_place_tile(isa),
            false => default_tile(isa, path, ow),
        });
        let fits = match isa {
            Isa::Sse => mt * nv + 2 <= 16,
            _ => mt * nv <= x86::max_accumulators(isa),
        };
        let stacks = mt > 0 && (PANEL_ROWS % mt == 0 || mt % PANEL_ROWS == 0);
        if nv == 0 || !fits || !stacks {
            return Err(CodegenError::Unsupported(format!(
                "register tile {mt}x{nv} does not fit the {isa} registers or the {PANEL_ROWS}-row panels"
            )));
        }
        let g = layout.groups;
        let tpg = layout.cout_g.div_ceil(mt);
        let mut plan = ConvPlan {
            isa,
            path,
            mt,
            nv,
            lanes,
            tpg,
            out,
            chunks: 1,
            tiles_per_chunk: tpg,
            tiles_outer: spec.order.unwrap_or(g * layout.ppg * layout.k_g * PANEL_ROWS * 4 <= A_IN_L2_BYTES),
            blocks: 1,
            block: 0,
            flat: false,
            phase_slot: Vec::new(),
            slots: 0,
            sw_len: 0,
            row_phase_slot: Vec::new(),
            plane_len: 0,
            rows: 0,
            chan_len: 0,
            kc: layout.k_g,
            kblocks: 1,
            stream_from: None,
            b_in_place: None,
            gemv: false,
            scaled_a: None,
            winograd: None,
            chanvec: None,
            depthwise: None,
            activation: spec.op.activation.map(PostActivation),
            layout,
        };
        let nr = nv * lanes;
        match path {
            ConvPath::Direct1x1 => {
                let tiles = (oh * ow).div_ceil(nr);
                // Tiles are packed one by one, so the block size only sets the work split: aim for
                // 2 * TARGET_ITEMS items, after splitting A into chunks that fit in L2. (Choosing
                // the split by bytes moved, fewer pixel blocks for small planes, measured slower:
                // each extra chunk packs B again.)
                let a_bytes = plan.layout.ppg * plan.layout.k_g * PANEL_ROWS * 4;
                let a_chunks = a_bytes.div_ceil(A_IN_L2_BYTES).clamp(1, tpg);
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
                if in_place {
                    // One column tile ahead: the lines the next tile reads from each row.
                    plan.b_in_place = Some(nr * 4);
                }

                let plane = oh * ow;
                let aligned = plane % lanes == 0 && spec.out_stride % lanes == 0;
                if isa != Isa::Sse && aligned {
                    let bytes = c.out_channels * plane * 4;
                    let from = spec.stream_bytes.unwrap_or(STREAM_BYTES);
                    plan.stream_from = Some(from.div_ceil(bytes).max(1));
                }
            }
            ConvPath::Winograd(tile) => super::winograd::plan(&mut plan, spec, tile),
            ConvPath::Depthwise => super::depthwise::plan(&mut plan, spec),
            ConvPath::ChanVec => {
                if plan.layout.cout_g % 4 != 0 {
                    return Err(CodegenError::Unsupported(
                        "a chanvec convolution needs a multiple of 4 output channels".into(),
                    ));
                }
                super::chanvec::plan(&mut plan, spec)
            }
            ConvPath::RowPanel => {
                let (sh, sw) = (c.stride[0], c.stride[1]);
                let (dh, dw) = (c.dilation[0], c.dilation[1]);
                plan.block = 64usize.div_ceil(ow).clamp(1, oh);
                plan.blocks = oh.div_ceil(plan.block);
                let (phase_slot, slots) = crate::codegen::rows::phase_slots(c.kernel[1], dw, sw);
                let max_shift = (c.kernel[1] - 1) * dw / sw;
                plan.phase_slot = phase_slot;
                plan.slots = slots;
                // Tiles read whole vectors: the last one of a row up to `ceil(ow / lanes) * lanes`,
                // plus the largest tap shift.
                plan.sw_len = (ow.div_ceil(lanes) * lanes + max_shift).div_ceil(lanes) * lanes;
                let flat = if spec.tile.is_none() { plan.flat_block(spec, ow + max_shift) } else { None };
                if let Some(rb) = flat {
                    // A flat block: phase rows exactly `ow + max_shift` long, one after the other
                    // per row phase, with a vector of slack after each channel (tiles read whole
                    // vectors).
                    // Wide tiles, or the narrow one when the whole block is one vector.
                    let cols = (rb - 1) * (ow + max_shift) + ow;
                    let (mt, nv) =
                        default_tile(isa, ConvPath::RowPanel, if cols <= lanes { cols } else { usize::MAX });
                    plan.mt = mt;
                    plan.nv = nv;
                    plan.tpg = plan.layout.cout_g.div_ceil(mt);
                    plan.flat = true;
                    plan.block = rb;
                    plan.blocks = oh.div_ceil(rb);
                    plan.sw_len = ow + max_shift;
                }
                plan.rows = (plan.block - 1) * sh + (c.kernel[0] - 1) * dh + 1;
                if plan.flat {
                    // Row phases some tap reads (every output row t reads rows t*sh + kh*dh).
                    let (row_phase_slot, row_slots) = crate::codegen::rows::phase_slots(c.kernel[0], dh, sh);
                    plan.row_phase_slot = row_phase_slot;
                    plan.plane_len = plan.rows.div_ceil(sh) * plan.sw_len;
                    plan.chan_len = row_slots * slots * plan.plane_len + lanes;
                } else {
                    plan.chan_len = plan.rows * slots * plan.sw_len;
                }
            }
        }
        let units = plan.blocks * g;
        let tpg = plan.tpg;
        plan.chunks = TARGET_ITEMS.div_ceil(units).max(plan.chunks).clamp(1, tpg);
        plan.tiles_per_chunk = tpg.div_ceil(plan.chunks);
        plan.chunks = tpg.div_ceil(plan.tiles_per_chunk);
        if path == ConvPath::Direct1x1
            && oh * ow == 1
            && !spec.op.residual
            && !spec.op.channel_scale
            && spec.op.prologue.is_none()
            && matches!(spec.op.relu, Relu::None | Relu::All)
        {
            // Squeeze-and-excitation's 1x1 convolutions of the pooled vector: a tile of pixels in
            // lanes would use one lane of each vector (and pack B for every tile).
            plan.gemv = true;
            plan.blocks = 1;
            plan.chunks = plan.layout.ppg;
            plan.tiles_per_chunk = PANEL_ROWS.div_ceil(plan.mt);
        }
        if spec.op.channel_scale {
            // After the B tile and the partial sums.
            let nr = plan.nv * plan.lanes;
            let partials = if plan.kblocks > 1 { plan.tiles_per_chunk * plan.mt * nr } else { 0 };
            plan.scaled_a = Some((plan.kc * nr + partials).next_multiple_of(16));
        }
        if matches!(plan.path, ConvPath::Winograd(_)) {
            super::winograd::finish(&mut plan);
        }
        Ok(plan)
    }

    /// The rows per block of a flat row panel, if one beats tiles per output row: the share of
    /// stored lanes among computed ones (tiles shrink to the vectors they need, so a row of `ow`
    /// computes `ceil(ow / lanes)` vectors, a flat block `ceil(((rb-1) * row_len + ow) / lanes)`),
    /// over blocks of at most [`MAX_FLAT_TILES`] wide tiles whose scratch stays in L2
    /// ([`FLAT_SCRATCH_BYTES`], or more when the weights are large: every block streams all of
    /// them, so fewer, taller blocks save more than a bigger scratch costs).
    fn flat_block(&self, spec: &ConvSpec, row_len: usize) -> Option<usize> {
        let c = &spec.op.conv;
        let [_, oh, ow] = self.out;
        let (sh, dh) = (c.stride[0], c.dilation[0]);
        let lanes = self.lanes;
        let per_row = ow as f64 / (ow.div_ceil(lanes) * lanes) as f64;
        let (_, nv) = default_tile(self.isa, ConvPath::RowPanel, usize::MAX);
        let nr = nv * lanes;
        let row_phases = crate::codegen::rows::phase_slots(c.kernel[0], dh, sh).1;
        let scratch_bytes = |rb: usize| {
            let rows = (rb - 1) * sh + (c.kernel[0] - 1) * dh + 1;
            4 * self.layout.cin_g * (row_phases * self.slots * rows.div_ceil(sh) * row_len + lanes)
        };
        let a_bytes = 4 * self.layout.groups * self.layout.ppg * self.layout.panel_stride();
        let limit =
            if a_bytes > 4 * FLAT_SCRATCH_BYTES { 3 * FLAT_SCRATCH_BYTES } else { FLAT_SCRATCH_BYTES };
        let mut best: Option<(f64, usize)> = None;
        for rb in 1..=oh {
            let cols = (rb - 1) * row_len + ow;
            if cols.div_ceil(nr) > MAX_FLAT_TILES || (rb > 1 && scratch_bytes(rb) > limit) {
                break;
            }
            let eff = (rb * ow) as f64 / (cols.div_ceil(lanes) * lanes) as f64;
            if best.is_none_or(|(e, _)| eff >= e) {
                best = Some((eff, rb));
            }
        }
        best.filter(|&(eff, _)| eff > per_row + 0.02).map(|(_, rb)| rb)
    }

    /// The column tiles of a flat block of `rows` output rows: column `q` of the block is output
    /// pixel `(q / row_len, q % row_len)` of the block, stored when `q % row_len < ow`. Each tile
    /// reads B at scratch column `q0` and stores its vectors' valid lanes as pieces, offsets
    /// relative to the block's first output pixel (lane `l` of vector `j`, column
    /// `q = q0 + j*lanes + l` of row `t`, goes to `t * ow + q % row_len`).
    pub fn flat_tiles(&self, rows: usize) -> Vec<FlatTile> {
        let (ow, row_len, lanes) = (self.out[2], self.sw_len, self.lanes);
        let nr = self.nv * lanes;
        let cols = (rows - 1) * row_len + ow;
        (0..cols.div_ceil(nr))
            .map(|t| {
                let q0 = t * nr;
                let nv = (cols - q0).min(nr).div_ceil(lanes);
                let pieces = (0..nv)
                    .map(|j| {
                        let base = q0 + j * lanes;
                        let mut pieces: Vec<Piece> = Vec::new();
                        for l in 0..lanes {
                            let q = base + l;
                            let (row, ox) = (q / row_len, q % row_len);
                            if q >= cols || ox >= ow {
                                continue;
                            }
                            let at = base as isize - (row * (row_len - ow)) as isize;
                            match pieces.last_mut() {
                                Some(p) if p.at == at && p.hi == l => p.hi = l + 1,
                                _ => pieces.push(Piece { lo: l, hi: l + 1, at }),
                            }
                        }
                        pieces
                    })
                    .collect();
                FlatTile { q0, nv, pieces }
            })
            .collect()
    }

    /// Where scratch row `rho` of the block (input row `oh0*sh - ph + rho`), column phase slot
    /// `slot`, starts inside a channel (floats), or `None` for a row no tap reads. Per-row panels
    /// keep rows in order, each as `slots` phase rows; flat panels keep one plane per (row phase,
    /// column phase), so output row `t` of a tap is row `t` after the tap's first row, whatever
    /// the stride.
    pub fn row_at(&self, rho: usize, slot: usize) -> Option<usize> {
        if !self.flat {
            return Some((rho * self.slots + slot) * self.sw_len);
        }
        let sh = self.row_phase_slot.len();
        let p = self.row_phase_slot[rho % sh]?;
        Some((p * self.slots + slot) * self.plane_len + rho / sh * self.sw_len)
    }

    /// The share of computed lanes that hold outputs (the rest pad vectors past a row, a plane or
    /// a tile grid).
    pub fn lane_share(&self) -> f64 {
        let [_, oh, ow] = self.out;
        let lanes = self.lanes;
        let share = |useful: usize, span: usize| useful as f64 / (span.div_ceil(lanes) * lanes) as f64;
        match self.path {
            ConvPath::Direct1x1 => share(oh * ow, oh * ow),
            ConvPath::RowPanel if self.flat => share(self.block * ow, (self.block - 1) * self.sw_len + ow),
            ConvPath::RowPanel => share(ow, ow),
            ConvPath::Winograd(_) => {
                self.winograd.as_ref().map_or(1.0, |w| (self.block * w.tw) as f64 / w.t_pad as f64)
            }
            ConvPath::ChanVec => {
                let nr = self.chanvec.as_ref().map_or(lanes, |v| v.nr);
                share(self.layout.cout_g, self.layout.cout_g.div_ceil(nr) * nr)
            }
            ConvPath::Depthwise => {
                self.depthwise.as_ref().map_or(1.0, |d| (oh * ow) as f64 / d.computed() as f64)
            }
        }
    }

    pub fn items_per_sample(&self) -> usize {
        if self.path == ConvPath::Depthwise {
            // Blocks of channels (see `super::depthwise`).
            return self.blocks;
        }
        self.blocks * self.layout.groups * self.chunks
    }

    pub fn scratch_floats(&self) -> usize {
        match self.path {
            ConvPath::Direct1x1 => {
                let nr = self.nv * self.lanes;
                let partials = if self.kblocks > 1 { self.tiles_per_chunk * self.mt * nr } else { 0 };
                match self.scaled_a {
                    Some(at) => at + self.layout.ppg * self.layout.panel_stride(),
                    None => self.kc * nr + partials,
                }
            }
            ConvPath::RowPanel => self.layout.cin_g * self.chan_len,
            ConvPath::Winograd(_) => self.winograd.as_ref().map_or(0, |w| w.floats),
            ConvPath::ChanVec => self.chanvec.as_ref().map_or(0, |v| v.floats),
            ConvPath::Depthwise => self.depthwise.as_ref().map_or(0, |d| d.floats),
        }
    }

    /// Runs of consecutive row tiles (within a group) sharing the tile height and ReLU rows:
    /// `(first tile, end tile, rows, relu per row)`.
    pub(super) fn tile_classes(&self, relu: Relu) -> Vec<(usize, usize, usize, Vec<bool>)> {
        let mut classes: Vec<(usize, usize, usize, Vec<bool>)> = Vec::new();
        for t in 0..self.tpg {
            let rows = (self.layout.cout_g - t * self.mt).min(self.mt);
            let relu_rows: Vec<bool> = (0..rows)
                .map(|r| match relu {
                    Relu::None => false,
                    Relu::All => true,
                    Relu::First(n) => t * self.mt + r < n,
                })
                .collect();
            match classes.last_mut() {
                Some((_, end, r, rr)) if *r == rows && *rr == relu_rows => *end = t + 1,
                _ => classes.push((t, t + 1, rows, relu_rows)),
            }
        }
        classes
    }
}
