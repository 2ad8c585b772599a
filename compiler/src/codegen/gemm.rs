//! The GEMM micro-kernel: one register tile `C[rows x 4*nv] += A[rows x K] * B[K x 4*nv]` and its
//! fused epilogue, emitted as straight-line f32x4 FMAs inside a counted K loop.
//!
//! Data layout.
//! - A (weights) is packed by [`super::pack`] into panels of `MR` output channels: for every `k`, the
//!   `MR` weights of the panel's channels are adjacent (`a[k * MR + r]`), so one K step reads `MR`
//!   consecutive floats and splats each.
//! - B (activations) is addressed per *tap*: a tap is one K index whose B row starts at a constant
//!   float offset from the current group base and holds the tile's columns contiguously
//!   (`b[tap.b + 4*j .. tap.b + 4*j + 4]` for vector `j`). The K loop runs over groups of taps: for a
//!   direct 1x1 GEMM a group is `U` input channels of the packed B tile (`tap.b = u * NR`), for a
//!   1x1 row panel `U` input channels of the scratch (`tap.b = u * chan_len`), for a KxK one reading a
//!   padded row panel it is one input channel and its `KH*KW` taps (see [`super::conv`]). A and B
//!   bases advance by constant strides per group; the taps inside a group are unrolled, so every load
//!   has a constant displacement and the loop costs one compare per group.
//!
//! Loop nest per tile: `for group in 0..groups { for tap { for r { a = splat(A[tap][r]);
//! for j { acc[r][j] = fma(a, B[tap][j], acc[r][j]) } } } }`, then the epilogue on `acc` in
//! registers, then the store. The generator emits the FMAs in this order and the kernel family is
//! compiled with `opt_level=none`, which keeps that order (the e-graph pass of `speed` would sink the
//! splats to their uses and serialise the chains).
//!
//! Registers: x64 `fma` lowers to `vfmadd132ps/213ps`, which overwrite a *multiplicand*; a
//! multiplicand with a later use is copied first. With B read straight from memory by the FMA
//! (`vfmadd132ps a_copy, acc, [b]`), only the splat of `A` stays live across the row's FMAs:
//! `rows*nv` accumulators + 1 splat + 1 copy <= 16 xmm registers.
//!
//! Correctness: every accumulator `acc[r][j]` lane `l` sums `A[k][r] * B[k][4j + l]` over exactly the
//! taps of every group plus the remainder taps, once each; the order of summation is k-ascending.

use super::cx::{KernelCx, LANES, VEC};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// One K index: where its A values and its B row are, in floats from the group bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tap {
    pub a: usize,
    pub b: usize,
}

/// The K dimension of a tile: `groups` repetitions of `taps`, bases advancing by `a_step`/`b_step`
/// floats, then `tail` taps (relative to the bases after the last group).
#[derive(Debug, Clone)]
pub(crate) struct KLoop {
    pub groups: usize,
    pub taps: Vec<Tap>,
    pub a_step: usize,
    pub b_step: usize,
    pub tail: Vec<Tap>,
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
        }
    }
}

/// The shape of one emitted tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TileShape {
    /// Output channels computed (`<= mr`; fewer for the last panel of a group).
    pub rows: usize,
    /// The panel height of the packed A (distance between K steps, in floats).
    pub mr: usize,
    /// Vectors of 4 columns.
    pub nv: usize,
    /// Valid lanes of the last vector (4 = full). Partial vectors load and store lane by lane.
    pub last_lanes: usize,
    /// Whether partial-vector loads must stay inside the row (B read from a value, not a padded
    /// scratch that has slack after every row).
    pub exact_loads: bool,
}

/// Emits the K loop of one tile and returns the accumulators `acc[r][j]`.
///
/// The accumulators start at zero, or, with `init = Some((base, row))`, at the partial sums a
/// previous K block stored with [`store_partial`] (`acc[r][j]` from `base + r*row + 4j`): K blocks
/// run in order, so the sum is still k-ascending.
pub(crate) fn emit_kloop(
    cx: &mut KernelCx,
    shape: TileShape,
    a_base: Value,
    b_base: Value,
    k: &KLoop,
    init: Option<(Value, usize)>,
) -> Vec<Vec<Value>> {
    let zero = cx.fconst(VEC, 0.0);
    let acc: Vec<Vec<Variable>> = (0..shape.rows)
        .map(|r| {
            (0..shape.nv)
                .map(|j| {
                    let v = match init {
                        Some((base, row)) => cx.load_v(base, r * row + j * LANES),
                        None => zero,
                    };
                    cx.var(VEC, v)
                })
                .collect()
        })
        .collect();
    let emit_taps = |cx: &mut KernelCx, taps: &[Tap], a: Value, b: Value| {
        for tap in taps {
            for (r, acc_r) in acc.iter().enumerate() {
                let w = cx.load_splat(a, tap.a + r);
                for (j, &var) in acc_r.iter().enumerate() {
                    let x = load_b(cx, shape, b, tap.b + j * LANES, j);
                    let old = cx.b.use_var(var);
                    let new = cx.b.ins().fma(w, x, old);
                    cx.b.def_var(var, new);
                }
            }
        }
    };
    let a_ptr = cx.var(cranelift_codegen::ir::types::I64, a_base);
    let b_ptr = cx.var(cranelift_codegen::ir::types::I64, b_base);
    if k.groups > 0 {
        cx.for_count(k.groups, "K groups", |cx, _| {
            let (a, b) = (cx.b.use_var(a_ptr), cx.b.use_var(b_ptr));
            emit_taps(cx, &k.taps, a, b);
            let a2 = cx.add_floats(a, k.a_step);
            let b2 = cx.add_floats(b, k.b_step);
            cx.b.def_var(a_ptr, a2);
            cx.b.def_var(b_ptr, b2);
        });
    }
    if !k.tail.is_empty() {
        let (a, b) = (cx.b.use_var(a_ptr), cx.b.use_var(b_ptr));
        emit_taps(cx, &k.tail, a, b);
    }
    acc.iter().map(|row| row.iter().map(|&v| cx.b.use_var(v)).collect()).collect()
}

/// Stores the raw accumulators of a tile (every vector in full) at `base + r*row + 4j`, to be
/// resumed by the next K block (`init` of [`emit_kloop`]).
pub(crate) fn store_partial(cx: &mut KernelCx, acc: &[Vec<Value>], base: Value, row: usize) {
    for (r, acc_r) in acc.iter().enumerate() {
        for (j, &v) in acc_r.iter().enumerate() {
            cx.store(v, base, r * row + j * LANES);
        }
    }
}

/// Loads vector `j` of a B row: a full vector, or the valid lanes of the last one.
fn load_b(cx: &mut KernelCx, shape: TileShape, base: Value, floats: usize, j: usize) -> Value {
    if j + 1 < shape.nv || shape.last_lanes == LANES || !shape.exact_loads {
        return cx.load_v(base, floats);
    }
    let mut v = cx.fconst(VEC, 0.0);
    for lane in 0..shape.last_lanes {
        let s = cx.load_s(base, floats + lane);
        v = cx.b.ins().insertlane(v, s, lane as u8);
    }
    v
}

/// The fused epilogue applied to a tile in registers, in the IR's order, with the constants
/// pre-combined by the packer: `y = acc * s1 + b1`, `y += residual`, `y = y * s2 + b2`, ReLU.
#[derive(Debug, Clone, Default)]
pub(crate) struct Epilogue {
    /// Float offsets (from the packed weights base) of the per-channel vectors `s1, b1, s2, b2`,
    /// indexed by the global panel row (`panel * mr + r`); `None` when the step is absent.
    pub s1: Option<usize>,
    pub b1: Option<usize>,
    pub s2: Option<usize>,
    pub b2: Option<usize>,
    /// Residual input: pointer to the tile's first element of channel row 0 and the distance
    /// between channel rows (floats).
    pub residual: Option<(Value, usize)>,
}

/// Applies the epilogue to `acc` and stores row `r` vector `j` at `out + r*out_row + 4j`.
/// `chan` is the index of the panel's first row in the per-channel epilogue vectors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_epilogue_store(
    cx: &mut KernelCx,
    shape: TileShape,
    acc: Vec<Vec<Value>>,
    packed: Value,
    chan: Value,
    epi: &Epilogue,
    relu_rows: &[bool],
    out: Value,
    out_row: usize,
) {
    let per_chan = |cx: &mut KernelCx, section: Option<usize>| {
        section.map(|s| {
            let base = cx.add_floats(packed, s);
            cx.offset(base, chan, 1)
        })
    };
    let (s1, b1, s2, b2) =
        (per_chan(cx, epi.s1), per_chan(cx, epi.b1), per_chan(cx, epi.s2), per_chan(cx, epi.b2));
    for (r, row) in acc.into_iter().enumerate() {
        let s1 = s1.map(|p| cx.load_splat(p, r));
        let b1 = b1.map(|p| cx.load_splat(p, r));
        let s2 = s2.map(|p| cx.load_splat(p, r));
        let b2 = b2.map(|p| cx.load_splat(p, r));
        for (j, mut y) in row.into_iter().enumerate() {
            y = match (s1, b1) {
                (Some(s), Some(b)) => cx.b.ins().fma(y, s, b),
                (Some(s), None) => cx.b.ins().fmul(y, s),
                (None, Some(b)) => cx.b.ins().fadd(y, b),
                (None, None) => y,
            };
            let lanes = if j + 1 == shape.nv { shape.last_lanes } else { LANES };
            if let Some((res, res_row)) = epi.residual {
                let x = load_lanes(cx, res, r * res_row + j * LANES, lanes);
                y = cx.b.ins().fadd(y, x);
            }
            y = match (s2, b2) {
                (Some(s), Some(b)) => cx.b.ins().fma(y, s, b),
                (Some(s), None) => cx.b.ins().fmul(y, s),
                (None, Some(b)) => cx.b.ins().fadd(y, b),
                (None, None) => y,
            };
            if relu_rows[r] {
                y = cx.relu(y);
            }
            store_lanes(cx, y, out, r * out_row + j * LANES, lanes);
        }
    }
}

/// Loads `lanes` floats (all four: one vector load).
pub(crate) fn load_lanes(cx: &mut KernelCx, base: Value, floats: usize, lanes: usize) -> Value {
    if lanes == LANES {
        return cx.load_v(base, floats);
    }
    let mut v = cx.fconst(VEC, 0.0);
    for lane in 0..lanes {
        let s = cx.load_s(base, floats + lane);
        v = cx.b.ins().insertlane(v, s, lane as u8);
    }
    v
}

/// Stores the first `lanes` lanes of `v`.
pub(crate) fn store_lanes(cx: &mut KernelCx, v: Value, base: Value, floats: usize, lanes: usize) {
    if lanes == LANES {
        cx.store(v, base, floats);
        return;
    }
    for lane in 0..lanes {
        let s = cx.b.ins().extractlane(v, lane as u8);
        debug_assert_eq!(cx.b.func.dfg.value_type(s), F32);
        cx.store(s, base, floats + lane);
    }
}
