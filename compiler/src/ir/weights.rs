//! Symbolic weights. A node's weight tensors are expressions over the tensors of the weight file:
//! the parsed graph reads them as they are (`Param`), and optimisation passes that fold or merge
//! layers rewrite the expressions (a conv with a BatchNorm folded in has weight
//! `ScaleRows(conv.weight, BnScale(bn))`). The optimised graph thus stays independent of any
//! particular weight file, and the runtime evaluates each expression once, at load time, borrowing
//! plain `Param`s straight from the memory-mapped file.

use std::fmt;

/// A weight tensor, as an expression over the weight file's tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WeightExpr {
    /// The tensor `key` of the weight file, with its shape.
    Param { key: String, shape: Vec<usize> },
    /// A vector of one value (`0` for absent biases, `1` for identity scales).
    Fill { len: usize, value: f64 },
    /// BatchNorm's per-channel scale `gamma / sqrt(running_var + eps)`.
    BnScale { gamma: Box<WeightExpr>, var: Box<WeightExpr>, eps: f64 },
    /// Elementwise sum of two equally shaped tensors.
    Add(Box<WeightExpr>, Box<WeightExpr>),
    /// Elementwise difference of two equally shaped tensors.
    Sub(Box<WeightExpr>, Box<WeightExpr>),
    /// Elementwise product of two equally shaped tensors.
    Mul(Box<WeightExpr>, Box<WeightExpr>),
    /// `x[o, ...] * s[o]`: each row (output channel) of `x` scaled by an entry of the vector `s`.
    ScaleRows { x: Box<WeightExpr>, s: Box<WeightExpr> },
    /// `x[o, i, ...] * s[i]`: each input channel (axis 1) of `x` scaled by an entry of `s`.
    ScaleCols { x: Box<WeightExpr>, s: Box<WeightExpr> },
    /// `sum_i x[o, i, ...] * v[i]` for every `o`: a weight tensor applied to a per-input-channel vector
    /// (summing over its trailing axes too), giving a vector of length `x.shape[0]`.
    RowDot { x: Box<WeightExpr>, v: Box<WeightExpr> },
    /// Concatenation along axis 0 (output channels).
    ConcatRows(Vec<WeightExpr>),
    /// The product of two 1x1 conv weights `a: [O, M, 1, 1]`, `b: [M, I, 1, 1]` -> `[O, I, 1, 1]`.
    MatMul(Box<WeightExpr>, Box<WeightExpr>),
    /// The Winograd transform of a 3x3 conv weight `x: [O, I, 3, 3]`: `G g G^T` for every
    /// `(o, i)`, laid out `[a*a, O, I]` (one matrix per point of the transformed tile).
    Winograd { x: Box<WeightExpr>, tile: super::winograd::WinogradTile },
}

impl WeightExpr {
    pub fn param(key: impl Into<String>, shape: Vec<usize>) -> WeightExpr {
        WeightExpr::Param { key: key.into(), shape }
    }

    /// The shape of the tensor this expression produces (operands are assumed well formed; `verify`
    /// checks that with [`WeightExpr::check`]).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            WeightExpr::Param { shape, .. } => shape.clone(),
            WeightExpr::Fill { len, .. } => vec![*len],
            WeightExpr::BnScale { gamma, .. } => gamma.shape(),
            WeightExpr::Add(a, _) | WeightExpr::Sub(a, _) | WeightExpr::Mul(a, _) => a.shape(),
            WeightExpr::ScaleRows { x, .. } | WeightExpr::ScaleCols { x, .. } => x.shape(),
            WeightExpr::RowDot { x, .. } => vec![x.shape()[0]],
            WeightExpr::ConcatRows(parts) => {
                let mut shape = parts[0].shape();
                shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
                shape
            }
            WeightExpr::MatMul(a, b) => vec![a.shape()[0], b.shape()[1], 1, 1],
            WeightExpr::Winograd { x, tile } => {
                let sx = x.shape();
                vec![tile.alpha() * tile.alpha(), sx[0], sx[1]]
            }
        }
    }

    /// Checks that operand shapes fit, returning the result shape.
    pub fn check(&self) -> Result<Vec<usize>, String> {
        let same = |a: &WeightExpr, b: &WeightExpr, what: &str| -> Result<Vec<usize>, String> {
            let (sa, sb) = (a.check()?, b.check()?);
            if sa != sb {
                return Err(format!("{what} of shapes {sa:?} and {sb:?}"));
            }
            Ok(sa)
        };
        let vector_of = |v: &WeightExpr, len: usize, what: &str| -> Result<(), String> {
            let s = v.check()?;
            if s != [len] {
                return Err(format!("{what}: expected a vector of {len}, got {s:?}"));
            }
            Ok(())
        };
        match self {
            WeightExpr::Param { shape, .. } => Ok(shape.clone()),
            WeightExpr::Fill { len, .. } => Ok(vec![*len]),
            WeightExpr::BnScale { gamma, var, .. } => same(gamma, var, "bn_scale"),
            WeightExpr::Add(a, b) => same(a, b, "add"),
            WeightExpr::Sub(a, b) => same(a, b, "sub"),
            WeightExpr::Mul(a, b) => same(a, b, "mul"),
            WeightExpr::ScaleRows { x, s } => {
                let sx = x.check()?;
                vector_of(s, *sx.first().ok_or("scale_rows of a scalar")?, "scale_rows")?;
                Ok(sx)
            }
            WeightExpr::ScaleCols { x, s } => {
                let sx = x.check()?;
                vector_of(s, *sx.get(1).ok_or("scale_cols of a vector")?, "scale_cols")?;
                Ok(sx)
            }
            WeightExpr::RowDot { x, v } => {
                let sx = x.check()?;
                vector_of(v, *sx.get(1).ok_or("row_dot of a vector")?, "row_dot")?;
                Ok(vec![sx[0]])
            }
            WeightExpr::ConcatRows(parts) => {
                let shapes = parts.iter().map(|p| p.check()).collect::<Result<Vec<_>, _>>()?;
                let first = shapes.first().ok_or("concat of nothing")?;
                if shapes.iter().any(|s| s.len() != first.len() || s[1..] != first[1..]) {
                    return Err(format!("concat_rows of shapes {shapes:?}"));
                }
                Ok(self.shape())
            }
            WeightExpr::MatMul(a, b) => {
                let (sa, sb) = (a.check()?, b.check()?);
                match (&sa[..], &sb[..]) {
                    ([o, m, 1, 1], [m2, i, 1, 1]) if m == m2 => Ok(vec![*o, *i, 1, 1]),
                    _ => Err(format!("matmul of shapes {sa:?} and {sb:?}")),
                }
            }
            WeightExpr::Winograd { x, .. } => match &x.check()?[..] {
                [_, _, 3, 3] => Ok(self.shape()),
                sx => Err(format!("winograd of a weight of shape {sx:?}, not [O, I, 3, 3]")),
            },
        }
    }

    /// Every `Param` leaf (the tensors the weight file must provide).
    pub fn params(&self, out: &mut Vec<(String, Vec<usize>)>) {
        match self {
            WeightExpr::Param { key, shape } => out.push((key.clone(), shape.clone())),
            WeightExpr::Fill { .. } => {}
            WeightExpr::BnScale { gamma: a, var: b, .. }
            | WeightExpr::Add(a, b)
            | WeightExpr::Sub(a, b)
            | WeightExpr::Mul(a, b)
            | WeightExpr::ScaleRows { x: a, s: b }
            | WeightExpr::ScaleCols { x: a, s: b }
            | WeightExpr::RowDot { x: a, v: b }
            | WeightExpr::MatMul(a, b) => {
                a.params(out);
                b.params(out);
            }
            WeightExpr::ConcatRows(parts) => parts.iter().for_each(|p| p.params(out)),
            WeightExpr::Winograd { x, .. } => x.params(out),
        }
    }

    /// Evaluates the expression with `leaf` giving each `Param`'s data (row-major, f32). Arithmetic
    /// runs in f64 and rounds once at the end, so folding loses no more precision than storing.
    pub fn eval<'a>(&self, leaf: &dyn Fn(&str) -> Option<&'a [f32]>) -> Result<Vec<f32>, String> {
        Ok(self.eval64(leaf)?.into_iter().map(|v| v as f32).collect())
    }

    fn eval64<'a>(&self, leaf: &dyn Fn(&str) -> Option<&'a [f32]>) -> Result<Vec<f64>, String> {
        let zip = |a: &WeightExpr, b: &WeightExpr, f: fn(f64, f64) -> f64| -> Result<Vec<f64>, String> {
            let (x, y) = (a.eval64(leaf)?, b.eval64(leaf)?);
            Ok(x.iter().zip(&y).map(|(&p, &q)| f(p, q)).collect())
        };
        Ok(match self {
            WeightExpr::Param { key, .. } => leaf(key)
                .ok_or_else(|| format!("weight `{key}` is not bound"))?
                .iter()
                .map(|&v| v as f64)
                .collect(),
            WeightExpr::Fill { len, value } => vec![*value; *len],
            WeightExpr::BnScale { gamma, var, eps } => {
                let (g, v) = (gamma.eval64(leaf)?, var.eval64(leaf)?);
                g.iter().zip(&v).map(|(&g, &v)| g / (v + eps).sqrt()).collect()
            }
            WeightExpr::Add(a, b) => zip(a, b, |p, q| p + q)?,
            WeightExpr::Sub(a, b) => zip(a, b, |p, q| p - q)?,
            WeightExpr::Mul(a, b) => zip(a, b, |p, q| p * q)?,
            WeightExpr::ScaleRows { x, s } => {
                let (mut data, s) = (x.eval64(leaf)?, s.eval64(leaf)?);
                let row = data.len() / s.len().max(1);
                for (o, chunk) in data.chunks_mut(row.max(1)).enumerate() {
                    chunk.iter_mut().for_each(|v| *v *= s[o]);
                }
                data
            }
            WeightExpr::ScaleCols { x, s } => {
                let shape = x.shape();
                let (mut data, s) = (x.eval64(leaf)?, s.eval64(leaf)?);
                let inner: usize = shape[2..].iter().product();
                for (j, v) in data.iter_mut().enumerate() {
                    *v *= s[(j / inner) % shape[1]];
                }
                data
            }
            WeightExpr::RowDot { x, v } => {
                let shape = x.shape();
                let (data, v) = (x.eval64(leaf)?, v.eval64(leaf)?);
                let inner: usize = shape[2..].iter().product();
                let row = shape[1] * inner;
                (0..shape[0]).map(|o| (0..row).map(|j| data[o * row + j] * v[j / inner]).sum()).collect()
            }
            WeightExpr::ConcatRows(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    out.extend(p.eval64(leaf)?);
                }
                out
            }
            WeightExpr::MatMul(a, b) => {
                let (sa, sb) = (a.shape(), b.shape());
                let (x, y) = (a.eval64(leaf)?, b.eval64(leaf)?);
                let (o, m, i) = (sa[0], sa[1], sb[1]);
                let mut out = vec![0.0; o * i];
                for r in 0..o {
                    for k in 0..m {
                        let xv = x[r * m + k];
                        for c in 0..i {
                            out[r * i + c] += xv * y[k * i + c];
                        }
                    }
                }
                out
            }
            WeightExpr::Winograd { x, tile } => {
                let shape = x.shape();
                let (o, i) = (shape[0], shape[1]);
                let g = x.eval64(leaf)?;
                let points = tile.alpha() * tile.alpha();
                let mut out = vec![0.0; points * o * i];
                for (oi, filter) in g.chunks_exact(9).enumerate() {
                    for (xi, u) in tile.filter(filter).into_iter().enumerate() {
                        out[xi * o * i + oi] = u;
                    }
                }
                out
            }
        })
    }
}

impl fmt::Display for WeightExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightExpr::Param { key, .. } => write!(f, "{key}"),
            WeightExpr::Fill { len, value } => write!(f, "fill({value}, {len})"),
            WeightExpr::BnScale { gamma, var, eps } => write!(f, "bn_scale({gamma}, {var}, eps={eps})"),
            WeightExpr::Add(a, b) => write!(f, "({a} + {b})"),
            WeightExpr::Sub(a, b) => write!(f, "({a} - {b})"),
            WeightExpr::Mul(a, b) => write!(f, "({a} * {b})"),
            WeightExpr::ScaleRows { x, s } => write!(f, "scale_rows({x}, {s})"),
            WeightExpr::ScaleCols { x, s } => write!(f, "scale_cols({x}, {s})"),
            WeightExpr::RowDot { x, v } => write!(f, "row_dot({x}, {v})"),
            WeightExpr::ConcatRows(parts) => {
                write!(f, "concat_rows(")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{p}")?;
                }
                write!(f, ")")
            }
            WeightExpr::MatMul(a, b) => write!(f, "matmul({a}, {b})"),
            WeightExpr::Winograd { x, tile } => write!(f, "winograd({x}, {})", tile.name()),
        }
    }
}
