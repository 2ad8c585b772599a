//! Elementwise and data-movement ops: ReLU, Add, channel Concat.

use crate::tensor::Tensor;

/// In place: `max(x, 0)`, keeping NaN as NaN like `torch.relu`.
pub fn relu(x: &mut Tensor) {
    for v in &mut x.data {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
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

    #[test]
    fn relu_clamps_negatives_and_keeps_nan() {
        let mut x = Tensor::new(vec![1, 3], vec![-1.0, 2.0, f32::NAN]).unwrap();
        relu(&mut x);
        assert_eq!(x.data[..2], [0.0, 2.0]);
        assert!(x.data[2].is_nan());
    }
}
