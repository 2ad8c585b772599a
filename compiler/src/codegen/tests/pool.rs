//! Pooling kernels against PyTorch's definitions written as loops.

use super::*;
use crate::codegen::{PoolKind, PoolSpec};

fn out_size(n: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> usize {
    let span = d * (k - 1) + 1;
    let num = n + 2 * p - span;
    let mut o = if ceil { num.div_ceil(s) + 1 } else { num / s + 1 };
    // PyTorch: the last window must start inside the input or the left padding.
    if ceil && (o - 1) * s >= n + p {
        o -= 1;
    }
    o
}

fn reference(spec: &PoolSpec, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let [c, h, w] = spec.input;
    let [_, oh, ow] = spec.output;
    let (mut out, mut mag) = (vec![0f64; c * oh * ow], vec![0f64; c * oh * ow]);
    for ch in 0..c {
        for y in 0..oh {
            for z in 0..ow {
                let at = (ch * oh + y) * ow + z;
                let plane = &x[ch * h * w..(ch + 1) * h * w];
                let (v, m) = match spec.kind {
                    PoolKind::Adaptive => {
                        let (hs, he) = (y * h / oh, ((y + 1) * h).div_ceil(oh));
                        let (ws, we) = (z * w / ow, ((z + 1) * w).div_ceil(ow));
                        let mut s = 0f64;
                        let mut m = 0f64;
                        for i in hs..he {
                            for j in ws..we {
                                s += plane[i * w + j] as f64;
                                m += (plane[i * w + j] as f64).abs();
                            }
                        }
                        let n = ((he - hs) * (we - ws)) as f64;
                        (s / n, m / n)
                    }
                    _ => {
                        let hs = (y * spec.stride[0]) as isize - spec.padding[0] as isize;
                        let ws = (z * spec.stride[1]) as isize - spec.padding[1] as isize;
                        let (mut mx, mut s, mut m, mut inside) = (f64::NEG_INFINITY, 0f64, 0f64, 0usize);
                        for i in 0..spec.kernel[0] {
                            for j in 0..spec.kernel[1] {
                                let iy = hs + (i * spec.dilation[0]) as isize;
                                let ix = ws + (j * spec.dilation[1]) as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let v = plane[iy as usize * w + ix as usize] as f64;
                                mx = mx.max(v);
                                s += v;
                                m += v.abs();
                                inside += 1;
                            }
                        }
                        match spec.kind {
                            PoolKind::Max => (mx, 0.0),
                            PoolKind::Avg { count_include_pad: true } => {
                                let he = (hs + spec.kernel[0] as isize).min((h + spec.padding[0]) as isize);
                                let we = (ws + spec.kernel[1] as isize).min((w + spec.padding[1]) as isize);
                                let n = ((he - hs) * (we - ws)) as f64;
                                (s / n, m / n)
                            }
                            _ => (s / inside as f64, m / inside as f64),
                        }
                    }
                };
                out[at] = v;
                mag[at] = m;
            }
        }
    }
    (out, mag)
}

#[allow(clippy::too_many_arguments)]
fn check(
    kind: PoolKind,
    c: usize,
    hw: [usize; 2],
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    ceil: bool,
    out: [usize; 2],
) -> PoolSpec {
    let [h, w] = hw;
    let output = match kind {
        PoolKind::Adaptive => [c, out[0], out[1]],
        _ => [c, out_size(h, k, s, p, d, ceil), out_size(w, k, s, p, d, ceil)],
    };
    let spec = PoolSpec {
        kind,
        input: [c, h, w],
        output,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
        dilation: [d, d],
        in_stride: c * h * w + 1,
        out_stride: output.iter().product::<usize>() + 2,
    };
    let k_ = compile_one(KernelSpec::Pool(spec.clone()));
    let mut rng = Rng::new((c * 7 + h * 3 + k) as u64);
    for n in [1, 3] {
        let x = rng.vec(n * spec.in_stride);
        let got = run(&k_, n, &[&x], &[], n * spec.out_stride);
        let len: usize = output.iter().product();
        for smp in 0..n {
            let (want, mag) = reference(&spec, &x[smp * spec.in_stride..]);
            let at = smp * spec.out_stride;
            assert_close(&format!("{spec:?} n={n} sample {smp}"), &got[at..at + len], &want, &mag);
            assert!(got[at + len..at + spec.out_stride].iter().all(|v| v.is_nan()), "wrote past the value");
        }
    }
    spec
}

#[test]
fn max_pool() {
    check(PoolKind::Max, 3, [7, 7], 3, 2, 1, 1, false, [0, 0]);
    check(PoolKind::Max, 5, [6, 9], 3, 2, 0, 1, true, [0, 0]);
    check(PoolKind::Max, 2, [13, 13], 3, 2, 0, 1, true, [0, 0]);
    check(PoolKind::Max, 2, [1, 1], 1, 1, 0, 1, false, [0, 0]);
    check(PoolKind::Max, 4, [2, 3], 2, 2, 1, 1, true, [0, 0]);
    check(PoolKind::Max, 3, [9, 9], 3, 1, 1, 2, false, [0, 0]);
    // Rows of several vectors with a tail, stride 1 and 3, ceil-mode overhang on wide rows.
    check(PoolKind::Max, 2, [30, 40], 2, 2, 0, 1, false, [0, 0]);
    check(PoolKind::Max, 2, [23, 57], 3, 2, 1, 1, true, [0, 0]);
    check(PoolKind::Max, 3, [17, 29], 3, 1, 1, 1, true, [0, 0]);
    check(PoolKind::Max, 2, [20, 31], 5, 3, 2, 1, true, [0, 0]);
}

/// A NaN in a window makes the window's maximum NaN (PyTorch's max_pool2d), wherever it is: in
/// a vector of the row-max pass, in its gathered tail column, or in a plane of its own while the
/// other planes of the tensor have none (each plane falls back to the exact path on its own).
#[test]
fn max_pool_propagates_nan() {
    let (c, h, w) = (3, 9, 11);
    let spec = PoolSpec {
        kind: PoolKind::Max,
        input: [c, h, w],
        output: [c, 4, 5],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
        dilation: [1, 1],
        in_stride: c * h * w,
        out_stride: c * 20,
    };
    let k = compile_one(KernelSpec::Pool(spec.clone()));
    let mut x: Vec<f32> = (0..c * h * w).map(|i| (i % 17) as f32 - 8.0).collect();
    let nans = [(1, 0, 0), (1, 2, 5), (1, 8, 10), (2, 4, 10)];
    for &(ch, y, z) in &nans {
        x[(ch * h + y) * w + z] = f32::NAN;
    }
    let got = run(&k, 1, &[&x], &[], c * 20);
    for ch in 0..c {
        for oy in 0..4 {
            for ox in 0..5 {
                let (rows, cols) = (oy * 2..oy * 2 + 3, ox * 2..ox * 2 + 3);
                let window_has_nan =
                    nans.iter().any(|&(n, y, z)| n == ch && rows.contains(&y) && cols.contains(&z));
                let v = got[ch * 20 + oy * 5 + ox];
                if window_has_nan {
                    assert!(v.is_nan(), "channel {ch} output ({oy}, {ox}) = {v}, want NaN");
                } else {
                    let x = &x;
                    let want = rows
                        .flat_map(|y| cols.clone().map(move |z| x[(ch * h + y) * w + z]))
                        .fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(v, want, "channel {ch} output ({oy}, {ox})");
                }
            }
        }
    }
}

#[test]
fn avg_pool() {
    for include in [true, false] {
        let kind = PoolKind::Avg { count_include_pad: include };
        check(kind, 3, [7, 7], 3, 2, 1, 1, false, [0, 0]);
        check(kind, 5, [6, 9], 3, 2, 1, 1, true, [0, 0]);
        check(kind, 2, [5, 5], 5, 3, 2, 1, true, [0, 0]);
        check(kind, 2, [3, 2], 2, 2, 0, 1, true, [0, 0]);
    }
}

#[test]
fn adaptive_avg_pool() {
    check(PoolKind::Adaptive, 13, [7, 7], 1, 1, 0, 1, false, [1, 1]);
    check(PoolKind::Adaptive, 3, [13, 13], 1, 1, 0, 1, false, [6, 6]);
    check(PoolKind::Adaptive, 2, [5, 3], 1, 1, 0, 1, false, [7, 2]);
    check(PoolKind::Adaptive, 2, [1, 1], 1, 1, 0, 1, false, [2, 3]);
}

/// Global average pooling (the whole plane into one mean, by vector accumulators) agrees with the
/// definition for planes shorter than a vector, with a vector but no scalar tail, with both, and
/// large ones (squeeze-and-excitation's 112x112), as adaptive pooling and as a window the size of
/// the plane.
#[test]
fn global_average_pool() {
    for hw in [[1, 1], [1, 3], [2, 2], [4, 4], [5, 7], [7, 7], [9, 13], [56, 56], [112, 112]] {
        assert!(check(PoolKind::Adaptive, 3, hw, 1, 1, 0, 1, false, [1, 1]).is_global_mean());
        if hw[0] == hw[1] {
            for include in [true, false] {
                let kind = PoolKind::Avg { count_include_pad: include };
                assert!(check(kind, 2, hw, hw[0], 1, 0, 1, false, [0, 0]).is_global_mean());
            }
        }
    }
    // Not a whole-plane mean: padding, or a window smaller than the plane.
    let avg = PoolKind::Avg { count_include_pad: true };
    assert!(!check(avg, 2, [3, 3], 3, 1, 1, 1, false, [0, 0]).is_global_mean());
    assert!(!check(PoolKind::Adaptive, 2, [6, 6], 1, 1, 0, 1, false, [1, 2]).is_global_mean());
}
