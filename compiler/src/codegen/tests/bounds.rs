//! The static bounds check (`codegen::bounds`): every kernel family is proved in bounds on each
//! ISA, and a kernel generated from a wrong spec (or run with one float too few) is caught.
//!
//! Every kernel that `compile` builds anywhere in the test suite also goes through the check; these
//! tests add the other direction: the check is tight enough to reject a buffer one float short.

use super::host_isas;
use crate::codegen::bounds::Buffers;
use crate::codegen::jit::check_against;
use crate::codegen::{
    ConvSpec, EltwiseOp, EltwiseSpec, Isa, KernelSpec, LinearSpec, LrnSpec, PoolKind, PoolSpec, SoftmaxSpec,
};
use crate::ir::{ConvKind, FusedConv, FusedLinear, Linear, WinogradTile};

fn conv(cin: usize, cout: usize, hw: usize, k: usize, stride: usize, kind: ConvKind) -> KernelSpec {
    let mut op = FusedConv { residual: true, ..FusedConv::square(cin, cout, k, stride, kind) };
    if kind == ConvKind::Depthwise {
        op.conv.groups = cin;
    }
    let mut spec = ConvSpec::contiguous(op, [cin, hw, hw]).expect("a valid convolution");
    let [co, oh, ow] = spec.output().expect("a valid convolution");
    // Samples further apart than their values, as inside a concatenation.
    (spec.in_stride, spec.out_stride, spec.res_stride) =
        (cin * hw * hw + 5, co * oh * ow + 3, co * oh * ow + 7);
    KernelSpec::Conv(spec)
}

/// A depthwise convolution without a residual (the fused flat epilogue on AVX-512).
fn depthwise_plain(channels: usize, hw: usize, k: usize, stride: usize) -> KernelSpec {
    let mut spec = conv(channels, channels, hw, k, stride, ConvKind::Depthwise);
    if let KernelSpec::Conv(c) = &mut spec {
        c.op.residual = false;
    }
    spec
}

/// A depthwise convolution without a residual, with a SiLU (deferred over groups of channels on
/// AVX-512).
fn depthwise_silu(channels: usize, hw: usize, k: usize, stride: usize) -> KernelSpec {
    let mut spec = depthwise_plain(channels, hw, k, stride);
    if let KernelSpec::Conv(c) = &mut spec {
        c.op.activation = Some(crate::ir::Activation::Silu);
    }
    spec
}

/// A depthwise convolution (one channel per group) as a row panel: items are row blocks x groups,
/// proved by residue classes of items (see `bounds::check`) when they cannot be proved together.
fn depthwise(channels: usize, hw: usize, k: usize, stride: usize) -> KernelSpec {
    let mut op =
        FusedConv { residual: true, ..FusedConv::square(channels, channels, k, stride, ConvKind::Direct) };
    op.conv.groups = channels;
    let mut spec = ConvSpec::contiguous(op, [channels, hw, hw]).expect("a valid convolution");
    let [co, oh, ow] = spec.output().expect("a valid convolution");
    (spec.in_stride, spec.out_stride, spec.res_stride) =
        (channels * hw * hw + 5, co * oh * ow + 3, co * oh * ow + 7);
    KernelSpec::Conv(spec)
}

/// One kernel of every family and conv path, each with an input whose last float it reads.
fn kernels() -> Vec<(&'static str, KernelSpec)> {
    let pool = |kind, k: usize, stride: usize, pad: usize, out: usize| {
        KernelSpec::Pool(PoolSpec {
            kind,
            input: [5, 13, 13],
            output: [5, out, out],
            kernel: [k, k],
            stride: [stride, stride],
            padding: [pad, pad],
            dilation: [1, 1],
            in_stride: 5 * 13 * 13 + 1,
            out_stride: 5 * out * out,
        })
    };
    vec![
        ("gemm1x1", conv(24, 40, 9, 1, 1, ConvKind::Gemm1x1)),
        // 169 pixels: whole column tiles read B in place on avx2 and avx512, then a packed tail.
        ("gemm1x1 reading B in place", conv(24, 40, 13, 1, 1, ConvKind::Gemm1x1)),
        ("strided 1x1", conv(24, 40, 9, 1, 2, ConvKind::StridedGemm1x1)),
        ("row panel 3x3", conv(7, 19, 11, 3, 1, ConvKind::Direct)),
        ("row panel 7x7 stride 2", conv(3, 16, 23, 7, 2, ConvKind::Direct)),
        ("row panel depthwise 5x5", depthwise(40, 29, 5, 1)),
        ("row panel depthwise 3x3", depthwise(48, 14, 3, 1)),
        ("winograd F2", conv(17, 20, 13, 3, 1, ConvKind::Winograd(WinogradTile::F2))),
        ("winograd F4", conv(17, 20, 13, 3, 1, ConvKind::Winograd(WinogradTile::F4))),
        ("chanvec 1x1", conv(40, 48, 7, 1, 1, ConvKind::ChanVec)),
        ("chanvec 3x3", conv(9, 32, 7, 3, 1, ConvKind::ChanVec)),
        ("depthwise 3x3", conv(9, 9, 13, 3, 1, ConvKind::Depthwise)),
        ("depthwise 5x5 stride 2", conv(9, 9, 13, 5, 2, ConvKind::Depthwise)),
        // Row mode, in bands (the last ones shorter, with zero rows below the input).
        ("depthwise 3x3, 3 channels per item", conv(70, 70, 9, 3, 1, ConvKind::Depthwise)),
        ("depthwise 3x3 in bands", conv(3, 3, 112, 3, 1, ConvKind::Depthwise)),
        ("depthwise 5x5 in bands", conv(2, 2, 97, 5, 1, ConvKind::Depthwise)),
        ("depthwise 5x5 stride 2 in bands", conv(3, 3, 101, 5, 2, ConvKind::Depthwise)),
        // No residual: the fused flat epilogue (pipelined at 7x7, not at 16x16).
        ("depthwise 5x5, fused flat epilogue", depthwise_plain(40, 7, 5, 1)),
        ("depthwise 5x5 stride 2, fused flat epilogue", depthwise_plain(9, 15, 5, 2)),
        ("depthwise 5x5 16x16, fused flat epilogue", depthwise_plain(5, 16, 5, 1)),
        // Deferred SiLU: groups of 16 channels and rests of 3 and 11 (items of 19, the last 11).
        ("depthwise 3x3 SiLU, deferred", depthwise_silu(600, 7, 3, 1)),
        ("depthwise 5x5 stride 2 SiLU, deferred", depthwise_silu(70, 13, 5, 2)),
        // Row mode at stride 1 with a SiLU: AVX-512 reads the input plane itself (direct rows).
        ("depthwise 3x3 SiLU, direct rows", depthwise_silu(3, 56, 3, 1)),
        ("depthwise 5x5 SiLU with a residual, direct rows", {
            let mut spec = conv(2, 2, 28, 5, 1, ConvKind::Depthwise);
            if let KernelSpec::Conv(c) = &mut spec {
                c.op.activation = Some(crate::ir::Activation::Silu);
            }
            spec
        }),
        (
            "linear",
            KernelSpec::Linear(LinearSpec {
                op: FusedLinear {
                    linear: Linear { in_features: 37, out_features: 21, bias: true },
                    relu: true,
                },
                in_stride: 40,
                out_stride: 21,
            }),
        ),
        ("max pool", pool(PoolKind::Max, 3, 2, 1, 7)),
        ("avg pool", pool(PoolKind::Avg { count_include_pad: false }, 3, 1, 1, 13)),
        ("adaptive avg pool", pool(PoolKind::Adaptive, 1, 1, 0, 1)),
        (
            "lrn",
            KernelSpec::Lrn(LrnSpec {
                channels: 6,
                plane: 25,
                size: 5,
                alpha: 1e-4,
                beta: 0.75,
                k: 2.0,
                in_stride: 151,
                out_stride: 150,
            }),
        ),
        (
            "add",
            KernelSpec::Eltwise(EltwiseSpec {
                op: EltwiseOp::Add,
                len: 77,
                in_strides: vec![80, 77],
                out_stride: 79,
            }),
        ),
        (
            "affine",
            KernelSpec::Eltwise(EltwiseSpec {
                op: EltwiseOp::Affine { channels: 7, plane: 11, relu: true },
                len: 77,
                in_strides: vec![77],
                out_stride: 78,
            }),
        ),
        (
            "concat",
            KernelSpec::Eltwise(EltwiseSpec {
                op: EltwiseOp::Concat { lens: vec![13, 30] },
                len: 43,
                in_strides: vec![13, 31],
                out_stride: 43,
            }),
        ),
        ("softmax", KernelSpec::Softmax(SoftmaxSpec { len: 1000, in_stride: 1000, out_stride: 1001 })),
    ]
}

fn buffers(spec: &KernelSpec, isa: Isa) -> Vec<Buffers> {
    [1, 2, 3].map(|n| Buffers::of(spec, isa, n)).to_vec()
}

#[test]
fn every_kernel_family_is_proved_in_bounds_on_each_isa() {
    for isa in host_isas() {
        for (name, spec) in kernels() {
            check_against(&spec, isa, &buffers(&spec, isa))
                .unwrap_or_else(|e| panic!("{name} on {isa}: {e}"));
        }
    }
}

/// The error of checking `spec`'s kernel against its buffers changed by `shrink`.
fn error_with(spec: &KernelSpec, isa: Isa, shrink: impl Fn(&mut Buffers)) -> String {
    let mut b = buffers(spec, isa);
    b.iter_mut().for_each(shrink);
    match check_against(spec, isa, &b) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_output_one_float_short_is_caught() {
    for isa in host_isas() {
        for (name, spec) in kernels() {
            let e = error_with(&spec, isa, |b| b.output -= 1);
            assert!(e.contains("the output"), "{name} on {isa}: {e:?}");
        }
    }
}

#[test]
fn an_input_one_float_short_is_caught() {
    for isa in host_isas() {
        for (name, spec) in kernels() {
            let e = error_with(&spec, isa, |b| b.inputs[0] -= 1);
            assert!(e.contains("input 0"), "{name} on {isa}: {e:?}");
        }
    }
}

#[test]
fn a_kernel_for_a_larger_input_than_its_buffers_is_caught() {
    for isa in host_isas() {
        for (kind, k) in
            [(ConvKind::Gemm1x1, 1), (ConvKind::Direct, 3), (ConvKind::ChanVec, 3), (ConvKind::Depthwise, 3)]
        {
            // Generated for a 16x16 input, run on buffers laid out for 14x14.
            let cout = if kind == ConvKind::Depthwise { 16 } else { 32 };
            let wrong = conv(16, cout, 16, k, 1, kind);
            let right = conv(16, cout, 14, k, 1, kind);
            let e = check_against(&wrong, isa, &buffers(&right, isa)).expect_err("must be caught");
            assert!(e.to_string().contains("static bounds check"), "{e}");
        }
    }
}

#[test]
fn too_little_scratch_is_caught() {
    for isa in host_isas() {
        for (name, spec) in kernels().into_iter().filter(|(_, s)| s.scratch_floats(isa) > 0) {
            let e = error_with(&spec, isa, |b| b.scratch /= 2);
            assert!(e.contains("the scratch"), "{name} on {isa}: {e:?}");
        }
    }
}

#[test]
fn a_weight_buffer_half_as_long_is_caught() {
    // Packed weights may end in padding a kernel never reads: halved, every kernel reads past.
    for isa in host_isas() {
        for (name, spec) in kernels().into_iter().filter(|(_, s)| !s.weight_layout().is_empty()) {
            let e = error_with(&spec, isa, |b| b.weights[0] /= 2);
            assert!(e.contains("weight buffer 0"), "{name} on {isa}: {e:?}");
        }
    }
}
