//! Local response normalisation against PyTorch's definition.

use super::*;
use crate::codegen::LrnSpec;

fn check(channels: usize, plane: usize, size: usize, beta: f64) {
    let spec = LrnSpec {
        channels,
        plane,
        size,
        alpha: 1e-2,
        beta,
        k: 2.0,
        in_stride: channels * plane + 1,
        out_stride: channels * plane + 2,
    };
    let k = compile_one(KernelSpec::Lrn(spec.clone()));
    let mut rng = Rng::new((channels * plane + size) as u64);
    for n in [1, 3] {
        let x: Vec<f32> = rng.vec(n * spec.in_stride).iter().map(|v| v * 4.0).collect();
        let got = run(&k, n, &[&x], &[], n * spec.out_stride);
        for s in 0..n {
            let xs = &x[s * spec.in_stride..];
            let mut want = vec![0f64; channels * plane];
            for c in 0..channels {
                for p in 0..plane {
                    let lo = c.saturating_sub(size / 2);
                    let hi = (c + (size - 1) / 2 + 1).min(channels);
                    let sum: f64 = (lo..hi).map(|cc| (xs[cc * plane + p] as f64).powi(2)).sum();
                    let d = (2.0 + 1e-2 * sum / size as f64).powf(beta);
                    want[c * plane + p] = xs[c * plane + p] as f64 / d;
                }
            }
            let mag: Vec<f64> = want.iter().map(|w| w.abs() * 4.0).collect();
            let at = s * spec.out_stride;
            assert_close(&format!("lrn {spec:?} n={n}"), &got[at..at + channels * plane], &want, &mag);
        }
    }
}

#[test]
fn lrn_shapes_and_exponents() {
    check(5, 9, 5, 0.75);
    check(13, 3, 5, 0.75);
    check(3, 1, 2, 0.5);
    check(7, 1030, 3, 1.0);
    check(6, 11, 4, 0.6);
}
