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
//!   are stored at `dst + x * point_stride`; then `src` and `dst` advance by one channel.
//! - Output transform `(src = rdi, out = rsi, epi = rdx, res = rcx, tmp = r8)`: the `a^2` points at
//!   `src + x * point_stride` go through `A^T . A`; each of the `m x m` results gets the fused
//!   epilogue (per-channel scalars at `epi`, the residual gathered at the pixels' offsets from
//!   `res`, ReLU) and is stored to its tiles' pixels, `out + index[lane] + disp`, lanes without a
//!   pixel masked off: AVX-512 scatters (k-masked), AVX2 stores lane by lane from `tmp`.
//!
//! Soundness: every store writes a pixel of a tile the routine owns (the index vector and masks
//! come from the driver's plan, which checks them against the output shape); the registers and ABI
//! are those of the GEMM tiles (caller-saved only, no stack, `vzeroupper` before `ret`).

use super::{asm_err, at, Gen, Src, YMM, ZMM};
use crate::codegen::isa::Isa;
use crate::codegen::tile::{Axis, InputTransformSpec, OutputTransformSpec};
use crate::codegen::CodegenError;
use crate::ir::winograd::{Program, Step};
use iced_x86::code_asm::*;

/// Assembles an input transform.
pub fn assemble_input(spec: &InputTransformSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    let (a, lanes) = (spec.tile.alpha(), spec.isa.lanes());
    let program = spec.tile.input_program();
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
        run_program(&mut g, program, &inputs, &mut |g, i, reg| g.store(outputs[i], reg))?;
    }
    // Rows: V[i][j] = (B^T T[i, .]^T)[j], to dst + (i * a + j) * point_stride.
    for i in 0..a {
        let inputs: Vec<_> =
            (0..a).map(|j| at(rdx, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        let outputs: Vec<_> =
            (0..a).map(|j| at(rsi, ((i * a + j) * spec.point_stride) as isize)).collect::<Result<_, _>>()?;
        run_program(&mut g, program, &inputs, &mut |g, j, reg| g.store(outputs[j], reg))?;
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
    // Registers the epilogue reserves at the top: the index vector, two temporaries, a scratch.
    let (idx, t0, t1, t2) = (regs - 1, regs - 2, regs - 3, regs - 4);
    let index: Vec<u32> = spec.index.iter().map(|&i| i as u32).collect();
    if g.isa == Isa::Avx512 {
        let l = g.data_label(index);
        g.a.vmovups(ZMM[idx], zmmword_ptr(l)).map_err(asm_err)?;
    }
    // Columns: T[i][j] = (A^T M[., j])[i], i < m, to tmp[(i * a + j) * lanes].
    for j in 0..a {
        let inputs: Vec<_> =
            (0..a).map(|i| at(rdi, ((i * a + j) * spec.point_stride) as isize)).collect::<Result<_, _>>()?;
        let outputs: Vec<_> =
            (0..m).map(|i| at(r8, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        run_program_limited(&mut g, program, &inputs, regs - 4, &mut |g, i, reg| g.store(outputs[i], reg))?;
    }
    // Rows: Y[i][j] = (A^T T[i, .]^T)[j], then the epilogue and the store.
    for i in 0..m {
        let inputs: Vec<_> =
            (0..a).map(|j| at(r8, ((i * a + j) * lanes) as isize)).collect::<Result<_, _>>()?;
        run_program_limited(&mut g, program, &inputs, regs - 4, &mut |g, j, reg| {
            let (disp, mask) = spec.pixels[i * m + j];
            epilogue_and_store(g, spec, reg, disp, mask, [idx, t0, t1, t2])
        })?;
    }
    g.finish()
}

/// The fused epilogue on `v` (one output channel: per-channel values broadcast from `epi`), then
/// the store of the lanes in `mask` at `out + index[lane] + disp`.
fn epilogue_and_store(
    g: &mut Gen,
    spec: &OutputTransformSpec,
    v: usize,
    disp: usize,
    mask: u32,
    [idx, t0, t1, t2]: [usize; 4],
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
    let disp_bytes =
        i32::try_from(disp * 4).map_err(|_| CodegenError::Unsupported("output offset".into()))?;
    if e.residual.is_some() && mask != 0 {
        match g.isa {
            Isa::Avx512 => {
                g.a.mov(eax, mask).map_err(asm_err)?;
                g.a.kmovw(k2, eax).map_err(asm_err)?;
                g.zero(t0)?;
                g.a.vgatherdps(ZMM[t0].k2(), dword_ptr(rcx + ZMM[idx] * 4 + disp_bytes)).map_err(asm_err)?;
            }
            _ => {
                let l = g.data_label(lane_mask(mask, 8));
                let idx_l = g.data_label(spec.index.iter().map(|&i| i as u32).collect());
                g.a.vmovups(YMM[t1], ymmword_ptr(l)).map_err(asm_err)?;
                g.a.vmovups(YMM[t2], ymmword_ptr(idx_l)).map_err(asm_err)?;
                g.zero(t0)?;
                g.a.vgatherdps_3(YMM[t0], dword_ptr(rcx + YMM[t2] * 4 + disp_bytes), YMM[t1])
                    .map_err(asm_err)?;
            }
        }
        g.add(v, Src::Reg(t0))?;
    }
    affine(g, scalar(e.s2)?, scalar(e.b2)?)?;
    if e.relu_rows.first().copied().unwrap_or(false) {
        g.relu(v, t0)?;
    }
    if mask == 0 {
        return Ok(());
    }
    match g.isa {
        Isa::Avx512 => {
            g.a.mov(eax, mask).map_err(asm_err)?;
            g.a.kmovw(k2, eax).map_err(asm_err)?;
            g.a.vscatterdps(dword_ptr(rsi + ZMM[idx] * 4 + disp_bytes).k2(), ZMM[v]).map_err(asm_err)?;
        }
        _ => {
            // Lane by lane through the temporary area after the column results.
            let stage = at(r8, (spec.tile.m() * spec.tile.alpha() * g.lanes()) as isize)?;
            g.store(stage, v)?;
            let stage_bytes = (spec.tile.m() * spec.tile.alpha() * g.lanes() * 4) as i32;
            for (lane, &offset) in spec.index.iter().enumerate() {
                if mask & (1 << lane) == 0 {
                    continue;
                }
                let dst = i32::try_from((offset + disp) * 4)
                    .map_err(|_| CodegenError::Unsupported("output offset".into()))?;
                g.a.mov(eax, dword_ptr(r8 + stage_bytes + (lane * 4) as i32)).map_err(asm_err)?;
                g.a.mov(dword_ptr(rsi + dst), eax).map_err(asm_err)?;
            }
        }
    }
    Ok(())
}

/// An AVX2 lane mask from the low bits of `mask`.
fn lane_mask(mask: u32, lanes: usize) -> Vec<u32> {
    (0..lanes).map(|l| if mask & (1 << l) != 0 { u32::MAX } else { 0 }).collect()
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
