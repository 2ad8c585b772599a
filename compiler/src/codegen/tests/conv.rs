//! Convolution kernels against a direct-loop reference of the fused semantics.

use super::*;
use crate::codegen::{pack_conv_weights, ConvPlan, ConvSpec};
use crate::ir::{Activation, Conv2d, ConvKind, FusedConv, Op, Relu};

/// The fused convolution, straight from its definition, for a batch of `n`; returns
/// `(value, magnitude)` per output element. `factors`: the `channel_scale` input.
fn reference(
    spec: &ConvSpec,
    n: usize,
    x: &[f32],
    res: Option<&[f32]>,
    factors: Option<&[f32]>,
    w: &[&[f32]],
) -> (Vec<f64>, Vec<f64>) {
    let op = &spec.op;
    let c = &op.conv;
    let [cin, h, wd] = spec.input;
    let [cout, oh, ow] = spec.output().unwrap();
    let (cin_g, cout_g) = (cin / c.groups, cout / c.groups);
    let [kh, kw] = c.kernel;
    let mut slot = w.iter();
    let weight = slot.next().unwrap();
    let bias = c.bias.then(|| slot.next().unwrap());
    let pre = op.prologue.map(|relu| (slot.next().unwrap(), slot.next().unwrap(), relu));
    let aff = op.affine.then(|| (slot.next().unwrap(), slot.next().unwrap()));
    let post = op.post_affine.then(|| (slot.next().unwrap(), slot.next().unwrap()));
    let mut out = vec![0f64; n * spec.out_stride];
    let mut mag = vec![0f64; n * spec.out_stride];
    for s in 0..n {
        for co in 0..cout {
            let g = co / cout_g;
            for y in 0..oh {
                for xo in 0..ow {
                    let (mut acc, mut m) = (0f64, 0f64);
                    for cl in 0..cin_g {
                        let ci = g * cin_g + cl;
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy =
                                    (y * c.stride[0] + i * c.dilation[0]) as isize - c.padding[0] as isize;
                                let ix =
                                    (xo * c.stride[1] + j * c.dilation[1]) as isize - c.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let mut v =
                                    x[s * spec.in_stride + (ci * h + iy as usize) * wd + ix as usize] as f64;
                                if let Some(f) = factors {
                                    v *= f[s * spec.scale_stride + ci] as f64;
                                }
                                if let Some((ps, pb, relu)) = pre {
                                    v = v * ps[ci] as f64 + pb[ci] as f64;
                                    if relu {
                                        v = v.max(0.0);
                                    }
                                }
                                let t = weight[((co * cin_g + cl) * kh + i) * kw + j] as f64 * v;
                                acc += t;
                                m += t.abs();
                            }
                        }
                    }
                    let mut v = acc + bias.map_or(0.0, |b| b[co] as f64);
                    m += v.abs();
                    if let Some((s1, b1)) = aff {
                        v = v * s1[co] as f64 + b1[co] as f64;
                        m = m * (s1[co] as f64).abs() + v.abs();
                    }
                    let at = (co * oh + y) * ow + xo;
                    if let Some(r) = res {
                        v += r[s * spec.res_stride + at] as f64;
                        m += v.abs();
                    }
                    if let Some((s2, b2)) = post {
                        v = v * s2[co] as f64 + b2[co] as f64;
                        m = m * (s2[co] as f64).abs() + v.abs();
                    }
                    let relu = match op.relu {
                        Relu::None => false,
                        Relu::All => true,
                        Relu::First(k) => co < k,
                    };
                    if relu {
                        v = v.max(0.0);
                    }
                    if let Some(a) = op.activation {
                        v = activate(a, v);
                        // Every activation's slope is at most 1.5 (hardswish at 3): an input
                        // error grows by at most that.
                        m = 1.5 * m + v.abs();
                    }
                    out[s * spec.out_stride + at] = v;
                    mag[s * spec.out_stride + at] = m;
                }
            }
        }
    }
    (out, mag)
}

/// An activation by its definition, in f64.
fn activate(a: Activation, x: f64) -> f64 {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    match a {
        Activation::Clamp { min, max } => {
            x.max(min.map_or(f64::NEG_INFINITY, f64::from)).min(max.map_or(f64::INFINITY, f64::from))
        }
        Activation::Sigmoid => sigmoid(x),
        Activation::Silu => x * sigmoid(x),
        Activation::Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}

#[derive(Debug, Clone)]
struct Case {
    cin: usize,
    cout: usize,
    hw: [usize; 2],
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    groups: usize,
    kind: ConvKind,
    prologue: Option<bool>,
    affine: bool,
    residual: bool,
    post: bool,
    relu: Relu,
    bias: bool,
    activation: Option<Activation>,
    channel_scale: bool,
    /// The avx512 register tile, if not the plan's own (the other ISAs keep theirs).
    avx512_tile: Option<(usize, usize)>,
}

fn case(cin: usize, cout: usize, hw: usize, kernel: usize, stride: usize, pad: usize) -> Case {
    let kind = match (kernel, stride, pad) {
        (1, 1, 0) => ConvKind::Gemm1x1,
        (1, _, 0) => ConvKind::StridedGemm1x1,
        _ => ConvKind::Direct,
    };
    Case {
        cin,
        cout,
        hw: [hw, hw],
        kernel,
        stride,
        pad,
        dilation: 1,
        groups: 1,
        kind,
        prologue: None,
        affine: false,
        residual: false,
        post: false,
        relu: Relu::All,
        bias: true,
        activation: None,
        channel_scale: false,
        avx512_tile: None,
    }
}

/// The fused convolution of a case.
fn fused_conv(c: &Case) -> FusedConv {
    FusedConv {
        conv: Conv2d {
            in_channels: c.cin,
            out_channels: c.cout,
            kernel: [c.kernel, c.kernel],
            stride: [c.stride, c.stride],
            padding: [c.pad, c.pad],
            dilation: [c.dilation, c.dilation],
            groups: c.groups,
            bias: c.bias,
        },
        kind: c.kind,
        prologue: c.prologue,
        affine: c.affine,
        residual: c.residual,
        post_affine: c.post,
        relu: c.relu,
        activation: c.activation,
        channel_scale: c.channel_scale,
    }
}

/// Checks one case at batch 1 and 3, with strided values (sample strides larger than the value)
/// for the input, output and residual.
fn check(c: Case) {
    let op = fused_conv(&c);
    let input = [c.cin, c.hw[0], c.hw[1]];
    let mut spec = ConvSpec::contiguous(op.clone(), input).unwrap();
    let out_len = spec.out_stride;
    // Views: samples further apart than the value (like a channel slice of a wider buffer).
    spec.in_stride += 5;
    spec.out_stride += 3;
    spec.res_stride += 7;
    if c.channel_scale {
        spec.scale_stride += 2;
    }
    let mut rng = Rng::new((c.cin * 1000 + c.cout * 10 + c.kernel) as u64);
    // The reference computes the plain convolution; a Winograd kernel packs the transformed
    // filter, computed from the same weights as the optimiser's symbolic transform does.
    let direct = FusedConv { kind: ConvKind::Direct, ..op.clone() };
    let weights: Vec<Vec<f32>> =
        Op::FusedConv(direct).weights().iter().map(|w| rng.vec(w.shape.iter().product())).collect();
    let wrefs: Vec<&[f32]> = weights.iter().map(|w| w.as_slice()).collect();
    let mut packing = weights.clone();
    if let ConvKind::Winograd(tile) = op.kind {
        let g = crate::ir::WeightExpr::param("w", vec![c.cout, c.cin, 3, 3]);
        let u = crate::ir::WeightExpr::Winograd { x: Box::new(g), tile };
        packing[0] = u.eval(&|_| Some(&weights[0][..])).unwrap();
    }
    let prefs: Vec<&[f32]> = packing.iter().map(|w| w.as_slice()).collect();
    let packed = pack_conv_weights(&spec, &prefs).unwrap();
    for isa in host_isas() {
        let spec = match (isa, c.avx512_tile) {
            (Isa::Avx512, Some(tile)) => ConvSpec { tile: Some(tile), ..spec.clone() },
            _ => spec.clone(),
        };
        let k = compile_for(KernelSpec::Conv(spec.clone()), isa);
        let plan = ConvPlan::new(&spec, isa).unwrap();
        check_kernel(&c, &spec, &k, &plan, &packed, &wrefs, &mut rng, out_len, false);
        if c.residual {
            let in_place = ConvSpec { res_stride: spec.out_stride, ..spec.clone() };
            let k = compile_for(KernelSpec::Conv(in_place.clone()), isa);
            check_kernel(&c, &in_place, &k, &plan, &packed, &wrefs, &mut rng, out_len, true);
        }
    }
}

/// The tolerance factor of an algorithm: Winograd's transforms scale values by their constants
/// before summing, which amplifies rounding: F(4x4) by up to two decimal orders over the direct sum.
fn slack(kind: ConvKind) -> f64 {
    match kind {
        ConvKind::Winograd(crate::ir::WinogradTile::F4) => 100.0,
        ConvKind::Winograd(_) => 10.0,
        _ => 1.0,
    }
}

/// Runs a compiled convolution at batch 1 and 3 against the reference. `in_place`: the output is
/// written over the residual (the memory plan's in-place residual; `res_stride == out_stride`), and
/// must come out the same: each output element is stored only after the residual element at its
/// index has been read, by the one tile that stores it.
#[allow(clippy::too_many_arguments)]
fn check_kernel(
    c: &Case,
    spec: &ConvSpec,
    k: &CompiledKernels,
    plan: &ConvPlan,
    packed: &[f32],
    wrefs: &[&[f32]],
    rng: &mut Rng,
    out_len: usize,
    in_place: bool,
) {
    for n in [1, 3] {
        let x = rng.vec(n * spec.in_stride);
        let mut res = rng.vec(n * spec.res_stride);
        // Factors of either sign, one sample's different from the next's.
        let factors: Vec<f32> = rng.vec(n * spec.scale_stride).iter().map(|f| 1.5 * f).collect();
        let got = if in_place {
            // The gaps between samples of the shared buffer must stay as they were (the sentinel).
            for s in 0..n {
                res[s * spec.out_stride + out_len..(s + 1) * spec.out_stride]
                    .fill(f32::from_bits(0x7fc0_1234));
            }
            let mut inputs: Vec<&[f32]> = vec![&x, &res];
            if c.channel_scale {
                inputs.push(&factors);
            }
            run_in_place(k, n, &inputs, 1, &[packed], res.clone())
        } else {
            let mut inputs: Vec<&[f32]> = vec![&x];
            if c.residual {
                inputs.push(&res);
            }
            if c.channel_scale {
                inputs.push(&factors);
            }
            run(k, n, &inputs, &[packed], n * spec.out_stride)
        };
        let direct = ConvSpec { op: FusedConv { kind: ConvKind::Direct, ..spec.op.clone() }, ..spec.clone() };
        let scale = c.channel_scale.then_some(&factors[..]);
        let (want, mag) = reference(&direct, n, &x, c.residual.then_some(&res[..]), scale, wrefs);
        // Compare the value; the gaps between samples must be untouched.
        for s in 0..n {
            let r = s * spec.out_stride..s * spec.out_stride + out_len;
            let kernel = &k.kernels[0];
            let how = if in_place { " in place" } else { "" };
            let what =
                format!("{} {}{how} n={n} sample {s}", kernel.implementation, kernel.spec.describe(plan.isa));
            let slack = slack(spec.op.kind);
            assert_close_scaled(&what, &got[r.clone()], &want[r.clone()], &mag[r], slack);
            for g in &got[s * spec.out_stride + out_len..(s + 1) * spec.out_stride] {
                assert!(g.is_nan(), "{what}: wrote past the value");
            }
        }
    }
}

#[test]
fn gemm_1x1_shapes() {
    for (cin, cout, hw) in
        [(3, 5, 1), (13, 5, 2), (5, 13, 3), (16, 24, 7), (64, 32, 14), (17, 7, 9), (4, 6, 5)]
    {
        check(case(cin, cout, hw, 1, 1, 0));
    }
}

/// Direct 1x1 GEMMs whose whole column tiles read B in place from the input's channel rows, with
/// a prefetch one tile ahead (few output channels, planes of at least four tiles:
/// [`crate::codegen::reads_b_in_place`]; avx2 and avx512), while the plane's tail tile is packed:
/// planes that are no multiple of any tile, one and two K blocks, K off the loop's unroll, row
/// tails, residual (also in place), partial ReLU; on every ISA of the host (SSE packs: the
/// reference for the others), and on avx512 with both of its in-place tiles, 12x16 and 12x32
/// (which one a host gets depends on its FMA width: `plan::in_place_tile`).
#[test]
fn gemm_1x1_reads_b_in_place() {
    for (cin, cout, hw, residual, relu) in [
        (144, 24, [14, 14], true, Relu::All),
        (300, 20, [12, 11], false, Relu::First(7)),
        (5, 37, [16, 16], true, Relu::None),
        (33, 7, [25, 9], false, Relu::All),
    ] {
        let op = FusedConv::square(cin, cout, 1, 1, ConvKind::Gemm1x1);
        let spec = ConvSpec::contiguous(op, [cin, hw[0], hw[1]]).unwrap();
        for isa in host_isas() {
            let plan = ConvPlan::new(&spec, isa).unwrap();
            assert_eq!(plan.b_in_place.is_some(), isa != Isa::Sse, "{isa} {cin}->{cout}@{hw:?}");
        }
        for avx512_tile in [None, Some((12, 1)), Some((12, 2))] {
            let mut c = case(cin, cout, 1, 1, 1, 0);
            c.hw = hw;
            c.residual = residual;
            c.relu = relu;
            c.avx512_tile = avx512_tile;
            check(c);
        }
    }
}

/// Input channels beyond one K block of the direct path (`KC_MAX` = 256): 2 and 3 blocks, a last
/// block shorter than the others, tail tiles, residual and partial ReLU across blocks.
#[test]
fn gemm_1x1_k_blocks() {
    for (cin, cout, hw) in [(300, 7, 5), (513, 10, 3), (600, 4, 1)] {
        check(case(cin, cout, hw, 1, 1, 0));
    }
    let mut c = case(520, 11, 6, 1, 1, 0);
    c.residual = true;
    c.relu = Relu::First(5);
    check(c);
}

#[test]
fn gemm_1x1_epilogues() {
    let mut c = case(13, 19, 5, 1, 1, 0);
    c.affine = true;
    c.residual = true;
    c.post = true;
    check(c);
    let mut c = case(7, 9, 6, 1, 1, 0);
    c.bias = false;
    c.relu = Relu::First(7);
    c.post = true;
    check(c);
    let mut c = case(20, 30, 4, 1, 1, 0);
    c.relu = Relu::First(13);
    c.residual = true;
    check(c);
    let mut c = case(8, 12, 3, 1, 1, 0);
    c.relu = Relu::None;
    c.bias = false;
    check(c);
}

#[test]
fn gemm_1x1_prologue() {
    for relu in [false, true] {
        let mut c = case(11, 10, 5, 1, 1, 0);
        c.prologue = Some(relu);
        c.affine = true;
        check(c);
        let mut c = case(6, 9, 7, 1, 2, 0);
        c.prologue = Some(relu);
        check(c);
    }
}

/// Squeeze-and-excitation's channel scale folded into the weights per sample (`channel_scale`): on
/// every ISA, at batch 1 and 3 with different factors per sample (the kernel's test driver runs
/// half the items one by one, so a thread's chunks cross samples and must rescale), the factors'
/// samples further apart than `Cin`; B read in place and packed (a tail tile; SSE packs all),
/// several K blocks, a residual (also in place) and an activation.
#[test]
fn gemm_1x1_channel_scale() {
    for (cin, cout, hw, residual) in [
        (144, 24, [14, 14], true),
        (32, 16, [16, 9], false),
        (300, 20, [12, 11], false),
        (40, 13, [7, 7], true),
        (24, 40, [9, 9], false),
    ] {
        let mut c = case(cin, cout, 1, 1, 1, 0);
        c.hw = hw;
        c.residual = residual;
        c.relu = Relu::None;
        c.channel_scale = true;
        c.activation = (!residual).then_some(Activation::Silu);
        check(c);
    }
}

/// 1x1 convolutions of a one-pixel plane (squeeze-and-excitation's, on the pooled vector) run as
/// matrix-vector products, one weight panel per item: output channels in whole panels, a partial
/// last panel and a partial last vector, one panel; with and without a bias, affine, ReLU and the
/// activations; at batch 1 and 3 on every ISA. A residual or a partial ReLU keeps the tiles (also
/// checked).
#[test]
fn gemm_1x1_one_pixel_plane() {
    for (cin, cout) in [(672, 28), (28, 672), (96, 4), (5, 12), (40, 25)] {
        for (relu, activation, affine, bias) in [
            (Relu::All, None, false, true),
            (Relu::None, Some(Activation::Silu), false, true),
            (Relu::None, Some(Activation::Sigmoid), true, false),
            (Relu::All, Some(Activation::Hardsigmoid), true, true),
        ] {
            let mut c = case(cin, cout, 1, 1, 1, 0);
            (c.relu, c.activation, c.affine, c.bias) = (relu, activation, affine, bias);
            let spec =
                ConvSpec::contiguous(FusedConv::square(cin, cout, 1, 1, ConvKind::Gemm1x1), [cin, 1, 1]);
            assert!(ConvPlan::new(&spec.unwrap(), Isa::Sse).unwrap().gemv);
            check(c);
        }
    }
    let mut c = case(30, 20, 1, 1, 1, 0);
    c.residual = true;
    check(c);
    let mut c = case(30, 20, 1, 1, 1, 0);
    c.relu = Relu::First(7);
    check(c);
}

#[test]
fn strided_1x1() {
    for (s, hw) in [(2, 7), (2, 8), (4, 9), (2, 1), (3, 3)] {
        let mut c = case(9, 14, hw, 1, s, 0);
        c.residual = true;
        check(c);
    }
    // Several K blocks and column tiles, a tail tile; non-square input.
    let mut c = case(300, 8, 11, 1, 2, 0);
    c.hw = [11, 14];
    check(c);
}

#[test]
fn kxk_kernels_strides_padding() {
    for (k, s, p, hw) in [
        (3, 1, 1, 5),
        (3, 1, 1, 1),
        (3, 2, 1, 7),
        (3, 1, 0, 3),
        (5, 1, 2, 6),
        (5, 2, 2, 9),
        (7, 2, 3, 11),
        (7, 1, 3, 2),
        (11, 4, 2, 23),
        (11, 4, 0, 15),
        (3, 4, 1, 10),
        (2, 2, 0, 6),
    ] {
        check(case(5, 13, hw, k, s, p));
    }
}

#[test]
fn kxk_wide_rows_and_epilogues() {
    let mut c = case(3, 8, 37, 3, 1, 1);
    c.residual = true;
    c.affine = true;
    check(c);
    let mut c = case(4, 7, 19, 3, 2, 1);
    c.hw = [19, 33];
    c.post = true;
    c.relu = Relu::First(3);
    check(c);
}

#[test]
fn dilation_and_groups() {
    let mut c = case(6, 9, 9, 3, 1, 2);
    c.dilation = 2;
    check(c);
    let mut c = case(6, 10, 8, 3, 1, 1);
    c.groups = 2;
    check(c);
    let mut c = case(8, 8, 6, 3, 2, 1);
    c.groups = 8;
    c.residual = true;
    check(c);
    let mut c = case(12, 6, 5, 1, 1, 0);
    c.kind = ConvKind::Direct;
    c.groups = 3;
    check(c);
}

#[test]
fn unsupported_is_an_error() {
    let op = FusedConv {
        conv: Conv2d {
            in_channels: 4,
            out_channels: 4,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 2,
            bias: false,
        },
        kind: ConvKind::Direct,
        prologue: None,
        affine: false,
        residual: false,
        post_affine: false,
        relu: Relu::First(2),
        activation: None,
        channel_scale: false,
    };
    let spec = ConvSpec::contiguous(op, [4, 5, 5]).unwrap();
    for isa in Isa::ALL {
        assert!(matches!(ConvPlan::new(&spec, isa), Err(crate::codegen::CodegenError::Unsupported(_))));
    }
}

#[test]
fn conv_machine_code_has_vector_fma() {
    let spec = ConvSpec::contiguous(case_op(64, 64, 3), [64, 14, 14]).unwrap();
    let k = compile_for(KernelSpec::Conv(spec), Isa::Sse);
    let asm = k.kernels[0].disassembly();
    let fmas = asm.lines().filter(|l| l.contains("vfmadd") && l.contains("xmm")).count();
    assert!(fmas >= 9 * 3 * 4, "expected the unrolled 3x3 tile of vfmadd*ps, found {fmas}:\n{asm}");
    // No libcalls for fma: the ISA flags are on.
    assert!(!asm.contains("call"), "kernel calls out:\n{asm}");
    let clif = k.kernels[0].clif().unwrap();
    assert!(clif.starts_with("; kernel for test"), "{clif}");
    assert!(clif.contains(" = fma "), "CLIF has fma:\n{clif}");
}

fn case_op(cin: usize, cout: usize, k: usize) -> FusedConv {
    FusedConv::square(cin, cout, k, 1, ConvKind::Direct)
}

/// Stride-1 row panels whose output rows are one column axis ("flat", chosen where it stores more
/// of the computed lanes, e.g. 7-wide planes on avx512): tiles spanning row boundaries, residuals
/// read through the same pieces, several blocks with a shorter last one, dilation, 5x5 kernels.
#[test]
fn flat_row_panels() {
    let mut flat_seen = false;
    for (cin, cout, hw, k, pad, dilation, residual) in [
        (16, 30, 7, 3, 1, 1, true),
        (5, 13, 6, 3, 1, 1, false),
        (7, 9, 9, 5, 2, 1, true),
        (6, 8, 11, 3, 2, 2, false),
        (3, 25, 3, 3, 1, 1, true),
        (4, 6, 21, 3, 1, 1, false),
    ] {
        let mut c = case(cin, cout, hw, k, 1, pad);
        c.dilation = dilation;
        c.residual = residual;
        c.post = residual;
        let spec = ConvSpec::contiguous(
            FusedConv {
                conv: Conv2d {
                    in_channels: cin,
                    out_channels: cout,
                    kernel: [k, k],
                    stride: [1, 1],
                    padding: [pad, pad],
                    dilation: [dilation, dilation],
                    groups: 1,
                    bias: true,
                },
                kind: ConvKind::Direct,
                prologue: None,
                affine: false,
                residual,
                post_affine: residual,
                relu: Relu::All,
                activation: None,
                channel_scale: false,
            },
            [cin, hw, hw],
        )
        .unwrap();
        for isa in Isa::available() {
            flat_seen |= ConvPlan::new(&spec, isa).unwrap().flat;
        }
        check(c);
    }
    if Isa::Avx512.host_supports() {
        assert!(flat_seen, "7-wide planes take flat panels on avx512");
    }
}

/// Random convolutions: every path (direct 1x1, strided 1x1, row panels flat or per row), channel
/// counts that are not multiples of any tile, planes that are not multiples of any vector,
/// padding, dilation, groups, every epilogue, on every ISA of the host.
mod random {
    use super::*;
    use proptest::prelude::*;

    fn arb_case() -> impl Strategy<Value = Case> {
        (
            (1usize..5, 1usize..3, 1usize..4),
            (1usize..40, 1usize..40, 1usize..18, 1usize..4),
            (0usize..3, 1usize..3, prop::bool::ANY, prop::bool::ANY, prop::bool::ANY),
            (prop::bool::ANY, 0usize..3, prop::bool::ANY, 0usize..3),
        )
            .prop_filter_map(
                "a valid convolution",
                |(
                    (k, s, groups),
                    (cin_g, cout_g, hw, hw2),
                    (pad, d, affine, residual, post),
                    (bias, relu, one, pro),
                )| {
                    let (cin, cout) = (cin_g * groups, cout_g * groups);
                    let (k, pad, d) = if one { (1, 0, 1) } else { (k, pad.min(k / 2 + 1), d) };
                    let span = d * (k - 1) + 1;
                    let hw = [hw, (hw + hw2 * 3) % 23 + 1];
                    if hw.iter().any(|&n| n + 2 * pad < span) {
                        return None;
                    }
                    let kind = match (k, pad, groups) {
                        (1, 0, 1) if s == 1 => ConvKind::Gemm1x1,
                        (1, 0, 1) => ConvKind::StridedGemm1x1,
                        _ => ConvKind::Direct,
                    };
                    let relu = match relu {
                        0 => Relu::None,
                        1 => Relu::All,
                        _ if groups == 1 => Relu::First(cout / 2),
                        _ => Relu::All,
                    };
                    // A pre-activation prologue on the 1x1 GEMMs.
                    let prologue = match (kind, pro) {
                        (ConvKind::Direct, _) | (_, 0) => None,
                        (_, p) => Some(p == 2),
                    };
                    Some(Case {
                        cin,
                        cout,
                        hw,
                        kernel: k,
                        stride: s,
                        pad,
                        dilation: d,
                        groups,
                        kind,
                        prologue,
                        affine,
                        residual,
                        post,
                        relu,
                        bias,
                        activation: None,
                        channel_scale: false,
                        avx512_tile: None,
                    })
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_convolutions_match_the_definition(c in arb_case()) {
            check(c);
        }
    }
}

/// Winograd convolutions (F(2x2) and F(4x4)): tile grids cut by the plane's edge (odd sizes),
/// several blocks of tile rows, padding 0, 1 and 2, channel counts off every tile, residual,
/// affine and ReLU epilogues, on every ISA of the host; the reference is the direct convolution of
/// the untransformed weights.
#[test]
fn winograd_convolutions() {
    use crate::ir::WinogradTile::{F2, F4};
    for (tile, cin, cout, hw, pad, residual) in [
        (F2, 5, 13, 7, 1, false),
        (F4, 5, 13, 7, 1, true),
        (F4, 16, 30, 14, 1, false),
        (F2, 3, 7, 9, 0, true),
        (F4, 8, 12, 11, 2, false),
        (F4, 17, 25, 30, 1, true),
        (F2, 24, 40, 13, 1, false),
        (F4, 4, 6, 3, 1, false),
        (F2, 2, 3, 1, 1, true),
        (F4, 6, 5, 23, 0, false),
    ] {
        let mut c = case(cin, cout, hw, 3, 1, pad);
        c.kind = ConvKind::Winograd(tile);
        c.residual = residual;
        c.post = residual;
        c.affine = !residual;
        check(c);
    }
}

/// A Winograd kernel's items are (sample, block, chunk) with the chunks of a block consecutive:
/// they share the block's fill and input transform, and say so to the executor, which then hands
/// out whole blocks (a block split between threads is transformed by both).
#[test]
fn winograd_chunks_of_a_block_are_handed_out_together() {
    let spec = ConvSpec::contiguous(
        FusedConv::square(64, 64, 3, 1, ConvKind::Winograd(crate::ir::WinogradTile::F4)),
        [64, 56, 56],
    )
    .unwrap();
    for isa in host_isas() {
        let plan = ConvPlan::new(&spec, isa).unwrap();
        assert!(
            plan.blocks > 1 && plan.chunks > 1,
            "{isa}: {} blocks of {} chunks",
            plan.blocks,
            plan.chunks
        );
        assert_eq!(KernelSpec::Conv(spec.clone()).items_sharing_setup(isa), plan.chunks, "{isa}");
    }
}

/// Random Winograd convolutions: F(2x2) and F(4x4), channel counts off every tile, odd and
/// non-square planes (tile grids cut by the edge), padding 0 to 2, every epilogue, on every ISA.
mod random_winograd {
    use super::*;
    use crate::ir::WinogradTile;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_winograd_convolutions_match_the_definition(
            f4 in prop::bool::ANY,
            (cin, cout) in (1usize..40, 1usize..40),
            (h, w) in (1usize..24, 1usize..24),
            pad in 0usize..3,
            (bias, affine, residual, post) in (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY, prop::bool::ANY),
            relu in prop::bool::ANY,
        ) {
            prop_assume!(h + 2 * pad >= 3 && w + 2 * pad >= 3);
            let mut c = case(cin, cout, h, 3, 1, pad);
            c.hw = [h, w];
            c.kind = ConvKind::Winograd(if f4 { WinogradTile::F4 } else { WinogradTile::F2 });
            c.bias = bias;
            c.affine = affine;
            c.residual = residual;
            c.post = post;
            c.relu = if relu { Relu::All } else { Relu::None };
            check(c);
        }
    }
}

/// Chanvec convolutions (output channels in the lanes): the ResNet shapes it exists for (1x1 on a
/// 7x7 plane, strided 1x1 and 3x3 from 14x14), several K blocks, one and several pixel blocks,
/// padding, dilation, a channel count that is not a whole panel, every epilogue, on every ISA.
#[test]
fn chanvec_convolutions() {
    for (cin, cout, hw, k, stride, pad, residual) in [
        (40, 64, 7, 1, 1, 0, true),
        (600, 48, 7, 1, 1, 0, false),
        (24, 32, 14, 1, 2, 0, true),
        (20, 36, 14, 3, 2, 1, false),
        (9, 16, 5, 3, 1, 1, true),
        (70, 96, 9, 3, 1, 1, false),
        (3, 20, 11, 5, 1, 2, false),
        (5, 8, 1, 1, 1, 0, false),
        (8, 12, 30, 1, 1, 0, true),
        // A MobileNetV2-like projection: K blocks (of 64 channels on avx2), a residual, 7x7 in
        // tiles of 5 and 4 pixels on avx2.
        (160, 64, 7, 1, 1, 0, true),
        // 16 panels: on avx2 the whole 7x7 plane is one block of 10 tiles.
        (70, 512, 7, 1, 1, 0, true),
    ] {
        let mut c = case(cin, cout, hw, k, stride, pad);
        c.kind = ConvKind::ChanVec;
        c.residual = residual;
        c.post = residual;
        c.affine = !residual;
        c.relu = if residual { Relu::All } else { Relu::First(cout / 2) };
        check(c);
        // Without a residual and with a ReLU on all channels or none, the tiles apply the whole
        // epilogue (both affines, ReLU) in channel lanes; one K block or several.
        for relu in [Relu::None, Relu::All] {
            let mut c = case(cin, cout, hw, k, stride, pad);
            c.kind = ConvKind::ChanVec;
            (c.affine, c.post, c.relu) = (true, true, relu);
            check(c);
        }
    }
    let mut c = case(6, 24, 9, 3, 1, 2);
    c.dilation = 2;
    c.kind = ConvKind::ChanVec;
    check(c);
}

/// Random chanvec convolutions: any window, stride, padding and dilation, output channels a
/// multiple of 4 but not of the 32-channel panels, odd and non-square planes, every epilogue.
mod random_chanvec {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_chanvec_convolutions_match_the_definition(
            (cin, quads) in (1usize..40, 1usize..20),
            (h, w) in (1usize..20, 1usize..20),
            (k, stride, pad, dilation) in (1usize..4, 1usize..3, 0usize..3, 1usize..3),
            (bias, affine, residual, post) in (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY, prop::bool::ANY),
            relu in 0usize..3,
        ) {
            let span = dilation * (k - 1) + 1;
            prop_assume!(h + 2 * pad >= span && w + 2 * pad >= span);
            let cout = 4 * quads;
            let mut c = case(cin, cout, h, k, stride, pad);
            c.hw = [h, w];
            c.dilation = dilation;
            c.kind = ConvKind::ChanVec;
            c.bias = bias;
            c.affine = affine;
            c.residual = residual;
            c.post = post;
            c.relu = match relu { 0 => Relu::None, 1 => Relu::All, _ => Relu::First(cout / 2) };
            check(c);
        }
    }
}

/// A depthwise case: `c` channels of `h x w`, `k x k`, stride `stride`, padding `k / 2`.
/// One of four epilogues (`variant` 0..4) that between them cover every part of a depthwise
/// epilogue: bias or none, the affine before the residual, the residual (also with the affine
/// after it), ReLU of all channels or none.
fn with_epilogue_variant(c: &mut Case, variant: usize) {
    c.bias = variant % 2 == 0;
    c.affine = variant >= 2;
    c.residual = variant == 1 || variant == 3;
    c.post = variant == 3;
    c.relu = if variant == 2 { Relu::None } else { Relu::All };
}

fn depthwise_case(c: usize, h: usize, w: usize, k: usize, stride: usize) -> Case {
    let mut case = case(c, c, h, k, stride, k / 2);
    case.hw = [h, w];
    case.groups = c;
    case.kind = ConvKind::Depthwise;
    case
}

#[test]
fn depthwise_convolutions() {
    // Odd channel counts, small (7) and large (112) planes, 3x3 and 5x5, stride 1 and 2, and the
    // MobileNet shapes (BN folded into the affine, residual, ReLU).
    for (ch, h, w, k, stride) in [
        (3, 7, 7, 3, 1),
        (5, 7, 7, 3, 2),
        (7, 7, 7, 5, 1),
        (9, 7, 7, 5, 2),
        (17, 14, 14, 3, 1),
        (11, 15, 13, 5, 2),
        (3, 112, 112, 3, 1),
        (5, 112, 112, 3, 2),
        (3, 1, 1, 3, 1),
        (2, 2, 3, 5, 2),
        // Row mode in bands (avx2: rows of 16+ columns, avx512: 32+): odd heights and widths, so
        // the last bands are shorter and (5x5) bands before them already end in zero rows.
        (2, 97, 67, 5, 1),
        (3, 101, 75, 5, 2),
        (2, 61, 33, 3, 2),
        (2, 45, 113, 3, 1),
        (1, 40, 17, 5, 1),
        (2, 35, 35, 5, 2),
        // Rows of 17-31 columns (row mode on avx512, the flat path on avx2).
        (3, 28, 28, 5, 1),
        (4, 56, 56, 5, 2),
        (2, 30, 19, 3, 1),
        // Several channels per work item (the flat path's pipeline over channels).
        (100, 7, 7, 3, 1),
        (70, 9, 11, 5, 2),
        // AVX-512's fused flat epilogue (no residual): 7x7 and 14x14 with channel counts that are
        // no multiple of 16, odd planes, stride 2 from odd sizes; a flat run longer than the
        // pipeline's (16x16 5x5: 20 vectors) and one too long to fuse (40x16 5x5: 50 vectors).
        (37, 7, 7, 5, 1),
        (45, 14, 14, 5, 1),
        (29, 13, 11, 3, 1),
        (35, 15, 15, 5, 2),
        (21, 13, 9, 3, 2),
        (3, 16, 16, 5, 1),
        (2, 40, 16, 5, 1),
    ] {
        for variant in 0..4 {
            let mut c = depthwise_case(ch, h, w, k, stride);
            with_epilogue_variant(&mut c, variant);
            check(c);
        }
    }
}

/// AVX2 depthwise convolutions with the channels in the vector lanes (`DepthwiseLanesSpec`, asserted
/// on the plan: fewer than 32 output columns, no residual): channel counts of whole groups of
/// eight, with a last group of 5, 3 or 1 channels, and fewer than eight (weights, per-channel
/// values and stores masked); planes of 7x7, 14x14 and 28x28 (one, two and three or four pixel
/// steps per row; 28 outputs also from 56 at stride 2, and 31 columns: in bands of rows, the last
/// one shorter, asserted), odd and
/// non-square ones, planes smaller than the window and of a single pixel (blocks of eight pixels
/// in the transposes with tails of every length); 3x3, 5x5 and 7x7 windows (a last block of taps of
/// 1 or 9) at stride 1 and 2; bias or affine with ReLU or without, and every activation. The
/// residual variants take the planar paths (checked in `depthwise_convolutions`).
#[test]
fn depthwise_in_channel_lanes() {
    let (mut banded, mut short_last) = (false, false);
    // (channels, height, width, window, stride)
    for (ch, h, w, k, stride) in [
        (8, 7, 7, 3, 1),
        (16, 14, 14, 5, 1),
        (13, 7, 7, 5, 2),
        (3, 14, 14, 3, 2),
        (24, 15, 13, 3, 1),
        (11, 9, 5, 7, 1),
        (9, 2, 3, 5, 1),
        (1, 1, 1, 3, 1),
        (17, 13, 11, 5, 2),
        (8, 28, 15, 3, 2),
        (5, 6, 10, 7, 2),
        (4, 28, 28, 5, 1),
        (9, 56, 56, 3, 2),
        (3, 5, 31, 3, 1),
        (2, 29, 27, 5, 1),
    ] {
        let activations = [
            None,
            Some(Activation::Silu),
            Some(Activation::Sigmoid),
            Some(Activation::Hardswish),
            Some(Activation::Clamp { min: Some(0.0), max: Some(6.0) }),
            Some(Activation::Hardsigmoid),
        ];
        for (i, a) in activations.into_iter().enumerate() {
            let mut c = depthwise_case(ch, h, w, k, stride);
            c.activation = a;
            // Variants 0 and 2: bias with ReLU, affine without.
            with_epilogue_variant(&mut c, 2 * (i % 2));
            let spec = ConvSpec::contiguous(fused_conv(&c), [ch, h, w]).unwrap();
            let plan = ConvPlan::new(&spec, Isa::Avx2).unwrap();
            let d = plan.depthwise.as_ref().expect("a depthwise plan");
            assert!(d.lanes, "{ch}x{h}x{w} {k}x{k} stride {stride}");
            banded |= d.bands.iter().map(|b| b.count).sum::<usize>() > 1;
            short_last |= d.bands.len() > 1 && d.bands.last().is_some_and(|b| b.rows < d.band);
            check(c);
        }
    }
    assert!(banded && short_last, "some plane runs in several bands, the last one shorter");
}

/// Depthwise convolutions at stride 1 with a costly activation on planes wide enough for row mode
/// (on AVX-512 the stencil reads the input plane itself, masking the columns outside it and
/// skipping the rows, `DepthwiseDirectSpec`): rows whose last vector has 1, 8, 12, 15 or 16
/// columns, rows of 17-19 columns (masks on both sides of one vector), planes of fewer rows than
/// the window (every output row an edge row), 7x7 windows (more distinct masks than mask registers),
/// rows too wide for two at once (one row a step: 3x3 weights in registers, 5x5 and 7x7 weights
/// broadcast per tap), and every epilogue: bias or affine, residual and post-affine, ReLU before
/// the activation.
#[test]
fn depthwise_direct_rows() {
    for (ch, h, w, k) in [
        (2, 56, 56, 3),
        (1, 112, 112, 3),
        (1, 20, 100, 5),
        (1, 9, 113, 7),
        (3, 28, 28, 5),
        (2, 5, 17, 5),
        (2, 9, 18, 5),
        (2, 30, 19, 3),
        (1, 13, 47, 5),
        (1, 7, 48, 3),
        (2, 6, 65, 5),
        (2, 1, 40, 3),
        (1, 2, 40, 5),
        (2, 3, 33, 5),
        (2, 11, 40, 7),
        (1, 4, 23, 7),
    ] {
        let activations = [Activation::Silu, Activation::Sigmoid, Activation::Hardswish, Activation::Silu];
        for (variant, a) in activations.into_iter().enumerate() {
            let mut c = depthwise_case(ch, h, w, k, 1);
            c.activation = Some(a);
            with_epilogue_variant(&mut c, variant);
            let spec = ConvSpec::contiguous(fused_conv(&c), [ch, h, w]).unwrap();
            let plan = ConvPlan::new(&spec, Isa::Avx512).unwrap();
            let d = plan.depthwise.as_ref().expect("a depthwise plan");
            assert!(d.direct, "{ch}x{h}x{w} {k}x{k}");
            check(c);
        }
    }
}

/// AVX-512 direct rows computing several output rows at once (`DepthwiseDirectSpec::rows`), at
/// stride 1 and at stride 2 (even and odd columns split in registers), asserted on the plan: heights
/// that are no multiple of the rows at once (a shorter last step), planes shorter than the window or
/// than one step (no looped step, every step an edge step), odd and even widths (at stride 2 the last
/// raw vector partly or wholly outside the row), 3x3 windows (weights in registers at stride 1) and
/// 5x5 and 7x7 (weights as broadcast operands, 7x7 with more column masks than mask registers), rows
/// of 2, 3 and 4 vectors (at stride 2 as many rows as 11 accumulators hold beside the activation's
/// registers), cheap and costly activations, and every epilogue.
#[test]
fn depthwise_rows_at_once() {
    // (channels, height, width, window, stride, rows at once)
    for (ch, h, w, k, stride, at_once) in [
        (2, 28, 28, 5, 1, 6),
        (3, 29, 17, 3, 1, 4),
        (2, 3, 30, 5, 1, 6),
        (1, 1, 31, 5, 1, 6),
        (1, 6, 33, 5, 1, 4),
        (2, 11, 48, 3, 1, 2),
        (2, 10, 49, 7, 1, 3),
        (1, 2, 64, 3, 1, 2),
        (2, 57, 56, 3, 1, 2),
        (1, 9, 40, 7, 1, 4),
        (3, 56, 56, 5, 2, 5),
        (2, 57, 61, 3, 2, 4),
        (1, 101, 97, 3, 2, 2),
        (2, 9, 70, 5, 2, 3),
        (1, 3, 40, 5, 2, 5),
        (2, 40, 35, 3, 2, 4),
        (1, 21, 66, 7, 2, 3),
    ] {
        let activations = [
            Activation::Silu,
            Activation::Sigmoid,
            Activation::Hardswish,
            Activation::Clamp { min: Some(0.0), max: Some(6.0) },
        ];
        for (variant, a) in activations.into_iter().enumerate() {
            let mut c = depthwise_case(ch, h, w, k, stride);
            c.activation = Some(a);
            with_epilogue_variant(&mut c, variant);
            let spec = ConvSpec::contiguous(fused_conv(&c), [ch, h, w]).unwrap();
            let plan = ConvPlan::new(&spec, Isa::Avx512).unwrap();
            let d = plan.depthwise.as_ref().expect("a depthwise plan");
            let shape = format!("{ch}x{h}x{w} {k}x{k} stride {stride} {a:?}");
            assert!(d.rows_mode && d.direct, "{shape}");
            assert_eq!(d.at_once, at_once, "{shape}");
            check(c);
        }
    }
}

/// AVX-512 rows at stride 2 too wide for the direct rows' registers (more output vectors than
/// accumulators beside the split's registers: 250 columns without an activation, 185 with one) keep
/// the fill into phase planes, in bands, and the phase-plane rows routine; asserted on the plan.
#[test]
fn depthwise_wide_stride2_rows_keep_the_fill() {
    for (ch, h, w, k, activation) in [
        (1, 6, 500, 5, None),
        (2, 9, 369, 3, Some(Activation::Silu)),
        (1, 4, 371, 5, Some(Activation::Sigmoid)),
    ] {
        for variant in 0..4 {
            let mut c = depthwise_case(ch, h, w, k, 2);
            c.activation = activation;
            with_epilogue_variant(&mut c, variant);
            let spec = ConvSpec::contiguous(fused_conv(&c), [ch, h, w]).unwrap();
            let plan = ConvPlan::new(&spec, Isa::Avx512).unwrap();
            let d = plan.depthwise.as_ref().expect("a depthwise plan");
            assert!(d.rows_mode && !d.direct && !d.bands.is_empty(), "{ch}x{h}x{w} {k}x{k} {activation:?}");
            check(c);
        }
    }
}

/// Random depthwise convolutions: odd and even, square and non-square planes (wide enough for row
/// mode and tall enough for several bands), both windows and strides, every epilogue.
mod random_depthwise {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_depthwise_convolutions_match_the_definition(
            ch in 1usize..40,
            (h, w) in (1usize..90, 1usize..72),
            (k, stride) in (prop::sample::select(vec![3usize, 5]), 1usize..3),
            (bias, affine, residual, post) in (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY, prop::bool::ANY),
            relu in prop::bool::ANY,
        ) {
            let mut c = depthwise_case(ch, h, w, k, stride);
            c.bias = bias;
            c.affine = affine;
            c.residual = residual;
            c.post = post;
            c.relu = if relu { Relu::All } else { Relu::None };
            check(c);
        }
    }
}

/// Every activation fused into the epilogue of every kernel family, on every ISA of the host
/// (`check` runs each on all of them): the 1x1 GEMM (with affine, residual and post-affine before
/// the activation), the strided 1x1, 3x3 row panels (stride 1 and 2, ReLU then the activation),
/// Winograd F(2x2) and F(4x4) output transforms with a residual, and chanvec. The clamps have
/// bounds the random outputs cross on both sides.
#[test]
fn fused_activations() {
    use crate::ir::WinogradTile::{F2, F4};
    let activations = [
        Activation::Clamp { min: Some(0.0), max: Some(6.0) },
        Activation::Clamp { min: Some(-0.5), max: Some(0.75) },
        Activation::Clamp { min: None, max: Some(0.25) },
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Hardsigmoid,
        Activation::Hardswish,
    ];
    for a in activations {
        let with = |mut c: Case| {
            c.activation = Some(a);
            c.relu = Relu::None;
            c
        };
        let mut c = with(case(13, 19, 5, 1, 1, 0));
        c.affine = true;
        c.residual = true;
        c.post = true;
        check(c);
        check(with(case(9, 14, 7, 1, 2, 0)));
        check(with(case(5, 13, 9, 3, 1, 1)));
        let mut c = with(case(4, 7, 11, 3, 2, 1));
        c.relu = Relu::All;
        check(c);
        for tile in [F2, F4] {
            let mut c = with(case(5, 13, 9, 3, 1, 1));
            c.kind = ConvKind::Winograd(tile);
            c.residual = true;
            check(c);
        }
        let mut c = with(case(40, 64, 7, 1, 1, 0));
        c.kind = ConvKind::ChanVec;
        c.residual = true;
        check(c);
        let mut c = with(case(20, 36, 14, 3, 2, 1));
        c.kind = ConvKind::ChanVec;
        c.relu = Relu::First(18);
        check(c);
        // Chanvec without a residual: the activation runs in the tiles, in channel lanes (several
        // K blocks with an affine; one K block with a ReLU first).
        let mut c = with(case(600, 48, 7, 1, 1, 0));
        c.kind = ConvKind::ChanVec;
        c.affine = true;
        check(c);
        let mut c = with(case(70, 96, 9, 3, 1, 1));
        c.kind = ConvKind::ChanVec;
        c.relu = Relu::All;
        check(c);
        // Depthwise: the flat run's epilogue (7x7, 5x5 stride 2) and row mode (40 columns are
        // rows of several vectors), with a residual and ReLU before the activation.
        check(with(depthwise_case(5, 7, 7, 3, 1)));
        let mut c = with(depthwise_case(6, 15, 13, 5, 2));
        c.affine = true;
        c.residual = true;
        check(c);
        let mut c = with(depthwise_case(3, 40, 40, 3, 1));
        c.relu = Relu::All;
        c.residual = true;
        c.post = true;
        check(c);
        check(with(depthwise_case(4, 80, 80, 3, 2)));
        // The fused flat epilogue (AVX-512, no residual): 5x5 at 7x7 (weights broadcast per tap)
        // and 3x3 at 14x14 (weights in registers), with an affine and ReLU before the activation.
        let mut c = with(depthwise_case(19, 7, 7, 5, 1));
        c.affine = true;
        check(c);
        let mut c = with(depthwise_case(18, 14, 14, 3, 1));
        c.relu = Relu::All;
        check(c);
        check(with(depthwise_case(17, 13, 13, 5, 2)));
        // Deferred activations over groups of channels (AVX-512): 600 channels of 7x7 are 32
        // items of 19 (the last 11), groups of 16 and rests of 3 and 11; 97 of 14x14, items of 4
        // (the last 1), groups of 4; 70 of 13x13 -> 7x7, items and groups of 3, the last item 1.
        check(with(depthwise_case(600, 7, 7, 3, 1)));
        check(with(depthwise_case(97, 14, 14, 5, 1)));
        let mut c = with(depthwise_case(70, 13, 13, 5, 2));
        c.relu = Relu::All;
        check(c);
    }
}

/// A NaN reaching a fused activation stays NaN, as in PyTorch (`clamp`, `hardswish` and
/// `sigmoid` of NaN are NaN), on every path that applies it: a 1x1 GEMM (tiles), a 3x3 row panel,
/// Winograd and chanvec, every ISA of the host. One input pixel is NaN; every output reading it
/// must be NaN, and (but for Winograd, whose transforms spread it over tiles) the others finite.
#[test]
fn fused_activations_keep_nan() {
    use crate::ir::WinogradTile::F2;
    let activations = [
        Activation::Clamp { min: Some(0.0), max: Some(6.0) },
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Hardsigmoid,
        Activation::Hardswish,
    ];
    for a in activations {
        for (kind, k) in [
            (ConvKind::Gemm1x1, 1),
            (ConvKind::Direct, 3),
            (ConvKind::Winograd(F2), 3),
            (ConvKind::ChanVec, 1),
        ] {
            let op =
                FusedConv { relu: Relu::None, activation: Some(a), ..FusedConv::square(8, 32, k, 1, kind) };
            let (cin, hw) = (8, 6);
            let spec = ConvSpec::contiguous(op.clone(), [cin, hw, hw]).unwrap();
            let mut rng = Rng::new(7);
            let mut weights: Vec<Vec<f32>> =
                Op::FusedConv(FusedConv { kind: ConvKind::Direct, ..op.clone() })
                    .weights()
                    .iter()
                    .map(|w| rng.vec(w.shape.iter().product()))
                    .collect();
            if let ConvKind::Winograd(tile) = kind {
                let g = crate::ir::WeightExpr::param("w", vec![32, cin, 3, 3]);
                let u = crate::ir::WeightExpr::Winograd { x: Box::new(g), tile };
                weights[0] = u.eval(&|_| Some(&weights[0][..])).unwrap();
            }
            let wrefs: Vec<&[f32]> = weights.iter().map(|w| w.as_slice()).collect();
            let packed = pack_conv_weights(&spec, &wrefs).unwrap();
            let mut x = rng.vec(spec.in_stride);
            let nan_pixel = 2 * hw + 3;
            x[nan_pixel] = f32::NAN; // channel 0, row 2, column 3
            for isa in host_isas() {
                let kernel = compile_for(KernelSpec::Conv(spec.clone()), isa);
                let got = run(&kernel, 1, &[&x], &[&packed], spec.out_stride);
                for co in 0..32 {
                    for p in 0..hw * hw {
                        let v = got[co * hw * hw + p];
                        // 1x1: only the NaN pixel; 3x3: its 3x3 neighbourhood reads it.
                        let (dy, dx) = ((p / hw).abs_diff(2), (p % hw).abs_diff(3));
                        let reads_nan = if k == 1 { p == nan_pixel } else { dy <= 1 && dx <= 1 };
                        let what = format!("{isa} {kind:?} {a:?}: channel {co} pixel {p}: {v}");
                        if matches!(kind, ConvKind::Winograd(_)) {
                            // The transforms spread a NaN over whole tiles: only check its reach.
                            assert!(!reads_nan || v.is_nan(), "{what}");
                        } else {
                            assert_eq!(v.is_nan(), reads_nan, "{what}");
                        }
                    }
                }
            }
        }
    }
}

/// The fused sigmoid and SiLU are as accurate as the separate kernel's (relative error under
/// `4e-7` against f64 on 2^16 points of `[-87, 87]` and every float near 0; see
/// `eltwise::sigmoid_and_silu_match_f64`) and give PyTorch's values at the extremes, on every ISA
/// of the host and both epilogues that apply them: a 1x1 GEMM tile over one channel with weight
/// 1 (the output is `act(x)` exactly), and depthwise convolutions with a 3x3 window that is 1
/// at the centre (finite `x` only, as the zero taps multiply the neighbours): the row routine, and
/// 7x7 channels (the flat path, whose AVX-512 activation runs deferred over several channels). The AVX-512 code is
/// not the AVX2 sequence (see `tile::x86::Gen::sigmoid_avx512`), so this checks it on its own.
#[test]
fn fused_sigmoid_and_silu_match_f64() {
    let sigmoid = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
    let n = 1 << 16;
    let mut sweep: Vec<f32> = (0..n).map(|i| -87.0 + 174.0 * i as f32 / n as f32).collect();
    sweep.extend((0..2048).map(|i| (i as f32 - 1024.0) * 1e-4));
    let extremes =
        [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -200.0, -100.0, -88.0, 88.0, 200.0, -0.0, 0.0];
    for act in [Activation::Sigmoid, Activation::Silu] {
        let want = |x: f32| match act {
            Activation::Silu => x as f64 * sigmoid(x),
            _ => sigmoid(x),
        };
        // The last case: channels of 7x7 (the flat path; on AVX-512 the activation deferred to
        // runs over several channels' outputs).
        for (kind, k, small) in
            [(ConvKind::Gemm1x1, 1, false), (ConvKind::Depthwise, 3, false), (ConvKind::Depthwise, 3, true)]
        {
            let mut x = sweep.clone();
            if kind == ConvKind::Gemm1x1 {
                x.extend(extremes);
            }
            // One channel of 16 rows, wide enough for every value, or 7x7 channels.
            let (c, h, w) = if small { (x.len().div_ceil(49), 7, 7) } else { (1, 16, x.len().div_ceil(16)) };
            x.resize(c * h * w, 0.5);
            let op = FusedConv {
                relu: Relu::None,
                activation: Some(act),
                conv: Conv2d {
                    groups: if small { c } else { 1 },
                    bias: false,
                    ..FusedConv::square(c, c, k, 1, kind).conv
                },
                ..FusedConv::square(c, c, k, 1, kind)
            };
            let spec = ConvSpec::contiguous(op, [c, h, w]).unwrap();
            let mut weights = vec![0.0f32; c * k * k];
            for ch in 0..c {
                weights[ch * k * k + k * k / 2] = 1.0;
            }
            let packed = pack_conv_weights(&spec, &[&weights]).unwrap();
            for isa in host_isas() {
                let kernel = compile_for(KernelSpec::Conv(spec.clone()), isa);
                let got = run(&kernel, 1, &[&x], &[&packed], spec.out_stride);
                for (&g, &xi) in got.iter().zip(&x) {
                    let (g, w) = (g as f64, want(xi));
                    let ok = (w.is_nan() && g.is_nan())
                        || g == w
                        || (g - w).abs() < 4e-7 * w.abs()
                        // Below -87.3 the result is 0 or subnormal: an absolute error.
                        || (xi < -87.0 && (g - w).abs() < 1.3e-38 * xi.abs().max(1.0) as f64);
                    assert!(ok, "{act:?} {isa} {kind:?}: x = {xi}: got {g}, want {w}");
                }
            }
        }
    }
}

/// Streamed outputs (`gemm1x1` at large outputs, forced here by a 1-byte threshold): the same
/// values as the reference whether the run-time condition holds (output aligned to the vector and
/// not the residual: `vmovntps`) or not (a misaligned output base; in place, where the output
/// buffer holds the residual on entry), on every ISA, over K blocks and row and column tails.
#[test]
fn gemm_1x1_streamed_outputs() {
    use crate::codegen::AlignedF32;
    // 48, 64 and 128 pixels: whole vectors on every ISA (a condition of streaming); 29 rows: a
    // tail tile; 300 channels: two K blocks; 40 -> 12 at 16x8 reads B in place on avx2 and avx512.
    for (cin, cout, hw) in [(13, 29, [8, 6]), (300, 14, [8, 8]), (40, 12, [16, 8])] {
        let op = FusedConv {
            residual: true,
            relu: Relu::First(9),
            ..FusedConv::square(cin, cout, 1, 1, ConvKind::Gemm1x1)
        };
        let mut spec = ConvSpec::contiguous(op.clone(), [cin, hw[0], hw[1]]).unwrap();
        spec.stream_bytes = Some(1);
        let mut rng = Rng::new(cin as u64 * 31 + cout as u64);
        let weights: Vec<Vec<f32>> =
            Op::FusedConv(op.clone()).weights().iter().map(|w| rng.vec(w.shape.iter().product())).collect();
        let wrefs: Vec<&[f32]> = weights.iter().map(|w| w.as_slice()).collect();
        let packed = pack_conv_weights(&spec, &wrefs).unwrap();
        for isa in host_isas() {
            let plan = ConvPlan::new(&spec, isa).unwrap();
            assert_eq!(plan.stream_from.is_some(), isa != Isa::Sse, "{isa}: streaming eligibility");
            let k = compile_for(KernelSpec::Conv(spec.clone()), isa);
            let kernel = &k.kernels[0];
            if isa != Isa::Sse {
                assert!(
                    kernel.tiles().iter().any(|t| t.name.contains("streamed")),
                    "{isa}: no streamed tile among {:?}",
                    kernel.tiles().iter().map(|t| &t.name).collect::<Vec<_>>()
                );
            }
            for n in [1, 3] {
                let len = n * spec.out_stride;
                let x = rng.vec(n * spec.in_stride);
                let res = rng.vec(len);
                let (want, mag) = reference(&spec, n, &x, Some(&res), None, &wrefs);
                // (output offset in a 64-byte aligned buffer, in place)
                for (offset, in_place) in [(0, false), (4, false), (0, true)] {
                    let mut out = AlignedF32::from_slice(&vec![f32::NAN; len + offset]);
                    if in_place {
                        out.as_mut_slice()[offset..].copy_from_slice(&res);
                    }
                    let out_slice = &mut out.as_mut_slice()[offset..];
                    let res_ptr = if in_place { out_slice.as_ptr() } else { res.as_ptr() };
                    call_in_chunks(&k, n, vec![x.as_ptr(), res_ptr], &[&packed], out_slice);
                    let what = format!("{isa} {cin}->{cout} n={n} offset {offset} in place {in_place}");
                    assert_close_scaled(&what, &out.as_slice()[offset..], &want, &mag, 1.0);
                }
            }
        }
    }
}

/// One thread's chunks of a kernel share set-up work through the caller's memo
/// ([`KernelArgs::setup`]): after a call has filled and transformed a Winograd block, a later call
/// of the same thread with the same memo runs the block's other chunks from the scratch without
/// reading the input again (here replaced by NaN), and gets exactly the outputs of one uninterrupted
/// call; with the memo reset to -1 it reads the input anew (and the NaN shows).
#[test]
fn chunks_on_one_thread_share_set_up_through_the_memo() {
    let spec = ConvSpec::contiguous(
        FusedConv::square(40, 64, 3, 1, ConvKind::Winograd(crate::ir::WinogradTile::F4)),
        [40, 14, 14],
    )
    .unwrap();
    let c = &spec.op.conv;
    let w: Vec<f32> =
        (0..c.out_channels * c.in_channels * 9).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect();
    let g = crate::ir::WeightExpr::param("w", vec![c.out_channels, c.in_channels, 3, 3]);
    let u = crate::ir::WeightExpr::Winograd { x: Box::new(g), tile: crate::ir::WinogradTile::F4 }
        .eval(&|_| Some(&w[..]))
        .unwrap();
    let bias = vec![0.25f32; c.out_channels];
    let packed = pack_conv_weights(&spec, &[&u, &bias]).unwrap();
    let x: Vec<f32> = (0..spec.in_stride).map(|i| ((i * 13) % 17) as f32 / 17.0).collect();
    for isa in host_isas() {
        let k = compile_for(KernelSpec::Conv(spec.clone()), isa);
        let kernel = &k.kernels[0];
        let items = kernel.work_items(1);
        assert!(items >= 2, "{isa}: one block of several chunks");
        let mut scratch = vec![0f32; kernel.scratch_floats()];
        let run = |x: &[f32],
                   out: &mut [f32],
                   scratch: &mut [f32],
                   setup: *mut i64,
                   range: std::ops::Range<u64>| {
            let (ins, ws) = ([x.as_ptr()], [packed.as_ptr()]);
            let args = KernelArgs {
                inputs: &ins,
                output: out.as_mut_ptr(),
                weights: &ws,
                scratch: scratch.as_mut_ptr(),
                batch: 1,
                setup,
            };
            // SAFETY: buffers sized for the spec at batch 1; the scratch is this test's alone.
            unsafe { kernel.call(&args, range.start, range.end) };
        };
        let mut whole = vec![0f32; spec.out_stride];
        run(&x, &mut whole, &mut scratch, std::ptr::null_mut(), 0..items);
        let mut memo = -1i64;
        let mut out = vec![0f32; spec.out_stride];
        run(&x, &mut out, &mut scratch, &mut memo, 0..1);
        assert_ne!(memo, -1, "{isa}: the first call records its set-up");
        // The first block's other chunks from the memo, with the input poisoned; the other blocks
        // from the input again.
        let chunks = ConvPlan::new(&spec, isa).unwrap().chunks as u64;
        assert!(chunks >= 2, "{isa}: blocks of several chunks");
        let poisoned = vec![f32::NAN; x.len()];
        run(&poisoned, &mut out, &mut scratch, &mut memo, 1..chunks);
        run(&x, &mut out, &mut scratch, &mut memo, chunks..items);
        assert!(
            out.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{isa}: chunks from the memo"
        );
        memo = -1;
        run(&poisoned, &mut out, &mut scratch, &mut memo, 1..2);
        assert!(out.iter().any(|v| v.is_nan()), "{isa}: a reset memo fills and transforms anew");
    }
}
