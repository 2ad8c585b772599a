//! Elementwise kernels: add, mul, ReLU and the other activations, affine, per-channel scaling,
//! concatenation copies, channel shuffle.

use super::*;
use crate::codegen::eltwise::CHUNK;
use crate::codegen::{EltwiseOp, EltwiseSpec};
use crate::ir::Activation;

fn spec(op: EltwiseOp, len: usize, inputs: usize) -> EltwiseSpec {
    EltwiseSpec { op, len, in_strides: (0..inputs).map(|i| len + 1 + i).collect(), out_stride: len + 3 }
}

fn run_spec(spec: &EltwiseSpec, n: usize, inputs: &[Vec<f32>], weights: &[&[f32]]) -> Vec<f32> {
    let k = compile_one(KernelSpec::Eltwise(spec.clone()));
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    run(&k, n, &ins, weights, n * spec.out_stride)
}

fn check_each(spec: &EltwiseSpec, n: usize, got: &[f32], f: impl Fn(usize, usize) -> f64) {
    for s in 0..n {
        let at = s * spec.out_stride;
        let want: Vec<f64> = (0..spec.len).map(|i| f(s, i)).collect();
        let mag: Vec<f64> = want.iter().map(|w| w.abs()).collect();
        assert_close(&format!("{:?} n={n} sample {s}", spec.op), &got[at..at + spec.len], &want, &mag);
        assert!(got[at + spec.len..at + spec.out_stride].iter().all(|v| v.is_nan()), "wrote past the value");
    }
}

#[test]
fn add_and_relu() {
    let mut rng = Rng::new(5);
    for len in [1, 3, 5, 8, 13, 100, CHUNK + 7, 2 * CHUNK] {
        for n in [1, 3] {
            let sp = spec(EltwiseOp::Add, len, 2);
            let a = rng.vec(n * sp.in_strides[0]);
            let b = rng.vec(n * sp.in_strides[1]);
            let got = run_spec(&sp, n, &[a.clone(), b.clone()], &[]);
            check_each(&sp, n, &got, |s, i| {
                a[s * sp.in_strides[0] + i] as f64 + b[s * sp.in_strides[1] + i] as f64
            });
            let sp = spec(EltwiseOp::Relu, len, 1);
            let a = rng.vec(n * sp.in_strides[0]);
            let got = run_spec(&sp, n, std::slice::from_ref(&a), &[]);
            check_each(&sp, n, &got, |s, i| (a[s * sp.in_strides[0] + i] as f64).max(0.0));
        }
    }
}

#[test]
fn affine() {
    let mut rng = Rng::new(9);
    for (channels, plane) in [(1, 1), (3, 5), (13, 9), (20, 1), (5, 49)] {
        for relu in [false, true] {
            let sp = spec(EltwiseOp::Affine { channels, plane, relu }, channels * plane, 1);
            let (scale, shift) = (rng.vec(channels), rng.vec(channels));
            for n in [1, 3] {
                let x = rng.vec(n * sp.in_strides[0]);
                let got = run_spec(&sp, n, std::slice::from_ref(&x), &[&scale, &shift]);
                check_each(&sp, n, &got, |s, i| {
                    let c = i / plane;
                    let v = x[s * sp.in_strides[0] + i] as f64 * scale[c] as f64 + shift[c] as f64;
                    if relu {
                        v.max(0.0)
                    } else {
                        v
                    }
                });
            }
        }
    }
}

#[test]
fn in_place_relu() {
    // Output and input are the same buffer (the memory plan reuses dying inputs).
    let sp = EltwiseSpec { op: EltwiseOp::Relu, len: 37, in_strides: vec![40], out_stride: 40 };
    let k = compile_one(KernelSpec::Eltwise(sp));
    let mut rng = Rng::new(3);
    let mut buf = rng.vec(80);
    let want: Vec<f32> = buf.iter().map(|v| v.max(0.0)).collect();
    let ins = [buf.as_ptr()];
    let args = KernelArgs {
        inputs: &ins,
        output: buf.as_mut_ptr(),
        weights: &[],
        scratch: std::ptr::null_mut(),
        batch: 2,
        setup: std::ptr::null_mut(),
    };
    // SAFETY: one buffer of 2 samples x 40 floats, read and written element by element.
    unsafe { k.kernels[0].call(&args, 0, k.kernels[0].work_items(2)) };
    for s in 0..2 {
        assert_eq!(&buf[s * 40..s * 40 + 37], &want[s * 40..s * 40 + 37]);
    }
}

#[test]
fn concat_copies() {
    let mut rng = Rng::new(11);
    let lens = vec![3, 16, 5];
    let len: usize = lens.iter().sum();
    let sp = EltwiseSpec {
        op: EltwiseOp::Concat { lens: lens.clone() },
        len,
        in_strides: vec![4, 16, 9],
        out_stride: len + 2,
    };
    for n in [1, 3] {
        let ins: Vec<Vec<f32>> = sp.in_strides.iter().map(|s| rng.vec(n * s)).collect();
        let got = run_spec(&sp, n, &ins, &[]);
        check_each(&sp, n, &got, |s, i| {
            let (k, off) = if i < 3 {
                (0, i)
            } else if i < 19 {
                (1, i - 3)
            } else {
                (2, i - 19)
            };
            ins[k][s * sp.in_strides[k] + off] as f64
        });
    }
}

#[test]
fn kernels_with_equal_specs_are_compiled_once_and_share_their_code() {
    let relu = KernelSpec::Eltwise(spec(EltwiseOp::Relu, 37, 1));
    let add = KernelSpec::Eltwise(spec(EltwiseOp::Add, 37, 2));
    let request = |name: &str, spec: &KernelSpec| KernelRequest { name: name.into(), spec: spec.clone() };
    let requests = [request("a", &relu), request("b", &add), request("c", &relu), request("d", &add)];
    let options = |keep_clif| CompileOptions { keep_clif, threads: Some(2), ..Default::default() };
    let k = compile(&requests, options(false)).unwrap();
    let names: Vec<&str> = k.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(k.kernels[0].entry() as usize, k.kernels[2].entry() as usize);
    assert_eq!(k.kernels[1].entry() as usize, k.kernels[3].entry() as usize);
    assert_ne!(k.kernels[0].entry() as usize, k.kernels[1].entry() as usize);
    // Dumps name every node: with CLIF kept, nothing is shared.
    let k = compile(&requests, options(true)).unwrap();
    assert_ne!(k.kernels[0].entry() as usize, k.kernels[2].entry() as usize);
}

/// PyTorch's f32 definitions, in f32 and in PyTorch's order for the piecewise-linear ones (which
/// the kernels must equal bit for bit), in f64 for sigmoid and SiLU.
fn activation_f64(act: Activation, x: f32) -> f64 {
    let clamp = |x: f32, lo: f32, hi: f32| {
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    };
    let sigmoid = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
    match act {
        Activation::Clamp { min, max } => {
            clamp(x, min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY)) as f64
        }
        Activation::Hardsigmoid => (clamp(x + 3.0, 0.0, 6.0) / 6.0) as f64,
        Activation::Hardswish => (x * clamp(x + 3.0, 0.0, 6.0) / 6.0) as f64,
        Activation::Sigmoid => sigmoid(x),
        Activation::Silu => x as f64 * sigmoid(x),
    }
}

const ACTIVATIONS: [Activation; 9] = [
    Activation::Clamp { min: Some(0.0), max: Some(6.0) },
    Activation::Clamp { min: Some(-1.0), max: Some(1.0) },
    Activation::Clamp { min: Some(-0.25), max: Some(0.5) },
    Activation::Clamp { min: Some(0.5), max: None },
    Activation::Clamp { min: None, max: Some(-0.75) },
    Activation::Sigmoid,
    Activation::Silu,
    Activation::Hardsigmoid,
    Activation::Hardswish,
];

/// Runs one activation kernel for `isa` on `x` (one sample).
fn activate_jit(act: Activation, isa: Isa, x: &[f32]) -> Vec<f32> {
    let sp = EltwiseSpec {
        op: EltwiseOp::Activation(act),
        len: x.len(),
        in_strides: vec![x.len()],
        out_stride: x.len(),
    };
    let k = compile_for(KernelSpec::Eltwise(sp), isa);
    run(&k, 1, &[x], &[], x.len())
}

#[test]
fn activations_match_pytorch_definitions_on_every_isa() {
    let mut rng = Rng::new(21);
    for isa in host_isas() {
        for act in ACTIVATIONS {
            for len in [1, 3, 7, 8, 13, 100, CHUNK + 5] {
                for n in [1, 2] {
                    let sp = spec(EltwiseOp::Activation(act), len, 1);
                    // Values in [-8, 8): every piece of every activation.
                    let x: Vec<f32> = rng.vec(n * sp.in_strides[0]).iter().map(|v| v * 8.0).collect();
                    let k = compile_for(KernelSpec::Eltwise(sp.clone()), isa);
                    let got = run(&k, n, &[&x], &[], n * sp.out_stride);
                    for s in 0..n {
                        for i in 0..len {
                            let (g, xi) = (got[s * sp.out_stride + i], x[s * sp.in_strides[0] + i]);
                            let w = activation_f64(act, xi);
                            match act {
                                Activation::Sigmoid | Activation::Silu => assert!(
                                    (g as f64 - w).abs() <= 4e-7 * w.abs().max(1e-30),
                                    "{act:?} {isa}: x = {xi}: got {g}, want {w}"
                                ),
                                _ => assert_eq!(g.to_bits(), (w as f32).to_bits(), "{act:?} {isa}: x = {xi}"),
                            }
                        }
                        let at = s * sp.out_stride;
                        assert!(
                            got[at + len..at + sp.out_stride].iter().all(|v| v.is_nan()),
                            "wrote past the value"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn activations_keep_nan_and_handle_infinities_and_extremes() {
    let x = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -200.0,
        -88.0,
        -87.0,
        87.0,
        200.0,
        -0.0,
        0.0,
        f32::MIN_POSITIVE,
    ];
    for isa in host_isas() {
        for act in ACTIVATIONS {
            let got = activate_jit(act, isa, &x);
            assert!(got[0].is_nan(), "{act:?} {isa}: NaN gave {}", got[0]);
            for (i, &xi) in x.iter().enumerate().skip(1) {
                let w = activation_f64(act, xi);
                let g = got[i] as f64;
                let ok = (w.is_nan() && g.is_nan())
                    || g == w
                    || (g - w).abs() <= 4e-7 * w.abs()
                    // Below -87.3, `exp` is 0: sigmoid is off by under 1.3e-38, SiLU by |x| times that.
                    || (g - w).abs() < 1.3e-38 * (xi.abs() as f64).max(1.0);
                assert!(ok, "{act:?} {isa}: x = {xi}: got {g}, want {w}");
            }
        }
    }
}

/// Measures the relative error of the sigmoid and SiLU kernels against f64 on 2^20 points of
/// `[-87, 87]` (evenly spaced, plus every float near 0) and asserts the bound the eltwise module
/// documents; `--nocapture` prints the measured maxima.
#[test]
fn sigmoid_and_silu_match_f64() {
    let n = 1 << 20;
    let mut x: Vec<f32> = (0..n).map(|i| -87.0 + 174.0 * i as f32 / n as f32).collect();
    x.extend((0..4096).map(|i| (i as f32 - 2048.0) * 1e-4));
    for isa in host_isas() {
        for act in [Activation::Sigmoid, Activation::Silu] {
            let got = activate_jit(act, isa, &x);
            let mut worst = (0.0f64, 0.0f32);
            for (&g, &xi) in got.iter().zip(&x) {
                let w = activation_f64(act, xi);
                if w != 0.0 {
                    let rel = (g as f64 - w).abs() / w.abs();
                    if rel > worst.0 {
                        worst = (rel, xi);
                    }
                }
            }
            eprintln!("{act:?} {isa}: max relative error {:.2e} at x = {}", worst.0, worst.1);
            assert!(worst.0 < 4e-7, "{act:?} {isa}: relative error {:.2e} at x = {}", worst.0, worst.1);
        }
    }
}

#[test]
fn products_equal_shapes_and_per_channel() {
    let mut rng = Rng::new(23);
    for isa in host_isas() {
        for len in [1, 5, 8, 37, CHUNK + 3] {
            let sp = spec(EltwiseOp::Mul, len, 2);
            let a = rng.vec(2 * sp.in_strides[0]);
            let b = rng.vec(2 * sp.in_strides[1]);
            let k = compile_for(KernelSpec::Eltwise(sp.clone()), isa);
            let got = run(&k, 2, &[&a, &b], &[], 2 * sp.out_stride);
            check_each(&sp, 2, &got, |s, i| {
                (a[s * sp.in_strides[0] + i] * b[s * sp.in_strides[1] + i]) as f64
            });
        }
        for (channels, plane) in [(1, 1), (3, 5), (17, 9), (40, 49), (8, 1)] {
            let len = channels * plane;
            let sp = EltwiseSpec {
                op: EltwiseOp::ScaleChannels { channels, plane },
                len,
                in_strides: vec![len + 1, channels + 2],
                out_stride: len + 3,
            };
            for n in [1, 3] {
                let x = rng.vec(n * sp.in_strides[0]);
                let f = rng.vec(n * sp.in_strides[1]);
                let k = compile_for(KernelSpec::Eltwise(sp.clone()), isa);
                let got = run(&k, n, &[&x, &f], &[], n * sp.out_stride);
                check_each(&sp, n, &got, |s, i| {
                    (x[s * sp.in_strides[0] + i] * f[s * sp.in_strides[1] + i / plane]) as f64
                });
            }
        }
    }
}

#[test]
fn channel_shuffle_moves_planes() {
    let mut rng = Rng::new(29);
    for isa in host_isas() {
        for (channels, plane, groups) in [(4, 1, 2), (6, 5, 3), (24, 9, 2), (40, 3, 4), (5, 7, 1), (7, 2, 7)]
        {
            let len = channels * plane;
            let sp = EltwiseSpec {
                op: EltwiseOp::Shuffle { channels, plane, groups },
                len,
                in_strides: vec![len + 2],
                out_stride: len + 1,
            };
            for n in [1, 3] {
                let x = rng.vec(n * sp.in_strides[0]);
                let k = compile_for(KernelSpec::Eltwise(sp.clone()), isa);
                let got = run(&k, n, &[&x], &[], n * sp.out_stride);
                let per = channels / groups;
                check_each(&sp, n, &got, |s, i| {
                    let (j, p) = (i / plane, i % plane);
                    let from = (j % groups) * per + j / groups;
                    x[s * sp.in_strides[0] + from * plane + p] as f64
                });
            }
        }
    }
}
