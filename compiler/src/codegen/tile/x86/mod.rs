//! Wide tiles for x86-64, assembled at JIT time with iced-x86: AVX2 + FMA (16 ymm registers of 8
//! floats) and AVX-512F (32 zmm registers of 16 floats).
//!
//! ## Calling convention
//! SysV: `tile(a = rdi, b = rsi, out = rdx, epi = rcx, res = r8, init = r9)`, and for a tile that
//! hints the weights read after it ([`KLoop::prefetch_next`](super::KLoop::prefetch_next)) a seventh
//! pointer, `ahead`, which SysV passes on the stack and the tile loads into r11. The code uses only
//! caller-saved registers (those, r10 as the K-group counter, eax for mask immediates, every
//! vector register and k1) and no stack of its own, so it saves nothing. It ends with `vzeroupper` (the
//! Cranelift code around it may use legacy-SSE encodings) and `ret`. It is position-independent:
//! branches are relative and the AVX2 lane masks are RIP-relative data placed after the `ret`.
//!
//! ## The K step, by register budget (`R` = 16 or 32 vector registers)
//! - **B in registers** (`rows*nv + nv + 1 <= R`): per tap, load the `nv` B vectors, then per row
//!   broadcast A once (`vbroadcastss`, alternating two registers when one is spare) and issue `nv`
//!   register FMAs. Each A element is loaded once and each B vector once per tap.
//! - **Embedded broadcast** (AVX-512, one vector per row): load B once, then one
//!   `vfmadd231ps acc, b, [a]{1to16}` per row: each A element feeds exactly one FMA, so the fused
//!   load costs nothing extra and the tile can be `R - 1` rows tall.
//! - **B from memory** (otherwise): broadcast A per row, FMAs read B from memory (`rows*nv + 1`
//!   registers).
//!
//! ## Soundness
//! Every memory access has a constant displacement from one of the six pointers; the displacement
//! is checked to fit 32 bits. Loads of A, B, `epi` and `init` read what the contract in
//! [`super`] promises is there (whole vectors of B and `init`, inside the caller's buffers).
//! Stores write only the lanes of each [`Piece`]: a piece covering part of a vector is stored with
//! a k-mask (AVX-512) or `vmaskmovps` (AVX2), both of which suppress faults on masked-off lanes, and
//! the residual is read the same way. A streamed tile stores whole vectors with `vmovntps`, whose
//! alignment its caller guarantees (see [`TileOut::Final`]). The AVX2 generator uses ymm0-15 and no broadcast memory
//! operands only, so iced never picks an EVEX encoding for it (a test decodes every tile to check).
//! Fused activations read their constants as whole vectors from the RIP-relative data and, on
//! AVX-512, use k2 for their lane selections (caller-saved like k1).

pub mod depthwise;
pub mod lanes;
pub mod winograd;

use super::{Axis, ChanVec, Piece, RowsA, Tap, TileOut, TileSpec};
use crate::codegen::eltwise::EXP_MIN;
use crate::codegen::isa::Isa;
use crate::codegen::softmax::{EXP_BIAS, EXP_LO, EXP_POLY, NEG_LN2_HI, NEG_LN2_LO};
use crate::codegen::CodegenError;
use crate::ir::Activation;
use iced_x86::code_asm::*;

const YMM: [AsmRegisterYmm; 16] =
    [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14, ymm15];
const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14, zmm15,
    zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27, zmm28, zmm29, zmm30,
    zmm31,
];

/// Base registers of the tile's operands.
const A: AsmRegister64 = rdi;
const B: AsmRegister64 = rsi;
const OUT: AsmRegister64 = rdx;
const EPI: AsmRegister64 = rcx;
const RES: AsmRegister64 = r8;
const INIT: AsmRegister64 = r9;
/// The weights read after the tile ([`KLoop::prefetch_next`]): the seventh argument, loaded from
/// the stack.
const AHEAD: AsmRegister64 = r11;

/// How the K step feeds B to the FMAs (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    BRegs { broadcasts: usize },
    Embedded,
    BMemory,
}

/// Assembles the tile `spec` (an AVX2 or AVX-512 one) into position-independent machine code.
pub fn assemble(spec: &TileSpec) -> Result<Vec<u8>, CodegenError> {
    let mut g = Gen::new(spec.isa)?;
    g.tile(spec)?;
    g.finish()
}

/// The largest number of accumulators a final tile of `isa` may use (the epilogue needs four
/// temporaries, also enough for every fused activation: see [`Gen::activation`]).
pub fn max_accumulators(isa: Isa) -> usize {
    isa.registers() - 4
}

struct Gen {
    a: CodeAssembler,
    isa: Isa,
    /// Constant data (AVX2 lane masks, broadcast constants, index vectors), emitted after the code
    /// and addressed RIP-relative.
    data: Vec<(Vec<u32>, CodeLabel)>,
    /// The lanes mask currently in k1 (AVX-512).
    k1: Option<(usize, usize)>,
}

fn asm_err(e: IcedError) -> CodegenError {
    CodegenError::Unsupported(format!("tile assembly: {e}"))
}

/// `base + floats * 4` as a memory operand, if the displacement fits 32 bits.
fn at(base: AsmRegister64, floats: isize) -> Result<AsmMemoryOperand, CodegenError> {
    let bytes = floats
        .checked_mul(4)
        .filter(|b| i32::try_from(*b).is_ok())
        .ok_or_else(|| CodegenError::Unsupported(format!("tile offset of {floats} floats")))?;
    Ok(base + bytes as i32)
}

fn signed(x: usize) -> isize {
    x as isize
}

/// The lower clamp of `a = -|x|` in [`Gen::sigmoid_avx512`]: `e^a` is 0 in f32 well above it
/// (below -103.3), and `n = nearest(a * log2 e)` stays small enough for `n * NEG_LN2_HI` to be exact.
const SIGMOID_LO: f32 = -120.0;

/// `vcmpps` predicates: ordered less-than, unordered.
const CMP_LT: i32 = 1;
const CMP_UNORD: i32 = 3;

/// The three-operand instructions of the fused activations.
#[derive(Clone, Copy)]
enum Op3 {
    Max,
    Min,
    Add,
    Mul,
    Div,
    /// Integer lane add (`vpaddd`).
    AddI32,
    /// Bitwise OR.
    Or,
}

/// A vector operand: a register or memory.
#[derive(Clone, Copy)]
enum Src {
    Reg(usize),
    Mem(AsmMemoryOperand),
    /// AVX-512 only: a float broadcast from memory (`{1to16}`).
    Bcst(AsmMemoryOperand),
}

impl Gen {
    fn new(isa: Isa) -> Result<Gen, CodegenError> {
        if isa == Isa::Sse {
            return Err(CodegenError::Unsupported("the sse tile is Cranelift code, not assembled".into()));
        }
        Ok(Gen { a: CodeAssembler::new(64).map_err(asm_err)?, isa, data: Vec::new(), k1: None })
    }

    fn lanes(&self) -> usize {
        self.isa.lanes()
    }

    fn wide(&self) -> bool {
        self.isa == Isa::Avx512
    }

    fn zero(&mut self, v: usize) -> Result<(), CodegenError> {
        if self.wide() {
            self.a.vpxord(ZMM[v], ZMM[v], ZMM[v])
        } else {
            self.a.vxorps(YMM[v], YMM[v], YMM[v])
        }
        .map_err(asm_err)
    }

    fn load(&mut self, v: usize, m: AsmMemoryOperand) -> Result<(), CodegenError> {
        if self.wide() {
            self.a.vmovups(ZMM[v], zmmword_ptr(m))
        } else {
            self.a.vmovups(YMM[v], ymmword_ptr(m))
        }
        .map_err(asm_err)
    }

    fn store(&mut self, m: AsmMemoryOperand, v: usize) -> Result<(), CodegenError> {
        if self.wide() {
            self.a.vmovups(zmmword_ptr(m), ZMM[v])
        } else {
            self.a.vmovups(ymmword_ptr(m), YMM[v])
        }
        .map_err(asm_err)
    }

    /// A non-temporal store of a whole vector (`m` must be a multiple of the vector size: see
    /// [`TileOut::Final`]'s `stream`).
    fn store_nt(&mut self, m: AsmMemoryOperand, v: usize) -> Result<(), CodegenError> {
        if self.wide() {
            self.a.vmovntps(zmmword_ptr(m), ZMM[v])
        } else {
            self.a.vmovntps(ymmword_ptr(m), YMM[v])
        }
        .map_err(asm_err)
    }

    fn broadcast(&mut self, v: usize, m: AsmMemoryOperand) -> Result<(), CodegenError> {
        if self.wide() {
            self.a.vbroadcastss(ZMM[v], dword_ptr(m))
        } else {
            self.a.vbroadcastss(YMM[v], dword_ptr(m))
        }
        .map_err(asm_err)
    }

    /// `acc += x * y`.
    fn fma231(&mut self, acc: usize, x: usize, y: Src) -> Result<(), CodegenError> {
        let a = &mut self.a;
        match (self.isa, y) {
            (Isa::Avx512, Src::Reg(y)) => a.vfmadd231ps(ZMM[acc], ZMM[x], ZMM[y]),
            (Isa::Avx512, Src::Mem(m)) => a.vfmadd231ps(ZMM[acc], ZMM[x], zmmword_ptr(m)),
            (Isa::Avx512, Src::Bcst(m)) => a.vfmadd231ps(ZMM[acc], ZMM[x], dword_bcst(m)),
            (_, Src::Reg(y)) => a.vfmadd231ps(YMM[acc], YMM[x], YMM[y]),
            (_, Src::Mem(m)) => a.vfmadd231ps(YMM[acc], YMM[x], ymmword_ptr(m)),
            (_, Src::Bcst(_)) => return Err(CodegenError::Unsupported("broadcast operand on AVX2".into())),
        }
        .map_err(asm_err)
    }

    /// `acc = acc * s + y`.
    fn fma213(&mut self, acc: usize, s: usize, y: Src) -> Result<(), CodegenError> {
        let a = &mut self.a;
        match (self.isa, y) {
            (Isa::Avx512, Src::Reg(y)) => a.vfmadd213ps(ZMM[acc], ZMM[s], ZMM[y]),
            (Isa::Avx512, Src::Mem(m)) => a.vfmadd213ps(ZMM[acc], ZMM[s], zmmword_ptr(m)),
            (Isa::Avx512, Src::Bcst(m)) => a.vfmadd213ps(ZMM[acc], ZMM[s], dword_bcst(m)),
            (_, Src::Reg(y)) => a.vfmadd213ps(YMM[acc], YMM[s], YMM[y]),
            (_, Src::Mem(m)) => a.vfmadd213ps(YMM[acc], YMM[s], ymmword_ptr(m)),
            (_, Src::Bcst(_)) => return Err(CodegenError::Unsupported("broadcast operand in fma213".into())),
        }
        .map_err(asm_err)
    }

    /// `acc = acc * y`.
    fn mul(&mut self, acc: usize, y: Src) -> Result<(), CodegenError> {
        let a = &mut self.a;
        match (self.isa, y) {
            (Isa::Avx512, Src::Reg(y)) => a.vmulps(ZMM[acc], ZMM[acc], ZMM[y]),
            (Isa::Avx512, Src::Mem(m)) => a.vmulps(ZMM[acc], ZMM[acc], zmmword_ptr(m)),
            (_, Src::Reg(y)) => a.vmulps(YMM[acc], YMM[acc], YMM[y]),
            (_, Src::Mem(m)) => a.vmulps(YMM[acc], YMM[acc], ymmword_ptr(m)),
            (_, Src::Bcst(_)) => return Err(CodegenError::Unsupported("broadcast operand in mul".into())),
        }
        .map_err(asm_err)
    }

    /// `acc = acc + y`.
    fn add(&mut self, acc: usize, y: Src) -> Result<(), CodegenError> {
        let a = &mut self.a;
        match (self.isa, y) {
            (Isa::Avx512, Src::Reg(y)) => a.vaddps(ZMM[acc], ZMM[acc], ZMM[y]),
            (Isa::Avx512, Src::Mem(m)) => a.vaddps(ZMM[acc], ZMM[acc], zmmword_ptr(m)),
            (_, Src::Reg(y)) => a.vaddps(YMM[acc], YMM[acc], YMM[y]),
            (_, Src::Mem(m)) => a.vaddps(YMM[acc], YMM[acc], ymmword_ptr(m)),
            (_, Src::Bcst(_)) => return Err(CodegenError::Unsupported("broadcast operand in add".into())),
        }
        .map_err(asm_err)
    }

    /// `acc = max(zero, acc)`, with `acc` as the second source so a NaN in it is kept (x86 `max`
    /// returns its second source when either is NaN), as PyTorch's ReLU does.
    fn relu(&mut self, acc: usize, zero: usize) -> Result<(), CodegenError> {
        self.zero(zero)?;
        if self.wide() {
            self.a.vmaxps(ZMM[acc], ZMM[zero], ZMM[acc])
        } else {
            self.a.vmaxps(YMM[acc], YMM[zero], YMM[acc])
        }
        .map_err(asm_err)
    }

    /// `d = op(a, b)` for a three-operand AVX instruction (`vmaxps`, `vdivps`, ...).
    fn op3(&mut self, op: Op3, d: usize, a: usize, b: Src) -> Result<(), CodegenError> {
        macro_rules! emit {
            ($ins:ident) => {
                match (self.isa, b) {
                    (Isa::Avx512, Src::Reg(b)) => self.a.$ins(ZMM[d], ZMM[a], ZMM[b]),
                    (Isa::Avx512, Src::Mem(m)) => self.a.$ins(ZMM[d], ZMM[a], zmmword_ptr(m)),
                    (Isa::Avx512, Src::Bcst(m)) => self.a.$ins(ZMM[d], ZMM[a], dword_bcst(m)),
                    (_, Src::Reg(b)) => self.a.$ins(YMM[d], YMM[a], YMM[b]),
                    (_, Src::Mem(m)) => self.a.$ins(YMM[d], YMM[a], ymmword_ptr(m)),
                    (_, Src::Bcst(_)) => {
                        return Err(CodegenError::Unsupported("broadcast operand in an activation".into()))
                    }
                }
            };
        }
        match op {
            Op3::Max => emit!(vmaxps),
            Op3::Min => emit!(vminps),
            Op3::Add => emit!(vaddps),
            Op3::Mul => emit!(vmulps),
            Op3::Div => emit!(vdivps),
            Op3::AddI32 => emit!(vpaddd),
            // AVX-512F has no `vorps zmm` (that is AVX512DQ); the integer OR is the same bits.
            Op3::Or if self.wide() => emit!(vpord),
            Op3::Or => emit!(vorps),
        }
        .map_err(asm_err)
    }

    /// A whole vector of `bits` in every lane, as a RIP-relative memory operand.
    fn splat_const(&mut self, bits: u32) -> Src {
        let l = self.data_label(vec![bits; self.lanes()]);
        Src::Mem(l.into())
    }

    fn fconst(&mut self, x: f32) -> Src {
        self.splat_const(x.to_bits())
    }

    /// AVX-512: `x` as a `{1to16}` broadcast of one stored float, other ISAs: [`Gen::fconst`]. The
    /// routine's data follows its code unaligned, so a 64-byte constant almost always spans two
    /// cache lines, and an activation reads one per instruction: the 4-byte broadcast halves the
    /// load work of a fused SiLU (a SiLU depthwise layer at 56x56 ran 25% faster, a ReLU6 one 14%).
    fn bconst(&mut self, x: f32) -> Src {
        if !self.wide() {
            return self.fconst(x);
        }
        Src::Bcst(self.data_label(vec![x.to_bits()]).into())
    }

    /// `d = s` (register copy).
    fn copy(&mut self, d: usize, s: usize) -> Result<(), CodegenError> {
        if self.wide() { self.a.vmovaps(ZMM[d], ZMM[s]) } else { self.a.vmovaps(YMM[d], YMM[s]) }
            .map_err(asm_err)
    }

    /// `d = mem`.
    fn load_src(&mut self, d: usize, m: Src) -> Result<(), CodegenError> {
        match m {
            Src::Mem(m) => self.load(d, m),
            Src::Reg(r) => self.copy(d, r),
            Src::Bcst(m) => self.broadcast(d, m),
        }
    }

    /// Lanes of `d` become `s` where `cmp(x, y)` holds (predicate `pred`, a `vcmpps` immediate);
    /// `mask` is a free register (AVX2: the comparison mask; AVX-512 uses k2).
    fn select_where(
        &mut self,
        pred: i32,
        x: usize,
        y: Src,
        d: usize,
        s: Option<usize>,
        mask: usize,
    ) -> Result<(), CodegenError> {
        if self.wide() {
            match y {
                Src::Reg(y) => self.a.vcmpps(k2, ZMM[x], ZMM[y], pred),
                Src::Mem(m) => self.a.vcmpps(k2, ZMM[x], zmmword_ptr(m), pred),
                Src::Bcst(_) => return Err(CodegenError::Unsupported("broadcast operand in vcmpps".into())),
            }
            .map_err(asm_err)?;
            match s {
                Some(s) => self.a.vmovaps(ZMM[d].k2(), ZMM[s]),
                None => self.a.vpxord(ZMM[d].k2(), ZMM[d], ZMM[d]),
            }
            .map_err(asm_err)
        } else {
            match y {
                Src::Reg(y) => self.a.vcmpps(YMM[mask], YMM[x], YMM[y], pred),
                Src::Mem(m) => self.a.vcmpps(YMM[mask], YMM[x], ymmword_ptr(m), pred),
                Src::Bcst(_) => return Err(CodegenError::Unsupported("broadcast operand in vcmpps".into())),
            }
            .map_err(asm_err)?;
            match s {
                Some(s) => self.a.vblendvps(YMM[d], YMM[d], YMM[s], YMM[mask]),
                None => self.a.vandnps(YMM[d], YMM[mask], YMM[d]),
            }
            .map_err(asm_err)
        }
    }

    /// `v = act(v)` with the four temporaries `t`: the elementwise kernel's definitions
    /// ([`crate::codegen::eltwise`]), operation for operation in the same order with the same
    /// constants, so the fused activation computes what the separate kernel would (`min`/`max`
    /// take the operands in the order that keeps a NaN `x`; the sigmoid's selections are
    /// compare-and-blend). The exception is the sigmoid and SiLU on AVX-512
    /// ([`Gen::sigmoid_avx512`]): the same `exp` polynomial, but no selections and no division,
    /// so the result may differ from the separate kernel's in the last bits (same accuracy bound).
    /// Constants are read from the routine's data, so no more registers are needed than the
    /// epilogue already has; on AVX-512 the clamps', hard activations' and sigmoid's constants are
    /// `{1to16}` broadcasts of one stored float ([`Gen::bconst`]).
    pub(super) fn activation(
        &mut self,
        v: usize,
        act: Activation,
        t: [usize; 4],
    ) -> Result<(), CodegenError> {
        let [t0, t1, t2, t3] = t;
        match act {
            Activation::Clamp { min, max } => {
                // A missing bound is no instruction (`torch.clamp` with one bound).
                if let Some(min) = min {
                    let lo = self.bconst(min);
                    self.load_src(t0, lo)?;
                    self.op3(Op3::Max, v, t0, Src::Reg(v))?;
                }
                if let Some(max) = max {
                    let hi = self.bconst(max);
                    self.load_src(t0, hi)?;
                    self.op3(Op3::Min, v, t0, Src::Reg(v))?;
                }
                Ok(())
            }
            Activation::Hardsigmoid | Activation::Hardswish => {
                let three = self.bconst(3.0);
                self.op3(Op3::Add, t1, v, three)?;
                self.zero(t0)?;
                self.op3(Op3::Max, t1, t0, Src::Reg(t1))?;
                let six = self.bconst(6.0);
                self.load_src(t0, six)?;
                self.op3(Op3::Min, t1, t0, Src::Reg(t1))?;
                if act == Activation::Hardswish {
                    self.op3(Op3::Mul, t1, v, Src::Reg(t1))?;
                }
                self.op3(Op3::Div, v, t1, Src::Reg(t0))
            }
            Activation::Sigmoid | Activation::Silu if self.wide() => {
                self.sigmoid_avx512(v, act == Activation::Silu, t)
            }
            Activation::Sigmoid | Activation::Silu => {
                // a = -|x| (t0), kept for the underflow test.
                let sign = self.splat_const(0x8000_0000);
                self.op3(Op3::Or, t0, v, sign)?;
                // exp(a): clamp to [EXP_LO, 0] (t1), n = nearest(a * log2 e) (t2), p(r) (t3).
                let lo = self.fconst(EXP_LO);
                self.op3(Op3::Max, t1, t0, lo)?;
                let zero = self.fconst(0.0);
                self.op3(Op3::Min, t1, t1, zero)?;
                self.exp_reduced(t1, t2, t3)?;
                // 2^n in the exponent bits (t2), e = p * 2^n (t3). (AVX2 only: AVX-512 takes
                // `sigmoid_avx512`.)
                self.a.vcvtps2dq(YMM[t2], YMM[t2]).map_err(asm_err)?;
                let bias = self.splat_const(EXP_BIAS as u32);
                self.op3(Op3::AddI32, t2, t2, bias)?;
                self.a.vpslld(YMM[t2], YMM[t2], 23).map_err(asm_err)?;
                self.op3(Op3::Mul, t3, t3, Src::Reg(t2))?;
                // e = 0 where a < EXP_MIN.
                let floor = self.fconst(EXP_MIN);
                self.select_where(CMP_LT, t0, floor, t3, None, t1)?;
                // num = x < 0 ? e : 1 (t2), den = 1 + e (t3), s = num / den (t2).
                let one = self.fconst(1.0);
                self.load_src(t2, one)?;
                let zero = self.fconst(0.0);
                self.select_where(CMP_LT, v, zero, t2, Some(t3), t1)?;
                self.op3(Op3::Add, t3, t3, one)?;
                self.op3(Op3::Div, t2, t2, Src::Reg(t3))?;
                // NaN in, NaN out.
                self.select_where(CMP_UNORD, v, Src::Reg(v), t2, Some(v), t1)?;
                if act == Activation::Silu {
                    self.op3(Op3::Mul, v, v, Src::Reg(t2))
                } else {
                    self.copy(v, t2)
                }
            }
        }
    }

    /// The sigmoid (`silu`: times `v`) of `v` on AVX-512 with the four temporaries `t`, the
    /// selections and the division of the AVX2 sequence replaced by cheaper instructions (about 21
    /// instead of 30 and a `vdivps`; it is most of a SiLU depthwise layer's time):
    /// - `a = max(SIGMOID_LO, -|x|)` (a NaN `x` stays NaN), `e = exp(a)` by the `exp` of
    ///   [`crate::codegen::softmax`] (same reduction, same polynomial) but with `2^n` applied by
    ///   `vscalefps`, which rounds the subnormal range correctly and gives 0 below it: `e` is
    ///   `exp(-|x|)` to the same relative error down to `|x| = 87.3`, then at most one subnormal
    ///   step off, and exactly 0 for `|x| >= 104` (no clamp at `EXP_LO` and no select needed);
    /// - `q = 1 / (1 + e)` (`1 + e` is in `[1, 2]`): `vrcp14ps` (relative error under `2^-14`) and
    ///   one Newton step `q = q0 + q0 * (1 - d * q0)`, which leaves about `2^-28` plus rounding;
    /// - the sigmoid is `q` where the sign bit of `x` is clear and `e * q` where it is set
    ///   (`vpmovd2m` into k2, a merge-masked multiply; `-0` gives `0.5` either way);
    /// - SiLU multiplies by `x`, so `silu(-inf) = -inf * 0` is NaN and `silu(+inf) = inf`, as in
    ///   PyTorch, and a NaN `x` gives NaN through every step.
    fn sigmoid_avx512(&mut self, v: usize, silu: bool, t: [usize; 4]) -> Result<(), CodegenError> {
        let [t0, t1, t2, t3] = t;
        let sign = self.bconst(f32::from_bits(0x8000_0000));
        self.op3(Op3::Or, t0, v, sign)?;
        let lo = self.bconst(SIGMOID_LO);
        self.load_src(t1, lo)?;
        self.op3(Op3::Max, t0, t1, Src::Reg(t0))?;
        // n = nearest(a * log2 e) (t1), p(r) (t2); e = p * 2^n (t2).
        self.exp_reduced(t0, t1, t2)?;
        self.a.vscalefps(ZMM[t2], ZMM[t2], ZMM[t1]).map_err(asm_err)?;
        // d = 1 + e (t3), q = 1 / d (t1): the estimate, then one Newton step (t0 = 1 - d * q0).
        let one = self.bconst(1.0);
        self.op3(Op3::Add, t3, t2, one)?;
        self.a.vrcp14ps(ZMM[t1], ZMM[t3]).map_err(asm_err)?;
        self.load_src(t0, one)?;
        self.a.vfnmadd231ps(ZMM[t0], ZMM[t3], ZMM[t1]).map_err(asm_err)?;
        self.fma213(t1, t0, Src::Reg(t1))?;
        // x negative: e / (1 + e).
        self.a.vpmovd2m(k2, ZMM[v]).map_err(asm_err)?;
        self.a.vmulps(ZMM[t1].k2(), ZMM[t1], ZMM[t2]).map_err(asm_err)?;
        if silu {
            self.op3(Op3::Mul, v, v, Src::Reg(t1))
        } else {
            self.copy(v, t1)
        }
    }

    /// The range reduction and polynomial of `exp(a)`, shared by the sigmoids (the `exp` of
    /// [`crate::codegen::softmax`]): `n = nearest(a * log2 e)` into register `n`, `r = a - n ln2`
    /// (two FMAs, `ln2` split in a high and a low part) over `a`, and `p(r)` by Horner into `p`, so
    /// `exp(a) = p * 2^n`; the caller applies `2^n` as its ISA does best.
    fn exp_reduced(&mut self, a: usize, n: usize, p: usize) -> Result<(), CodegenError> {
        let log2e = self.bconst(std::f32::consts::LOG2_E);
        self.op3(Op3::Mul, n, a, log2e)?;
        if self.wide() { self.a.vrndscaleps(ZMM[n], ZMM[n], 0) } else { self.a.vroundps(YMM[n], YMM[n], 0) }
            .map_err(asm_err)?;
        let hi = self.bconst(NEG_LN2_HI);
        self.fma231(a, n, hi)?;
        let lo = self.bconst(NEG_LN2_LO);
        self.fma231(a, n, lo)?;
        let c0 = self.bconst(EXP_POLY[0]);
        self.load_src(p, c0)?;
        for &c in &EXP_POLY[1..] {
            let c = self.bconst(c);
            self.fma213(p, a, c)?;
        }
        Ok(())
    }

    /// The RIP-relative label of constant `words` (one copy per distinct value).
    fn data_label(&mut self, words: Vec<u32>) -> CodeLabel {
        if let Some((_, l)) = self.data.iter().find(|(w, _)| *w == words) {
            return *l;
        }
        let l = self.a.create_label();
        self.data.push((words, l));
        l
    }

    /// The RIP-relative label of the AVX2 mask selecting lanes `lo..hi`.
    fn mask_label(&mut self, lo: usize, hi: usize) -> CodeLabel {
        let words = (0..self.lanes()).map(|l| if (lo..hi).contains(&l) { u32::MAX } else { 0 }).collect();
        self.data_label(words)
    }

    /// Makes k1 select lanes `lo..hi` (AVX-512).
    fn set_k1(&mut self, lo: usize, hi: usize) -> Result<(), CodegenError> {
        if self.k1 != Some((lo, hi)) {
            let bits = ((1u32 << hi) - 1) & !((1u32 << lo) - 1);
            self.a.mov(eax, bits).map_err(asm_err)?;
            self.a.kmovw(k1, eax).map_err(asm_err)?;
            self.k1 = Some((lo, hi));
        }
        Ok(())
    }

    /// Lanes `lo..hi` of `v` loaded from `m` (lane 0's address), zero elsewhere; `mask` is a free
    /// register (AVX2).
    fn load_lanes(
        &mut self,
        v: usize,
        m: AsmMemoryOperand,
        p: Piece,
        mask: usize,
    ) -> Result<(), CodegenError> {
        if self.wide() {
            self.set_k1(p.lo, p.hi)?;
            self.a.vmovups(ZMM[v].k1().z(), zmmword_ptr(m)).map_err(asm_err)
        } else {
            let l = self.mask_label(p.lo, p.hi);
            self.a.vmovups(YMM[mask], ymmword_ptr(l)).map_err(asm_err)?;
            self.a.vmaskmovps(YMM[v], YMM[mask], ymmword_ptr(m)).map_err(asm_err)
        }
    }

    /// Stores lanes `lo..hi` of `v` at `m` (lane 0's address); `mask` is a free register (AVX2).
    fn store_lanes(
        &mut self,
        m: AsmMemoryOperand,
        v: usize,
        p: Piece,
        mask: usize,
    ) -> Result<(), CodegenError> {
        if self.wide() {
            self.set_k1(p.lo, p.hi)?;
            self.a.vmovups(zmmword_ptr(m).k1(), ZMM[v]).map_err(asm_err)
        } else {
            let l = self.mask_label(p.lo, p.hi);
            self.a.vmovups(YMM[mask], ymmword_ptr(l)).map_err(asm_err)?;
            self.a.vmaskmovps(ymmword_ptr(m), YMM[mask], YMM[v]).map_err(asm_err)
        }
    }

    fn form(&self, spec: &TileSpec) -> Result<Form, CodegenError> {
        let regs = self.isa.registers();
        let accs = spec.rows * spec.nv;
        if spec.rows == 0 || spec.nv == 0 {
            return Err(CodegenError::Unsupported("an empty tile".into()));
        }
        let temps = if matches!(spec.out, TileOut::Final { .. }) { 4 } else { 0 };
        if accs + temps > regs {
            return Err(CodegenError::Unsupported(format!(
                "a {}x{} {} tile needs {accs} accumulators: too many for {regs} registers",
                spec.rows,
                spec.nv * self.lanes(),
                self.isa
            )));
        }
        Ok(if self.wide() && spec.nv == 1 {
            Form::Embedded
        } else if accs + spec.nv + 2 <= regs {
            Form::BRegs { broadcasts: 2 }
        } else if accs + spec.nv < regs {
            Form::BRegs { broadcasts: 1 }
        } else {
            Form::BMemory
        })
    }

    fn tile(&mut self, spec: &TileSpec) -> Result<(), CodegenError> {
        let (rows, nv, lanes) = (spec.rows, spec.nv, self.lanes());
        let acc = |r: usize, j: usize| r * nv + j;
        let form = self.form(spec)?;
        // Accumulators: zero, or the partial sums of a previous K block.
        for r in 0..rows {
            for j in 0..nv {
                match spec.init {
                    Some(row) => self.load(acc(r, j), at(INIT, signed(r * row + j * lanes))?)?,
                    None => self.zero(acc(r, j))?,
                }
            }
        }
        // Start fetching the output (for writing) and the residual: they are touched only after the
        // K loop, by which time the lines are in cache. A prefetch never faults.
        // Streamed outputs are not fetched: their lines are written whole, past the cache.
        if let TileOut::Final { row, pieces, epilogue, stream } = &spec.out {
            for r in 0..rows {
                for p in pieces.iter().filter_map(|p| p.first()) {
                    let lane = signed(r * row) + p.at + signed(p.lo);
                    if !stream {
                        self.a.prefetchw(byte_ptr(at(OUT, lane)?)).map_err(asm_err)?;
                    }
                    if let Some(res_row) = epilogue.residual {
                        let lane = signed(r * res_row) + p.at + signed(p.lo);
                        self.a.prefetcht0(byte_ptr(at(RES, lane)?)).map_err(asm_err)?;
                    }
                }
            }
        }
        // The K loop.
        let k = &spec.kloop;
        if k.prefetch_next > 0 {
            // The seventh argument, above the return address.
            self.a.mov(AHEAD, qword_ptr(rsp + 8)).map_err(asm_err)?;
        }
        if k.groups > 0 {
            let mut top = self.a.create_label();
            if k.groups > 1 {
                self.a.mov(r10d, k.groups as u32).map_err(asm_err)?;
                self.a.set_label(&mut top).map_err(asm_err)?;
            }
            self.prefetch_a(spec)?;
            self.prefetch_next(spec)?;
            self.k_step(spec, form, &k.taps)?;
            if k.groups > 1 || !k.tail.is_empty() {
                if k.a_step > 0 {
                    self.advance(A, k.a_step)?;
                }
                if k.b_step > 0 {
                    self.advance(B, k.b_step)?;
                }
            }
            if k.groups > 1 {
                self.a.dec(r10d).map_err(asm_err)?;
                self.a.jnz(top).map_err(asm_err)?;
            }
        }
        self.k_step(spec, form, &k.tail)?;
        match &spec.out {
            TileOut::Partial { row } => {
                for r in 0..rows {
                    for j in 0..nv {
                        self.store(at(OUT, signed(r * row + j * lanes))?, acc(r, j))?;
                    }
                }
            }
            TileOut::Final { row, pieces, epilogue, stream } => {
                if pieces.len() != nv || epilogue.relu_rows.len() < rows {
                    return Err(CodegenError::Unsupported(
                        "tile pieces or ReLU rows do not match its shape".into(),
                    ));
                }
                // Four temporaries after the accumulators.
                let t = rows * nv;
                let (t_scale, t_shift, t_mask, t_val) = (t, t + 1, t + 2, t + 3);
                for r in 0..rows {
                    for (j, pieces_j) in pieces.iter().enumerate() {
                        let v = acc(r, j);
                        self.affine(v, r, j, epilogue.s1, epilogue.b1, t_scale, t_shift)?;
                        if let Some(res_row) = epilogue.residual {
                            for p in pieces_j {
                                let m = at(RES, signed(r * res_row) + p.at)?;
                                if p.lo == 0 && p.hi == lanes {
                                    self.add(v, Src::Mem(m))?;
                                } else {
                                    self.load_lanes(t_val, m, *p, t_mask)?;
                                    self.add(v, Src::Reg(t_val))?;
                                }
                            }
                        }
                        self.affine(v, r, j, epilogue.s2, epilogue.b2, t_scale, t_shift)?;
                        if epilogue.relu_rows[r] {
                            self.relu(v, t_val)?;
                        }
                        if let Some(act) = epilogue.activation {
                            self.activation(v, act.0, [t_scale, t_shift, t_mask, t_val])?;
                        }
                        // In place (`out == res`, same row strides) is sound: this vector's
                        // residual lanes were read above, at exactly the lanes stored here, and
                        // no other tile reads or writes them.
                        for p in pieces_j {
                            let m = at(OUT, signed(r * row) + p.at)?;
                            if p.lo == 0 && p.hi == lanes {
                                if *stream {
                                    self.store_nt(m, v)?;
                                } else {
                                    self.store(m, v)?;
                                }
                            } else if p.lo < p.hi {
                                self.store_lanes(m, v, *p, t_mask)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `y = y * s + b` for accumulator `v` (row `r`, vector `j`), each factor present or not.
    #[allow(clippy::too_many_arguments)]
    fn affine(
        &mut self,
        v: usize,
        r: usize,
        j: usize,
        s: Option<ChanVec>,
        b: Option<ChanVec>,
        t_scale: usize,
        t_shift: usize,
    ) -> Result<(), CodegenError> {
        let lanes = self.lanes();
        let operand = |cv: ChanVec| -> Result<(AsmMemoryOperand, Axis), CodegenError> {
            let floats = match cv.axis {
                Axis::Row => cv.at + r,
                Axis::Col => cv.at + j * lanes,
            };
            Ok((at(EPI, signed(floats))?, cv.axis))
        };
        let s = s.map(operand).transpose()?;
        let b = b.map(operand).transpose()?;
        // Scale into a register (a row value is broadcast; a column vector is loaded).
        let into = |g: &mut Gen, reg: usize, (m, axis): (AsmMemoryOperand, Axis)| match axis {
            Axis::Row => g.broadcast(reg, m),
            Axis::Col => g.load(reg, m),
        };
        let b_src = |g: &mut Gen, op: (AsmMemoryOperand, Axis)| -> Result<Src, CodegenError> {
            match op.1 {
                Axis::Col => Ok(Src::Mem(op.0)),
                Axis::Row => {
                    g.broadcast(t_shift, op.0)?;
                    Ok(Src::Reg(t_shift))
                }
            }
        };
        match (s, b) {
            (Some(s), Some(b)) => {
                into(self, t_scale, s)?;
                let b = b_src(self, b)?;
                self.fma213(v, t_scale, b)
            }
            (Some(s), None) => {
                let s = b_src(self, s)?;
                self.mul(v, s)
            }
            (None, Some(b)) => {
                let b = b_src(self, b)?;
                self.add(v, b)
            }
            (None, None) => Ok(()),
        }
    }

    /// `base += floats * 4`.
    fn advance(&mut self, base: AsmRegister64, floats: usize) -> Result<(), CodegenError> {
        let bytes = i32::try_from(floats * 4)
            .map_err(|_| CodegenError::Unsupported(format!("tile step of {floats} floats")))?;
        self.a.add(base, bytes).map_err(asm_err)
    }

    /// The K loop's software prefetch of A ([`KLoop::prefetch_a`]), once per group: the cache
    /// lines `prefetch_a` bytes past the group's `a_step` floats of each packed panel. Consecutive
    /// groups hint consecutive runs of bytes, so every line of a panel's stream is hinted once
    /// (ahead of its use by `prefetch_a` bytes). Strided A rows get none.
    fn prefetch_a(&mut self, spec: &TileSpec) -> Result<(), CodegenError> {
        let k = &spec.kloop;
        let RowsA::Panels { rows, stride } = spec.rows_a else { return Ok(()) };
        if k.prefetch_a == 0 {
            return Ok(());
        }
        for p in 0..spec.rows.div_ceil(rows) {
            for line in (0..k.a_step.max(1) * 4).step_by(64) {
                let bytes = p * stride * 4 + k.prefetch_a + line;
                let bytes = i32::try_from(bytes)
                    .map_err(|_| CodegenError::Unsupported(format!("prefetch offset of {bytes} bytes")))?;
                self.a.prefetcht0(byte_ptr(A + bytes)).map_err(asm_err)?;
            }
        }
        Ok(())
    }

    /// The K loop's hint of the weights read after the tile ([`KLoop::prefetch_next`]), once per
    /// group: `prefetch_next` bytes from `AHEAD` into L2 (`prefetcht1`: into L1 it measured slower,
    /// the next tile's lines evicting this one's), then `AHEAD` moves past them.
    fn prefetch_next(&mut self, spec: &TileSpec) -> Result<(), CodegenError> {
        let bytes = spec.kloop.prefetch_next;
        if bytes == 0 {
            return Ok(());
        }
        for line in (0..bytes).step_by(64) {
            let line = i32::try_from(line)
                .map_err(|_| CodegenError::Unsupported(format!("next-tile prefetch of {bytes} bytes")))?;
            self.a.prefetcht1(byte_ptr(AHEAD + line)).map_err(asm_err)?;
        }
        let step = i32::try_from(bytes)
            .map_err(|_| CodegenError::Unsupported(format!("next-tile prefetch of {bytes} bytes")))?;
        self.a.add(AHEAD, step).map_err(asm_err)
    }

    /// The K loop's software prefetch of B ([`KLoop::prefetch_b`]), once per tap: the cache lines
    /// `prefetch_b` bytes past the tap's `nv` B vectors.
    fn prefetch_b(&mut self, spec: &TileSpec, tap: &Tap) -> Result<(), CodegenError> {
        let ahead = spec.kloop.prefetch_b;
        if ahead == 0 {
            return Ok(());
        }
        for line in (0..spec.nv * self.lanes() * 4).step_by(64) {
            let bytes = tap.b * 4 + ahead + line;
            let bytes = i32::try_from(bytes)
                .map_err(|_| CodegenError::Unsupported(format!("prefetch offset of {bytes} bytes")))?;
            self.a.prefetcht0(byte_ptr(B + bytes)).map_err(asm_err)?;
        }
        Ok(())
    }

    /// The FMAs of `taps` (A and B at their current bases).
    fn k_step(&mut self, spec: &TileSpec, form: Form, taps: &[Tap]) -> Result<(), CodegenError> {
        let (rows, nv, lanes) = (spec.rows, spec.nv, self.lanes());
        let acc = |r: usize, j: usize| r * nv + j;
        let free = rows * nv;
        let a_at = |tap: &Tap, r: usize| at(A, signed(tap.a + spec.rows_a.offset(r)));
        let b_at = |tap: &Tap, j: usize| at(B, signed(tap.b + j * lanes));
        let mut turn = 0;
        for tap in taps {
            self.prefetch_b(spec, tap)?;
            match form {
                Form::BRegs { broadcasts } => {
                    for j in 0..nv {
                        self.load(free + j, b_at(tap, j)?)?;
                    }
                    for r in 0..rows {
                        let t = free + nv + turn % broadcasts;
                        turn += 1;
                        self.broadcast(t, a_at(tap, r)?)?;
                        for j in 0..nv {
                            self.fma231(acc(r, j), free + j, Src::Reg(t))?;
                        }
                    }
                }
                Form::Embedded => {
                    self.load(free, b_at(tap, 0)?)?;
                    for r in 0..rows {
                        self.fma231(acc(r, 0), free, Src::Bcst(a_at(tap, r)?))?;
                    }
                }
                Form::BMemory => {
                    for r in 0..rows {
                        self.broadcast(free, a_at(tap, r)?)?;
                        for j in 0..nv {
                            self.fma231(acc(r, j), free, Src::Mem(b_at(tap, j)?))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, CodegenError> {
        self.a.vzeroupper().map_err(asm_err)?;
        self.a.ret().map_err(asm_err)?;
        for (words, mut label) in std::mem::take(&mut self.data) {
            self.a.set_label(&mut label).map_err(asm_err)?;
            self.a.dd(&words).map_err(asm_err)?;
        }
        self.a.assemble(0).map_err(asm_err)
    }
}

/// A peak-throughput probe for benchmarks: `fn(iterations: u64)` running `chains` independent FMA
/// chains (`vfmadd231ps`) per iteration on registers only. FLOPs per call:
/// `iterations * chains * 2 * lanes`.
pub fn peak_probe(isa: Isa, chains: usize) -> Result<Vec<u8>, CodegenError> {
    if isa == Isa::Sse {
        return xmm_probe(chains);
    }
    let mut g = Gen::new(isa)?;
    let chains = chains.min(isa.registers() - 2);
    for c in 0..chains + 2 {
        g.zero(c)?;
    }
    let mut top = g.a.create_label();
    g.a.set_label(&mut top).map_err(asm_err)?;
    for c in 0..chains {
        g.fma231(c, chains, Src::Reg(chains + 1))?;
    }
    g.a.dec(rdi).map_err(asm_err)?;
    g.a.jnz(top).map_err(asm_err)?;
    g.finish()
}

/// [`peak_probe`] with 128-bit vectors (VEX-encoded `vfmadd231ps xmm`; needs FMA).
fn xmm_probe(chains: usize) -> Result<Vec<u8>, CodegenError> {
    const XMM: [AsmRegisterXmm; 16] = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15,
    ];
    let chains = chains.min(14);
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    for x in &XMM[..chains + 2] {
        a.vxorps(*x, *x, *x).map_err(asm_err)?;
    }
    let mut top = a.create_label();
    a.set_label(&mut top).map_err(asm_err)?;
    for x in &XMM[..chains] {
        a.vfmadd231ps(*x, XMM[chains], XMM[chains + 1]).map_err(asm_err)?;
    }
    a.dec(rdi).map_err(asm_err)?;
    a.jnz(top).map_err(asm_err)?;
    a.vzeroupper().map_err(asm_err)?;
    a.ret().map_err(asm_err)?;
    a.assemble(0).map_err(asm_err)
}
