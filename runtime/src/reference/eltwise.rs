//! Elementwise and data-movement ops: ReLU and the other activations, Add, Mul, channel Concat
//! and channel shuffle.
//!
//! The activations follow PyTorch's CPU definitions: the piecewise-linear ones (clamp, hardsigmoid,
//! hardswish) with the same f32 operations in the same order, so they are exact; sigmoid and SiLU
//! in f64 and rounded once, so they are within half an ulp of the true value.

use crate::tensor::Tensor;
use netc_compiler::ir::Activation;

/// In place: `max(x, 0)`, keeping NaN as NaN like `torch.relu`.
pub fn relu(x: &mut Tensor) {
    for v in &mut x.data {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// `min(max(x, lo), hi)` that keeps NaN (like `torch.clamp`, unlike `f32::clamp`'s ordering rules).
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// One activation of one value, PyTorch's definition (see the module documentation).
pub fn activate(a: Activation, x: f32) -> f32 {
    let sigmoid = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
    match a {
        Activation::Clamp { min, max } => {
            clamp(x, min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY))
        }
        Activation::Sigmoid => sigmoid(x) as f32,
        Activation::Silu => (x as f64 * sigmoid(x)) as f32,
        Activation::Hardsigmoid => clamp(x + 3.0, 0.0, 6.0) / 6.0,
        Activation::Hardswish => x * clamp(x + 3.0, 0.0, 6.0) / 6.0,
    }
}

/// In place: the activation of every element.
pub fn activation(x: &mut Tensor, a: Activation) {
    for v in &mut x.data {
        *v = activate(a, *v);
    }
}

/// `a * b` elementwise: equal shapes, or `b` one factor per channel of `a` (`[C, 1, 1]`), in f32.
pub fn mul(a: &Tensor, b: &Tensor) -> Tensor {
    let mut data = a.data.clone();
    if a.shape == b.shape {
        data.iter_mut().zip(&b.data).for_each(|(x, y)| *x *= y);
    } else {
        let n = a.shape[0];
        let c = b.sample_len();
        let plane = a.sample_len() / c.max(1);
        for s in 0..n {
            let factors = b.sample(s);
            for (ch, run) in data[s * c * plane..(s + 1) * c * plane].chunks_mut(plane.max(1)).enumerate() {
                run.iter_mut().for_each(|x| *x *= factors[ch]);
            }
        }
    }
    Tensor { shape: a.shape.clone(), data }
}

/// ShuffleNet's channel shuffle: output channel `i * groups + k` is input channel
/// `k * (C / groups) + i`.
pub fn channel_shuffle(x: &Tensor, groups: usize) -> Tensor {
    let (n, c) = (x.shape[0], x.shape[1]);
    let plane = x.sample_len() / c.max(1);
    let per = c / groups.max(1);
    let mut data = Vec::with_capacity(x.data.len());
    for s in 0..n {
        let sample = x.sample(s);
        for j in 0..c {
            let src = (j % groups) * per + j / groups;
            data.extend_from_slice(&sample[src * plane..(src + 1) * plane]);
        }
    }
    Tensor { shape: x.shape.clone(), data }
}

/// `a + b` elementwise (equal shapes), in f32 like PyTorch (a single correctly rounded addition).
pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    let data = a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect();
    Tensor { shape: a.shape.clone(), data }
}

/// Concatenation along the first per-sample axis (channels): per sample, the inputs' blocks in order.
pub fn concat(parts: &[&Tensor], out: &[usize]) -> Tensor {
    let n = parts[0].shape[0];
    let mut shape = vec![n];
    shape.extend_from_slice(out);
    let mut data = Vec::with_capacity(parts.iter().map(|t| t.data.len()).sum());
    for b in 0..n {
        for t in parts {
            data.extend_from_slice(t.sample(b));
        }
    }
    Tensor { shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_interleaves_per_sample() {
        let a = Tensor::new(vec![2, 1, 1, 1], vec![1.0, 2.0]).unwrap();
        let b = Tensor::new(vec![2, 2, 1, 1], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let y = concat(&[&a, &b], &[3, 1, 1]);
        assert_eq!(y.shape, vec![2, 3, 1, 1]);
        assert_eq!(y.data, vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    }

    /// PyTorch 2's values at fixed points, printed by `tests/golden/pytorch/activation_points.py`:
    /// the piecewise-linear activations equal them bit for bit (signed zeros included), sigmoid and
    /// SiLU within 2e-7 relative (PyTorch's vectorised `exp` against our correctly rounded one).
    #[test]
    fn activations_equal_pytorch_at_fixed_points() {
        const X: [f32; 15] =
            [-100.0, -20.0, -5.5, -3.0, -2.9, -1.0, -0.25, 0.0, 0.3, 1.0, 2.5, 3.0, 4.0, 7.0, 30.0];
        let table: [(Activation, [f64; 15]); 8] = [
            (
                Activation::Sigmoid,
                [
                    0.0,
                    2.06115369216775e-09,
                    0.00407013762742281,
                    0.04742587357759476,
                    0.052153561264276505,
                    0.2689414322376251,
                    0.43782350420951843,
                    0.5,
                    0.5744425058364868,
                    0.7310585975646973,
                    0.9241418242454529,
                    0.9525741338729858,
                    0.9820137619972229,
                    0.9990890026092529,
                    1.0,
                ],
            ),
            (
                Activation::Silu,
                [
                    -0.0,
                    -4.1223074731533416e-08,
                    -0.02238575741648674,
                    -0.14227761328220367,
                    -0.1512453258037567,
                    -0.2689414322376251,
                    -0.10945587605237961,
                    0.0,
                    0.172332763671875,
                    0.7310585975646973,
                    2.310354471206665,
                    2.857722520828247,
                    3.9280550479888916,
                    6.993622779846191,
                    30.0,
                ],
            ),
            (
                Activation::Hardsigmoid,
                [
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.016666650772094727,
                    0.3333333432674408,
                    0.4583333432674408,
                    0.5,
                    0.550000011920929,
                    0.6666666865348816,
                    0.9166666865348816,
                    1.0,
                    1.0,
                    1.0,
                    1.0,
                ],
            ),
            (
                Activation::Hardswish,
                [
                    -0.0,
                    -0.0,
                    -0.0,
                    -0.0,
                    -0.04833328723907471,
                    -0.3333333432674408,
                    -0.1145833358168602,
                    0.0,
                    0.16500000655651093,
                    0.6666666865348816,
                    2.2916667461395264,
                    3.0,
                    4.0,
                    7.0,
                    30.0,
                ],
            ),
            (
                Activation::Clamp { min: Some(0.0), max: Some(6.0) },
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.30000001192092896, 1.0, 2.5, 3.0, 4.0, 6.0, 6.0],
            ),
            (
                Activation::Clamp { min: Some(-1.0), max: Some(1.0) },
                [
                    -1.0,
                    -1.0,
                    -1.0,
                    -1.0,
                    -1.0,
                    -1.0,
                    -0.25,
                    0.0,
                    0.30000001192092896,
                    1.0,
                    1.0,
                    1.0,
                    1.0,
                    1.0,
                    1.0,
                ],
            ),
            (
                Activation::Clamp { min: Some(0.5), max: None },
                [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 2.5, 3.0, 4.0, 7.0, 30.0],
            ),
            (
                Activation::Clamp { min: None, max: Some(-0.75) },
                [
                    -100.0,
                    -20.0,
                    -5.5,
                    -3.0,
                    -2.9000000953674316,
                    -1.0,
                    -0.75,
                    -0.75,
                    -0.75,
                    -0.75,
                    -0.75,
                    -0.75,
                    -0.75,
                    -0.75,
                    -0.75,
                ],
            ),
        ];
        for (act, want) in table {
            for (&x, &w) in X.iter().zip(&want) {
                let got = activate(act, x);
                match act {
                    Activation::Sigmoid | Activation::Silu => assert!(
                        (got as f64 - w).abs() <= 2e-7 * w.abs() + 1e-40,
                        "{act:?}({x}) = {got}, PyTorch {w}"
                    ),
                    _ => assert_eq!(got.to_bits(), (w as f32).to_bits(), "{act:?}({x}) = {got}, PyTorch {w}"),
                }
            }
            assert!(activate(act, f32::NAN).is_nan(), "{act:?} keeps NaN");
        }
    }

    #[test]
    fn products_and_shuffles() {
        let x = Tensor::new(vec![1, 4, 1, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        let s = Tensor::new(vec![1, 4, 1, 1], vec![1.0, -1.0, 0.5, 2.0]).unwrap();
        assert_eq!(mul(&x, &s).data, [0.0, 1.0, -2.0, -3.0, 2.0, 2.5, 12.0, 14.0]);
        assert_eq!(mul(&x, &x).data, [0.0, 1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0]);
        // Channels [0 1 | 2 3] in 2 groups become [0 2 1 3].
        assert_eq!(channel_shuffle(&x, 2).data, [0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(channel_shuffle(&x, 1).data, x.data);
    }

    #[test]
    fn relu_clamps_negatives_and_keeps_nan() {
        let mut x = Tensor::new(vec![1, 3], vec![-1.0, 2.0, f32::NAN]).unwrap();
        relu(&mut x);
        assert_eq!(x.data[..2], [0.0, 2.0]);
        assert!(x.data[2].is_nan());
    }
}
