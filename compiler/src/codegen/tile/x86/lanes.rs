//! The depthwise convolution with the channels in the vector lanes ([`DepthwiseLanesSpec`], AVX2):
//! `(x = rdi, w = rsi, y = rdx, epi = rcx, scratch = r8)`, up to eight channels per call.
//!
//! Why: on a small plane (14x14, 7x7) the planar layouts fill their vectors with pixels badly (a
//! 7-wide row is 7 of 8 lanes, a flat run pays unaligned loads and masked stores per row), while
//! eight channels fill a vector whole, every tap is one aligned load, and the per-channel weights
//! and epilogue values are plain vectors. The price is two transposes, in and out, of 8x8 blocks
//! (24 shuffles per 64 floats), against `k * k` FMAs per output vector.
//!
//! Four phases, all in this routine:
//! 1. **Weights**: the channels' `k * k` taps (`[channel][tap]` at `w`) transposed in 8x8 blocks
//!    into the scratch as `[tap][L]`, one vector per tap.
//! 2. **Fill**: the band's padding rows stored as zeros; then per input row of the band, blocks of
//!    eight columns of every channel (`[channel][pixel]`, the row's tail block loaded masked)
//!    transposed into pixel vectors and stored at the pixel's padded position of `[hp][wp][L]`.
//!    The border columns are never written: the caller zeroes them once per kernel call (every
//!    band of a layer has the same layout, so no band's weights or output lie over them).
//! 3. **Stencil**: per output row, steps of `n` consecutive output pixels (as many accumulators as
//!    the registers left by the epilogue hold). Per kernel row `kh`, each input vector the step
//!    reads (padded column `s * ox0 + c`) is loaded once and multiplied into every pixel `u` of the
//!    step with `kw = c - s * u` in `0..k`, the weight vector a memory operand: each accumulator
//!    takes its taps in the order `(kh, kw)`. Then the epilogue on whole vectors (per-channel values
//!    loaded as vectors once) and the store to the pixel-major output `[oh * ow][L]`.
//! 4. **Unpack**: the band's output in blocks of eight pixels transposed back into channel runs and stored
//!    at `y + j * oh * ow + p0` (the last block's stores masked to its pixels).
//!
//! Sound: each stored output is the sum of the padded band's `k * k` window times the channel's
//! weights in the order `(kh, kw)` (the first a multiply), then the epilogue, as the reference
//! defines it; the padded band holds exactly its rows of `xpad` (input rows copied by phase 2,
//! padding rows zeroed by it, border columns zero). Reads: `x[j * h * w ..][.. in_rows * w]` per
//! channel `j` (a row's tail block masked to the row), `w[0 .. chans * k * k]` (the last block of
//! taps masked), `epi + at .. + chans` per value (masked below eight channels). Writes: the scratch
//! below [`DepthwiseLanesSpec::layout`]'s `floats`, `y[j * oh * ow ..][.. rows * ow]`. Channels
//! `j >= chans` are zero vectors in, and never stored. Registers and ABI as the other routines
//! (caller-saved only, no stack, `vzeroupper`).

use super::{asm_err, at, Gen, Src, YMM};
use crate::codegen::isa::Isa;
use crate::codegen::tile::{DepthwiseLanesSpec, LanesLayout, Piece};
use crate::codegen::CodegenError;
use iced_x86::code_asm::*;

/// Channels per call: the AVX2 lanes.
const L: usize = 8;

/// Assembles a [`DepthwiseLanesSpec`].
pub fn assemble(spec: &DepthwiseLanesSpec) -> Result<Vec<u8>, CodegenError> {
    let e = &spec.epilogue;
    if spec.isa != Isa::Avx2
        || spec.k % 2 == 0
        || !(1..=2).contains(&spec.stride)
        || spec.h == 0
        || spec.w == 0
        || !(1..=L).contains(&spec.channels)
        || spec.rows == 0
        || spec.in_rows == 0
        || spec.top + spec.in_rows > spec.stride * (spec.rows - 1) + spec.k
        || e.residual
        || e.s2.is_some()
        || e.b2.is_some()
    {
        return Err(CodegenError::Unsupported(format!(
            "a depthwise convolution in channel lanes off AVX2, with an even window, stride {}, \
             {} channels or a residual",
            spec.stride, spec.channels
        )));
    }
    let mut g = Gen::new(spec.isa)?;
    let l = spec.layout();
    weights(&mut g, spec, &l)?;
    fill(&mut g, spec, &l)?;
    stencil(&mut g, spec, &l)?;
    unpack(&mut g, spec, &l)?;
    g.finish()
}

/// Transposes the 8x8 block of rows `ymm0..7` (row `r`, lane `c`) into columns `ymm8..15`
/// (`ymm8 + c`, lane `r`): unpack pairs of rows, shuffle pairs of pairs (each 128-bit half then
/// holds four rows of one column), swap the halves across registers. Clobbers `ymm0..7`.
fn transpose8(g: &mut Gen) -> Result<(), CodegenError> {
    let a = &mut g.a;
    for q in [0, 4] {
        let t = 8 + q;
        a.vunpcklps(YMM[t], YMM[q], YMM[q + 1]).map_err(asm_err)?;
        a.vunpckhps(YMM[t + 1], YMM[q], YMM[q + 1]).map_err(asm_err)?;
        a.vunpcklps(YMM[t + 2], YMM[q + 2], YMM[q + 3]).map_err(asm_err)?;
        a.vunpckhps(YMM[t + 3], YMM[q + 2], YMM[q + 3]).map_err(asm_err)?;
        // Columns c and c + 4 of rows q..q + 4, for c = 0, 1, 2, 3.
        a.vshufps(YMM[q], YMM[t], YMM[t + 2], 0x44).map_err(asm_err)?;
        a.vshufps(YMM[q + 1], YMM[t], YMM[t + 2], 0xEE).map_err(asm_err)?;
        a.vshufps(YMM[q + 2], YMM[t + 1], YMM[t + 3], 0x44).map_err(asm_err)?;
        a.vshufps(YMM[q + 3], YMM[t + 1], YMM[t + 3], 0xEE).map_err(asm_err)?;
    }
    for c in 0..4 {
        a.vperm2f128(YMM[8 + c], YMM[c], YMM[4 + c], 0x20).map_err(asm_err)?;
        a.vperm2f128(YMM[12 + c], YMM[c], YMM[4 + c], 0x31).map_err(asm_err)?;
    }
    Ok(())
}

/// Loads rows `0..chans` of an 8x8 block into `ymm0..7` from `base + j * stride + off` floats, the
/// first `valid` floats of each (all eight: plain loads; fewer: masked, the mask in `ymm15`), and
/// zeroes the rows `j >= chans`.
fn load_rows(
    g: &mut Gen,
    base: AsmRegister64,
    off: usize,
    stride: usize,
    chans: usize,
    valid: usize,
) -> Result<(), CodegenError> {
    if valid < L {
        let m = g.mask_label(0, valid);
        g.a.vmovups(YMM[15], ymmword_ptr(m)).map_err(asm_err)?;
    }
    for (j, &row) in YMM.iter().enumerate().take(L) {
        let mem = at(base, (j * stride + off) as isize)?;
        if j >= chans {
            g.zero(j)?;
        } else if valid == L {
            g.load(j, mem)?;
        } else {
            g.a.vmaskmovps(row, YMM[15], ymmword_ptr(mem)).map_err(asm_err)?;
        }
    }
    Ok(())
}

/// Phase 1: the weights `[chans][k * k]` at `rsi` into `[k * k][L]` at the scratch's `weights_at`.
fn weights(g: &mut Gen, spec: &DepthwiseLanesSpec, l: &LanesLayout) -> Result<(), CodegenError> {
    let taps = spec.k * spec.k;
    for t0 in (0..taps).step_by(L) {
        let valid = (taps - t0).min(L);
        load_rows(g, rsi, t0, taps, spec.channels, valid)?;
        transpose8(g)?;
        for i in 0..valid {
            g.store(at(r8, (l.weights_at + (t0 + i) * L) as isize)?, 8 + i)?;
        }
    }
    Ok(())
}

/// Phase 2: the band's padded rows outside the input zeroed (all their columns), then the input
/// rows (r10 counts them; `rdi` walks the first channel's rows, `r9` the padded rows' first
/// interior position) in blocks of eight columns, each transposed into pixel vectors.
fn fill(g: &mut Gen, spec: &DepthwiseLanesSpec, l: &LanesLayout) -> Result<(), CodegenError> {
    let (h, w, p) = (spec.h, spec.w, spec.k / 2);
    let zero_rows: Vec<usize> = (0..l.hp).filter(|&y| y < spec.top || y >= spec.top + spec.in_rows).collect();
    if !zero_rows.is_empty() {
        g.zero(0)?;
        for y in zero_rows {
            for x in 0..l.wp {
                g.store(at(r8, ((y * l.wp + x) * L) as isize)?, 0)?;
            }
        }
    }
    g.a.lea(r9, at(r8, ((spec.top * l.wp + p) * L) as isize)?).map_err(asm_err)?;
    let mut top = g.a.create_label();
    g.a.mov(r10d, spec.in_rows as u32).map_err(asm_err)?;
    g.a.set_label(&mut top).map_err(asm_err)?;
    for x0 in (0..w).step_by(L) {
        let valid = (w - x0).min(L);
        load_rows(g, rdi, x0, h * w, spec.channels, valid)?;
        transpose8(g)?;
        for i in 0..valid {
            g.store(at(r9, ((x0 + i) * L) as isize)?, 8 + i)?;
        }
    }
    g.advance(rdi, w)?;
    g.advance(r9, l.wp * L)?;
    g.a.dec(r10d).map_err(asm_err)?;
    g.a.jnz(top).map_err(asm_err)
}

/// The epilogue's registers, from the top of the register file down: `s1` and `b1` (vectors of the
/// channels' values, present ones only), zero for the ReLU, the activation's four temporaries.
struct LaneEpilogue {
    s1: Option<usize>,
    b1: Option<usize>,
    zero: Option<usize>,
    act: Option<[usize; 4]>,
    /// The lowest register it takes.
    first: usize,
}

impl LaneEpilogue {
    /// Allocates the registers and loads `s1`, `b1` from `rcx` (masked to `chans` channels below
    /// eight, the mask in register `free`) and zeroes the ReLU's.
    fn load(g: &mut Gen, spec: &DepthwiseLanesSpec, free: usize) -> Result<Self, CodegenError> {
        let e = &spec.epilogue;
        let mut next = 16;
        let mut take = |n: usize| {
            next -= n;
            next
        };
        let s1 = e.s1.map(|_| take(1));
        let b1 = e.b1.map(|_| take(1));
        let zero = e.relu.then(|| take(1));
        let act = e.activation.map(|_| {
            let t = take(4);
            [t, t + 1, t + 2, t + 3]
        });
        let chans = spec.channels;
        if chans < L {
            let m = g.mask_label(0, chans);
            g.a.vmovups(YMM[free], ymmword_ptr(m)).map_err(asm_err)?;
        }
        for (reg, value) in [(s1, e.s1), (b1, e.b1)] {
            if let (Some(r), Some(a)) = (reg, value) {
                let mem = at(rcx, a as isize)?;
                if chans == L {
                    g.load(r, mem)?;
                } else {
                    g.a.vmaskmovps(YMM[r], YMM[free], ymmword_ptr(mem)).map_err(asm_err)?;
                }
            }
        }
        if let Some(z) = zero {
            g.zero(z)?;
        }
        Ok(LaneEpilogue { s1, b1, zero, act, first: next })
    }

    /// `v` through the epilogue: `v * s1 + b1`, ReLU (`max(0, v)` with `v` second, keeping a
    /// NaN), the activation.
    fn apply(&self, g: &mut Gen, spec: &DepthwiseLanesSpec, v: usize) -> Result<(), CodegenError> {
        match (self.s1, self.b1) {
            (Some(s), Some(b)) => g.fma213(v, s, Src::Reg(b))?,
            (Some(s), None) => g.mul(v, Src::Reg(s))?,
            (None, Some(b)) => g.add(v, Src::Reg(b))?,
            (None, None) => {}
        }
        if let Some(z) = self.zero {
            g.a.vmaxps(YMM[v], YMM[z], YMM[v]).map_err(asm_err)?;
        }
        if let (Some(t), Some(a)) = (self.act, spec.epilogue.activation) {
            g.activation(v, a.0, t)?;
        }
        Ok(())
    }
}

/// The pixel steps of an output row of `ow` pixels with at most `most` accumulators: as few steps
/// as that allows, of sizes differing by at most one, as `(first pixel, pixels)`.
fn row_steps(ow: usize, most: usize) -> Vec<(usize, usize)> {
    let steps = ow.div_ceil(most);
    let (base, extra) = (ow / steps, ow % steps);
    let mut at = 0;
    (0..steps)
        .map(|i| {
            let n = base + usize::from(i < extra);
            at += n;
            (at - n, n)
        })
        .collect()
}

/// Phase 3: per output row (r11 counts them; `rax` at the padded input row `s * oy`, `r10` at the
/// output row), the row's pixel steps and their epilogue.
fn stencil(g: &mut Gen, spec: &DepthwiseLanesSpec, l: &LanesLayout) -> Result<(), CodegenError> {
    let (k, s, wp) = (spec.k, spec.stride, l.wp);
    let epi = LaneEpilogue::load(g, spec, 0)?;
    // Accumulators 0..n, then two input temporaries, below the epilogue's registers.
    let most = epi.first.checked_sub(2).filter(|&n| n > 0).ok_or_else(|| {
        CodegenError::Unsupported("no registers left for a depthwise step in channel lanes".into())
    })?;
    let steps = row_steps(l.ow, most);
    let temps = [most, most + 1];
    g.a.mov(rax, r8).map_err(asm_err)?;
    g.a.lea(r10, at(r8, l.out_at as isize)?).map_err(asm_err)?;
    let mut top = g.a.create_label();
    g.a.mov(r11d, spec.rows as u32).map_err(asm_err)?;
    g.a.set_label(&mut top).map_err(asm_err)?;
    for &(ox0, n) in &steps {
        let mut started = [false; 16];
        let mut next_temp = 0;
        for kh in 0..k {
            for c in 0..s * (n - 1) + k {
                let users: Vec<(usize, usize)> =
                    (0..n).filter(|&u| c >= s * u && c - s * u < k).map(|u| (u, c - s * u)).collect();
                if users.is_empty() {
                    continue;
                }
                let t = temps[next_temp % 2];
                next_temp += 1;
                g.load(t, at(rax, ((kh * wp + s * ox0 + c) * L) as isize)?)?;
                for (u, kw) in users {
                    let wm = ymmword_ptr(at(r8, (l.weights_at + (kh * k + kw) * L) as isize)?);
                    if started[u] {
                        g.a.vfmadd231ps(YMM[u], YMM[t], wm).map_err(asm_err)?;
                    } else {
                        g.a.vmulps(YMM[u], YMM[t], wm).map_err(asm_err)?;
                        started[u] = true;
                    }
                }
            }
        }
        for u in 0..n {
            epi.apply(g, spec, u)?;
            g.store(at(r10, ((ox0 + u) * L) as isize)?, u)?;
        }
    }
    g.advance(rax, s * wp * L)?;
    g.advance(r10, l.ow * L)?;
    g.a.dec(r11d).map_err(asm_err)?;
    g.a.jnz(top).map_err(asm_err)
}

/// Phase 4: the pixel-major output in blocks of eight pixels (whole blocks in a loop counted by
/// r11, `rax` walking the output scratch and `r9` the first channel's output) transposed into
/// channel runs; the last block's stores masked to its pixels (the mask in `ymm0`, free after the
/// transpose).
fn unpack(g: &mut Gen, spec: &DepthwiseLanesSpec, l: &LanesLayout) -> Result<(), CodegenError> {
    let (pixels, plane, chans) = (spec.rows * l.ow, l.oh * l.ow, spec.channels);
    g.a.lea(rax, at(r8, l.out_at as isize)?).map_err(asm_err)?;
    g.a.mov(r9, rdx).map_err(asm_err)?;
    let block = |g: &mut Gen, valid: usize| -> Result<(), CodegenError> {
        for i in 0..valid {
            g.load(i, at(rax, (i * L) as isize)?)?;
        }
        transpose8(g)?;
        if valid < L {
            let m = g.mask_label(0, valid);
            g.a.vmovups(YMM[0], ymmword_ptr(m)).map_err(asm_err)?;
        }
        for j in 0..chans {
            let mem = at(r9, (j * plane) as isize)?;
            if valid == L {
                g.store(mem, 8 + j)?;
            } else {
                g.store_lanes(mem, 8 + j, Piece { lo: 0, hi: valid, at: 0 }, 0)?;
            }
        }
        Ok(())
    };
    let whole = pixels / L;
    if whole > 0 {
        let mut top = g.a.create_label();
        g.a.mov(r11d, whole as u32).map_err(asm_err)?;
        g.a.set_label(&mut top).map_err(asm_err)?;
        block(g, L)?;
        g.advance(rax, L * L)?;
        g.advance(r9, L)?;
        g.a.dec(r11d).map_err(asm_err)?;
        g.a.jnz(top).map_err(asm_err)?;
    }
    if pixels % L > 0 {
        block(g, pixels % L)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::row_steps;

    #[test]
    fn row_steps_cover_the_row_in_the_fewest_even_steps() {
        assert_eq!(row_steps(7, 9), vec![(0, 7)]);
        assert_eq!(row_steps(14, 9), vec![(0, 7), (7, 7)]);
        assert_eq!(row_steps(15, 7), vec![(0, 5), (5, 5), (10, 5)]);
        assert_eq!(row_steps(13, 6), vec![(0, 5), (5, 4), (9, 4)]);
        assert_eq!(row_steps(1, 4), vec![(0, 1)]);
    }
}
