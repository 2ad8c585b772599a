//! Normalisations: BatchNorm at inference (running statistics) and PyTorch's `LocalResponseNorm`.

use crate::tensor::Tensor;
use netc_compiler::ir::{BatchNorm, Lrn};

/// In place: `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias` per channel (the first
/// per-sample axis), in f64.
pub fn batchnorm(x: &mut Tensor, p: &BatchNorm, weight: &[f32], bias: &[f32], mean: &[f32], var: &[f32]) {
    let c = x.shape[1];
    let spatial: usize = x.shape[2..].iter().product();
    let scale: Vec<f64> =
        (0..c).map(|ch| f64::from(weight[ch]) / (f64::from(var[ch]) + p.eps).sqrt()).collect();
    for (i, plane) in x.data.chunks_exact_mut(spatial.max(1)).enumerate() {
        let ch = i % c;
        let (m, s, b) = (f64::from(mean[ch]), scale[ch], f64::from(bias[ch]));
        for v in plane {
            *v = ((f64::from(*v) - m) * s + b) as f32;
        }
    }
}

/// `y_c = x_c / (k + alpha / size * sum_{c'} x_{c'}^2) ^ beta` over the channels
/// `c' in [c - size/2, c + (size-1)/2]` that exist (zero padding), as PyTorch computes it.
pub fn lrn(x: &Tensor, p: &Lrn) -> Tensor {
    let (n, c) = (x.shape[0], x.shape[1]);
    let spatial: usize = x.shape[2..].iter().product();
    let mut y = Tensor::zeros(x.shape.clone());
    let mut sum = vec![0f64; spatial];
    for b in 0..n {
        let sample = &x.data[b * c * spatial..][..c * spatial];
        for ch in 0..c {
            sum.fill(0.0);
            let lo = ch.saturating_sub(p.size / 2);
            let hi = (ch + (p.size - 1) / 2).min(c - 1);
            for other in lo..=hi {
                for (s, &v) in sum.iter_mut().zip(&sample[other * spatial..][..spatial]) {
                    *s += f64::from(v) * f64::from(v);
                }
            }
            let out = &mut y.data[(b * c + ch) * spatial..][..spatial];
            for ((o, &v), &s) in out.iter_mut().zip(&sample[ch * spatial..][..spatial]).zip(&sum) {
                let div = (p.k + p.alpha / p.size as f64 * s).powf(p.beta);
                *o = (f64::from(v) / div) as f32;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrn_window_is_asymmetric_for_even_sizes() {
        // size 2: channel c sums c-1 and c (PyTorch pads size/2 before, (size-1)/2 after).
        let x = Tensor::new(vec![1, 3, 1, 1], vec![1.0, 2.0, 3.0]).unwrap();
        let p = Lrn { size: 2, alpha: 2.0, beta: 1.0, k: 1.0 };
        let y = lrn(&x, &p);
        let expect = [1.0 / (1.0 + 1.0), 2.0 / (1.0 + 5.0), 3.0 / (1.0 + 13.0)];
        for (a, b) in y.data.iter().zip(expect) {
            assert!((f64::from(*a) - b).abs() < 1e-7);
        }
    }

    #[test]
    fn batchnorm_uses_running_statistics() {
        let mut x = Tensor::new(vec![1, 2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        batchnorm(
            &mut x,
            &BatchNorm { channels: 2, eps: 0.0 },
            &[2.0, 1.0],
            &[0.5, 0.0],
            &[1.0, 3.0],
            &[4.0, 1.0],
        );
        assert_eq!(x.data, vec![0.5, 1.5, 0.0, 1.0]);
    }
}
