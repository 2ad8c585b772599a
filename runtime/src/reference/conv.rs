//! Convolution with PyTorch's `Conv2d` semantics: cross-correlation, zero padding, stride, dilation,
//! groups, optional bias. Direct loops with f64 accumulators.
//!
//! Loop order, for one output plane `(n, co)`: for each input channel `ci` of the group and each kernel
//! tap `(ky, kx)`, add `w[co, ci, ky, kx] * x[n, ci, iy, ix]` to every output pixel whose input pixel
//! lies inside the image. The taps that would read padding are simply skipped, and the innermost loop
//! runs along an input row (contiguous for stride 1), which keeps it cache friendly.

use super::parallel::split;
use crate::tensor::Tensor;
use netc_compiler::ir::Conv2d;
use std::ops::Range;

/// The output positions `o` in `0..out_len` whose input index `o * stride + offset - pad` lies in
/// `0..in_len` (`offset` is the kernel tap times the dilation).
pub(crate) fn valid(out_len: usize, in_len: usize, stride: usize, offset: usize, pad: usize) -> Range<usize> {
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if in_len + pad > offset { (in_len + pad - offset - 1) / stride + 1 } else { 0 };
    let hi = hi.min(out_len);
    lo.min(hi)..hi
}

/// `x`: `[N, Cin, H, W]`; `weight`: `[Cout, Cin / groups, KH, KW]`; `out`: the per-sample output shape
/// `[Cout, OH, OW]` from shape inference. Output planes are computed on `threads` threads.
pub fn conv2d(
    x: &Tensor,
    p: &Conv2d,
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &[usize],
    threads: usize,
) -> Tensor {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cout, oh, ow) = (out[0], out[1], out[2]);
    let (cin_g, cout_g) = (cin / p.groups, cout / p.groups);
    let ([kh, kw], [sy, sx], [dy, dx], [py, px]) = (p.kernel, p.stride, p.dilation, p.padding);
    let planes = split(n * cout, threads, |range| {
        let mut out = Vec::with_capacity(range.len() * oh * ow);
        let mut acc = vec![0f64; oh * ow];
        for plane in range {
            let (b, co) = (plane / cout, plane % cout);
            let group = co / cout_g;
            acc.fill(bias.map_or(0.0, |bias| f64::from(bias[co])));
            for ci in 0..cin_g {
                let input = &x.data[(b * cin + group * cin_g + ci) * h * w..][..h * w];
                let taps = &weight[(co * cin_g + ci) * kh * kw..][..kh * kw];
                for ky in 0..kh {
                    let rows = valid(oh, h, sy, ky * dy, py);
                    for kx in 0..kw {
                        let cols = valid(ow, w, sx, kx * dx, px);
                        let wv = f64::from(taps[ky * kw + kx]);
                        for oy in rows.clone() {
                            let iy = oy * sy + ky * dy - py;
                            let in_row = &input[iy * w..][..w];
                            let acc_row = &mut acc[oy * ow..][cols.clone()];
                            let ix0 = cols.start * sx + kx * dx - px;
                            if sx == 1 {
                                for (a, &v) in acc_row.iter_mut().zip(&in_row[ix0..]) {
                                    *a += wv * f64::from(v);
                                }
                            } else {
                                for (a, &v) in acc_row.iter_mut().zip(in_row[ix0..].iter().step_by(sx)) {
                                    *a += wv * f64::from(v);
                                }
                            }
                        }
                    }
                }
            }
            out.extend(acc.iter().map(|&v| v as f32));
        }
        out
    });
    Tensor { shape: vec![n, cout, oh, ow], data: planes.concat() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges_match_brute_force() {
        for out_len in 1..6 {
            for in_len in 1..8 {
                for stride in 1..4 {
                    for offset in 0..6 {
                        for pad in 0..4 {
                            let expected: Vec<usize> = (0..out_len)
                                .filter(|&o| {
                                    let i = (o * stride + offset) as i64 - pad as i64;
                                    i >= 0 && i < in_len as i64
                                })
                                .collect();
                            let got: Vec<usize> = valid(out_len, in_len, stride, offset, pad).collect();
                            assert_eq!(
                                got, expected,
                                "out {out_len} in {in_len} s {stride} off {offset} pad {pad}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The convolution written as its definition, one output element at a time.
    fn naive(x: &Tensor, p: &Conv2d, weight: &[f32], bias: Option<&[f32]>, out: &[usize]) -> Vec<f32> {
        let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let (cin_g, cout_g) = (cin / p.groups, out[0] / p.groups);
        let mut y = Vec::new();
        for b in 0..n {
            for co in 0..out[0] {
                for oy in 0..out[1] {
                    for ox in 0..out[2] {
                        let mut s = bias.map_or(0.0, |b| f64::from(b[co]));
                        for ci in 0..cin_g {
                            for ky in 0..p.kernel[0] {
                                for kx in 0..p.kernel[1] {
                                    let iy =
                                        (oy * p.stride[0] + ky * p.dilation[0]) as i64 - p.padding[0] as i64;
                                    let ix =
                                        (ox * p.stride[1] + kx * p.dilation[1]) as i64 - p.padding[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    let c = (co / cout_g) * cin_g + ci;
                                    let xv = x.data[((b * cin + c) * h + iy as usize) * w + ix as usize];
                                    let wv =
                                        weight[((co * cin_g + ci) * p.kernel[0] + ky) * p.kernel[1] + kx];
                                    s += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y.push(s as f32);
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_with_stride_padding_dilation_and_groups() {
        let p = Conv2d {
            in_channels: 4,
            out_channels: 6,
            kernel: [3, 2],
            stride: [2, 1],
            padding: [2, 1],
            dilation: [2, 1],
            groups: 2,
            bias: true,
        };
        let (h, w) = (7, 5);
        let oh = (h + 2 * 2 - 2 * 2 - 1) / 2 + 1;
        let ow = (w + 2 - 1 - 1) + 1;
        let x = Tensor::new(vec![2, 4, h, w], crate::fill::uniform("x", 2 * 4 * h * w, -1.0, 1.0)).unwrap();
        let weight = crate::fill::uniform("w", 6 * 2 * 3 * 2, -1.0, 1.0);
        let bias = crate::fill::uniform("b", 6, -1.0, 1.0);
        let out = [6, oh, ow];
        let y = conv2d(&x, &p, &weight, Some(&bias), &out, 3);
        assert_eq!(y.shape, vec![2, 6, oh, ow]);
        assert_eq!(y.data, naive(&x, &p, &weight, Some(&bias), &out));
    }
}
