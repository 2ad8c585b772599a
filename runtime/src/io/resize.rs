//! Antialiased bilinear ("triangle") resizing of 8-bit RGB images, computed the way Pillow's
//! `Image.resize(..., BILINEAR)` computes it, which is what torchvision's `Resize` runs on PIL images:
//!
//! * per output pixel, the input window is centred at `(i + 0.5) * scale`; when shrinking, the
//!   triangle filter is widened by the scale factor (that is the antialiasing);
//! * the weights are normalised to sum to 1, then rounded to 22-bit fixed point;
//! * two separable passes, horizontal first, each rounding to 8 bits (a pass that keeps the size
//!   is an exact copy, as Pillow's skipped pass is).
//!
//! Matching these details (rather than resampling in floating point) makes netc's preprocessing of
//! a given decoded image agree with torchvision's to the last bit.

/// Fixed-point precision of the filter weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

use std::ops::Range;

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// For each output index in `outputs`: the first input index and the fixed-point weights of its
/// window.
fn coefficients(in_size: usize, out_size: usize, outputs: Range<usize>) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's support is 1
    outputs
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64).max(lo as i64) as usize;
            let raw: Vec<f64> =
                (lo..hi).map(|x| triangle((x as f64 - center + 0.5) / filter_scale)).collect();
            let sum: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if sum != 0.0 { w / sum } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i64
                })
                .collect();
            (lo, fixed)
        })
        .collect()
}

/// Rounds a fixed-point sum (which includes the +0.5 bias) to 8 bits.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One filtered value: `sum_k pixel(lo + k) * w_k`, rounded.
fn filter(lo: usize, weights: &[i64], pixel: impl Fn(usize) -> u8) -> u8 {
    let half = 1i64 << (PRECISION_BITS - 1);
    clip8(half + weights.iter().enumerate().map(|(k, &w)| i64::from(pixel(lo + k)) * w).sum::<i64>())
}

/// The pixels in rows `ys` and columns `xs` of the RGB image (`height` rows of `width * 3` bytes)
/// resized to `new_w x new_h`, as `ys.len()` rows of `xs.len() * 3` bytes. Each pixel is exactly what
/// the whole resized image would hold there; computing only a crop keeps memory bounded whatever the
/// image's aspect ratio.
pub(crate) fn resize_rgb_region(
    src: &[u8],
    (width, height): (usize, usize),
    (new_w, new_h): (usize, usize),
    xs: Range<usize>,
    ys: Range<usize>,
) -> Vec<u8> {
    let cols = coefficients(width, new_w, xs);
    let rows = coefficients(height, new_h, ys);
    // Horizontal pass over the input rows the vertical pass reads.
    let first = rows.iter().map(|(lo, _)| *lo).min().unwrap_or(0);
    let last = rows.iter().map(|(lo, ws)| lo + ws.len()).max().unwrap_or(0);
    let stride = cols.len() * 3;
    let mut horizontal = Vec::with_capacity((last - first) * stride);
    for y in first..last {
        let row = &src[y * width * 3..][..width * 3];
        for (lo, ws) in &cols {
            for c in 0..3 {
                horizontal.push(filter(*lo, ws, |x| row[x * 3 + c]));
            }
        }
    }
    // Vertical pass.
    let mut out = Vec::with_capacity(rows.len() * stride);
    for (lo, ws) in &rows {
        for i in 0..stride {
            out.push(filter(*lo, ws, |y| horizontal[(y - first) * stride + i]));
        }
    }
    out
}

/// Resizes a whole RGB image (`height` rows of `width * 3` bytes).
#[cfg(test)]
fn resize_rgb(src: &[u8], width: usize, height: usize, new_w: usize, new_h: usize) -> Vec<u8> {
    resize_rgb_region(src, (width, height), (new_w, new_h), 0..new_w, 0..new_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (n_in, n_out) in [(451, 384), (300, 256), (10, 3), (3, 10), (7, 7)] {
            for (_, ws) in coefficients(n_in, n_out, 0..n_out) {
                let sum: i64 = ws.iter().sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= ws.len() as i64, "{n_in}->{n_out}: {sum}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let src = vec![200u8; 9 * 5 * 3];
        assert!(resize_rgb(&src, 9, 5, 4, 3).iter().all(|&v| v == 200));
        assert!(resize_rgb(&src, 9, 5, 13, 11).iter().all(|&v| v == 200));
    }

    #[test]
    fn matches_pillow() {
        // Expected values from Pillow 13: Image.fromarray(a).resize(size, Image.BILINEAR).
        let src: Vec<u8> = [0u8, 0, 100, 100].iter().flat_map(|&v| [v, v, v]).collect();
        assert_eq!(resize_rgb(&src, 4, 1, 2, 1), vec![14, 14, 14, 86, 86, 86]);
        // b = (np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 3)
        let b: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 3) as u8).collect();
        let expected = [
            24, 27, 30, 43, 46, 49, 62, 65, 68, 97, 100, 103, 116, 119, 122, 135, 138, 141, 171, 174, 177,
            190, 193, 196, 209, 212, 215, 121, 124, 58, 71, 74, 77, 90, 93, 96,
        ];
        assert_eq!(resize_rgb(&b, 7, 5, 3, 4), expected);
        let up = resize_rgb(&b, 7, 5, 11, 9);
        let first = [
            0, 3, 6, 4, 7, 10, 10, 13, 16, 16, 19, 22, 21, 24, 27, 27, 30, 33, 33, 36, 39, 38, 41, 44, 44,
            47, 50, 50, 53, 56,
        ];
        assert_eq!(up[..30], first);
        assert_eq!(up.iter().map(|&v| u64::from(v)).sum::<u64>(), 32725);
    }
}
