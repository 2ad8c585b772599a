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

use super::{asm_err, at, Gen, Src, YMM, ZMM};
use crate::codegen::isa::Isa;
use crate::codegen::tile::DepthwiseSpec;
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
