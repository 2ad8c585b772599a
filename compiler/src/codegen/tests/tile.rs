//! The assembled tiles, decoded: the encodings each ISA promises and the ABI the tile contract
//! states (caller-saved registers only, no stack, `vzeroupper` before `ret`).

use super::*;
use crate::codegen::ConvSpec;
use crate::ir::{Activation, Conv2d, ConvKind, FusedConv, FusedLinear, Linear, Relu, WinogradTile};
use iced_x86::{
    Code, Decoder, DecoderOptions, EncodingKind, Instruction, InstructionInfoFactory, Mnemonic, OpKind,
    Register,
};

/// Kernels that between them use every tile form: a wide 3x3 row panel with a residual and a
/// masked tail, a narrow one (one vector per row), a K-blocked direct 1x1 (init and partial tiles)
/// and a linear layer with a partial last panel; then convolutions with fused activations.
fn kernels() -> Vec<KernelSpec> {
    let conv = |cin, cout, hw: usize, k: usize, kind, residual, activation| {
        let op = FusedConv {
            conv: Conv2d {
                in_channels: cin,
                out_channels: cout,
                kernel: [k, k],
                stride: [1, 1],
                padding: [k / 2, k / 2],
                dilation: [1, 1],
                groups: 1,
                bias: true,
            },
            kind,
            prologue: None,
            affine: true,
            residual,
            post_affine: residual,
            relu: Relu::All,
            activation,
            channel_scale: false,
        };
        KernelSpec::Conv(ConvSpec::contiguous(op, [cin, hw, hw]).unwrap())
    };
    let linear = FusedLinear { linear: Linear { in_features: 40, out_features: 70, bias: true }, relu: true };
    vec![
        conv(16, 30, 41, 3, ConvKind::Direct, true, None),
        conv(16, 30, 7, 3, ConvKind::Direct, false, None),
        conv(600, 20, 9, 1, ConvKind::Gemm1x1, true, None),
        // Fused activations: the sigmoid's exp and selections, the clamp, hardswish in a Winograd
        // output transform.
        conv(16, 30, 7, 3, ConvKind::Direct, false, Some(Activation::Silu)),
        conv(
            64,
            20,
            9,
            1,
            ConvKind::Gemm1x1,
            true,
            Some(Activation::Clamp { min: Some(0.0), max: Some(6.0) }),
        ),
        conv(16, 30, 13, 3, ConvKind::Winograd(WinogradTile::F4), true, Some(Activation::Hardswish)),
        KernelSpec::Linear(crate::codegen::LinearSpec { op: linear, in_stride: 40, out_stride: 70 }),
    ]
}

fn decode(code: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let i = decoder.decode();
        assert_ne!(i.code(), Code::INVALID, "undecodable bytes at {:#x}", i.ip());
        out.push(i);
        if i.mnemonic() == Mnemonic::Ret {
            break; // AVX2 lane masks follow as data
        }
    }
    out
}

/// Registers a SysV function may use without saving them.
fn caller_saved(r: Register) -> bool {
    use Register::*;
    let full = r.full_register();
    !matches!(full, RBX | RBP | RSP | R12 | R13 | R14 | R15)
}

#[test]
fn assembled_tiles_keep_to_their_isa_and_the_abi() {
    let wide: Vec<Isa> = host_isas().into_iter().filter(|&i| i != Isa::Sse).collect();
    if wide.is_empty() {
        eprintln!("skipped: host has neither avx2 nor avx512f, no tile is assembled");
    }
    let mut info = InstructionInfoFactory::new();
    for isa in wide {
        let mut tiles = 0;
        for spec in kernels() {
            let k = compile_for(spec, isa);
            // The kernel's own ISA: an AVX-512 host may give a small plane 8-lane tiles.
            let isa = k.kernels[0].isa;
            for tile in k.kernels[0].tiles() {
                tiles += 1;
                let code = decode(&tile.code);
                let what = format!("{isa} tile {}", tile.name);
                let fmas = code.iter().filter(|i| i.mnemonic() == Mnemonic::Vfmadd231ps).count();
                assert!(fmas > 0, "{what}: no FMA");
                let n = code.len();
                assert!(n >= 2, "{what}: too short");
                assert_eq!(code[n - 2].mnemonic(), Mnemonic::Vzeroupper, "{what}: no vzeroupper before ret");
                assert_eq!(code[n - 1].mnemonic(), Mnemonic::Ret, "{what}");
                for i in &code[..n - 1] {
                    // The one use of the stack: a seventh argument's load (`ahead`, above the
                    // return address).
                    if i.mnemonic() == Mnemonic::Mov
                        && i.memory_base() == Register::RSP
                        && i.memory_displacement64() == 8
                        && i.op0_register() == Register::R11
                    {
                        continue;
                    }
                    let used = info.info(i);
                    for r in used.used_registers() {
                        assert!(
                            caller_saved(r.register()),
                            "{what}: `{i}` uses callee-saved {:?}",
                            r.register()
                        );
                    }
                    assert!(
                        !matches!(i.mnemonic(), Mnemonic::Push | Mnemonic::Pop | Mnemonic::Call),
                        "{what}: `{i}`"
                    );
                    if isa == Isa::Avx2 {
                        assert_ne!(
                            i.encoding(),
                            EncodingKind::EVEX,
                            "{what}: EVEX `{i}` would fault on AVX2 hosts"
                        );
                    }
                }
                if isa == Isa::Avx512 {
                    let zmm = code
                        .iter()
                        .filter(|i| i.mnemonic() == Mnemonic::Vfmadd231ps && i.op0_register().is_zmm())
                        .count();
                    assert_eq!(zmm, fmas, "{what}: every FMA works on zmm");
                } else {
                    let ymm = code
                        .iter()
                        .filter(|i| i.mnemonic() == Mnemonic::Vfmadd231ps && i.op0_register().is_ymm())
                        .count();
                    assert_eq!(ymm, fmas, "{what}: every FMA works on ymm");
                }
            }
        }
        assert!(tiles >= 6, "{isa}: only {tiles} tiles assembled");
        eprintln!("{isa}: {tiles} assembled tiles decoded and checked");
    }
}

/// The Winograd GEMM tiles hint their weights ahead of the K loop ([`KLoop::prefetch_a`]): each
/// has `prefetcht0` at positive offsets from A (rdi), and never a prefetch at or behind the loop's
/// own reads. (What a hint cannot change, the values, the Winograd tests in `conv` check on every
/// ISA.)
#[test]
fn winograd_tiles_prefetch_their_weights_ahead() {
    for isa in host_isas().into_iter().filter(|&i| i != Isa::Sse) {
        let spec = kernels()
            .into_iter()
            .find(|k| matches!(k, KernelSpec::Conv(c) if matches!(c.op.kind, ConvKind::Winograd(_))));
        let k = compile_for(spec.expect("a Winograd kernel"), isa);
        let mut hinted = 0;
        for tile in k.kernels[0].tiles() {
            if tile.name.contains("transform") {
                continue;
            }
            let code = decode(&tile.code);
            let a_hints: Vec<&Instruction> = code
                .iter()
                .filter(|i| i.mnemonic() == Mnemonic::Prefetcht0 && i.memory_base() == Register::RDI)
                .collect();
            assert!(!a_hints.is_empty(), "{isa} tile {}: no prefetch of A", tile.name);
            for i in a_hints {
                assert!(
                    i.memory_displacement64() as i64 >= 1024,
                    "{isa} tile {}: `{i}` not ahead",
                    tile.name
                );
            }
            hinted += 1;
        }
        assert!(hinted > 0, "{isa}: no Winograd GEMM tile");
    }
}

/// Checks that every tile of `k` whose name passes `keep` hints a next stream
/// ([`KLoop::prefetch_next`]): it loads the seventh argument (`ahead`, on the stack above the
/// return address) into r11 and issues `prefetcht1` from it, and r11 is never the base of a load
/// or store. Returns how many tiles it checked.
fn assert_tiles_hint_next(k: &CompiledKernels, isa: Isa, keep: impl Fn(&str) -> bool) -> usize {
    let mut hinted = 0;
    for tile in k.kernels[0].tiles().iter().filter(|t| keep(&t.name)) {
        let code = decode(&tile.code);
        let loads_next = code.iter().any(|i| {
            i.mnemonic() == Mnemonic::Mov
                && i.op0_register() == Register::R11
                && i.memory_base() == Register::RSP
                && i.memory_displacement64() == 8
        });
        let hints = code
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Prefetcht1 && i.memory_base() == Register::R11)
            .count();
        assert!(loads_next && hints > 0, "{isa} tile {}: no hint of the next stream", tile.name);
        for i in &code {
            let accesses = (0..i.op_count()).any(|o| i.op_kind(o) == OpKind::Memory);
            if accesses && i.memory_base() == Register::R11 {
                assert_eq!(i.mnemonic(), Mnemonic::Prefetcht1, "{isa} tile {}: `{i}` reads r11", tile.name);
            }
        }
        hinted += 1;
    }
    hinted
}

/// The Winograd GEMM tiles also hint the weight panels the chunk reads next into L2.
#[test]
fn winograd_tiles_hint_the_next_tiles_weights_into_l2() {
    for isa in host_isas().into_iter().filter(|&i| i != Isa::Sse) {
        let spec = ConvSpec::contiguous(
            FusedConv::square(64, 48, 3, 1, ConvKind::Winograd(WinogradTile::F4)),
            [64, 14, 14],
        )
        .unwrap();
        let k = compile_for(KernelSpec::Conv(spec), isa);
        assert!(
            assert_tiles_hint_next(&k, isa, |name| !name.contains("transform")) > 0,
            "{isa}: no GEMM tile"
        );
    }
}

/// The chanvec tiles hint the weights after their K block's slice into L2, for a 1x1 of two K
/// blocks and for a padded 3x3.
#[test]
fn chanvec_tiles_hint_the_next_weight_slice_into_l2() {
    for isa in host_isas().into_iter().filter(|&i| i != Isa::Sse) {
        for (cin, k, pad) in [(1024, 1, 0), (64, 3, 1)] {
            let op = FusedConv::square(cin, 64, k, 1, ConvKind::ChanVec);
            let op = FusedConv { conv: Conv2d { padding: [pad, pad], ..op.conv }, ..op };
            let spec = ConvSpec::contiguous(op, [cin, 7, 7]).unwrap();
            let k = compile_for(KernelSpec::Conv(spec), isa);
            assert!(assert_tiles_hint_next(&k, isa, |_| true) > 0, "{isa}: no chanvec tile");
        }
    }
}

/// A direct 1x1 GEMM reading B in place ([`crate::codegen::reads_b_in_place`]) hints B one column
/// tile ahead ([`KLoop::prefetch_b`]): its tiles reading B from the input rows have `prefetcht0`
/// at positive offsets from B (rsi), at least a tile's width past the tap's first B row. (The
/// values are checked against the reference on every ISA in `conv`.)
#[test]
fn direct_1x1_tiles_reading_b_in_place_prefetch_it_ahead() {
    for isa in host_isas().into_iter().filter(|&i| i != Isa::Sse) {
        let spec =
            ConvSpec::contiguous(FusedConv::square(144, 24, 1, 1, ConvKind::Gemm1x1), [144, 20, 20]).unwrap();
        let plan = crate::codegen::ConvPlan::new(&spec, isa).unwrap();
        let nr = plan.nv * plan.lanes;
        let k = compile_for(KernelSpec::Conv(spec), isa);
        let mut hinted = 0;
        for tile in k.kernels[0].tiles() {
            let code = decode(&tile.code);
            let b_hints: Vec<&Instruction> = code
                .iter()
                .filter(|i| i.mnemonic() == Mnemonic::Prefetcht0 && i.memory_base() == Register::RSI)
                .collect();
            for i in &b_hints {
                assert!(
                    i.memory_displacement64() as i64 >= (nr * 4) as i64,
                    "{isa} tile {}: `{i}` not a tile ahead",
                    tile.name
                );
            }
            hinted += usize::from(!b_hints.is_empty());
        }
        assert!(hinted > 0, "{isa}: no tile prefetches B");
    }
}
