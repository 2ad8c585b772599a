//! The optimiser's ops, executed as the compositions they stand for: a fused conv is the conv
//! followed by its epilogue steps in order (and preceded by its prologue), a fused linear is the
//! linear and its ReLU, an affine is `x * scale + shift` per channel, a slice copies channels.
//! Written step by step from the definitions in `netc_compiler::ir::op`, so the reference checks
//! that every rewrite computes what the graph it replaced computed.

use crate::tensor::Tensor;
use netc_compiler::ir::{ChannelSlice, Relu};

/// `y[n, c, ...] = f(c, x[n, c, ...])` in place, for a tensor `[N, C, ...]`.
fn per_channel(x: &mut Tensor, f: impl Fn(usize, f32) -> f32) {
    let channels = x.shape[1];
    let plane: usize = x.shape[2..].iter().product();
    for (i, chunk) in x.data.chunks_mut(plane.max(1)).enumerate() {
        let c = i % channels;
        for v in chunk {
            *v = f(c, *v);
        }
    }
}

/// In place: `x * scale[c] + shift[c]` (f32 multiply then add, like PyTorch's eval BatchNorm up to
/// rounding), then ReLU on the first `relu_channels` channels.
pub fn affine(x: &mut Tensor, scale: &[f32], shift: &[f32]) {
    per_channel(x, |c, v| v * scale[c] + shift[c]);
}

/// In place: ReLU on all channels or the first `n`.
pub fn relu(x: &mut Tensor, which: Relu) {
    let limit = match which {
        Relu::None => return,
        Relu::All => usize::MAX,
        Relu::First(n) => n,
    };
    per_channel(x, |c, v| if c < limit && v < 0.0 { 0.0 } else { v });
}

/// In place: `x += r` (equal shapes).
pub fn add_in_place(x: &mut Tensor, r: &Tensor) {
    for (a, b) in x.data.iter_mut().zip(&r.data) {
        *a += b;
    }
}

/// Channels `start .. start + len` of every sample.
pub fn slice(x: &Tensor, s: &ChannelSlice) -> Tensor {
    let plane: usize = x.shape[2..].iter().product();
    let mut shape = x.shape.clone();
    shape[1] = s.len;
    let mut data = Vec::with_capacity(x.shape[0] * s.len * plane);
    for n in 0..x.shape[0] {
        data.extend_from_slice(&x.sample(n)[s.start * plane..(s.start + s.len) * plane]);
    }
    Tensor { shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_steps_address_channels_of_every_sample() {
        let mut x = Tensor::new(vec![2, 2, 1, 2], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0]).unwrap();
        affine(&mut x, &[2.0, 1.0], &[0.0, 1.0]);
        assert_eq!(x.data, [2.0, -4.0, 4.0, -3.0, 10.0, -12.0, 8.0, -7.0]);
        relu(&mut x, Relu::First(1));
        assert_eq!(x.data, [2.0, 0.0, 4.0, -3.0, 10.0, 0.0, 8.0, -7.0]);
        let s = slice(&x, &ChannelSlice { start: 1, len: 1 });
        assert_eq!((s.shape, s.data), (vec![2, 1, 1, 2], vec![4.0, -3.0, 8.0, -7.0]));
    }
}
