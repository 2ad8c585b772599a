//! The Winograd transforms as AVX2 / AVX-512 routines (see [`crate::codegen::conv::winograd`] for
//! the data layout and [`crate::ir::winograd`] for the math). Lanes are tiles: every vector holds
//! one element of the transformed tile for `lanes` consecutive tiles.
//!
//! Both transforms are two passes of a 1-D [`Program`]: over the columns of the tile (results to a
//! temporary area), then over the rows of the result. The program's values live in registers, each
//! step taking a register freed by an operand's last use (or a fresh one); its constants are
//! RIP-relative data, broadcast by the FMA itself on AVX-512 and into a register on AVX2.
//!
//! - Input transform `(src = rdi, dst = rsi, tmp = rdx)`: for each of `channels` channels, the
//!   `a x a` tile elements at constant offsets from `src` go through `B^T . B` and the `a^2` points
//!   are stored at `dst + x * point_stride`, the lanes of tiles compacted to the front (a lane
//!   permutation and a masked store: padding columns are dropped); then `src` and `dst` advance by
//!   one channel.
//! - Output transform `(src = rdi, out = rsi, epi = rdx, res = rcx, tmp = r8)`: the `a^2` points at
//!   `src + x * point_stride` go through `A^T . A`; each output row's `m` vectors are interleaved
//!   (unpacks and 128-bit lane shuffles) so a tile's pixels sit side by side, get the fused
//!   epilogue (per-channel scalars at `epi`, the residual read at the same pieces from `res`,
//!   ReLU), and are stored as pieces: contiguous runs of pixels, partial ones with k-masks
//!   (AVX-512) or `vmaskmovps` (AVX2).
//!
//! Soundness: every store writes a pixel of a tile the routine owns (the index vector and masks
//! come from the driver's plan, which checks them against the output shape); the registers and ABI
//! are those of the GEMM tiles (caller-saved only, no stack, `vzeroupper` before `ret`).

use super::{asm_err, at, Gen, Src, YMM, ZMM};
use crate::codegen::isa::Isa;
use crate::codegen::tile::{Axis, InputTransformSpec, OutputTransformSpec, Piece};
use crate::codegen::CodegenError;
use crate::ir::winograd::{Program, Step};
use iced_x86::code_asm::*;

/// Assembles an input transform.
pub fn assemble_input(spec: &InputTransformSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let (a, lanes) = (spec.tile.alpha(), spec.isa.lanes());
    let program = spec.tile.input_program();
    let regs = spec.isa.registers();
    // Compaction: the kept lanes permuted to the front (index vector in the top register), the
    // first `count` lanes stored (mask: k1, or the register below the index on AVX2); the program
    // gets the registers below those and one temporary.
    let count = spec.lanes.len();
    let compact = count < lanes || spec.lanes.iter().enumerate().any(|(k, &l)| l as usize != k);
    let (idx, mask, perm) = (regs - 1, regs - 2, regs - 3);
    let limit = if compact { regs - 3 } else { regs };
    if compact {
        let mut index: Vec<u32> = spec.lanes.iter().map(|&l| l as u32).collect();
        index.resize(lanes, 0);
        let l = g.data_label(index);
        match g.isa {
            Isa::Avx512 => {
                g.a.vmovups(ZMM[idx], zmmword_ptr(l)).map_err(asm_err)?;
                g.a.mov(eax, ((1u64 << count) - 1) as u32).map_err(asm_err)?;
                g.a.kmovw(k1, eax).map_err(asm_err)?;
            }
            _ => {
                g.a.vmovups(YMM[idx], ymmword_ptr(l)).map_err(asm_err)?;
                let m = g.mask_label(0, count);
                g.a.vmovups(YMM[mask], ymmword_ptr(m)).map_err(asm_err)?;
            }
        }
    }
    let store = |g: &mut Gen, m: AsmMemoryOperand, reg: usize| -> Result<(), CodegenError> {
        if !compact {
            return g.store(m, reg);
        }
        match g.isa {
            Isa::Avx512 => {
                g.a.vpermps(ZMM[perm], ZMM[idx], ZMM[reg]).map_err(asm_err)?;
                g.a.vmovups(zmmword_ptr(m).k1(), ZMM[perm]).map_err(asm_err)
            }
            _ => {
                g.a.vpermps(YMM[perm], YMM[idx], YMM[reg]).map_err(asm_err)?;
                g.a.vmaskmovps(ymmword_ptr(m), YMM[mask], YMM[perm]).map_err(asm_err)
            }
        }
    };
    let mut top = g.a.create_label();
    if spec.channels > 1 {
        g.a.mov(r10d, spec.channels as u32).map_err(asm_err)?;
        g.a.set_label(&mut top).map_err(asm_err)?;
    }
    // Columns: T[i][j] = (B^T d[., j])[i], to tmp[(i * a + j) * lanes].
    for j in 0..a {
        let inputs: Vec<_> =
            (0..a).map(|i| at(rdi, (spec.offsets[i * a + j]) as isize)).collect::<Result<_, _>>()?;
        let outputs: Vec<_> =
            (0..a).map(|i| at(rdx, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        run_program_limited(&mut g, program, &inputs, limit, &mut |g, i, reg| g.store(outputs[i], reg))?;
    }
    // Rows: V[i][j] = (B^T T[i, .]^T)[j], to dst + (i * a + j) * point_stride (compacted).
    for i in 0..a {
        let inputs: Vec<_> =
            (0..a).map(|j| at(rdx, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        let outputs: Vec<_> =
            (0..a).map(|j| at(rsi, ((i * a + j) * spec.point_stride) as isize)).collect::<Result<_, _>>()?;
        run_program_limited(&mut g, program, &inputs, limit, &mut |g, j, reg| store(g, outputs[j], reg))?;
    }
    if spec.channels > 1 {
        g.advance(rdi, spec.src_stride)?;
        g.advance(rsi, spec.dst_stride)?;
        g.a.dec(r10d).map_err(asm_err)?;
        g.a.jnz(top).map_err(asm_err)?;
    }
    g.finish()
}

/// Assembles an output transform.
pub fn assemble_output(spec: &OutputTransformSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let (m, a, lanes) = (spec.tile.m(), spec.tile.alpha(), spec.isa.lanes());
    let program = spec.tile.output_program();
    let regs = spec.isa.registers();
    // Columns: T[i][j] = (A^T M[., j])[i], i < m, to tmp[(i * a + j) * lanes].
    for j in 0..a {
        let inputs: Vec<_> =
            (0..a).map(|i| at(rdi, ((i * a + j) * spec.point_stride) as isize)).collect::<Result<_, _>>()?;
        let outputs: Vec<_> =
            (0..m).map(|i| at(r8, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        run_program(&mut g, program, &inputs, &mut |g, i, reg| g.store(outputs[i], reg))?;
    }
    // Rows: Y[i][j] = (A^T T[i, .]^T)[j] to the stage after the columns, then interleaved into
    // registers 0..m, the epilogue (temporaries from register m up), and the stores.
    let stage = m * a * lanes;
    for i in 0..m {
        let inputs: Vec<_> =
            (0..a).map(|j| at(r8, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        let outputs: Vec<_> =
            (0..m).map(|j| at(r8, (stage + j * lanes) as isize)).collect::<Result<_, _>>()?;
        run_program(&mut g, program, &inputs, &mut |g, j, reg| g.store(outputs[j], reg))?;
        for (j, &o) in outputs.iter().enumerate() {
            g.load(j, o)?;
        }
        interleave(&mut g, m, regs)?;
        for (k, pieces) in spec.pieces[i].iter().enumerate() {
            epilogue_and_store(&mut g, spec, k, pieces, [m, m + 1, m + 2, m + 3])?;
        }
    }
    g.finish()
}

/// Interleaves registers `0..m` (`Y[i][j]`, a lane per tile) in place into `m` registers whose
/// lanes are the tiles' pixels side by side (see [`OutputTransformSpec`]); temporaries from the
/// top register down.
fn interleave(g: &mut Gen, m: usize, regs: usize) -> Result<(), CodegenError> {
    let t = |k: usize| regs - 1 - k;
    let a = &mut g.a;
    match (g.isa, m) {
        (Isa::Avx512, 4) => {
            let z = |r: usize| ZMM[r];
            a.vunpcklps(z(t(0)), z(0), z(1)).map_err(asm_err)?;
            a.vunpckhps(z(t(1)), z(0), z(1)).map_err(asm_err)?;
            a.vunpcklps(z(t(2)), z(2), z(3)).map_err(asm_err)?;
            a.vunpckhps(z(t(3)), z(2), z(3)).map_err(asm_err)?;
            // u_j: 128-bit lane L holds tile 4L + j.
            a.vunpcklpd(z(t(4)), z(t(0)), z(t(2))).map_err(asm_err)?;
            a.vunpckhpd(z(t(5)), z(t(0)), z(t(2))).map_err(asm_err)?;
            a.vunpcklpd(z(t(6)), z(t(1)), z(t(3))).map_err(asm_err)?;
            a.vunpckhpd(z(t(7)), z(t(1)), z(t(3))).map_err(asm_err)?;
            // A 4x4 transpose of 128-bit lanes.
            a.vshuff32x4(z(t(0)), z(t(4)), z(t(5)), 0x44).map_err(asm_err)?;
            a.vshuff32x4(z(t(1)), z(t(4)), z(t(5)), 0xEE).map_err(asm_err)?;
            a.vshuff32x4(z(t(2)), z(t(6)), z(t(7)), 0x44).map_err(asm_err)?;
            a.vshuff32x4(z(t(3)), z(t(6)), z(t(7)), 0xEE).map_err(asm_err)?;
            a.vshuff32x4(z(0), z(t(0)), z(t(2)), 0x88).map_err(asm_err)?;
            a.vshuff32x4(z(1), z(t(0)), z(t(2)), 0xDD).map_err(asm_err)?;
            a.vshuff32x4(z(2), z(t(1)), z(t(3)), 0x88).map_err(asm_err)?;
            a.vshuff32x4(z(3), z(t(1)), z(t(3)), 0xDD).map_err(asm_err)?;
        }
        (Isa::Avx512, 2) => {
            let z = |r: usize| ZMM[r];
            a.vunpcklps(z(t(0)), z(0), z(1)).map_err(asm_err)?;
            a.vunpckhps(z(t(1)), z(0), z(1)).map_err(asm_err)?;
            a.vshuff32x4(z(t(2)), z(t(0)), z(t(1)), 0x44).map_err(asm_err)?;
            a.vshuff32x4(z(t(3)), z(t(0)), z(t(1)), 0xEE).map_err(asm_err)?;
            a.vshuff32x4(z(0), z(t(2)), z(t(2)), 0xD8).map_err(asm_err)?;
            a.vshuff32x4(z(1), z(t(3)), z(t(3)), 0xD8).map_err(asm_err)?;
        }
        (_, 4) => {
            let y = |r: usize| YMM[r];
            a.vunpcklps(y(t(0)), y(0), y(1)).map_err(asm_err)?;
            a.vunpckhps(y(t(1)), y(0), y(1)).map_err(asm_err)?;
            a.vunpcklps(y(t(2)), y(2), y(3)).map_err(asm_err)?;
            a.vunpckhps(y(t(3)), y(2), y(3)).map_err(asm_err)?;
            a.vunpcklpd(y(t(4)), y(t(0)), y(t(2))).map_err(asm_err)?;
            a.vunpckhpd(y(t(5)), y(t(0)), y(t(2))).map_err(asm_err)?;
            a.vunpcklpd(y(t(6)), y(t(1)), y(t(3))).map_err(asm_err)?;
            a.vunpckhpd(y(t(7)), y(t(1)), y(t(3))).map_err(asm_err)?;
            a.vperm2f128(y(0), y(t(4)), y(t(5)), 0x20).map_err(asm_err)?;
            a.vperm2f128(y(1), y(t(6)), y(t(7)), 0x20).map_err(asm_err)?;
            a.vperm2f128(y(2), y(t(4)), y(t(5)), 0x31).map_err(asm_err)?;
            a.vperm2f128(y(3), y(t(6)), y(t(7)), 0x31).map_err(asm_err)?;
        }
        (_, 2) => {
            let y = |r: usize| YMM[r];
            a.vunpcklps(y(t(0)), y(0), y(1)).map_err(asm_err)?;
            a.vunpckhps(y(t(1)), y(0), y(1)).map_err(asm_err)?;
            a.vperm2f128(y(0), y(t(0)), y(t(1)), 0x20).map_err(asm_err)?;
            a.vperm2f128(y(1), y(t(0)), y(t(1)), 0x31).map_err(asm_err)?;
        }
        _ => return Err(CodegenError::Unsupported(format!("winograd output tile of {m}"))),
    }
    Ok(())
}

/// The fused epilogue on register `v` (one output channel: per-channel values broadcast from
/// `epi`; the residual read at the pieces), then the pieces' stores.
fn epilogue_and_store(
    g: &mut Gen,
    spec: &OutputTransformSpec,
    v: usize,
    pieces: &[Piece],
    [t0, t1, t2, t3]: [usize; 4],
) -> Result<(), CodegenError> {
    let e = &spec.epilogue;
    let scalar = |cv: Option<crate::codegen::tile::ChanVec>| {
        cv.map(|c| {
            debug_assert_eq!(c.axis, Axis::Row);
            at(rdx, c.at as isize)
        })
        .transpose()
    };
    let affine = |g: &mut Gen, s, b| -> Result<(), CodegenError> {
        match (s, b) {
            (Some(s), Some(b)) => {
                g.broadcast(t0, s)?;
                g.broadcast(t1, b)?;
                g.fma213(v, t0, Src::Reg(t1))
            }
            (Some(s), None) => {
                g.broadcast(t0, s)?;
                g.mul(v, Src::Reg(t0))
            }
            (None, Some(b)) => {
                g.broadcast(t1, b)?;
                g.add(v, Src::Reg(t1))
            }
            (None, None) => Ok(()),
        }
    };
    affine(g, scalar(e.s1)?, scalar(e.b1)?)?;
    let lanes = g.lanes();
    if e.residual.is_some() {
        for p in pieces {
            let m = at(rcx, p.at)?;
            if p.lo == 0 && p.hi == lanes {
                g.add(v, Src::Mem(m))?;
            } else {
                g.load_lanes(t2, m, *p, t3)?;
                g.add(v, Src::Reg(t2))?;
            }
        }
    }
    affine(g, scalar(e.s2)?, scalar(e.b2)?)?;
    if e.relu_rows.first().copied().unwrap_or(false) {
        g.relu(v, t0)?;
    }
    if let Some(act) = e.activation {
        g.activation(v, act.0, [t0, t1, t2, t3])?;
    }
    for p in pieces {
        let m = at(rsi, p.at)?;
        if p.lo == 0 && p.hi == lanes {
            g.store(m, v)?;
        } else {
            g.store_lanes(m, v, *p, t3)?;
        }
    }
    Ok(())
}

/// Runs `program` on the vectors at `inputs`, calling `output(k, register)` for each output `k`
/// as soon as the program is done (outputs stay live until then).
fn run_program(
    g: &mut Gen,
    program: &Program,
    inputs: &[AsmMemoryOperand],
    output: &mut dyn FnMut(&mut Gen, usize, usize) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    let regs = g.isa.registers();
    run_program_limited(g, program, inputs, regs, output)
}

/// [`run_program`] with registers `0..limit` only.
fn run_program_limited(
    g: &mut Gen,
    program: &Program,
    inputs: &[AsmMemoryOperand],
    limit: usize,
    output: &mut dyn FnMut(&mut Gen, usize, usize) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    let n = program.values();
    // Last use of every value (outputs live to the end).
    let mut last = vec![0usize; n];
    for (s, step) in program.steps.iter().enumerate() {
        let t = program.inputs + s;
        let (x, y) = match *step {
            Step::Add(x, y) | Step::Sub(x, y) | Step::Fma(x, _, y) => (x, y),
        };
        last[x] = last[x].max(t);
        last[y] = last[y].max(t);
    }
    for &o in program.outputs {
        last[o] = usize::MAX;
    }
    let mut free: Vec<usize> = (0..limit).rev().collect();
    let mut reg = vec![usize::MAX; n];
    let take = |free: &mut Vec<usize>| {
        free.pop().ok_or_else(|| CodegenError::Unsupported("transform program needs more registers".into()))
    };
    for (i, &m) in inputs.iter().enumerate() {
        reg[i] = take(&mut free)?;
        g.load(reg[i], m)?;
    }
    for (s, step) in program.steps.iter().enumerate() {
        let t = program.inputs + s;
        match *step {
            Step::Add(x, y) | Step::Sub(x, y) => {
                // Free the operands whose last use this is before taking the result's register.
                let (rx, ry) = (reg[x], reg[y]);
                for v in [x, y] {
                    if last[v] == t && !free.contains(&reg[v]) {
                        free.push(reg[v]);
                    }
                }
                let d = take(&mut free)?;
                let is_add = matches!(step, Step::Add(..));
                match (g.isa, is_add) {
                    (Isa::Avx512, true) => g.a.vaddps(ZMM[d], ZMM[rx], ZMM[ry]),
                    (Isa::Avx512, false) => g.a.vsubps(ZMM[d], ZMM[rx], ZMM[ry]),
                    (_, true) => g.a.vaddps(YMM[d], YMM[rx], YMM[ry]),
                    (_, false) => g.a.vsubps(YMM[d], YMM[rx], YMM[ry]),
                }
                .map_err(asm_err)?;
                reg[t] = d;
            }
            Step::Fma(x, c, y) => {
                // d = x * c + y: d starts as y (its register when y dies here), then += x * c.
                let d = if last[y] == t {
                    reg[y]
                } else {
                    let d = take(&mut free)?;
                    match g.isa {
                        Isa::Avx512 => g.a.vmovaps(ZMM[d], ZMM[reg[y]]),
                        _ => g.a.vmovaps(YMM[d], YMM[reg[y]]),
                    }
                    .map_err(asm_err)?;
                    d
                };
                let label = g.data_label(vec![c.to_bits()]);
                match g.isa {
                    Isa::Avx512 => {
                        g.a.vfmadd231ps(ZMM[d], ZMM[reg[x]], dword_bcst(label)).map_err(asm_err)?
                    }
                    _ => {
                        let tmp = take(&mut free)?;
                        g.a.vbroadcastss(YMM[tmp], dword_ptr(label)).map_err(asm_err)?;
                        g.a.vfmadd231ps(YMM[d], YMM[reg[x]], YMM[tmp]).map_err(asm_err)?;
                        free.push(tmp);
                    }
                }
                if last[x] == t && reg[x] != d && !free.contains(&reg[x]) {
                    free.push(reg[x]);
                }
                reg[t] = d;
            }
        }
    }
    for (k, &o) in program.outputs.iter().enumerate() {
        output(g, k, reg[o])?;
    }
    Ok(())
}
