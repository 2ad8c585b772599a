//! Softmax against the f64 definition.

use super::*;
use crate::codegen::SoftmaxSpec;

#[test]
fn softmax_lengths_and_ranges() {
    let mut rng = Rng::new(17);
    for (len, scale) in [(1, 1.0), (3, 5.0), (10, 30.0), (1000, 10.0), (37, 100.0)] {
        let spec = SoftmaxSpec { len, in_stride: len + 2, out_stride: len + 1 };
        let k = compile_one(KernelSpec::Softmax(spec.clone()));
        for n in [1, 3] {
            let x: Vec<f32> = rng.vec(n * spec.in_stride).iter().map(|v| v * scale).collect();
            let got = run(&k, n, &[&x], &[], n * spec.out_stride);
            for s in 0..n {
                let xs = &x[s * spec.in_stride..s * spec.in_stride + len];
                let m = xs.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                let e: Vec<f64> = xs.iter().map(|&v| (v as f64 - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let want: Vec<f64> = e.iter().map(|v| v / sum).collect();
                // exp is accurate to a few ulp, relative: budget 1e-5 of each value (and 1e-30 absolute).
                let at = s * spec.out_stride;
                for (i, (&g, &w)) in got[at..at + len].iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - w).abs() <= 1e-5 * w + 1e-30,
                        "softmax len {len} [{i}]: got {g}, want {w}"
                    );
                }
                assert!(got[at + len].is_nan(), "wrote past the value");
            }
        }
    }
}

#[test]
fn exp_polynomial_accuracy() {
    // exp through the kernel: softmax of [x, 0, -inf-like] pins exp(x) = y0 / y1.
    let spec = SoftmaxSpec { len: 2, in_stride: 2, out_stride: 2 };
    let k = compile_one(KernelSpec::Softmax(spec));
    let mut worst = 0f64;
    for i in 0..2000 {
        let x = -(i as f32) * 0.04;
        let got = run(&k, 1, &[&[x, 0.0]], &[], 2);
        let ratio = got[0] as f64 / got[1] as f64;
        let want = (x as f64).exp();
        worst = worst.max(((ratio - want) / want).abs());
    }
    assert!(worst < 1e-6, "exp relative error {worst:e}");
}
