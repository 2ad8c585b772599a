//! The depthwise stencil ([`DepthwiseSpec`]) as an AVX2 / AVX-512 routine: `(src = rdi, w = rsi,
//! dst = rdx)`. Output pixels are the lanes: each accumulator is `L` consecutive positions of the
//! channel's flat output, each tap a load of `src` at a constant offset times one weight.
//!
//! Register plan (`R` = 16 or 32 vector registers, `T` taps): with `T + 4 <= R` the weights are
//! broadcast once into registers `U..U+T` and each step runs `U = min(8, R - T)` accumulators,
//! `U*T` FMAs whose `src` operand is memory (one load each, fused); otherwise each tap broadcasts its
//! weight into one temporary and `U = 8` accumulators use it. The first tap is a multiply (no
//! zeroing). Steps of `U` vectors run in a counted loop (r10), `rdi` and `rdx` advancing by `U*L`
//! floats; the last `vectors % U` vectors are one more, shorter step.
//!
//! Soundness: every access is a whole-vector load of `src` at `tap + v*L`, a scalar broadcast of
//! `w[t]`, or a whole-vector store of `dst` at `v*L`, for `v < vectors`: the footprint of
//! [`DepthwiseSpec::footprint`], which the kernel's bounds check proves against the caller's
//! buffers. Registers and ABI as the GEMM tiles (caller-saved only, no stack, `vzeroupper`).
//!
//! The module also assembles the other depthwise routines: the fill, the flat run's epilogue, the
//! row routine, and on AVX-512 the fused flat routine ([`assemble_flat`]) and the deferred
//! activation ([`assemble_act`]). The AVX-512 **shifted taps** ([`shifted_taps`], in the fused
//! flat routine) load each aligned source vector once into a register and make each tap's input
//! with one `valignd` of two of them, instead of an unaligned load per tap (on this Zen 4 host
//! nearly every such load spans two cache lines). The fused flat routine also uses k3
//! (caller-saved) for its `vcompressps` masks. The direct row routines compute several output rows
//! at once and load each input vector once for all of them ([`direct_multi`], [`direct_stride2`]).

use super::{asm_err, at, Gen, Src, YMM, ZMM};
use crate::codegen::isa::Isa;
use crate::codegen::tile::{
    DepthwiseActSpec, DepthwiseDirectSpec, DepthwiseEpilogue, DepthwiseFillSpec, DepthwiseFlatSpec,
    DepthwiseOutSpec, DepthwiseRowsSpec, DepthwiseSpec, Piece,
};
use crate::codegen::CodegenError;
use iced_x86::code_asm::*;

/// Most accumulators per step (eight independent FMA chains cover the FMA latency on two ports).
const MAX_STEP: usize = 8;

/// Assembles a depthwise stencil.
pub fn assemble(spec: &DepthwiseSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let (regs, lanes, taps) = (spec.isa.registers(), spec.isa.lanes(), spec.taps.len());
    if taps == 0 || spec.vectors == 0 {
        return Err(CodegenError::Unsupported("an empty depthwise stencil".into()));
    }
    let in_regs = taps + 4 <= regs;
    let step = if in_regs { MAX_STEP.min(regs - taps) } else { MAX_STEP };
    // Weight of tap t: a register (in_regs), or broadcast into the temporary `step` per tap.
    if in_regs {
        for t in 0..taps {
            g.broadcast(step + t, at(rsi, t as isize)?)?;
        }
    }
    let body = |g: &mut Gen, n: usize| -> Result<(), CodegenError> {
        for (t, &off) in spec.taps.iter().enumerate() {
            let w = if in_regs {
                step + t
            } else {
                g.broadcast(step, at(rsi, t as isize)?)?;
                step
            };
            for u in 0..n {
                let m = at(rdi, (off + u * lanes) as isize)?;
                if t == 0 {
                    match g.isa {
                        Isa::Avx512 => g.a.vmulps(ZMM[u], ZMM[w], zmmword_ptr(m)),
                        _ => g.a.vmulps(YMM[u], YMM[w], ymmword_ptr(m)),
                    }
                    .map_err(asm_err)?;
                } else {
                    g.fma231(u, w, Src::Mem(m))?;
                }
            }
        }
        for u in 0..n {
            g.store(at(rdx, (u * lanes) as isize)?, u)?;
        }
        Ok(())
    };
    let full = spec.vectors / step;
    if full > 0 {
        let mut top = g.a.create_label();
        g.a.mov(r10d, full as u32).map_err(asm_err)?;
        g.a.set_label(&mut top).map_err(asm_err)?;
        body(&mut g, step)?;
        g.advance(rdi, step * lanes)?;
        g.advance(rdx, step * lanes)?;
        g.a.dec(r10d).map_err(asm_err)?;
        g.a.jnz(top).map_err(asm_err)?;
    }
    let rest = spec.vectors % step;
    if rest > 0 {
        body(&mut g, rest)?;
    }
    g.finish()
}

/// Assembles a depthwise fill ([`DepthwiseFillSpec`]). First the padded rows outside the input
/// are stored as zeros ([`zero_rows`]); then, stride 1, per input row (r10 counts them),
/// `ceil(w / L)` vector copies, the last one masked to the row's tail (masked loads and stores
/// suppress faults on the lanes left out); stride 2, [`fill2`].
pub fn assemble_fill(spec: &DepthwiseFillSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let lanes = g.lanes();
    if spec.h == 0 || spec.w == 0 {
        return Err(CodegenError::Unsupported("an empty depthwise plane".into()));
    }
    match spec.stride {
        1 => zero_rows(&mut g, spec, 2, 1)?,
        2 => {
            zero_rows(&mut g, spec, 7, 6)?;
            fill2(&mut g, spec)?;
            return g.finish();
        }
        s => return Err(CodegenError::Unsupported(format!("a depthwise fill of stride {s}"))),
    }
    g.advance(rsi, spec.top * spec.wq + spec.pad)?;
    let mut top = g.a.create_label();
    g.a.mov(r10d, spec.h as u32).map_err(asm_err)?;
    g.a.set_label(&mut top).map_err(asm_err)?;
    g.k1 = None;
    for j in 0..spec.w.div_ceil(lanes) {
        let n = (spec.w - j * lanes).min(lanes);
        let (src, dst) = (at(rdi, (j * lanes) as isize)?, at(rsi, (j * lanes) as isize)?);
        if n == lanes {
            g.load(0, src)?;
            g.store(dst, 0)?;
        } else {
            let p = Piece { lo: 0, hi: n, at: 0 };
            g.load_lanes(0, src, p, 1)?;
            g.store_lanes(dst, 0, p, 1)?;
        }
    }
    g.advance(rdi, spec.w)?;
    g.advance(rsi, spec.wq)?;
    g.a.dec(r10d).map_err(asm_err)?;
    g.a.jnz(top).map_err(asm_err)?;
    g.finish()
}

/// Stores zeros over the padded rows of a fill outside its input (`y < top`, `top + h <= y < rows`):
/// all `wq` columns of the row, in each column phase for stride 2 (plane `(y % 2) * 2 + c` at row
/// `y / 2`), relative to `rsi` before the fill moves it. `zero` and `mask` (AVX2's tail mask) are
/// free registers.
fn zero_rows(g: &mut Gen, spec: &DepthwiseFillSpec, zero: usize, mask: usize) -> Result<(), CodegenError> {
    let lanes = g.lanes();
    let (s, wq) = (spec.stride, spec.wq);
    let ys: Vec<usize> = (0..spec.top).chain(spec.top + spec.h..spec.rows).collect();
    if ys.is_empty() {
        return Ok(());
    }
    g.zero(zero)?;
    g.k1 = None;
    for y in ys {
        let starts: Vec<usize> = if s == 1 {
            vec![y * wq]
        } else {
            (0..s).map(|c| ((y % s) * s + c) * spec.plane_len + (y / s) * wq).collect()
        };
        for start in starts {
            for j in 0..wq.div_ceil(lanes) {
                let n = (wq - j * lanes).min(lanes);
                let m = at(rsi, (start + j * lanes) as isize)?;
                if n == lanes {
                    g.store(m, zero)?;
                } else {
                    g.store_lanes(m, zero, Piece { lo: 0, hi: n, at: 0 }, mask)?;
                }
            }
        }
    }
    Ok(())
}

/// Assembles a depthwise epilogue ([`DepthwiseOutSpec`]): the epilogue's registers from 1 on
/// ([`EpilogueRegs`]), then per output row (r10 counts them) and vector of the row: load from the
/// flat run into register 0, the epilogue, store; the row's tail vector masked.
pub fn assemble_out(spec: &DepthwiseOutSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let lanes = g.lanes();
    if spec.rows == 0 || spec.ow == 0 {
        return Err(CodegenError::Unsupported("an empty depthwise output".into()));
    }
    let e = &spec.epilogue;
    let v = 0;
    let regs = EpilogueRegs::load(&mut g, e, 1, rdx)?;
    let mut top = g.a.create_label();
    g.a.mov(r10d, spec.rows as u32).map_err(asm_err)?;
    g.a.set_label(&mut top).map_err(asm_err)?;
    g.k1 = None;
    for j in 0..spec.ow.div_ceil(lanes) {
        let n = (spec.ow - j * lanes).min(lanes);
        let p = Piece { lo: 0, hi: n, at: 0 };
        let off = (j * lanes) as isize;
        if n == lanes {
            g.load(v, at(rdi, off)?)?;
        } else {
            g.load_lanes(v, at(rdi, off)?, p, regs.mask())?;
        }
        let res = if e.residual { Some(at(rcx, off)?) } else { None };
        regs.apply(&mut g, e, v, res, p)?;
        if n == lanes {
            g.store(at(rsi, off)?, v)?;
        } else {
            g.store_lanes(at(rsi, off)?, v, p, regs.mask())?;
        }
    }
    g.advance(rdi, spec.wq)?;
    g.advance(rsi, spec.ow)?;
    if e.residual {
        g.advance(rcx, spec.ow)?;
    }
    g.a.dec(r10d).map_err(asm_err)?;
    g.a.jnz(top).map_err(asm_err)?;
    g.finish()
}

/// The registers of a depthwise epilogue from `first` on: the per-channel scalars `s1, b1, s2, b2`
/// (`first..first + 4`, those present broadcast once), zero for ReLU, a temporary and a mask (a
/// masked residual tail; the mask register is AVX2's), then the activation's four temporaries.
struct EpilogueRegs {
    first: usize,
}

impl EpilogueRegs {
    /// Registers it takes.
    fn count(e: &DepthwiseEpilogue) -> usize {
        Self::count_with(e.activation.is_some())
    }

    /// Registers it takes with an activation or without.
    fn count_with(activation: bool) -> usize {
        if activation {
            11
        } else {
            7
        }
    }

    /// Broadcasts the scalars present from `epi` and zeroes the ReLU register.
    fn load(
        g: &mut Gen,
        e: &DepthwiseEpilogue,
        first: usize,
        epi: AsmRegister64,
    ) -> Result<Self, CodegenError> {
        for (i, value) in [e.s1, e.b1, e.s2, e.b2].into_iter().enumerate() {
            if let Some(a) = value {
                g.broadcast(first + i, at(epi, a as isize)?)?;
            }
        }
        if e.relu {
            g.zero(first + 4)?;
        }
        Ok(EpilogueRegs { first })
    }

    fn scalar(&self, e: &DepthwiseEpilogue, i: usize) -> Option<usize> {
        [e.s1, e.b1, e.s2, e.b2][i].map(|_| self.first + i)
    }

    fn mask(&self) -> usize {
        self.first + 6
    }

    /// Output rows `0..rows` of `ow` floats at `rdx` (the residual's at `r8`), row `o`'s vector `j`
    /// in accumulator `o * per_row + j`: each through [`Self::apply`], then stored, a row's last
    /// vector masked to its `ow % lanes` valid lanes (the direct row routines' steps of several
    /// rows).
    fn store_rows(
        &self,
        g: &mut Gen,
        e: &DepthwiseEpilogue,
        rows: usize,
        per_row: usize,
        ow: usize,
    ) -> Result<(), CodegenError> {
        let lanes = g.lanes();
        for o in 0..rows {
            for j in 0..per_row {
                let u = o * per_row + j;
                let valid = (ow - j * lanes).min(lanes);
                let piece = Piece { lo: 0, hi: valid, at: 0 };
                let off = (o * ow + j * lanes) as isize;
                let res = if e.residual { Some(at(r8, off)?) } else { None };
                self.apply(g, e, u, res, piece)?;
                if valid == lanes {
                    g.store(at(rdx, off)?, u)?;
                } else {
                    g.store_lanes(at(rdx, off)?, u, piece, self.mask())?;
                }
            }
        }
        Ok(())
    }

    /// `v` through the epilogue in the IR's order: `v * s1 + b1`, `+ residual` (`res`: the
    /// residual's vector, only lanes `p` when `p` is a tail), `* s2 + b2`, ReLU (`max(0, v)` with
    /// `v` second, so a NaN is kept), the activation.
    fn apply(
        &self,
        g: &mut Gen,
        e: &DepthwiseEpilogue,
        v: usize,
        res: Option<AsmMemoryOperand>,
        p: Piece,
    ) -> Result<(), CodegenError> {
        let (zero, t) = (self.first + 4, self.first + 5);
        affine(g, v, self.scalar(e, 0), self.scalar(e, 1))?;
        if let Some(m) = res {
            if p.hi - p.lo == g.lanes() {
                g.add(v, Src::Mem(m))?;
            } else {
                g.load_lanes(t, m, p, self.mask())?;
                g.add(v, Src::Reg(t))?;
            }
            affine(g, v, self.scalar(e, 2), self.scalar(e, 3))?;
        }
        if e.relu {
            match g.isa {
                Isa::Avx512 => g.a.vmaxps(ZMM[v], ZMM[zero], ZMM[v]),
                _ => g.a.vmaxps(YMM[v], YMM[zero], YMM[v]),
            }
            .map_err(asm_err)?;
        }
        if let Some(a) = e.activation {
            let f = self.first;
            g.activation(v, a.0, [f + 7, f + 8, f + 9, f + 10])?;
        }
        Ok(())
    }
}

/// `v = v * s + b` with registers for either.
fn affine(g: &mut Gen, v: usize, s: Option<usize>, b: Option<usize>) -> Result<(), CodegenError> {
    match (s, b) {
        (Some(s), Some(b)) => g.fma213(v, s, Src::Reg(b)),
        (Some(s), None) => g.mul(v, Src::Reg(s)),
        (None, Some(b)) => g.add(v, Src::Reg(b)),
        (None, None) => Ok(()),
    }
}

/// The stride-2 fill of the input rows: rows in pairs (r10 counts them; an odd last row after the
/// loop), each row's input in chunks of `2L` floats, two vectors (masked, zeroing, at the tail)
/// split into even and odd columns: AVX-512 `vpermi2ps` with index vectors, AVX2 `vshufps` +
/// `vpermpd`. Input row `iy` is padded row `top + iy`: row phase `(top + iy) % 2`, plane row
/// `(top + iy) / 2`. Even input columns `ix = 2m` go to column phase `pad % 2` at `m + pad / 2`,
/// odd ones to the other phase at `m + (pad + 1) / 2`; the stores of a tail chunk are masked to
/// its columns.
fn fill2(g: &mut Gen, spec: &DepthwiseFillSpec) -> Result<(), CodegenError> {
    let (lanes, pad, w, wq, pl) = (g.lanes(), spec.pad, spec.w, spec.wq, spec.plane_len);
    // Registers: inputs 0, 1; even 2, odd 3; index vectors 4, 5 (AVX-512); mask 6 (AVX2).
    let (ra, rb, re, ro, ie, io, mask) = (0, 1, 2, 3, 4, 5, 6);
    if g.isa == Isa::Avx512 {
        let even = g.data_label((0..16u32).map(|l| 2 * l).collect());
        let odd = g.data_label((0..16u32).map(|l| 2 * l + 1).collect());
        g.a.vmovups(ZMM[ie], zmmword_ptr(even)).map_err(asm_err)?;
        g.a.vmovups(ZMM[io], zmmword_ptr(odd)).map_err(asm_err)?;
    }
    // One input row at `rdi + src` to row phase `rp`, plane row `pr` (relative to rsi).
    let row = |g: &mut Gen, src: usize, rp: usize, pr: usize| -> Result<(), CodegenError> {
        let (pe, po) = (pad % 2, (pad + 1) % 2);
        let even_at = (rp * 2 + pe) * pl + pr * wq + pad / 2;
        let odd_at = (rp * 2 + po) * pl + pr * wq + pad.div_ceil(2);
        for c in 0..w.div_ceil(2 * lanes) {
            let rem = (w - 2 * lanes * c).min(2 * lanes);
            let base = src + 2 * lanes * c;
            for (reg, lo) in [(ra, 0), (rb, lanes)] {
                let n = rem.saturating_sub(lo).min(lanes);
                let m = at(rdi, (base + lo) as isize)?;
                if n == lanes {
                    g.load(reg, m)?;
                } else if n == 0 {
                    g.zero(reg)?;
                } else {
                    g.load_lanes(reg, m, Piece { lo: 0, hi: n, at: 0 }, mask)?;
                }
            }
            match g.isa {
                Isa::Avx512 => {
                    let a = &mut g.a;
                    a.vmovaps(ZMM[re], ZMM[ie]).map_err(asm_err)?;
                    a.vpermi2ps(ZMM[re], ZMM[ra], ZMM[rb]).map_err(asm_err)?;
                    a.vmovaps(ZMM[ro], ZMM[io]).map_err(asm_err)?;
                    a.vpermi2ps(ZMM[ro], ZMM[ra], ZMM[rb]).map_err(asm_err)?;
                }
                _ => {
                    let a = &mut g.a;
                    a.vshufps(YMM[re], YMM[ra], YMM[rb], 0x88).map_err(asm_err)?;
                    a.vpermpd(YMM[re], YMM[re], 0xD8).map_err(asm_err)?;
                    a.vshufps(YMM[ro], YMM[ra], YMM[rb], 0xDD).map_err(asm_err)?;
                    a.vpermpd(YMM[ro], YMM[ro], 0xD8).map_err(asm_err)?;
                }
            }
            for (reg, n, to) in [(re, rem.div_ceil(2), even_at), (ro, rem / 2, odd_at)] {
                let m = at(rsi, (to + lanes * c) as isize)?;
                if n == lanes {
                    g.store(m, reg)?;
                } else if n > 0 {
                    g.store_lanes(m, reg, Piece { lo: 0, hi: n, at: 0 }, mask)?;
                }
            }
        }
        Ok(())
    };
    // Row iy = 2i + e: padded row 2i + e + top, phase (e + top) % 2, plane row i + (e + top) / 2.
    let (pairs, t) = (spec.h / 2, spec.top);
    if pairs > 0 {
        let mut top = g.a.create_label();
        g.a.mov(r10d, pairs as u32).map_err(asm_err)?;
        g.a.set_label(&mut top).map_err(asm_err)?;
        g.k1 = None;
        row(g, 0, t % 2, t / 2)?;
        row(g, w, (t + 1) % 2, t.div_ceil(2))?;
        g.advance(rdi, 2 * w)?;
        g.advance(rsi, wq)?;
        g.a.dec(r10d).map_err(asm_err)?;
        g.a.jnz(top).map_err(asm_err)?;
    }
    if spec.h % 2 == 1 {
        g.k1 = None;
        row(g, 0, t % 2, t / 2)?;
    }
    Ok(())
}

/// Assembles a depthwise stencil in row mode with its epilogue ([`DepthwiseRowsSpec`]): per
/// output row (r11 counts them), the row's `ceil(ow / L)` vectors in steps of at most
/// [`MAX_STEP`] accumulators, each tap an FMA of a `src` load and the tap's weight (in registers
/// when they fit, else broadcast per tap), then the epilogue in the IR's order and the store, the
/// row's tail vector masked. `rdi` advances by `wq` floats per row, `rdx` (and `r8`) by `ow`.
pub fn assemble_rows(spec: &DepthwiseRowsSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let (regs, lanes, taps) = (spec.isa.registers(), spec.isa.lanes(), spec.taps.len());
    if taps == 0 || spec.rows == 0 || spec.ow == 0 {
        return Err(CodegenError::Unsupported("an empty depthwise stencil".into()));
    }
    // Registers: accumulators 0..step, then the epilogue's ([`EpilogueRegs`]), then the weights or
    // one broadcast temporary.
    let e = &spec.epilogue;
    let per_row = spec.ow.div_ceil(lanes);
    let fixed = EpilogueRegs::count(e);
    let in_regs = MAX_STEP.min(per_row) + fixed + taps <= regs;
    let step = if in_regs { MAX_STEP.min(per_row) } else { MAX_STEP.min(per_row).min(regs - fixed - 1) };
    let w0 = step + fixed;
    let regs = EpilogueRegs::load(&mut g, e, step, rcx)?;
    if in_regs {
        for tap in 0..taps {
            g.broadcast(w0 + tap, at(rsi, tap as isize)?)?;
        }
    }
    let top = row_loop_top(&mut g, spec)?;
    let mut j0 = 0;
    while j0 < per_row {
        let n = step.min(per_row - j0);
        for (tap, &off) in spec.taps.iter().enumerate() {
            let wr = if in_regs {
                w0 + tap
            } else {
                g.broadcast(w0, at(rsi, tap as isize)?)?;
                w0
            };
            for u in 0..n {
                let m = at(rdi, (off + (j0 + u) * lanes) as isize)?;
                if tap == 0 {
                    match g.isa {
                        Isa::Avx512 => g.a.vmulps(ZMM[u], ZMM[wr], zmmword_ptr(m)),
                        _ => g.a.vmulps(YMM[u], YMM[wr], ymmword_ptr(m)),
                    }
                    .map_err(asm_err)?;
                } else {
                    g.fma231(u, wr, Src::Mem(m))?;
                }
            }
        }
        finish_row_vectors(&mut g, spec, &regs, j0, n)?;
        j0 += n;
    }
    next_row(&mut g, spec, top)?;
    g.finish()
}

/// The aligned vectors `j` of a flat run's source that output vectors `v0..v0 + n` of the taps
/// `taps` read (`j` for a tap at a whole vector's offset, `j` and `j + 1` for the others), in
/// order; their number does not depend on `v0`.
fn shifted_sources(taps: &[usize], lanes: usize, v0: usize, n: usize) -> Vec<usize> {
    let mut js: Vec<usize> = Vec::new();
    for &off in taps {
        for u in 0..n {
            let j = v0 + u + off / lanes;
            js.push(j);
            if off % lanes != 0 {
                js.push(j + 1);
            }
        }
    }
    js.sort_unstable();
    js.dedup();
    js
}

/// Temporaries for the shifted taps of [`assemble_flat`].
const SHIFT_TEMPS: usize = 4;

/// Whether [`assemble_flat`] can run taps `taps` (one output vector's accumulator, its source
/// vectors and the shift temporaries in AVX-512's 32 registers).
pub fn flat_fits(taps: &[usize]) -> bool {
    1 + shifted_sources(taps, 16, 0, 1).len() + SHIFT_TEMPS <= Isa::Avx512.registers()
}

/// Assembles a depthwise flat stencil with its compacted epilogue ([`DepthwiseFlatSpec`],
/// AVX-512), unrolled in steps of `n <= `[`MAX_STEP`] output vectors (as many as fit):
/// - **Stencil.** The step's source vectors are loaded once from their aligned positions `j * L`
///   of `src` ([`shifted_sources`]; a vector reaching past the footprint loaded masked, the lanes
///   beyond it zero), and tap `t` of output vector `v` (offset `off`) is `valignd` of vectors
///   `j = v + off / L` and `j + 1` by `off % L` lanes (no shift when it is 0): exactly
///   `src[v * L + off ..][..L]`, one shuffle and no unaligned load per FMA (the loads crossing a
///   cache line were the limit; one thread, batch 1, 5x5 at 14x14, 672 channels: 0.188 ->
///   0.175 ms). The weight is a `{1to16}` broadcast operand of the FMA; the first tap a multiply.
/// - **Epilogue** ([`flat_epilogue`]): per vector, the epilogue (its registers loaded after the
///   step's FMAs, over the source vectors) on all lanes, a register-form `vcompressps` (mask in
///   k3) moving the lanes that are output pixels (flat position `o` with `o % wq < ow` and
///   `o / wq < oh`) to the bottom, and a store of those `n` lanes (k1) at the output index of the
///   vector's first output pixel, the number of output pixels before it. The other lanes are
///   computed from scratch values and dropped.
///
/// Sound: the output pixels of the flat run, in order, are `y[0 .. oh * ow]` in order (row `oy`'s
/// `ow` pixels at `oy * wq` follow row `oy - 1`'s), so the compacted stores of successive vectors
/// tile `y[0 .. oh * ow]` exactly, each lane getting its own pixel's value; `src` is read below
/// `max(taps) + vectors * L` only (the lanes a shift takes from vector `j + 1` are at most
/// `v * L + off + L - 1`).
pub fn assemble_flat(spec: &DepthwiseFlatSpec) -> Result<Vec<u8>, CodegenError> {
    let e = &spec.epilogue;
    if spec.isa != Isa::Avx512 || e.residual || !flat_fits(&spec.taps) {
        return Err(CodegenError::Unsupported(
            "a flat depthwise epilogue off AVX-512, with a residual, or with too many source vectors".into(),
        ));
    }
    let mut g = Gen::new(spec.isa)?;
    let (regs, lanes) = (spec.isa.registers(), spec.isa.lanes());
    let (oh, ow, wq) = (spec.oh, spec.ow, spec.wq);
    if spec.taps.is_empty() || oh == 0 || ow == 0 || ow > wq || spec.vectors * lanes < (oh - 1) * wq + ow {
        return Err(CodegenError::Unsupported("a depthwise flat run that does not cover its output".into()));
    }
    let end = spec.taps.iter().copied().max().unwrap_or(0) + spec.vectors * lanes;
    let (mut done, mut v0) = (0, 0);
    while v0 < spec.vectors {
        let n = shifted_step(&spec.taps, v0, MAX_STEP.min(spec.vectors - v0), regs);
        shifted_taps(&mut g, &spec.taps, v0, n, Some(end))?;
        let eregs = EpilogueRegs::load(&mut g, e, n, rcx)?;
        done = flat_epilogue(&mut g, spec, &eregs, v0, n, done)?;
        v0 += n;
    }
    debug_assert_eq!(done, oh * ow);
    g.finish()
}

/// The compacted epilogue of flat vectors `v0..v0 + n` (accumulators `0..n`) of [`assemble_flat`],
/// the first of them storing at output index `done`; returns the output pixels stored in all.
fn flat_epilogue(
    g: &mut Gen,
    spec: &DepthwiseFlatSpec,
    eregs: &EpilogueRegs,
    v0: usize,
    n: usize,
    mut done: usize,
) -> Result<usize, CodegenError> {
    let (lanes, e) = (g.lanes(), &spec.epilogue);
    let (oh, ow, wq) = (spec.oh, spec.ow, spec.wq);
    for (u, &z) in ZMM.iter().enumerate().take(n) {
        let v = v0 + u;
        let pixels: u32 = (0..lanes)
            .filter(|l| {
                let o = v * lanes + l;
                o / wq < oh && o % wq < ow
            })
            .fold(0, |m, l| m | 1 << l);
        let count = pixels.count_ones() as usize;
        if count == 0 {
            continue;
        }
        eregs.apply(g, e, u, None, Piece { lo: 0, hi: lanes, at: 0 })?;
        let dst = at(rdx, done as isize)?;
        if count == lanes {
            g.store(dst, u)?;
        } else {
            if pixels != (1 << count) - 1 {
                g.a.mov(eax, pixels).map_err(asm_err)?;
                g.a.kmovw(k3, eax).map_err(asm_err)?;
                g.a.vcompressps(z.k3().z(), z).map_err(asm_err)?;
            }
            g.store_lanes(dst, u, Piece { lo: 0, hi: count, at: 0 }, 0)?;
        }
        done += count;
    }
    Ok(done)
}

/// Assembles a deferred depthwise activation ([`DepthwiseActSpec`], AVX-512): groups of up to four
/// vectors of `y` (each in its own five registers, so their long activation chains overlap) loaded,
/// ReLU'd (`max(0, v)` with `v` second, keeping a NaN) and activated, then stored back; full groups
/// in a counted loop (r10, `rdi` advancing), the rest unrolled, the last vector masked to the tail.
/// Reads and writes exactly `y[0 .. len]`.
pub fn assemble_act(spec: &DepthwiseActSpec) -> Result<Vec<u8>, CodegenError> {
    if spec.isa != Isa::Avx512 || spec.len == 0 {
        return Err(CodegenError::Unsupported("a depthwise activation off AVX-512 or empty".into()));
    }
    let mut g = Gen::new(spec.isa)?;
    let lanes = g.lanes();
    const GROUP: usize = 4;
    let zero = 5 * GROUP;
    if spec.relu {
        g.zero(zero)?;
    }
    // `n` vectors from `rdi`, the last one `tail` lanes when `tail < lanes`.
    let group = |g: &mut Gen, n: usize, tail: usize| -> Result<(), CodegenError> {
        let p = Piece { lo: 0, hi: tail, at: 0 };
        for u in 0..n {
            let m = at(rdi, (u * lanes) as isize)?;
            if u + 1 == n && tail < lanes {
                g.load_lanes(5 * u, m, p, 0)?;
            } else {
                g.load(5 * u, m)?;
            }
        }
        for u in 0..n {
            let v = 5 * u;
            if spec.relu {
                g.a.vmaxps(ZMM[v], ZMM[zero], ZMM[v]).map_err(asm_err)?;
            }
            g.activation(v, spec.activation.0, [v + 1, v + 2, v + 3, v + 4])?;
        }
        for u in 0..n {
            let m = at(rdi, (u * lanes) as isize)?;
            if u + 1 == n && tail < lanes {
                g.store_lanes(m, 5 * u, p, 0)?;
            } else {
                g.store(m, 5 * u)?;
            }
        }
        Ok(())
    };
    let vectors = spec.len.div_ceil(lanes);
    let tail = spec.len - (vectors - 1) * lanes;
    // Full groups of whole vectors in the loop; the last vector (maybe a tail) among the rest.
    let looped = (vectors - 1) / GROUP;
    if looped > 0 {
        let mut top = g.a.create_label();
        g.a.mov(r10d, looped as u32).map_err(asm_err)?;
        g.a.set_label(&mut top).map_err(asm_err)?;
        group(&mut g, GROUP, lanes)?;
        g.advance(rdi, GROUP * lanes)?;
        g.a.dec(r10d).map_err(asm_err)?;
        g.a.jnz(top).map_err(asm_err)?;
    }
    let mut rest = vectors - looped * GROUP;
    let mut off = 0;
    g.k1 = None;
    while rest > 0 {
        let n = rest.min(GROUP);
        if off > 0 {
            g.advance(rdi, off)?;
        }
        group(&mut g, n, if n == rest { tail } else { lanes })?;
        off = n * lanes;
        rest -= n;
    }
    g.finish()
}

/// The most output vectors (at most `most`, at least 1) from `v0` whose accumulators, source
/// vectors ([`shifted_sources`]) and shift temporaries fit in `regs` registers.
fn shifted_step(taps: &[usize], v0: usize, most: usize, regs: usize) -> usize {
    let mut n = most;
    while n > 1 && n + shifted_sources(taps, 16, v0, n).len() + SHIFT_TEMPS > regs {
        n -= 1;
    }
    n
}

/// The taps of output vectors `v0..v0 + n` relative to `rdi` into accumulators `0..n` (AVX-512):
/// the source vectors `j` of [`shifted_sources`] loaded into the registers after the
/// accumulators (with `end`, a vector reaching past float `end` loaded masked, the lanes beyond it
/// zero; without, whole), and tap `t` (offset `off`) of vector `v` an FMA of the `{1to16}`
/// broadcast weight `rsi[t]` and `valignd` of sources `v + off / L` and the next by `off % L`
/// lanes, which is exactly `rdi[v * L + off ..][..L]` (no shift when `off % L` is 0; the first
/// tap a multiply). Four temporaries after the sources hold the shifts.
fn shifted_taps(
    g: &mut Gen,
    taps: &[usize],
    v0: usize,
    n: usize,
    end: Option<usize>,
) -> Result<(), CodegenError> {
    let lanes = g.lanes();
    let js = shifted_sources(taps, lanes, v0, n);
    let reg = |j: usize| n + js.binary_search(&j).expect("a loaded source vector");
    for &j in &js {
        let valid = end.map_or(lanes, |end| end.saturating_sub(j * lanes).min(lanes));
        let m = at(rdi, (j * lanes) as isize)?;
        if valid == lanes {
            g.load(reg(j), m)?;
        } else if valid == 0 {
            g.zero(reg(j))?;
        } else {
            g.load_lanes(reg(j), m, Piece { lo: 0, hi: valid, at: 0 }, 0)?;
        }
    }
    let t0 = n + js.len();
    let mut k = 0;
    for (tap, &off) in taps.iter().enumerate() {
        let wm = at(rsi, tap as isize)?;
        for (u, &z) in ZMM.iter().enumerate().take(n) {
            let (j, r) = (v0 + u + off / lanes, off % lanes);
            let x = if r == 0 {
                reg(j)
            } else {
                let t = t0 + k % SHIFT_TEMPS;
                k += 1;
                g.a.valignd(ZMM[t], ZMM[reg(j + 1)], ZMM[reg(j)], r as i32).map_err(asm_err)?;
                t
            };
            if tap == 0 {
                g.a.vmulps(z, ZMM[x], dword_bcst(wm)).map_err(asm_err)?;
            } else {
                g.fma231(u, x, Src::Bcst(wm))?;
            }
        }
    }
    Ok(())
}

/// The epilogue and the store of an output row's vectors `j0..j0 + n` (in accumulators `0..n`),
/// the row's last vector masked at its end.
fn finish_row_vectors(
    g: &mut Gen,
    spec: &DepthwiseRowsSpec,
    regs: &EpilogueRegs,
    j0: usize,
    n: usize,
) -> Result<(), CodegenError> {
    let (lanes, e) = (spec.isa.lanes(), &spec.epilogue);
    for u in 0..n {
        let j = j0 + u;
        let valid = (spec.ow - j * lanes).min(lanes);
        let p = Piece { lo: 0, hi: valid, at: 0 };
        let off = (j * lanes) as isize;
        let res = if e.residual { Some(at(r8, off)?) } else { None };
        regs.apply(g, e, u, res, p)?;
        if valid == lanes {
            g.store(at(rdx, off)?, u)?;
        } else {
            g.store_lanes(at(rdx, off)?, u, p, regs.mask())?;
        }
    }
    Ok(())
}

/// The head of the row routines' loop over output rows (r11 counts them down; each row starts
/// with no lane mask known in k1): the label [`next_row`] jumps back to.
fn row_loop_top(g: &mut Gen, spec: &DepthwiseRowsSpec) -> Result<CodeLabel, CodegenError> {
    let mut top = g.a.create_label();
    g.a.mov(r11d, spec.rows as u32).map_err(asm_err)?;
    g.a.set_label(&mut top).map_err(asm_err)?;
    g.k1 = None;
    Ok(top)
}

/// The row routines' step to the next output row: source, output (and residual) pointers one row
/// on, and back to `top` while r11 counts rows down.
fn next_row(g: &mut Gen, spec: &DepthwiseRowsSpec, top: CodeLabel) -> Result<(), CodegenError> {
    g.advance(rdi, spec.wq)?;
    g.advance(rdx, spec.ow)?;
    if spec.epilogue.residual {
        g.advance(r8, spec.ow)?;
    }
    g.a.dec(r11d).map_err(asm_err)?;
    g.a.jnz(top).map_err(asm_err)
}

/// The mask registers of [`assemble_direct`]'s column masks (k1 is the tail stores', k2 the
/// sigmoid's).
const DIRECT_MASKS: [AsmRegisterK; 5] = [k3, k4, k5, k6, k7];

/// The lanes of output vector `j` (columns `j * L ..`) whose tap at column offset `kw` reads inside
/// the input row in [`assemble_direct`]: lane `l` reads input column `c = j * L + l + kw - p`, which
/// must be `>= 0` (the left padding), and `< w` for every lane that is stored (`l < min(L, w - j *
/// L)`; the right padding). The upper end is relaxed to the stored lanes when the exact one would
/// be a mask anyway (so taps at `kw <= p` of a row's last vector share one mask) and dropped when
/// all `L` lanes read inside the row: every lane in the mask reads `0 <= c < w`. All ones means no
/// mask.
fn direct_mask(lanes: usize, w: usize, p: usize, j: usize, kw: usize) -> u32 {
    let start = j * lanes;
    let lo = (p - kw.min(p)).saturating_sub(start);
    let stored = (w - start).min(lanes);
    let exact = (w + p).saturating_sub(kw + start).min(lanes);
    let hi = if exact == lanes { lanes } else { exact.min(stored) };
    if hi <= lo {
        return 0;
    }
    let upto = if hi == 32 { u32::MAX } else { (1u32 << hi) - 1 };
    upto & !((1u32 << lo) - 1)
}

/// Assembles a depthwise stencil and epilogue straight from the unpadded input plane
/// ([`DepthwiseDirectSpec`], AVX-512, stride 1): no fill and no phase planes. Output row `oy`'s
/// `ceil(w / L)` vectors run in steps of at most [`MAX_STEP`] accumulators; tap `(kh, kw)` of
/// vector `j` is an FMA of the tap's weight (in registers when they fit, else broadcast per tap)
/// and the input at `x + (oy + kh - p) * w + j * L + kw - p`:
/// - **Rows.** A tap whose input row `oy + kh - p` is outside `0..h` is skipped (it reads the zero
///   padding): the first `p` and last `p` output rows are unrolled, each with its rows of taps;
///   the rows between run all `k * k` taps in a counted loop (r11). `rdi` walks as
///   `x + (oy - p) * w` (before the plane for the first rows, whose skipped taps would read there).
/// - **Columns.** Where some lanes would read outside the input row ([`direct_mask`]: the first
///   vector's left taps, the last vector's right taps), the input is a zero-masked load (k3..k7,
///   reloaded into k7 at each use past five distinct masks) into a temporary, so those lanes add
///   `0 * weight` like the padding; a tap masked to no lane is skipped. Other taps are plain loads
///   fused into the FMA.
/// - The first tap of each vector is a multiply, then the epilogue in the IR's order and the store
///   of the row's vectors as in [`assemble_rows`], the row's tail masked.
///
/// Sound: each stored lane gets every tap whose input pixel is inside the plane, in the order of
/// the taps, and nothing for those outside (zero padding): `sum over (kh, kw) of xpad[oy + kh][ox +
/// kw] * w[kh][kw]` but for the skipped `0 * w` terms. Every load's lanes read input columns `0 <= c
/// < w` of rows `0 <= oy + kh - p < h`, so only `x[0 .. h * w]`; the masked-off lanes are never
/// read (AVX-512 suppresses their faults). The stores and residual reads are the row routine's:
/// `y[0 .. h * w]`, `res[0 .. h * w]`.
///
/// Unlike the row routine it never writes the scratch: on this Zen 4 host the fill was 10-18% of
/// a 56x56 or 112x112 layer, a copy the stencil then waits on.
pub fn assemble_direct(spec: &DepthwiseDirectSpec) -> Result<Vec<u8>, CodegenError> {
    let (k, h, w, e) = (spec.k, spec.h, spec.w, &spec.epilogue);
    if spec.isa != Isa::Avx512 || k % 2 == 0 || h == 0 || w == 0 || spec.rows == 0 {
        return Err(CodegenError::Unsupported(
            "a direct depthwise stencil off AVX-512, with an even window or an empty plane".into(),
        ));
    }
    if spec.stride == 2 {
        return direct_stride2(spec);
    }
    if spec.stride != 1 {
        return Err(CodegenError::Unsupported(format!(
            "a direct depthwise stencil of stride {}",
            spec.stride
        )));
    }
    if spec.rows > 1 {
        return direct_multi(spec);
    }
    let mut g = Gen::new(spec.isa)?;
    let (regs, lanes, taps, p) = (spec.isa.registers(), spec.isa.lanes(), k * k, k / 2);
    let per_row = w.div_ceil(lanes);
    // Registers: accumulators 0..step, the epilogue's, the masked-load temporary, then the weights
    // or one broadcast temporary.
    let fixed = EpilogueRegs::count(e);
    let in_regs = MAX_STEP.min(per_row) + fixed + 1 + taps <= regs;
    let step = if in_regs { MAX_STEP.min(per_row) } else { MAX_STEP.min(per_row).min(regs - fixed - 2) };
    let (tmp, w0) = (step + fixed, step + fixed + 1);
    let eregs = EpilogueRegs::load(&mut g, e, step, rcx)?;
    if in_regs {
        for tap in 0..taps {
            g.broadcast(w0 + tap, at(rsi, tap as isize)?)?;
        }
    }
    let full = (1u32 << lanes) - 1;
    let masks = DirectMasks::load(&mut g, lanes, w, k)?;
    // The epilogue and stores of a row (only `isa`, `ow` and `epilogue` are read).
    let row =
        DepthwiseRowsSpec { isa: spec.isa, taps: Vec::new(), rows: 1, ow: w, wq: w, epilogue: e.clone() };
    // One output row with the taps of kernel rows `khs`, `rdi` at its input row `oy - p`.
    let body = |g: &mut Gen, khs: std::ops::Range<usize>| -> Result<(), CodegenError> {
        g.k1 = None;
        let mut j0 = 0;
        while j0 < per_row {
            let n = step.min(per_row - j0);
            let mut started = [false; MAX_STEP];
            for kh in khs.clone() {
                for kw in 0..k {
                    let tap = kh * k + kw;
                    let used: Vec<(usize, u32)> = (0..n)
                        .map(|u| (u, direct_mask(lanes, w, p, j0 + u, kw)))
                        .filter(|&(_, m)| m != 0)
                        .collect();
                    if used.is_empty() {
                        continue;
                    }
                    let wr = if in_regs {
                        w0 + tap
                    } else {
                        g.broadcast(w0, at(rsi, tap as isize)?)?;
                        w0
                    };
                    for (u, m) in used {
                        let off = (kh * w + (j0 + u) * lanes + kw) as isize - p as isize;
                        let mem = zmmword_ptr(at(rdi, off)?);
                        let x = if m == full {
                            None
                        } else {
                            masks.load_masked(g, tmp, at(rdi, off)?, m)?;
                            Some(tmp)
                        };
                        match (started[u], x) {
                            (false, None) => g.a.vmulps(ZMM[u], ZMM[wr], mem),
                            (false, Some(x)) => g.a.vmulps(ZMM[u], ZMM[wr], ZMM[x]),
                            (true, None) => g.a.vfmadd231ps(ZMM[u], ZMM[wr], mem),
                            (true, Some(x)) => g.a.vfmadd231ps(ZMM[u], ZMM[wr], ZMM[x]),
                        }
                        .map_err(asm_err)?;
                        started[u] = true;
                    }
                }
            }
            debug_assert!(started[..n].iter().all(|&s| s), "the centre tap reaches every vector");
            finish_row_vectors(g, &row, &eregs, j0, n)?;
            j0 += n;
        }
        Ok(())
    };
    let next = |g: &mut Gen| -> Result<(), CodegenError> {
        g.advance(rdi, w)?;
        g.advance(rdx, w)?;
        if e.residual {
            g.advance(r8, w)?;
        }
        Ok(())
    };
    // Kernel rows whose input row `oy + kh - p` is inside the plane.
    let khs = |oy: usize| (p.saturating_sub(oy))..k.min(h + p - oy);
    g.a.sub(rdi, i32::try_from(p * w * 4).map_err(|_| CodegenError::Unsupported("a wide plane".into()))?)
        .map_err(asm_err)?;
    let top = p.min(h);
    for oy in 0..top {
        body(&mut g, khs(oy))?;
        next(&mut g)?;
    }
    if h > 2 * p {
        let mut again = g.a.create_label();
        g.a.mov(r11d, (h - 2 * p) as u32).map_err(asm_err)?;
        g.a.set_label(&mut again).map_err(asm_err)?;
        body(&mut g, 0..k)?;
        next(&mut g)?;
        g.a.dec(r11d).map_err(asm_err)?;
        g.a.jnz(again).map_err(asm_err)?;
    }
    for oy in top.max(h.saturating_sub(p))..h {
        body(&mut g, khs(oy))?;
        next(&mut g)?;
    }
    g.finish()
}

/// The distinct partial column masks of a direct routine ([`direct_mask`] of every vector of a row
/// and kernel column), the first five kept in k3..k7 for the whole routine; past five, the fifth
/// register k7 is reloaded at each use of the masks that were not kept.
struct DirectMasks {
    masks: Vec<u32>,
    kept: usize,
}

impl DirectMasks {
    /// Collects the masks of rows of `w` columns under a `k`-wide window and loads those kept.
    fn load(g: &mut Gen, lanes: usize, w: usize, k: usize) -> Result<Self, CodegenError> {
        let full = (1u32 << lanes) - 1;
        let mut masks: Vec<u32> = Vec::new();
        for j in 0..w.div_ceil(lanes) {
            for kw in 0..k {
                let m = direct_mask(lanes, w, k / 2, j, kw);
                if m != 0 && m != full && !masks.contains(&m) {
                    masks.push(m);
                }
            }
        }
        Self::load_list(g, masks)
    }

    /// Loads the first five of `masks` (distinct, partial) into k3..k7.
    fn load_list(g: &mut Gen, masks: Vec<u32>) -> Result<Self, CodegenError> {
        let kept = if masks.len() <= DIRECT_MASKS.len() { masks.len() } else { DIRECT_MASKS.len() - 1 };
        for (&m, &kr) in masks.iter().zip(&DIRECT_MASKS).take(kept) {
            g.a.mov(eax, m).map_err(asm_err)?;
            g.a.kmovw(kr, eax).map_err(asm_err)?;
        }
        Ok(DirectMasks { masks, kept })
    }

    /// `zmm[t] = mem` with the lanes outside mask `m` (one of the collected masks) zero.
    fn load_masked(&self, g: &mut Gen, t: usize, mem: AsmMemoryOperand, m: u32) -> Result<(), CodegenError> {
        let kr = match self.masks.iter().take(self.kept).position(|&q| q == m) {
            Some(i) => DIRECT_MASKS[i],
            None => {
                g.a.mov(eax, m).map_err(asm_err)?;
                g.a.kmovw(k7, eax).map_err(asm_err)?;
                k7
            }
        };
        g.a.vmovups(masked_zero(ZMM[t], kr), zmmword_ptr(mem)).map_err(asm_err)
    }
}

/// [`assemble_direct`] with `spec.rows = R > 1` output rows at once (their `R * ceil(w / L)`
/// accumulators beside the epilogue's registers and two temporaries): each step computes output
/// rows `oy0..oy0 + r` (`r <= R`, `r * ceil(w / L)` accumulators) walking the input rows they read,
/// `oy0 - p .. oy0 + r - 1 + p` (those inside the plane): each vector `j` of input row `iy` at
/// kernel column `kw` is loaded once (zero-masked like [`assemble_direct`]'s where lanes fall in
/// the padding columns) into a temporary and multiplied into every output row `oy` of the step with
/// `kh = iy + p - oy` in `0..k`, with weight `(kh, kw)` from a register when all `k * k` fit, else
/// as a `{1to16}` broadcast operand. A row of the step so takes its taps in the order `(kh, kw)`,
/// as row by row. Steps whose input rows all lie in the plane run in a counted loop (r11), the
/// others (the first and last `p` rows' steps, a shorter last step) unrolled with the taps of the
/// rows outside the plane left out. Then the epilogue and the stores of the step's rows.
///
/// Why: row by row, each of the `k * k` taps of a vector is a load of an unaligned input vector
/// (most span two cache lines); here one input vector serves up to `min(R, k)` FMAs (one thread,
/// batch 1: 240 channels 5x5 SiLU at 28x28 0.138 -> 0.098 ms, 192 channels 3x3 ReLU6 0.036 ->
/// 0.022 ms).
///
/// Sound as [`assemble_direct`]: the same terms in the same order per output lane, the same loads
/// (input rows `0 <= iy < h`, columns `0 <= c < w` in every lane not masked off), the same stores.
fn direct_multi(spec: &DepthwiseDirectSpec) -> Result<Vec<u8>, CodegenError> {
    let (k, h, w, e) = (spec.k, spec.h, spec.w, &spec.epilogue);
    let (regs, lanes, taps, p) = (spec.isa.registers(), spec.isa.lanes(), k * k, k / 2);
    let per_row = w.div_ceil(lanes);
    let rows = spec.rows;
    if rows * per_row + EpilogueRegs::count(e) + 2 > regs {
        return Err(CodegenError::Unsupported("direct depthwise rows of too many vectors at once".into()));
    }
    let mut g = Gen::new(spec.isa)?;
    // Registers: accumulators, the epilogue's, two input temporaries, the weights if they fit.
    let accs = rows * per_row;
    let fixed = EpilogueRegs::count(e);
    let temps = [accs + fixed, accs + fixed + 1];
    let w0 = accs + fixed + 2;
    let in_regs = w0 + taps <= regs;
    let eregs = EpilogueRegs::load(&mut g, e, accs, rcx)?;
    if in_regs {
        for tap in 0..taps {
            g.broadcast(w0 + tap, at(rsi, tap as isize)?)?;
        }
    }
    let masks = DirectMasks::load(&mut g, lanes, w, k)?;
    let full = (1u32 << lanes) - 1;
    // One step of `r` output rows from `oy0` (`None`: a looped step, every input row inside), `rdi`
    // at input row `oy0 - p`, `rdx` (and `r8`) at output row `oy0`.
    let step = |g: &mut Gen, r: usize, oy0: Option<usize>| -> Result<(), CodegenError> {
        g.k1 = None;
        let mut started = [false; 32];
        let mut next_temp = 0;
        for ir in 0..r + k - 1 {
            if let Some(oy0) = oy0 {
                let iy = (oy0 + ir) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
            }
            // Output rows `o` of the step fed by this input row, with their kernel row.
            let outs: Vec<(usize, usize)> =
                (0..r).filter(|&o| ir >= o && ir - o < k).map(|o| (o, ir - o)).collect();
            for kw in 0..k {
                for j in 0..per_row {
                    let m = direct_mask(lanes, w, p, j, kw);
                    if m == 0 {
                        continue;
                    }
                    let off = (ir * w + j * lanes + kw) as isize - p as isize;
                    let mem = at(rdi, off)?;
                    let t = temps[next_temp % 2];
                    next_temp += 1;
                    if m == full {
                        g.load(t, mem)?;
                    } else {
                        masks.load_masked(g, t, mem, m)?;
                    }
                    for &(o, kh) in &outs {
                        let u = o * per_row + j;
                        let tap = kh * k + kw;
                        let wm = at(rsi, tap as isize)?;
                        match (started[u], in_regs) {
                            (false, true) => g.a.vmulps(ZMM[u], ZMM[w0 + tap], ZMM[t]).map_err(asm_err)?,
                            (false, false) => g.a.vmulps(ZMM[u], ZMM[t], dword_bcst(wm)).map_err(asm_err)?,
                            (true, true) => g.fma231(u, w0 + tap, Src::Reg(t))?,
                            (true, false) => g.fma231(u, t, Src::Bcst(wm))?,
                        }
                        started[u] = true;
                    }
                }
            }
        }
        debug_assert!(started[..r * per_row].iter().all(|&s| s), "the centre tap reaches every vector");
        eregs.store_rows(g, e, r, per_row, w)?;
        g.advance(rdi, r * w)?;
        g.advance(rdx, r * w)?;
        if e.residual {
            g.advance(r8, r * w)?;
        }
        Ok(())
    };
    g.a.sub(rdi, i32::try_from(p * w * 4).map_err(|_| CodegenError::Unsupported("a wide plane".into()))?)
        .map_err(asm_err)?;
    // Full steps reading no row outside the plane form the loop.
    schedule_steps(&mut g, h, rows, |oy0| oy0 >= p && oy0 + rows + p <= h, step)?;
    g.finish()
}

/// The lanes of raw vector `q` of output vector `j` in [`direct_stride2`] whose input column
/// `c = 2 * j * L - p + q * L + l` lies in the row, `0 <= c < w`.
fn raw_mask(lanes: usize, w: usize, p: usize, j: usize, q: usize) -> u32 {
    (0..lanes)
        .filter(|&l| {
            let c = (2 * j * lanes + q * lanes + l) as isize - p as isize;
            c >= 0 && c < w as isize
        })
        .fold(0, |m, l| m | 1 << l)
}

/// The most accumulators [`direct_stride2`] has registers for, beside the epilogue's (with an
/// activation or without) and its ten index, raw, phase and shift registers.
pub fn stride2_accumulators(activation: bool) -> usize {
    Isa::Avx512.registers() - EpilogueRegs::count_with(activation) - 10
}

/// [`assemble_direct`] at stride 2: output rows `oy0..oy0 + r` (`r <= spec.rows`) per step, walking
/// the input rows they read, `2 * oy0 - p .. 2 * (oy0 + r - 1) + k - p` (those inside the plane).
/// Per input row and output vector `j`, the three raw vectors at input columns `2 * j * L - p + q *
/// L` (`q < 3`; lanes outside the row zero-masked, a vector wholly outside zeroed) are split by
/// `vpermi2ps` into the even and odd columns of the first two (`E0`, `O0`: 16 each) and of the
/// third (`E1`, `O1`: the next 8 each, of which the shifts take at most `k / 2`); kernel column
/// `kw` then reads lane `l` at input column `2 * (j * L + l) + kw - p`: `E0` (kw 0), `O0` (1),
/// `valignd(E1, E0, 1)` (2), `valignd(O1, O0, 1)` (3), `valignd(E1, E0, 2)` (4), and so on. That
/// vector is multiplied into every output row `oy` of the step with `kh = iy + p - 2 * oy` in
/// `0..k` with the `{1to16}` broadcast weight `(kh, kw)`. No fill, no phase planes.
///
/// Why: the fill copied each band into four phase planes that the stencil then read back, one load
/// per tap. Here three loads and seven shuffles per input row and vector serve all its taps and
/// rows (one thread, batch 1: 144 channels 5x5 SiLU 56 -> 28 0.108 -> 0.073 ms, 3x3 ReLU6 0.045
/// -> 0.031 ms; 96 channels 3x3 SiLU 112 -> 56 0.149 -> 0.122 ms).
///
/// Sound: lane `l` of output row `oy`, vector `j` gets `x[2 * oy + kh - p][2 * (j * L + l) + kw -
/// p] * w[kh][kw]` for every tap whose input row is inside the plane, and zero for the columns
/// outside it (zero-masked lanes), in the order `(kh, kw)`; the loads read only columns `0 <= c <
/// w` of rows `0 <= iy < h`; the stores are `y[0 .. oh * ow]`, the last vector of a row masked.
fn direct_stride2(spec: &DepthwiseDirectSpec) -> Result<Vec<u8>, CodegenError> {
    let (k, h, w, e) = (spec.k, spec.h, spec.w, &spec.epilogue);
    let (lanes, p) = (spec.isa.lanes(), k / 2);
    let (oh, ow) = ((h + 2 * p - k) / 2 + 1, (w + 2 * p - k) / 2 + 1);
    let per_row = ow.div_ceil(lanes);
    let fixed = EpilogueRegs::count(e);
    // Registers: accumulators, the epilogue's, two index vectors, three raw vectors, four phases,
    // one shift temporary.
    let rows = spec.rows;
    if rows * per_row > stride2_accumulators(e.activation.is_some()) {
        return Err(CodegenError::Unsupported("direct depthwise rows at stride 2 too wide".into()));
    }
    let accs = rows * per_row;
    let base = accs + fixed;
    let (ie, io) = (base, base + 1);
    let raw = [base + 2, base + 3, base + 4];
    let ph = [base + 5, base + 6, base + 7, base + 8];
    let tmp = base + 9;
    let mut g = Gen::new(spec.isa)?;
    let eregs = EpilogueRegs::load(&mut g, e, accs, rcx)?;
    let even = g.data_label((0..16u32).map(|l| 2 * l).collect());
    let odd = g.data_label((0..16u32).map(|l| 2 * l + 1).collect());
    g.a.vmovups(ZMM[ie], zmmword_ptr(even)).map_err(asm_err)?;
    g.a.vmovups(ZMM[io], zmmword_ptr(odd)).map_err(asm_err)?;
    let full = (1u32 << lanes) - 1;
    let mut wanted: Vec<u32> = Vec::new();
    for j in 0..per_row {
        for q in 0..3 {
            let m = raw_mask(lanes, w, p, j, q);
            if m != 0 && m != full && !wanted.contains(&m) {
                wanted.push(m);
            }
        }
    }
    let masks = DirectMasks::load_list(&mut g, wanted)?;
    let step = |g: &mut Gen, r: usize, oy0: Option<usize>| -> Result<(), CodegenError> {
        g.k1 = None;
        let mut started = [false; 32];
        for ir in 0..2 * (r - 1) + k {
            if let Some(oy0) = oy0 {
                let iy = (2 * oy0 + ir) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
            }
            let outs: Vec<(usize, usize)> =
                (0..r).filter(|&o| ir >= 2 * o && ir - 2 * o < k).map(|o| (o, ir - 2 * o)).collect();
            for j in 0..per_row {
                for (q, &reg) in raw.iter().enumerate() {
                    let m = raw_mask(lanes, w, p, j, q);
                    let off = (ir * w + 2 * j * lanes + q * lanes) as isize - p as isize;
                    if m == 0 {
                        g.zero(reg)?;
                    } else if m == full {
                        g.load(reg, at(rdi, off)?)?;
                    } else {
                        masks.load_masked(g, reg, at(rdi, off)?, m)?;
                    }
                }
                for (i, (idx, a, b)) in
                    [(ie, 0, 1), (io, 0, 1), (ie, 2, 2), (io, 2, 2)].into_iter().enumerate()
                {
                    g.a.vmovaps(ZMM[ph[i]], ZMM[idx]).map_err(asm_err)?;
                    g.a.vpermi2ps(ZMM[ph[i]], ZMM[raw[a]], ZMM[raw[b]]).map_err(asm_err)?;
                }
                for kw in 0..k {
                    let (b, sh) = (kw % 2, kw / 2);
                    let x = if sh == 0 {
                        ph[b]
                    } else {
                        g.a.valignd(ZMM[tmp], ZMM[ph[2 + b]], ZMM[ph[b]], sh as i32).map_err(asm_err)?;
                        tmp
                    };
                    for &(o, kh) in &outs {
                        let u = o * per_row + j;
                        let wm = at(rsi, (kh * k + kw) as isize)?;
                        if started[u] {
                            g.fma231(u, x, Src::Bcst(wm))?;
                        } else {
                            g.a.vmulps(ZMM[u], ZMM[x], dword_bcst(wm)).map_err(asm_err)?;
                            started[u] = true;
                        }
                    }
                }
            }
        }
        debug_assert!(started[..r * per_row].iter().all(|&s| s), "the centre tap reaches every vector");
        eregs.store_rows(g, e, r, per_row, ow)?;
        g.advance(rdi, 2 * r * w)?;
        g.advance(rdx, r * ow)?;
        if e.residual {
            g.advance(r8, r * ow)?;
        }
        Ok(())
    };
    g.a.sub(rdi, i32::try_from(p * w * 4).map_err(|_| CodegenError::Unsupported("a wide plane".into()))?)
        .map_err(asm_err)?;
    schedule_steps(&mut g, oh, rows, |oy0| 2 * oy0 >= p && 2 * (oy0 + rows - 1) + k <= h + p, step)?;
    g.finish()
}

/// Emits the direct row routines' steps over `oh` output rows, `rows` at a time from `oy0 = i *
/// rows`: the full steps for which `inside(oy0)` holds (they read no padding row) as one counted
/// loop (r11) of `step(g, rows, None)`, the steps before and after it unrolled as `step(g, r,
/// Some(oy0))` with `r` the rows left (a shorter last step). The interior steps are consecutive
/// (`inside` holds on one run of `oy0`), so each output row is emitted exactly once, in order.
fn schedule_steps(
    g: &mut Gen,
    oh: usize,
    rows: usize,
    inside: impl Fn(usize) -> bool,
    step: impl Fn(&mut Gen, usize, Option<usize>) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    let starts: Vec<usize> = (0..oh).step_by(rows).collect();
    let looped: Vec<usize> = starts.iter().copied().filter(|&oy0| oy0 + rows <= oh && inside(oy0)).collect();
    for &oy0 in starts.iter().filter(|&&oy0| looped.first().is_none_or(|&f| oy0 < f)) {
        step(g, rows.min(oh - oy0), Some(oy0))?;
    }
    if !looped.is_empty() {
        let mut again = g.a.create_label();
        g.a.mov(r11d, looped.len() as u32).map_err(asm_err)?;
        g.a.set_label(&mut again).map_err(asm_err)?;
        step(g, rows, None)?;
        g.a.dec(r11d).map_err(asm_err)?;
        g.a.jnz(again).map_err(asm_err)?;
    }
    for &oy0 in starts.iter().filter(|&&oy0| looped.last().is_some_and(|&l| oy0 > l)) {
        step(g, rows.min(oh - oy0), Some(oy0))?;
    }
    Ok(())
}

/// `z{kr}{z}`: `z` zero-masked by the direct routine's mask register `kr`.
fn masked_zero(z: AsmRegisterZmm, kr: AsmRegisterK) -> AsmRegisterZmm {
    if kr == k3 {
        z.k3().z()
    } else if kr == k4 {
        z.k4().z()
    } else if kr == k5 {
        z.k5().z()
    } else if kr == k6 {
        z.k6().z()
    } else {
        z.k7().z()
    }
}
