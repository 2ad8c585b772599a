//! Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): the math shared by the weight transform in the IR, the reference
//! interpreter and the kernels.
//!
//! For a 3x3 filter `g` and an `a x a` input tile `d` (`a = m + 2`), the `m x m` output tile of the
//! stride-1 convolution is `Y = A^T [(G g G^T) (.) (B^T d B)] A`, where `(.)` is the elementwise
//! product. Summed over input channels, the elementwise products become `a^2` independent matrix
//! products over channels, with `(m + 2)^2` multiplications per `m^2` outputs instead of `9 m^2`:
//! F(2x2) does 16 per 4 (2.25x fewer), F(4x4) 36 per 16 (4x fewer). The price is the transforms
//! (additions, and multiplications by small constants) and some accuracy: the constants of F(4x4)
//! amplify rounding errors more than F(2x2)'s.
//!
//! The matrices are the standard ones (interpolation points 0, +-1, +-2 and infinity for F(4x4);
//! 0, +-1 and infinity for F(2x2)). Each transform is also given as a short program
//! ([`Step`]s with shared subexpressions), which the kernels emit as vector code; the tests check
//! every program against its matrix.

use serde::{Deserialize, Serialize};

/// The output tile size `m` of F(m x m, 3 x 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 4x4 input tiles.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles.
    F4,
}

/// One step of a transform program over named values: inputs are `0..n_in`, each step appends a
/// value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// `x + y`
    Add(usize, usize),
    /// `x - y`
    Sub(usize, usize),
    /// `x * c + y`
    Fma(usize, f32, usize),
}

/// A 1-D transform: `outputs[k]` is the value index of output `k` after running `steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub inputs: usize,
    pub steps: &'static [Step],
    pub outputs: &'static [usize],
}

use Step::{Add, Fma, Sub};

/// F(4x4) `B^T d`: 6 -> 6.
const F4_INPUT: Program = Program {
    inputs: 6,
    steps: &[
        Fma(2, -5.0, 4),   // 6: d4 - 5 d2
        Fma(0, 4.0, 6),    // 7: r0 = 4 d0 - 5 d2 + d4
        Add(1, 2),         // 8: d1 + d2
        Add(3, 4),         // 9: d3 + d4
        Fma(8, -4.0, 9),   // 10: r1 = -4 (d1 + d2) + d3 + d4
        Sub(1, 2),         // 11: d1 - d2
        Sub(4, 3),         // 12: d4 - d3
        Fma(11, 4.0, 12),  // 13: r2 = 4 (d1 - d2) + d4 - d3
        Sub(4, 2),         // 14: d4 - d2
        Sub(3, 1),         // 15: d3 - d1
        Fma(15, 2.0, 14),  // 16: r3 = 2 (d3 - d1) + d4 - d2
        Fma(15, -2.0, 14), // 17: r4 = -2 (d3 - d1) + d4 - d2
        Fma(3, -5.0, 5),   // 18: d5 - 5 d3
        Fma(1, 4.0, 18),   // 19: r5 = 4 d1 - 5 d3 + d5
    ],
    outputs: &[7, 10, 13, 16, 17, 19],
};

/// F(4x4) `A^T m`: 6 -> 4.
const F4_OUTPUT: Program = Program {
    inputs: 6,
    steps: &[
        Add(1, 2),      // 6: m1 + m2
        Sub(1, 2),      // 7: m1 - m2
        Add(3, 4),      // 8: m3 + m4
        Sub(3, 4),      // 9: m3 - m4
        Add(0, 6),      // 10
        Add(10, 8),     // 11: y0 = m0 + m1 + m2 + m3 + m4
        Fma(9, 2.0, 7), // 12: y1 = m1 - m2 + 2 (m3 - m4)
        Fma(8, 4.0, 6), // 13: y2 = m1 + m2 + 4 (m3 + m4)
        Fma(9, 8.0, 7), // 14
        Add(14, 5),     // 15: y3 = m1 - m2 + 8 (m3 - m4) + m5
    ],
    outputs: &[11, 12, 13, 15],
};

/// F(2x2) `B^T d`: 4 -> 4.
const F2_INPUT: Program = Program {
    inputs: 4,
    steps: &[
        Sub(0, 2), // 4: r0 = d0 - d2
        Add(1, 2), // 5: r1 = d1 + d2
        Sub(2, 1), // 6: r2 = d2 - d1
        Sub(1, 3), // 7: r3 = d1 - d3
    ],
    outputs: &[4, 5, 6, 7],
};

/// F(2x2) `A^T m`: 4 -> 2.
const F2_OUTPUT: Program = Program {
    inputs: 4,
    steps: &[
        Add(0, 1), // 4
        Add(4, 2), // 5: y0 = m0 + m1 + m2
        Sub(1, 2), // 6
        Sub(6, 3), // 7: y1 = m1 - m2 - m3
    ],
    outputs: &[5, 7],
};

impl WinogradTile {
    /// Every tile size.
    pub const ALL: [WinogradTile; 2] = [WinogradTile::F2, WinogradTile::F4];

    /// Output tile side `m`.
    pub fn m(self) -> usize {
        match self {
            WinogradTile::F2 => 2,
            WinogradTile::F4 => 4,
        }
    }

    /// Input tile side `a = m + 2`.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    /// The name in dumps: `F(4x4,3x3)`.
    pub fn name(self) -> &'static str {
        match self {
            WinogradTile::F2 => "F(2x2,3x3)",
            WinogradTile::F4 => "F(4x4,3x3)",
        }
    }

    /// `G` (`a x 3`).
    pub fn g(self) -> Vec<[f64; 3]> {
        match self {
            WinogradTile::F2 => vec![[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
            WinogradTile::F4 => vec![
                [0.25, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }

    /// `B^T` (`a x a`).
    pub fn bt(self) -> Vec<Vec<f64>> {
        match self {
            WinogradTile::F2 => vec![
                vec![1.0, 0.0, -1.0, 0.0],
                vec![0.0, 1.0, 1.0, 0.0],
                vec![0.0, -1.0, 1.0, 0.0],
                vec![0.0, 1.0, 0.0, -1.0],
            ],
            WinogradTile::F4 => vec![
                vec![4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
                vec![0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
                vec![0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
                vec![0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
                vec![0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
                vec![0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
            ],
        }
    }

    /// `A^T` (`m x a`).
    pub fn at(self) -> Vec<Vec<f64>> {
        match self {
            WinogradTile::F2 => vec![vec![1.0, 1.0, 1.0, 0.0], vec![0.0, 1.0, -1.0, -1.0]],
            WinogradTile::F4 => vec![
                vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
                vec![0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
                vec![0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
                vec![0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
            ],
        }
    }

    /// The program computing `B^T x` for a column `x` of `a` values.
    pub fn input_program(self) -> &'static Program {
        match self {
            WinogradTile::F2 => &F2_INPUT,
            WinogradTile::F4 => &F4_INPUT,
        }
    }

    /// The program computing `A^T x` for a column `x` of `a` values.
    pub fn output_program(self) -> &'static Program {
        match self {
            WinogradTile::F2 => &F2_OUTPUT,
            WinogradTile::F4 => &F4_OUTPUT,
        }
    }

    /// `U = G g G^T` for a 3x3 filter `g` (row-major), as `a x a` row-major.
    pub fn filter(self, g: &[f64]) -> Vec<f64> {
        let gm = self.g();
        let a = self.alpha();
        // t = G g (a x 3), U = t G^T (a x a).
        let mut t = vec![[0.0f64; 3]; a];
        for (i, row) in gm.iter().enumerate() {
            for j in 0..3 {
                t[i][j] = (0..3).map(|k| row[k] * g[k * 3 + j]).sum();
            }
        }
        let mut u = vec![0.0; a * a];
        for i in 0..a {
            for j in 0..a {
                u[i * a + j] = (0..3).map(|k| t[i][k] * gm[j][k]).sum();
            }
        }
        u
    }

    /// `V = B^T d B` for an `a x a` input tile `d` (row-major).
    pub fn input(self, d: &[f64]) -> Vec<f64> {
        let bt = self.bt();
        two_sided(&bt, d, bt.len(), bt.len())
    }

    /// `Y = A^T M A` for an `a x a` tile `M`, as `m x m` row-major.
    pub fn output(self, mm: &[f64]) -> Vec<f64> {
        let at = self.at();
        two_sided(&at, mm, at.len(), self.alpha())
    }
}

/// Bytes the transformed input of a block (`a^2 x Cin x T` floats) may take: it must stay in L2
/// with the block's other scratch.
pub const BLOCK_BYTES: usize = 384 * 1024;
/// Most vectors of tiles per block.
pub const BLOCK_VECTORS: usize = 8;

/// How a `th x tw` grid of tiles is cut into blocks for vectors of `lanes` lanes: `(rows, columns)`,
/// the tile rows per block and the columns of the block's transformed input and products (its
/// `rows * tw` tiles, compacted, rounded up to whole vectors), chosen for the largest share of used
/// lanes within [`BLOCK_BYTES`] of transformed input (`cin` channels) and [`BLOCK_VECTORS`]
/// vectors; on a tie, the fewest tile rows (more, smaller blocks: two threads split a 56x56 layer's
/// 14 one-row blocks 7 to 7 at batch 1 instead of its 7 two-row blocks 4 to 3; ResNet-18 ran
/// 0.98x at b1 and 0.97-0.98x at b8, one and two threads, avx512). Shared by the cost model and
/// the kernels so both plan the same blocks.
pub fn block(tile: WinogradTile, cin: usize, th: usize, tw: usize, lanes: usize) -> (usize, usize) {
    let a2 = tile.alpha() * tile.alpha();
    let cols = |rb: usize| (rb * tw).div_ceil(lanes) * lanes;
    // A single vector of tiles is the least any block takes, within budget or not.
    let budget = BLOCK_BYTES.max(4 * a2 * cin * cols(1));
    let mut best = (0.0, 1);
    for rb in 1..=th {
        let t = cols(rb);
        if rb > 1 && (4 * a2 * cin * t > budget || t / lanes > BLOCK_VECTORS) {
            break;
        }
        let share = (rb * tw) as f64 / t as f64;
        if share > best.0 {
            best = (share, rb);
        }
    }
    (best.1, cols(best.1))
}

/// `L x L^T` for `L` (`r x n`) and `x` (`n x n`), as `r x r`.
fn two_sided(l: &[Vec<f64>], x: &[f64], r: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * n];
    for i in 0..r {
        for j in 0..n {
            t[i * n + j] = (0..n).map(|k| l[i][k] * x[k * n + j]).sum();
        }
    }
    let mut out = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            out[i * r + j] = (0..n).map(|k| t[i * n + k] * l[j][k]).sum();
        }
    }
    out
}

impl Program {
    /// Runs the program on `x` in f64 (the tests' check against the matrices).
    pub fn run(&self, x: &[f64]) -> Vec<f64> {
        let mut v: Vec<f64> = x[..self.inputs].to_vec();
        for step in self.steps {
            let y = match *step {
                Step::Add(a, b) => v[a] + v[b],
                Step::Sub(a, b) => v[a] - v[b],
                Step::Fma(a, c, b) => v[a] * c as f64 + v[b],
            };
            v.push(y);
        }
        self.outputs.iter().map(|&o| v[o]).collect()
    }

    /// Values alive at once, at most (temporaries the emitted code needs besides the inputs).
    pub fn values(&self) -> usize {
        self.inputs + self.steps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 + 1) * 2654435761 + seed * 97) % 1000) as f64 / 250.0 - 2.0).collect()
    }

    #[test]
    fn programs_compute_their_matrices() {
        for tile in WinogradTile::ALL {
            for (program, matrix) in [(tile.input_program(), tile.bt()), (tile.output_program(), tile.at())] {
                for seed in 0..5 {
                    let x = pseudo(tile.alpha(), seed);
                    let got = program.run(&x);
                    let want: Vec<f64> =
                        matrix.iter().map(|row| row.iter().zip(&x).map(|(a, b)| a * b).sum()).collect();
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-12, "{tile:?}: {got:?} vs {want:?}");
                    }
                }
            }
        }
    }

    /// The definition: the output tile of the transforms equals the direct 3x3 correlation of the
    /// input tile.
    #[test]
    fn winograd_tiles_equal_direct_correlation() {
        for tile in WinogradTile::ALL {
            let (m, a) = (tile.m(), tile.alpha());
            for seed in 0..4 {
                let g = pseudo(9, seed + 10);
                let d = pseudo(a * a, seed);
                let u = tile.filter(&g);
                let v = tile.input(&d);
                let mm: Vec<f64> = u.iter().zip(&v).map(|(x, y)| x * y).collect();
                let y = tile.output(&mm);
                for i in 0..m {
                    for j in 0..m {
                        let direct: f64 = (0..3)
                            .flat_map(|p| (0..3).map(move |q| (p, q)))
                            .map(|(p, q)| g[p * 3 + q] * d[(i + p) * a + j + q])
                            .sum();
                        assert!(
                            (y[i * m + j] - direct).abs() < 1e-9,
                            "{tile:?} ({i}, {j}): {} vs {direct}",
                            y[i * m + j]
                        );
                    }
                }
            }
        }
    }
}
