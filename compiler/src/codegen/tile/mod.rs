//! Register tiles: the innermost GEMM step every convolution and linear kernel is built from.
//!
//! ## The contract
//! A tile computes `C[rows x cols] (+)= A[rows x K] * B[K x cols]`, then applies its epilogue and
//! stores the valid columns of C. Everything about it is a compile-time constant of its
//! [`TileSpec`]; at run time it only receives six base pointers ([`TileArgs`]):
//!
//! | argument | what it points at |
//! |---|---|
//! | `a` | A: row `r` of K index `tap` at `a + tap.a + rows_a.offset(r)` (floats) |
//! | `b` | B: vector `j` of K index `tap` at `b + tap.b + j * lanes`, read as whole vectors |
//! | `out` | C: row `r`, vector `j` at `out + r * row + piece.at + lane` for each piece of vector `j` |
//! | `epi` | the epilogue's per-channel values (see [`Epilogue`]) |
//! | `res` | the residual, addressed like `out` with its own row stride |
//! | `init` | partial sums to start from, `init + r * row + j * lanes` (whole vectors) |
//!
//! The K dimension is a [`KLoop`]: `groups` repetitions of a list of taps with constant offsets,
//! the A and B bases advancing by constant steps per group, then a tail. One description serves the
//! direct 1x1 GEMM (a tap per input channel of a packed B tile), the row-panel convolution (a group
//! per input channel, its `KH*KW` taps at constant offsets into the padded rows) and `linear`.
//! The packers and the drivers in [`super::conv`] and [`super::linear`] derive A's and B's layout
//! from the same numbers, so packing and code agree for every backend.
//!
//! Every accumulator `C[r][c]` is the sum over the K loop's taps, in their order, of
//! `A[r][tap] * B[tap][c]`, each product added exactly once (FMA), starting from zero or from
//! `init`. Lanes past a tile's valid columns compute garbage from B's slack (which the drivers keep
//! inside their scratch) and are never stored: stores are masked per [`Piece`], so a tile writes
//! exactly its own outputs. The epilogue runs in registers, in the IR's order: `y = acc * s1 + b1`,
//! `y += residual`, `y = y * s2 + b2`, ReLU on the rows that ask for it (NaN stays NaN).
//!
//! ## Backends
//! - [`Isa::Sse`]: [`clif`], f32x4 Cranelift code inlined into the kernel (the portable fallback).
//! - [`Isa::Avx2`], [`Isa::Avx512`]: [`x86`], machine code assembled with iced-x86 into a function
//!   of its own in the kernel's JIT module, called through the SysV ABI with the six pointers.

pub(crate) mod clif;
pub mod x86;

use super::bounds::Footprint;
use super::cx::KernelCx;
use super::isa::Isa;
use super::CodegenError;
use crate::ir::Activation;
use cranelift_codegen::ir::{types::I64, AbiParam, InstBuilder, Signature, Value};
use cranelift_codegen::isa::CallConv;
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};
use std::collections::HashMap;

/// One K index: where its A values and its B row are, in floats from the group bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tap {
    pub a: usize,
    pub b: usize,
}

/// The K dimension of a tile: `groups` repetitions of `taps`, bases advancing by `a_step`/`b_step`
/// floats after each, then `tail` taps (relative to the bases after the last group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KLoop {
    pub groups: usize,
    pub taps: Vec<Tap>,
    pub a_step: usize,
    pub b_step: usize,
    pub tail: Vec<Tap>,
    /// Software prefetch of A (the x86 tiles; 0: none): each group hints the cache lines
    /// `prefetch_a` bytes ahead of the `a_step` floats it reads from each A panel, so a stream of
    /// weights read once (Winograd at batch 1) arrives before the FMAs need it. A hint only: it
    /// never faults and changes no value, so it may point past A's footprint.
    pub prefetch_a: usize,
    /// Software prefetch of B (the x86 tiles; 0: none): each tap also hints the cache lines
    /// `prefetch_b` bytes past its B vectors. For a tile reading B in place from strided rows (the
    /// direct 1x1 path's unpacked column tiles), that is the same rows' lines of a column tile
    /// further on, which the hardware prefetchers, one stream per row, do not fetch in time. A hint
    /// only: it never faults and changes no value, so it may point past B's footprint.
    pub prefetch_b: usize,
    /// Software prefetch of the weights the kernel reads after this tile (the x86 tiles; 0: none):
    /// the tile takes a seventh argument, [`TileArgs::ahead`], and each group hints
    /// `prefetch_next` consecutive bytes from it into L2, so over the K loop the next tile's
    /// weights (a Winograd tile's successor's A panels, the next K block's slice of a chanvec
    /// panel) stream in at the pace this one reads its own, a whole tile's time ahead. For weights
    /// read once from memory (at batch 1), that keeps far more lines in flight than the short hint
    /// of [`KLoop::prefetch_a`]. A hint only, like the others.
    pub prefetch_next: usize,
}

impl KLoop {
    /// `count` taps spaced `a_stride`/`b_stride` apart, unrolled `unroll` at a time.
    pub fn strided(count: usize, a_stride: usize, b_stride: usize, unroll: usize) -> KLoop {
        let unroll = unroll.clamp(1, count.max(1));
        let taps = |n: usize| (0..n).map(|u| Tap { a: u * a_stride, b: u * b_stride }).collect::<Vec<_>>();
        KLoop {
            groups: count / unroll,
            taps: taps(unroll),
            a_step: unroll * a_stride,
            b_step: unroll * b_stride,
            tail: taps(count % unroll),
            prefetch_a: 0,
            prefetch_b: 0,
            prefetch_next: 0,
        }
    }

    /// Taps in all.
    pub fn len(&self) -> usize {
        self.groups * self.taps.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where row `r` of A is, relative to a tap's A offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowsA {
    /// Packed weight panels of `rows` rows (`A[k][r]` at `k * rows + r` inside a panel), `stride`
    /// floats apart: row `r` is row `r % rows` of panel `r / rows`.
    Panels { rows: usize, stride: usize },
    /// Rows `stride` floats apart (samples of an activation, for `linear`).
    Strided(usize),
}

impl RowsA {
    pub fn offset(self, r: usize) -> usize {
        match self {
            RowsA::Panels { rows, stride } => r / rows * stride + r % rows,
            RowsA::Strided(stride) => r * stride,
        }
    }
}

/// Lanes `lo..hi` of a vector of C, stored at `out + r * row + at + lane` (`at` is the float
/// offset of lane 0, which may lie before the first stored lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Piece {
    pub lo: usize,
    pub hi: usize,
    pub at: isize,
}

impl Piece {
    /// The first `lanes` lanes of vector `j` of a row, stored contiguously.
    pub fn leading(j: usize, lanes_per_vector: usize, lanes: usize) -> Piece {
        Piece { lo: 0, hi: lanes, at: (j * lanes_per_vector) as isize }
    }
}

/// Which axis a per-channel epilogue vector runs along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// One value per tile row, at `epi + at + r` (broadcast over the row).
    Row,
    /// One value per column, at `epi + at + j * lanes + lane` (whole vectors are read).
    Col,
}

/// A per-channel vector of the epilogue: `at` floats from `epi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChanVec {
    pub at: usize,
    pub axis: Axis,
}

/// A fused activation of an epilogue, compared and hashed by the bits of its constants (tile specs
/// key the table of assembled routines; the IR's [`Activation`] holds `f32`s and is only
/// `PartialEq`).
#[derive(Debug, Clone, Copy)]
pub struct PostActivation(pub Activation);

impl PostActivation {
    fn key(&self) -> (u8, u32, u32) {
        match self.0 {
            Activation::Clamp { min, max } => {
                (0, min.unwrap_or(f32::NEG_INFINITY).to_bits(), max.unwrap_or(f32::INFINITY).to_bits())
            }
            Activation::Sigmoid => (1, 0, 0),
            Activation::Silu => (2, 0, 0),
            Activation::Hardsigmoid => (3, 0, 0),
            Activation::Hardswish => (4, 0, 0),
        }
    }
}

impl PartialEq for PostActivation {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for PostActivation {}

impl std::hash::Hash for PostActivation {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

/// The fused epilogue: `y = acc * s1 + b1; y += residual; y = y * s2 + b2; relu; activation` (each
/// step only when present; ReLU on the rows flagged in `relu_rows`, the activation on every row).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Epilogue {
    pub s1: Option<ChanVec>,
    pub b1: Option<ChanVec>,
    pub s2: Option<ChanVec>,
    pub b2: Option<ChanVec>,
    /// Row stride of the residual, which is read at the stored pieces' offsets.
    pub residual: Option<usize>,
    pub relu_rows: Vec<bool>,
    /// The activation applied last (`eltwise`'s definitions and approximation).
    pub activation: Option<PostActivation>,
}

/// What a tile does with its accumulators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TileOut {
    /// Stores them raw, every vector whole, at `out + r * row + j * lanes` (to resume with `init`).
    Partial { row: usize },
    /// Applies the epilogue and stores the pieces of every vector (`pieces[j]`).
    ///
    /// With `stream` (assembled ISAs; the Cranelift tile ignores it), a piece covering a whole
    /// vector is stored non-temporally (`vmovntps`: the line is written without being read for
    /// ownership first, and not kept in cache), and the output lines are not prefetched. The
    /// caller promises that every such vector's address is a multiple of the vector size
    /// (`vmovntps` faults otherwise) and fences (`mfence`) before the outputs are read elsewhere:
    /// non-temporal stores are weakly ordered. Same addresses, same values: only the cache policy
    /// changes.
    Final { row: usize, pieces: Vec<Vec<Piece>>, epilogue: Epilogue, stream: bool },
}

/// Everything one tile variant is specialised for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TileSpec {
    pub isa: Isa,
    /// Rows of C computed.
    pub rows: usize,
    pub rows_a: RowsA,
    /// Vectors per row of C.
    pub nv: usize,
    pub kloop: KLoop,
    /// Row stride of the partial sums to start from (`init`), if any.
    pub init: Option<usize>,
    pub out: TileOut,
}

impl TileSpec {
    /// A short name for dumps: `avx512 12x32 k=576 final`.
    pub fn label(&self) -> String {
        let out = match &self.out {
            TileOut::Partial { .. } => "partial",
            TileOut::Final { epilogue, stream: true, .. } if epilogue.residual.is_some() => {
                "final+residual streamed"
            }
            TileOut::Final { epilogue, .. } if epilogue.residual.is_some() => "final+residual",
            TileOut::Final { stream: true, .. } => "final streamed",
            TileOut::Final { .. } => "final",
        };
        format!(
            "{} {}x{} k={}{} {out}",
            self.isa,
            self.rows,
            self.nv * self.isa.lanes(),
            self.kloop.len(),
            if self.init.is_some() { " +init" } else { "" },
        )
    }
}

/// The Winograd input transform of `channels` channels for one vector of tiles (see
/// [`crate::codegen::conv::winograd`]): run-time operands `(src, dst, tmp)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputTransformSpec {
    pub isa: Isa,
    pub tile: crate::ir::WinogradTile,
    /// Float offset from `src` of input-tile element `(i, j)`, row-major `a x a` (each a vector
    /// over the tiles).
    pub offsets: Vec<usize>,
    pub channels: usize,
    /// Floats between consecutive channels in `src` and in `dst`.
    pub src_stride: usize,
    pub dst_stride: usize,
    /// Floats between the transformed points in `dst` (point `x` at `dst + x * point_stride`).
    pub point_stride: usize,
    /// Which lanes hold tiles, stored compacted: lane `lanes[k]` goes to `dst + k` (the lanes of
    /// padding columns are dropped).
    pub lanes: Vec<u8>,
}

/// The Winograd output transform of one output channel for one vector of tiles, with its fused
/// epilogue and the store to the tiles' pixels: run-time operands `(src, out, epi, res, tmp)`.
///
/// For each output row `i` of the tiles, the `m` vectors `Y[i][0..m]` (a lane per tile) are
/// interleaved into `m` vectors holding the tiles' `m` pixels side by side (vector `k`, lane `l`:
/// pixel `l % m` of tile `k * lanes / m + l / m`), so the pixels of consecutive tiles of a tile row
/// are consecutive floats of the output row, stored as pieces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputTransformSpec {
    pub isa: Isa,
    pub tile: crate::ir::WinogradTile,
    /// Floats between the points in `src`.
    pub point_stride: usize,
    /// `pieces[i][k]`: where interleaved vector `k` of output row `i` goes, relative to `out` (and
    /// `res`): lanes of tiles that do not exist or pixels past the plane's edge are in no piece.
    pub pieces: Vec<Vec<Vec<Piece>>>,
    /// Per-channel values as [`Axis::Row`] vectors at `epi` (one channel: row 0), residual read at
    /// the stored pixels, ReLU when `relu_rows[0]`.
    pub epilogue: Epilogue,
}

/// The stencil of a depthwise convolution over one channel (see
/// [`crate::codegen::conv::depthwise`]), output pixels in the lanes: run-time operands
/// `(src, w, dst)`. For each vector `v < vectors`, with `L` lanes:
/// `dst[v*L + l] = sum over t of src[v*L + l + taps[t]] * w[t]`, the taps in order (the first a
/// multiply, each later one an FMA). Every read of `src` and `w` and every write of `dst` is a
/// whole vector or a scalar inside the footprint `src[0 .. max(taps) + vectors*L]`,
/// `w[0 .. taps.len()]`, `dst[0 .. vectors*L]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseSpec {
    pub isa: Isa,
    pub taps: Vec<usize>,
    pub vectors: usize,
}

impl DepthwiseSpec {
    /// The operands' footprints (operand, first float, end).
    pub fn footprint(&self) -> Footprint {
        let lanes = self.isa.lanes() as i64;
        let span = self.vectors as i64 * lanes;
        let max_tap = self.taps.iter().copied().max().unwrap_or(0) as i64;
        vec![(0, 0, max_tap + span), (1, 0, self.taps.len() as i64), (2, 0, span)]
    }
}

/// The fill of a depthwise convolution (avx2/avx512): run-time operands `(x, dst)`. Writes padded
/// rows `0..rows` of the zero-padded phase planes at `dst` (see [`crate::codegen::conv::depthwise`]):
/// input row `iy < h` of the `h x w` plane at `x` (rows `w` floats apart) is padded row
/// `y = top + iy`, input column `ix` padded column `x = pad + ix`; stride 1, pixel `(y, x)` goes to
/// `dst + y * wq + x`; stride 2, to plane `(y % 2) * 2 + x % 2` (`plane_len` floats each) at
/// `(y / 2) * wq + x / 2`, columns de-interleaved with vector permutes. The padded rows outside the
/// input (`y < top` or `top + h <= y < rows`) are stored as zeros over all `wq` columns (of both
/// column phases); the columns outside the input are never written (the caller zeroes them once).
/// Whole vectors and masked tails: it reads `x[0 .. h*w]` and writes only the positions above.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseFillSpec {
    pub isa: Isa,
    pub h: usize,
    pub w: usize,
    pub pad: usize,
    pub top: usize,
    pub rows: usize,
    pub wq: usize,
    pub stride: usize,
    pub plane_len: usize,
}

impl DepthwiseFillSpec {
    /// The operands' footprints (operand, first float, end).
    pub fn footprint(&self) -> Footprint {
        let (h, w, wq, pad, top) =
            (self.h as i64, self.w as i64, self.wq as i64, self.pad as i64, self.top as i64);
        let zero_rows = self.top > 0 || self.rows > self.top + self.h;
        let dst = if self.stride == 1 {
            let first = if zero_rows { 0 } else { top * wq + pad };
            let end = ((top + h - 1) * wq + pad + w).max(self.rows as i64 * wq);
            (1, first, end)
        } else {
            (1, 0, 4 * self.plane_len as i64)
        };
        vec![(0, 0, h * w), dst]
    }
}

/// The fused epilogue of a depthwise routine, in the IR's order: `v = v * s1 + b1`, `v += residual`,
/// `v = v * s2 + b2`, ReLU, the activation; the per-channel values are scalars at `epi + s1` etc.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseEpilogue {
    pub s1: Option<usize>,
    pub b1: Option<usize>,
    pub s2: Option<usize>,
    pub b2: Option<usize>,
    pub residual: bool,
    pub relu: bool,
    /// The fused activation, applied last (after ReLU).
    pub activation: Option<PostActivation>,
}

impl DepthwiseEpilogue {
    /// The offsets of the per-channel scalars it reads (from `epi`).
    fn scalars(&self) -> impl Iterator<Item = usize> {
        [self.s1, self.b1, self.s2, self.b2].into_iter().flatten()
    }
}

/// The epilogue of a depthwise convolution (avx2/avx512): run-time operands `(flat, y, epi, res)`.
/// For each output row `oy < rows` and column `ox < ow`: `v = flat[oy * wq + ox]`, `v = v * s1 + b1`,
/// `v += res[oy * ow + ox]` (with `residual`), `v = v * s2 + b2`, ReLU, the activation, stored at
/// `y[oy * ow + ox]`; the per-channel values are scalars at `epi + s1` etc. Tails are masked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseOutSpec {
    pub isa: Isa,
    pub rows: usize,
    pub ow: usize,
    pub wq: usize,
    pub epilogue: DepthwiseEpilogue,
}

/// The depthwise stencil and epilogue in row mode (avx2/avx512; wide planes, where a row fills
/// its vectors well and the flat run's round trip through the scratch would cost more than it
/// saves): run-time operands `(src, w, y, epi, res)`. For each output row `oy < rows` and column
/// `ox < ow`: `v = sum over t of src[oy * wq + ox + taps[t]] * w[t]` (taps in order), then the
/// epilogue of [`DepthwiseOutSpec`], stored at `y[oy * ow + ox]`. It reads whole vectors of `src`
/// up to `(rows - 1) * wq + max(taps) + ceil(ow / L) * L`; row tails are stored masked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseRowsSpec {
    pub isa: Isa,
    pub taps: Vec<usize>,
    pub rows: usize,
    pub ow: usize,
    pub wq: usize,
    pub epilogue: DepthwiseEpilogue,
}

impl DepthwiseRowsSpec {
    /// Floats of `src` the routine reads.
    pub fn src_len(&self) -> usize {
        Self::reads(self.isa, &self.taps, self.rows, self.ow, self.wq)
    }

    /// Floats of `src` a rows routine of this geometry reads.
    pub fn reads(isa: Isa, taps: &[usize], rows: usize, ow: usize, wq: usize) -> usize {
        let (lanes, max_tap) = (isa.lanes(), taps.iter().copied().max().unwrap_or(0));
        (rows - 1) * wq + max_tap + ow.div_ceil(lanes) * lanes
    }
}

/// The depthwise stencil and epilogue straight from the input (AVX-512, stride `s` 1 or 2, padding
/// `k / 2`, wide rows): run-time operands `(x, w, y, epi, res)` like [`DepthwiseRowsSpec`]'s, with
/// `x` the channel's unpadded `h x w` input plane instead of phase planes. For each output pixel
/// `(oy, ox)` (`oy < oh`, `ox < ow`, `oh = (h + 2p - k) / s + 1` and the same for `ow`): `v = sum
/// over (kh, kw) in order of xpad[s * oy + kh][s * ox + kw] * w[kh * k + kw]`, `xpad` the input
/// zero-padded by `p = k / 2`, then the epilogue of [`DepthwiseOutSpec`], stored at `y[oy * ow +
/// ox]` (residual `res[oy * ow + ox]`). Taps outside the input are skipped (rows) or read as zeros
/// by masked loads (columns), so it reads only `x[0 .. h * w]`. `rows`: output rows computed
/// together, so that each input vector loaded serves every one of them it feeds (1: row by row);
/// it changes the order of the work, not what is read or written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseDirectSpec {
    pub isa: Isa,
    pub k: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub rows: usize,
    pub epilogue: DepthwiseEpilogue,
}

impl DepthwiseDirectSpec {
    /// Output floats: `oh * ow`.
    pub fn out_len(&self) -> usize {
        let p = self.k / 2;
        let (oh, ow) =
            ((self.h + 2 * p - self.k) / self.stride + 1, (self.w + 2 * p - self.k) / self.stride + 1);
        oh * ow
    }
}

/// A band of output rows of a depthwise convolution of up to `L` channels, with the channels in
/// the vector lanes (AVX2; see [`crate::codegen::conv::depthwise`]'s lanes mode): run-time operands
/// `(x, w, y, epi, scratch)`. The channels' planes are `h x w` (input) and `oh x ow` (output, `oh =
/// (h + 2p - k) / s + 1`, `p = k / 2`), channel `j`'s `h * w` floats apart in `x` and `oh * ow` in
/// `y`; `x` points at the first input row the band reads and `y` at its first output row. `w` holds
/// the first channel's `k * k` weights (the others follow), `epi` its per-channel values (channel
/// `j`'s `s1` at `epi + s1 + j`). The band's output rows `0..rows` read its padded rows `0..s *
/// (rows - 1) + k`, of which rows `top..top + in_rows` are the input rows `0..in_rows` at `x` and
/// the others zero padding. For each channel `j < channels`, band row `oy < rows` and column `ox <
/// ow`: `v = sum over (kh, kw) in order of band[s * oy + kh][s * ox + kw] * w[j][kh * k + kw]` (the
/// band's columns zero-padded by `p`), then the epilogue (no residual) stored at `y[j * oh * ow +
/// oy * ow + ox]`. The scratch holds the padded band pixel-major (`[hp][wp][L]`; its border
/// columns the caller keeps zero, the routine writes the interior columns of every row), the
/// weights tap-major (`[k * k][L]`) and the band's output pixel-major (`[rows * ow][L]`), at
/// [`DepthwiseLanesSpec::layout`]'s offsets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseLanesSpec {
    pub isa: Isa,
    pub k: usize,
    pub stride: usize,
    pub h: usize,
    pub w: usize,
    /// Channels of this call (`1..=L`).
    pub channels: usize,
    /// The band: output rows, input rows copied and the padded row they start at; `band`: the
    /// output rows of the layer's tallest band, which fixes the scratch layout (every band of the
    /// layer uses the same, so that none writes over another's border columns).
    pub band: usize,
    pub rows: usize,
    pub in_rows: usize,
    pub top: usize,
    pub epilogue: DepthwiseEpilogue,
}

/// Where a [`DepthwiseLanesSpec`]'s parts lie in its scratch (floats), and its planes' geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanesLayout {
    /// The band's padded rows (`s * (rows - 1) + k`) and columns (`w + 2p`); the padded rows of
    /// the tallest band lie below `weights_at`.
    pub hp: usize,
    pub wp: usize,
    /// The whole output plane's rows and columns.
    pub oh: usize,
    pub ow: usize,
    /// The tap-major weights and the pixel-major output.
    pub weights_at: usize,
    pub out_at: usize,
    /// Scratch floats in all.
    pub floats: usize,
}

impl DepthwiseLanesSpec {
    /// The scratch layout: padded band, weights, band output, each `L` floats per position.
    pub fn layout(&self) -> LanesLayout {
        let (k, s, lanes) = (self.k, self.stride, self.isa.lanes());
        let p = k / 2;
        let (hp, wp) = (s * (self.rows - 1) + k, self.w + 2 * p);
        let (oh, ow) = ((self.h + 2 * p - k) / s + 1, (wp - k) / s + 1);
        let weights_at = (s * (self.band.max(self.rows) - 1) + k) * wp * lanes;
        let out_at = weights_at + k * k * lanes;
        LanesLayout {
            hp,
            wp,
            oh,
            ow,
            weights_at,
            out_at,
            floats: out_at + self.band.max(self.rows) * ow * lanes,
        }
    }

    /// The operands' footprints (operand, first float, end).
    pub fn footprint(&self) -> Footprint {
        let l = self.layout();
        let ch = self.channels as i64;
        let mut print = vec![
            (0, 0, (ch - 1) * (self.h * self.w) as i64 + (self.in_rows * self.w) as i64),
            (1, 0, ch * (self.k * self.k) as i64),
            (2, 0, (ch - 1) * (l.oh * l.ow) as i64 + (self.rows * l.ow) as i64),
            (4, 0, l.floats as i64),
        ];
        print.extend(self.epilogue.scalars().map(|at| (3, at as i64, at as i64 + ch)));
        print
    }
}

/// The depthwise stencil over the flat run with its epilogue, stored compacted (AVX-512; small
/// planes, where a row fills few lanes and the flat run's trip through the scratch is most of the
/// time): run-time operands `(src, w, y, epi)`. For each output row `oy < oh` and column `ox < ow`:
/// `v = sum over t of src[oy * wq + ox + taps[t]] * w[t]` (taps in order), then the epilogue of
/// [`DepthwiseOutSpec`] (no residual), stored at `y[oy * ow + ox]`. It reads whole vectors of `src`
/// up to `max(taps) + vectors * L` (`vectors * L >= (oh - 1) * wq + ow`) and writes only
/// `y[0 .. oh * ow]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseFlatSpec {
    pub isa: Isa,
    pub taps: Vec<usize>,
    pub vectors: usize,
    pub oh: usize,
    pub ow: usize,
    pub wq: usize,
    pub epilogue: DepthwiseEpilogue,
}

/// ReLU (when `relu`) and then `activation` in place over `y[0 .. len]` (AVX-512): the deferred
/// activation of the fused flat depthwise path, run over the contiguous outputs of several
/// channels so that its vectors are full. Run-time operand `(y)`; whole vectors, the tail masked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseActSpec {
    pub isa: Isa,
    pub len: usize,
    pub relu: bool,
    pub activation: PostActivation,
}

/// Floats `lo..hi` of piece `p` of a row `row` floats from the base.
fn piece_span(p: &Piece, row: i64) -> (i64, i64) {
    (row + p.at as i64 + p.lo as i64, row + p.at as i64 + p.hi as i64)
}

/// The smallest range holding every `lo..hi` (`0..0` for none).
fn span(ranges: impl Iterator<Item = (i64, i64)>) -> (i64, i64) {
    ranges
        .fold(None, |acc: Option<(i64, i64)>, (lo, hi)| {
            Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))))
        })
        .unwrap_or((0, 0))
}

impl Epilogue {
    /// The per-channel vectors it reads.
    fn vectors(&self) -> impl Iterator<Item = ChanVec> + '_ {
        [self.s1, self.b1, self.s2, self.b2].into_iter().flatten()
    }
}

impl TileSpec {
    /// The floats of each operand the tile may touch (see the contract in the module doc).
    pub fn footprint(&self) -> Footprint {
        let lanes = self.isa.lanes() as i64;
        let (rows, nv) = (self.rows as i64, self.nv as i64);
        let k = &self.kloop;
        let taps = (0..k.groups)
            .flat_map(|g| k.taps.iter().map(move |t| (g * k.a_step + t.a, g * k.b_step + t.b)))
            .chain(k.tail.iter().map(|t| (k.groups * k.a_step + t.a, k.groups * k.b_step + t.b)));
        let (mut print, mut a_span, mut b_span) = (Vec::new(), None::<(i64, i64)>, None::<(i64, i64)>);
        let last_row_a = (0..self.rows).map(|r| self.rows_a.offset(r)).max().unwrap_or(0) as i64;
        for (a, b) in taps {
            let (a, b) = (a as i64, b as i64);
            a_span = Some(a_span.map_or((a, a), |(lo, hi)| (lo.min(a), hi.max(a))));
            b_span = Some(b_span.map_or((b, b), |(lo, hi)| (lo.min(b), hi.max(b))));
        }
        if let (Some((alo, ahi)), Some((blo, bhi))) = (a_span, b_span) {
            print.push((0, alo, ahi + last_row_a + 1));
            print.push((1, blo, bhi + nv * lanes));
        }
        match &self.out {
            TileOut::Partial { row } => print.push((2, 0, (rows - 1) * *row as i64 + nv * lanes)),
            TileOut::Final { row, pieces, epilogue, .. } => {
                let (lo, hi) = span(pieces.iter().flatten().map(|p| piece_span(p, 0)));
                if hi > lo {
                    print.push((2, lo, (rows - 1) * *row as i64 + hi));
                    if let Some(res_row) = epilogue.residual {
                        print.push((4, lo, (rows - 1) * res_row as i64 + hi));
                    }
                }
                for v in epilogue.vectors() {
                    let len = match v.axis {
                        Axis::Row => rows,
                        Axis::Col => nv * lanes,
                    };
                    print.push((3, v.at as i64, v.at as i64 + len));
                }
            }
        }
        if let Some(init_row) = self.init {
            print.push((5, 0, (rows - 1) * init_row as i64 + nv * lanes));
        }
        print
    }
}

/// The run-time operands of a tile call (Cranelift values of the calling kernel); absent ones
/// are passed as null.
#[derive(Debug, Clone, Copy)]
pub struct TileArgs {
    pub a: Value,
    pub b: Value,
    pub out: Value,
    pub epi: Option<Value>,
    pub res: Option<Value>,
    pub init: Option<Value>,
    /// Where the bytes [`KLoop::prefetch_next`] hints start: the weights the kernel reads after
    /// this tile.
    pub ahead: Option<Value>,
}

/// An assembled tile: its name and machine code (for dumps and the encoding checks in tests).
#[derive(Debug, Clone)]
pub struct AssembledTile {
    pub name: String,
    pub code: Vec<u8>,
}

/// Every kind of routine [`Tiles`] emits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Routine {
    Tile(TileSpec),
    Input(InputTransformSpec),
    Output(OutputTransformSpec),
    Depthwise(DepthwiseSpec),
    DepthwiseFill(DepthwiseFillSpec),
    DepthwiseOut(DepthwiseOutSpec),
    DepthwiseRows(DepthwiseRowsSpec),
    DepthwiseDirect(DepthwiseDirectSpec),
    DepthwiseFlat(DepthwiseFlatSpec),
    DepthwiseAct(DepthwiseActSpec),
    DepthwiseLanes(DepthwiseLanesSpec),
}

impl Routine {
    fn isa(&self) -> Isa {
        match self {
            Routine::Tile(s) => s.isa,
            Routine::Input(s) => s.isa,
            Routine::Output(s) => s.isa,
            Routine::Depthwise(s) => s.isa,
            Routine::DepthwiseFill(s) => s.isa,
            Routine::DepthwiseOut(s) => s.isa,
            Routine::DepthwiseRows(s) => s.isa,
            Routine::DepthwiseDirect(s) => s.isa,
            Routine::DepthwiseFlat(s) => s.isa,
            Routine::DepthwiseAct(s) => s.isa,
            Routine::DepthwiseLanes(s) => s.isa,
        }
    }

    fn label(&self) -> String {
        match self {
            Routine::Tile(s) => s.label(),
            Routine::Input(s) => format!("{} winograd {} input transform", s.isa, s.tile.name()),
            Routine::Output(s) => format!("{} winograd {} output transform", s.isa, s.tile.name()),
            Routine::Depthwise(s) => {
                format!("{} depthwise stencil, {} taps x {} vectors", s.isa, s.taps.len(), s.vectors)
            }
            Routine::DepthwiseFill(s) => format!(
                "{} depthwise fill {}x{} stride {} pad {} rows {}..{} of {}",
                s.isa,
                s.h,
                s.w,
                s.stride,
                s.pad,
                s.top,
                s.top + s.h,
                s.rows
            ),
            Routine::DepthwiseOut(s) => format!("{} depthwise epilogue {}x{}", s.isa, s.rows, s.ow),
            Routine::DepthwiseRows(s) => {
                format!("{} depthwise rows, {} taps, {}x{}", s.isa, s.taps.len(), s.rows, s.ow)
            }
            Routine::DepthwiseDirect(s) => {
                format!(
                    "{} depthwise direct rows, {}x{} taps, {}x{}, {} at once",
                    s.isa, s.k, s.k, s.h, s.w, s.rows
                )
            }
            Routine::DepthwiseAct(s) => format!("{} depthwise activation over {}", s.isa, s.len),
            Routine::DepthwiseLanes(s) => format!(
                "{} depthwise in channel lanes, {}x{} stride {}, {}x{}, {} ch, {} rows <- {} at {}",
                s.isa, s.k, s.k, s.stride, s.h, s.w, s.channels, s.rows, s.in_rows, s.top
            ),
            Routine::DepthwiseFlat(s) => format!(
                "{} depthwise flat, {} taps x {} vectors, {}x{}",
                s.isa,
                s.taps.len(),
                s.vectors,
                s.oh,
                s.ow
            ),
        }
    }

    /// The floats of each pointer operand the routine may touch, from its spec and the contracts
    /// above (operands in the order of [`Tiles::emit`], `input_transform`, `output_transform`).
    fn footprint(&self) -> Footprint {
        match self {
            Routine::Tile(s) => s.footprint(),
            Routine::Input(s) => {
                let (lanes, a2) = (s.isa.lanes() as i64, (s.tile.alpha() * s.tile.alpha()) as i64);
                let ch = s.channels as i64 - 1;
                let (lo, hi) = span(s.offsets.iter().map(|&o| (o as i64, o as i64 + lanes)));
                vec![
                    (0, lo, ch * s.src_stride as i64 + hi),
                    (
                        1,
                        0,
                        (a2 - 1) * s.point_stride as i64 + ch * s.dst_stride as i64 + s.lanes.len() as i64,
                    ),
                    (2, 0, a2 * lanes),
                ]
            }
            Routine::Output(s) => {
                let lanes = s.isa.lanes() as i64;
                let (m, a) = (s.tile.m() as i64, s.tile.alpha() as i64);
                let (lo, hi) = span(s.pieces.iter().flatten().flatten().map(|p| piece_span(p, 0)));
                let mut print = vec![
                    (0, 0, (a * a - 1) * s.point_stride as i64 + lanes),
                    (1, lo, hi),
                    (4, 0, m * a * lanes),
                ];
                if s.epilogue.residual.is_some() {
                    print.push((3, lo, hi));
                }
                print.extend(s.epilogue.vectors().map(|v| (2, v.at as i64, v.at as i64 + 1)));
                print
            }
            Routine::Depthwise(s) => s.footprint(),
            Routine::DepthwiseFill(s) => s.footprint(),
            Routine::DepthwiseRows(s) => {
                let plane = (s.rows * s.ow) as i64;
                let mut print = vec![(0, 0, s.src_len() as i64), (1, 0, s.taps.len() as i64), (2, 0, plane)];
                if s.epilogue.residual {
                    print.push((4, 0, plane));
                }
                print.extend(s.epilogue.scalars().map(|at| (3, at as i64, at as i64 + 1)));
                print
            }
            Routine::DepthwiseDirect(s) => {
                let (plane, out) = ((s.h * s.w) as i64, s.out_len() as i64);
                let mut print = vec![(0, 0, plane), (1, 0, (s.k * s.k) as i64), (2, 0, out)];
                if s.epilogue.residual {
                    print.push((4, 0, out));
                }
                print.extend(s.epilogue.scalars().map(|at| (3, at as i64, at as i64 + 1)));
                print
            }
            Routine::DepthwiseAct(s) => vec![(0, 0, s.len as i64)],
            Routine::DepthwiseLanes(s) => s.footprint(),
            Routine::DepthwiseFlat(s) => {
                let max_tap = s.taps.iter().copied().max().unwrap_or(0) as i64;
                let span = (s.vectors * s.isa.lanes()) as i64;
                let mut print =
                    vec![(0, 0, max_tap + span), (1, 0, s.taps.len() as i64), (2, 0, (s.oh * s.ow) as i64)];
                print.extend(s.epilogue.scalars().map(|at| (3, at as i64, at as i64 + 1)));
                print
            }
            Routine::DepthwiseOut(s) => {
                let plane = (s.rows * s.ow) as i64;
                let mut print = vec![(0, 0, ((s.rows - 1) * s.wq + s.ow) as i64), (1, 0, plane)];
                if s.epilogue.residual {
                    print.push((3, 0, plane));
                }
                print.extend(s.epilogue.scalars().map(|at| (2, at as i64, at as i64 + 1)));
                print
            }
        }
    }

    fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        match self {
            Routine::Tile(s) => x86::assemble(s),
            Routine::Input(s) => x86::winograd::assemble_input(s),
            Routine::Output(s) => x86::winograd::assemble_output(s),
            Routine::Depthwise(s) => x86::depthwise::assemble(s),
            Routine::DepthwiseFill(s) => x86::depthwise::assemble_fill(s),
            Routine::DepthwiseOut(s) => x86::depthwise::assemble_out(s),
            Routine::DepthwiseRows(s) => x86::depthwise::assemble_rows(s),
            Routine::DepthwiseDirect(s) => x86::depthwise::assemble_direct(s),
            Routine::DepthwiseFlat(s) => x86::depthwise::assemble_flat(s),
            Routine::DepthwiseAct(s) => x86::depthwise::assemble_act(s),
            Routine::DepthwiseLanes(s) => x86::lanes::assemble(s),
        }
    }
}

/// Emits tiles (and the other register-level routines: Winograd transforms) into the kernels of
/// one JIT module: inline Cranelift code for [`Isa::Sse`], calls to assembled functions (defined
/// once per distinct spec in the module) for the wide ISAs.
pub(crate) struct Tiles<'m> {
    pub module: &'m mut JITModule,
    call_conv: CallConv,
    defined: HashMap<Routine, FuncId>,
    /// Tiles assembled for the kernel being emitted (taken by [`Tiles::take_assembled`]).
    assembled: Vec<AssembledTile>,
    /// The first failure while emitting the current kernel (see [`Tiles::take_error`]).
    error: Option<CodegenError>,
    /// Each defined routine by function index (its footprint is computed only when the bounds
    /// check asks).
    by_index: HashMap<u32, Routine>,
}

impl<'m> Tiles<'m> {
    pub fn new(module: &'m mut JITModule, call_conv: CallConv) -> Tiles<'m> {
        Tiles {
            module,
            call_conv,
            defined: HashMap::new(),
            assembled: Vec::new(),
            error: None,
            by_index: HashMap::new(),
        }
    }

    /// The first error met by [`Tiles::emit`] since the last call (emission goes on after an
    /// error, so that the drivers' loop nests need no error paths; the kernel is then discarded).
    pub fn take_error(&mut self) -> Result<(), CodegenError> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// The footprint of the routine defined as function `index` of the module, `None` for any
    /// other function (see [`crate::codegen::bounds`]).
    pub fn footprint(&self, index: u32) -> Option<Footprint> {
        self.by_index.get(&index).map(Routine::footprint)
    }

    /// The tiles assembled since the last call (each distinct spec once per module).
    pub fn take_assembled(&mut self) -> Vec<AssembledTile> {
        std::mem::take(&mut self.assembled)
    }

    /// Emits `spec` with `args` into the kernel `cx` is building; a failure is kept for
    /// [`Tiles::take_error`].
    pub fn emit(&mut self, cx: &mut KernelCx, spec: &TileSpec, args: TileArgs) {
        if spec.isa == Isa::Sse {
            clif::emit(cx, spec, args);
            return;
        }
        let null = cx.ic(0);
        let operands = [
            args.a,
            args.b,
            args.out,
            args.epi.unwrap_or(null),
            args.res.unwrap_or(null),
            args.init.unwrap_or(null),
            args.ahead.unwrap_or(null),
        ];
        // The seventh operand only for tiles that read it (SysV passes it on the stack).
        let count = if spec.kloop.prefetch_next > 0 { 7 } else { 6 };
        self.call(cx, Routine::Tile(spec.clone()), &operands[..count]);
    }

    /// Emits a Winograd input transform with operands `(src, dst, tmp)`.
    pub fn input_transform(&mut self, cx: &mut KernelCx, spec: &InputTransformSpec, operands: [Value; 3]) {
        if spec.isa == Isa::Sse {
            clif::input_transform(cx, spec, operands);
        } else {
            self.call(cx, Routine::Input(spec.clone()), &operands);
        }
    }

    /// Emits a Winograd output transform with operands `(src, out, epi, res, tmp)`.
    pub fn output_transform(&mut self, cx: &mut KernelCx, spec: &OutputTransformSpec, operands: [Value; 5]) {
        if spec.isa == Isa::Sse {
            clif::output_transform(cx, spec, operands);
        } else {
            self.call(cx, Routine::Output(spec.clone()), &operands);
        }
    }

    /// Emits a depthwise stencil with operands `(src, w, dst)`.
    pub fn depthwise(&mut self, cx: &mut KernelCx, spec: &DepthwiseSpec, operands: [Value; 3]) {
        if spec.isa == Isa::Sse {
            clif::depthwise(cx, spec, operands);
        } else {
            self.call(cx, Routine::Depthwise(spec.clone()), &operands);
        }
    }

    /// Emits a depthwise stride-1 fill `(x, dst)` (assembled ISAs only).
    pub fn depthwise_fill(&mut self, cx: &mut KernelCx, spec: &DepthwiseFillSpec, operands: [Value; 2]) {
        self.call(cx, Routine::DepthwiseFill(spec.clone()), &operands);
    }

    /// Emits a depthwise epilogue `(flat, y, epi, res)` (assembled ISAs only).
    pub fn depthwise_out(&mut self, cx: &mut KernelCx, spec: &DepthwiseOutSpec, operands: [Value; 4]) {
        self.call(cx, Routine::DepthwiseOut(spec.clone()), &operands);
    }

    /// Emits a depthwise row-mode stencil and epilogue `(src, w, y, epi, res)` (assembled ISAs
    /// only).
    pub fn depthwise_rows(&mut self, cx: &mut KernelCx, spec: &DepthwiseRowsSpec, operands: [Value; 5]) {
        self.call(cx, Routine::DepthwiseRows(spec.clone()), &operands);
    }

    /// Emits a depthwise stencil and epilogue straight from the input plane `(x, w, y, epi, res)`
    /// (AVX-512 only).
    pub fn depthwise_direct(&mut self, cx: &mut KernelCx, spec: &DepthwiseDirectSpec, operands: [Value; 5]) {
        self.call(cx, Routine::DepthwiseDirect(spec.clone()), &operands);
    }

    /// Emits a depthwise flat stencil with its compacted epilogue `(src, w, y, epi)` (AVX-512 only).
    pub fn depthwise_flat(&mut self, cx: &mut KernelCx, spec: &DepthwiseFlatSpec, operands: [Value; 4]) {
        self.call(cx, Routine::DepthwiseFlat(spec.clone()), &operands);
    }

    /// Emits a deferred depthwise activation over `(y)` (AVX-512 only).
    pub fn depthwise_act(&mut self, cx: &mut KernelCx, spec: &DepthwiseActSpec, y: Value) {
        self.call(cx, Routine::DepthwiseAct(spec.clone()), &[y]);
    }

    /// Emits a depthwise convolution of up to `L` channels in the channel lanes
    /// `(x, w, y, epi, scratch)` (AVX2 only).
    pub fn depthwise_lanes(&mut self, cx: &mut KernelCx, spec: &DepthwiseLanesSpec, operands: [Value; 5]) {
        self.call(cx, Routine::DepthwiseLanes(spec.clone()), &operands);
    }

    fn call(&mut self, cx: &mut KernelCx, routine: Routine, operands: &[Value]) {
        if let Err(e) = self.call_assembled(cx, routine, operands) {
            self.error.get_or_insert(e);
        }
    }

    fn call_assembled(
        &mut self,
        cx: &mut KernelCx,
        routine: Routine,
        operands: &[Value],
    ) -> Result<(), CodegenError> {
        debug_assert_ne!(routine.isa(), Isa::Sse);
        let id = match self.defined.get(&routine) {
            Some(&id) => id,
            None => {
                let code = routine.assemble()?;
                let name = format!("netc_tile_{}", self.defined.len());
                let id = self
                    .module
                    .declare_function(&name, Linkage::Local, &tile_signature(self.call_conv, operands.len()))
                    .map_err(|e| CodegenError::Cranelift(format!("{name}: {e}")))?;
                self.module
                    .define_function_bytes(id, 64, &code, &[])
                    .map_err(|e| CodegenError::Cranelift(format!("{name}: {e}")))?;
                self.assembled.push(AssembledTile { name: format!("{name}: {}", routine.label()), code });
                self.by_index.insert(id.as_u32(), routine.clone());
                self.defined.insert(routine, id);
                id
            }
        };
        let callee = self.module.declare_func_in_func(id, cx.b.func);
        // An absolute call: the module's code blocks may lie further apart than a rel32 reaches.
        cx.b.func.dfg.ext_funcs[callee].colocated = false;
        cx.b.ins().call(callee, operands);
        Ok(())
    }
}

/// The signature of an assembled routine: `pointers` pointers, no result (SysV on x86-64).
fn tile_signature(call_conv: CallConv, pointers: usize) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..pointers {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}
