//! Feature-vector ops: `Linear` (`y = W x + b`, `W` is `[out, in]`) and softmax, in f64.

use super::parallel::split;
use crate::tensor::Tensor;

/// `x`: `[N, in]`; `weight`: `[out, in]`. Each weight row is read once for the whole batch; output
/// features are computed on `threads` threads.
pub fn linear(
    x: &Tensor,
    weight: &[f32],
    bias: Option<&[f32]>,
    out_features: usize,
    threads: usize,
) -> Tensor {
    let (n, inf) = (x.shape[0], x.shape[1]);
    // Per thread: a block of output features, laid out [feature][sample].
    let blocks = split(out_features, threads, |range| {
        let mut ys = Vec::with_capacity(range.len() * n);
        for o in range {
            let row = &weight[o * inf..][..inf];
            for b in 0..n {
                let input = &x.data[b * inf..][..inf];
                let dot: f64 = row.iter().zip(input).map(|(&w, &v)| f64::from(w) * f64::from(v)).sum();
                ys.push((dot + bias.map_or(0.0, |bias| f64::from(bias[o]))) as f32);
            }
        }
        ys
    });
    let mut y = Tensor::zeros(vec![n, out_features]);
    for (o, samples) in blocks.concat().chunks_exact(n).enumerate() {
        for (b, &v) in samples.iter().enumerate() {
            y.data[b * out_features + o] = v;
        }
    }
    y
}

/// Softmax over each sample's feature vector (max-subtracted, in f64).
pub fn softmax(x: &Tensor) -> Tensor {
    let mut y = x.clone();
    let len = x.sample_len();
    for row in y.data.chunks_exact_mut(len.max(1)) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (o, e) in row.iter_mut().zip(exps) {
            *o = (e / sum) as f32;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_is_w_x_plus_b_per_sample() {
        let x = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]).unwrap();
        let w = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let y = linear(&x, &w, Some(&[0.5, -0.5]), 2, 2);
        assert_eq!(y.shape, vec![2, 2]);
        assert_eq!(y.data, vec![1.5, 4.5, -0.5, 0.5]);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let x = Tensor::new(vec![1, 3], vec![1000.0, 1000.0, 0.0]).unwrap();
        let y = softmax(&x);
        assert_eq!(y.data, vec![0.5, 0.5, 0.0]);
    }
}
