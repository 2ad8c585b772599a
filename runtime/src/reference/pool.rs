//! Pooling with PyTorch's semantics: `MaxPool2d` (padding is -inf, dilation, ceil mode, NaN
//! propagates), `AvgPool2d` (ceil mode, `count_include_pad`) and `AdaptiveAvgPool2d`.
//! One window at a time, written as the definition; sums in f64.

use crate::tensor::Tensor;
use netc_compiler::ir::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};

/// `(N*C, H, W)` of a feature-map tensor and a zeroed output `[N, C, OH, OW]`.
fn planes(x: &Tensor, out: &[usize]) -> (usize, usize, usize, Tensor) {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    (n * c, h, w, Tensor::zeros(vec![n, c, out[1], out[2]]))
}

/// Max over each window; positions outside the input (padding, or past the end in ceil mode) are
/// skipped, which is what padding with -inf means.
pub fn maxpool(x: &Tensor, p: &MaxPool2d, out: &[usize]) -> Tensor {
    let (planes_n, h, w, mut y) = planes(x, out);
    let (oh, ow) = (out[1], out[2]);
    for plane in 0..planes_n {
        let input = &x.data[plane * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..p.kernel[0] {
                    let iy = (oy * p.stride[0] + ky * p.dilation[0]) as i64 - p.padding[0] as i64;
                    if iy < 0 || iy >= h as i64 {
                        continue;
                    }
                    for kx in 0..p.kernel[1] {
                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as i64 - p.padding[1] as i64;
                        if ix < 0 || ix >= w as i64 {
                            continue;
                        }
                        let v = input[iy as usize * w + ix as usize];
                        // PyTorch: `if val > max || isnan(val)`.
                        if v > m || v.is_nan() {
                            m = v;
                        }
                    }
                }
                y.data[(plane * oh + oy) * ow + ox] = m;
            }
        }
    }
    y
}

/// PyTorch's window bounds for average pooling along one axis: the window `[start, end)` clipped to
/// the input, and its length for the divisor with `count_include_pad`, which counts padding but not
/// the part of a ceil-mode window past the padded input:
/// `end = min(start + k, in + pad)`, `pool = end - start` measured before clipping to `[0, in)`.
fn avg_window(o: usize, k: usize, stride: usize, pad: usize, len: usize) -> (usize, usize, usize) {
    let start = (o * stride) as i64 - pad as i64;
    let end = (start + k as i64).min((len + pad) as i64);
    let pool = (end - start) as usize;
    let (start, end) = (start.max(0) as usize, end.min(len as i64).max(0) as usize);
    (start, end.max(start), pool)
}

/// Mean over each window (see [`avg_window`] for the divisor).
pub fn avgpool(x: &Tensor, p: &AvgPool2d, out: &[usize]) -> Tensor {
    let (planes_n, h, w, mut y) = planes(x, out);
    let (oh, ow) = (out[1], out[2]);
    for plane in 0..planes_n {
        let input = &x.data[plane * h * w..][..h * w];
        for oy in 0..oh {
            let (y0, y1, pool_h) = avg_window(oy, p.kernel[0], p.stride[0], p.padding[0], h);
            for ox in 0..ow {
                let (x0, x1, pool_w) = avg_window(ox, p.kernel[1], p.stride[1], p.padding[1], w);
                let mut sum = 0f64;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        sum += f64::from(input[iy * w + ix]);
                    }
                }
                let divisor = if p.count_include_pad { pool_h * pool_w } else { (y1 - y0) * (x1 - x0) };
                let mean = if divisor == 0 { 0.0 } else { sum / divisor as f64 };
                y.data[(plane * oh + oy) * ow + ox] = mean as f32;
            }
        }
    }
    y
}

/// Mean over PyTorch's adaptive windows: output `i` of `o` averages input `[floor(i*n/o), ceil((i+1)*n/o))`.
pub fn adaptive_avgpool(x: &Tensor, _p: &AdaptiveAvgPool2d, out: &[usize]) -> Tensor {
    let (planes_n, h, w, mut y) = planes(x, out);
    let (oh, ow) = (out[1], out[2]);
    let window = |i: usize, o: usize, n: usize| (i * n / o, ((i + 1) * n).div_ceil(o));
    for plane in 0..planes_n {
        let input = &x.data[plane * h * w..][..h * w];
        for oy in 0..oh {
            let (y0, y1) = window(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = window(ox, ow, w);
                let mut sum = 0f64;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        sum += f64::from(input[iy * w + ix]);
                    }
                }
                y.data[(plane * oh + oy) * ow + ox] = (sum / ((y1 - y0) * (x1 - x0)) as f64) as f32;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: usize, w: usize, v: Vec<f32>) -> Tensor {
        Tensor::new(vec![1, 1, h, w], v).unwrap()
    }

    #[test]
    fn avgpool_counts_padding_but_not_the_ceil_overhang() {
        // Input 1x3 (values 1,2,3), kernel 2, stride 2, pad 1, ceil mode -> output 2 wide (PyTorch):
        // window 0 = [pad, 1] -> (0 + 1) / 2; window 1 = [2, 3] -> 5 / 2.
        let x = t(1, 3, vec![1.0, 2.0, 3.0]);
        let p = AvgPool2d {
            kernel: [1, 2],
            stride: [1, 2],
            padding: [0, 1],
            ceil_mode: true,
            count_include_pad: true,
        };
        assert_eq!(avgpool(&x, &p, &[1, 1, 2]).data, vec![0.5, 2.5]);
        // Input 1x4, kernel 3, stride 2, pad 1, ceil -> 3 outputs; the last window starts at 3 and
        // runs past the padded input (4 + 1 = 5): it covers [3, 5) = one pixel and one pad -> /2.
        let x = t(1, 4, vec![1.0, 2.0, 3.0, 4.0]);
        let p = AvgPool2d {
            kernel: [1, 3],
            stride: [1, 2],
            padding: [0, 1],
            ceil_mode: true,
            count_include_pad: true,
        };
        assert_eq!(avgpool(&x, &p, &[1, 1, 3]).data, vec![3.0 / 3.0, 9.0 / 3.0, 4.0 / 2.0]);
        let p = AvgPool2d { count_include_pad: false, ..p };
        assert_eq!(avgpool(&x, &p, &[1, 1, 3]).data, vec![3.0 / 2.0, 9.0 / 3.0, 4.0 / 1.0]);
    }

    #[test]
    fn maxpool_ignores_padding_and_propagates_nan() {
        let x = t(2, 2, vec![-1.0, -2.0, -3.0, -4.0]);
        let p =
            MaxPool2d { kernel: [2, 2], stride: [1, 1], padding: [1, 1], dilation: [1, 1], ceil_mode: false };
        assert_eq!(
            maxpool(&x, &p, &[1, 3, 3]).data,
            vec![-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -3.0, -3.0, -4.0]
        );
        let x = t(1, 2, vec![f32::NAN, 1.0]);
        let p =
            MaxPool2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1], ceil_mode: false };
        assert!(maxpool(&x, &p, &[1, 1, 1]).data[0].is_nan());
    }

    #[test]
    fn adaptive_windows_overlap_like_pytorch() {
        // 5 -> 3: windows [0, 2), [1, 4), [3, 5).
        let x = t(1, 5, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let y = adaptive_avgpool(&x, &AdaptiveAvgPool2d { output: [1, 3] }, &[1, 1, 3]);
        assert_eq!(y.data, vec![1.5, 3.0, 4.5]);
    }
}
