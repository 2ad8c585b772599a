//! [`Tensor`]: the owned, dense, row-major f32 array that flows in and out of the runtime.
//!
//! Shapes here include the batch dimension (`[N, C, H, W]` for feature maps, `[N, F]` for feature
//! vectors); the IR's shapes are per sample.

/// A dense row-major f32 tensor with its full shape (batch dimension first).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A borrowed dense row-major f32 tensor: a shape (batch dimension first) and its data, for
/// running a model on the caller's memory without a copy into a [`Tensor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// A view of `data` as `shape`; the data length must be the shape's element count.
    pub fn new(shape: &'a [usize], data: &'a [f32]) -> Result<TensorView<'a>, TensorError> {
        let expected = element_count(shape).ok_or_else(|| TensorError::Overflow { shape: shape.to_vec() })?;
        if expected != data.len() {
            return Err(TensorError::DataLength { shape: shape.to_vec(), expected, found: data.len() });
        }
        Ok(TensorView { shape, data })
    }

    /// The number of elements of one sample.
    pub fn sample_len(&self) -> usize {
        self.shape.get(1..).unwrap_or(&[]).iter().product()
    }

    /// The data of sample `n`.
    pub fn sample(&self, n: usize) -> &'a [f32] {
        let len = self.sample_len();
        &self.data[n * len..(n + 1) * len]
    }
}

impl<'a> From<&'a Tensor> for TensorView<'a> {
    fn from(t: &'a Tensor) -> TensorView<'a> {
        t.view()
    }
}

/// A shape and a data length that do not agree, or tensors that cannot be stacked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {} holds {expected} elements, but {found} values were given", Dims(.shape))]
    DataLength { shape: Vec<usize>, expected: usize, found: usize },
    #[error("shape {} overflows the address space", Dims(.shape))]
    Overflow { shape: Vec<usize> },
    #[error("cannot stack a batch of shape {} onto one of shape {}: the per-sample shapes differ", Dims(.found), Dims(.first))]
    Stack { first: Vec<usize>, found: Vec<usize> },
    #[error("cannot stack an empty list of tensors")]
    Empty,
}

/// Displays a shape as `[1, 3, 224, 224]` (the compiler's, so messages print shapes one way).
pub use netc_compiler::ir::shape::Dims;

/// The number of elements of a shape, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

impl Tensor {
    /// A tensor from its shape and data; the data length must be the shape's element count.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape).ok_or_else(|| TensorError::Overflow { shape: shape.clone() })?;
        if expected != data.len() {
            return Err(TensorError::DataLength { shape, expected, found: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros. Panics if the element count overflows (shapes come from the IR, which
    /// bounds them).
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = element_count(&shape).expect("tensor size overflows");
        Tensor { shape, data: vec![0.0; n] }
    }

    /// A borrowed view of the tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView { shape: &self.shape, data: &self.data }
    }

    /// The batch size: the first dimension (1 for a scalar).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The shape without the batch dimension.
    pub fn sample_shape(&self) -> &[usize] {
        self.shape.get(1..).unwrap_or(&[])
    }

    /// The number of elements of one sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// The data of sample `n`.
    pub fn sample(&self, n: usize) -> &[f32] {
        let len = self.sample_len();
        &self.data[n * len..(n + 1) * len]
    }

    /// Stacks batches along the first dimension: `[a, ...] + [b, ...] -> [a + b, ...]`.
    pub fn concat_batch(parts: Vec<Tensor>) -> Result<Tensor, TensorError> {
        let mut parts = parts.into_iter();
        let mut out = parts.next().ok_or(TensorError::Empty)?;
        for t in parts {
            if t.shape.is_empty() || out.shape.is_empty() || t.sample_shape() != out.sample_shape() {
                return Err(TensorError::Stack { first: out.shape, found: t.shape });
            }
            out.shape[0] += t.shape[0];
            out.data.extend_from_slice(&t.data);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_data_length() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err.to_string(), "shape [2, 3] holds 6 elements, but 5 values were given");
    }

    #[test]
    fn concat_batch_stacks_samples() {
        let a = Tensor::new(vec![1, 2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::new(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let c = Tensor::concat_batch(vec![a, b]).unwrap();
        assert_eq!(c.shape, vec![3, 2]);
        assert_eq!(c.sample(2), &[5.0, 6.0]);
        let d = Tensor::new(vec![1, 3], vec![0.0; 3]).unwrap();
        assert!(Tensor::concat_batch(vec![c, d]).is_err());
    }
}
