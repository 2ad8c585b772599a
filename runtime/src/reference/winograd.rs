//! A Winograd convolution computed from its definition, in f64: for every `m x m` output tile, the
//! `a x a` input tile `d` (zero outside the input), `V = B^T d B` per input channel, `M = sum over
//! channels of U (.) V` per output channel, `Y = A^T M A` (see `netc_compiler::ir::winograd`, whose
//! tests check the transforms against the direct correlation). The optimised graph's Winograd
//! layers run here with their transformed weights `U`, so the JIT's Winograd kernels are checked
//! against the same arithmetic in f64, and the reference on the graph as written checks both.

use super::parallel::split;
use crate::tensor::Tensor;
use netc_compiler::ir::{Conv2d, WinogradTile};

/// `x`: `[N, Cin, H, W]`; `u`: `[a*a, Cout, Cin]`; stride 1, the padding of `p`; `out`:
/// `[Cout, OH, OW]`.
pub fn conv2d(
    x: &Tensor,
    p: &Conv2d,
    tile: WinogradTile,
    u: &[f32],
    bias: Option<&[f32]>,
    out: &[usize],
    threads: usize,
) -> Tensor {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cout, oh, ow) = (out[0], out[1], out[2]);
    let (m, a) = (tile.m(), tile.alpha());
    let points = a * a;
    let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
    let tiles = th * tw;
    let [py, px] = p.padding;
    // V[n][ci][tile][point], once per sample for every output channel.
    let v: Vec<Vec<f64>> = (0..n)
        .map(|b| {
            let parts = split(cin, threads, |channels| {
                let mut v = Vec::with_capacity(channels.len() * tiles * points);
                let mut d = vec![0f64; points];
                for ci in channels {
                    let plane = &x.data[(b * cin + ci) * h * w..][..h * w];
                    for t in 0..tiles {
                        let (y0, x0) = ((t / tw) * m, (t % tw) * m);
                        for i in 0..a {
                            for j in 0..a {
                                let (iy, ix) =
                                    ((y0 + i) as isize - py as isize, (x0 + j) as isize - px as isize);
                                let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                d[i * a + j] = if inside {
                                    f64::from(plane[iy as usize * w + ix as usize])
                                } else {
                                    0.0
                                };
                            }
                        }
                        v.extend(tile.input(&d));
                    }
                }
                v
            });
            parts.concat()
        })
        .collect();
    let planes = split(n * cout, threads, |range| {
        let mut out = Vec::with_capacity(range.len() * oh * ow);
        let mut plane = vec![0f64; oh * ow];
        let mut mm = vec![0f64; points];
        for index in range {
            let (b, co) = (index / cout, index % cout);
            for t in 0..tiles {
                mm.fill(0.0);
                for ci in 0..cin {
                    let vt = &v[b][(ci * tiles + t) * points..][..points];
                    for (xi, (acc, &vv)) in mm.iter_mut().zip(vt).enumerate() {
                        *acc += f64::from(u[(xi * cout + co) * cin + ci]) * vv;
                    }
                }
                let y = tile.output(&mm);
                let (y0, x0) = ((t / tw) * m, (t % tw) * m);
                for i in 0..m.min(oh - y0) {
                    for j in 0..m.min(ow - x0) {
                        plane[(y0 + i) * ow + x0 + j] = y[i * m + j] + bias.map_or(0.0, |b| f64::from(b[co]));
                    }
                }
            }
            out.extend(plane.iter().map(|&v| v as f32));
        }
        out
    });
    Tensor { shape: vec![n, cout, oh, ow], data: planes.concat() }
}
