//! Per-sample tensor shapes (the batch dimension is bound at run time and never appears here) and the
//! checked size arithmetic that shape inference uses.

use std::fmt;

/// Largest size of any single dimension the compiler accepts.
pub const MAX_DIM: usize = 1 << 31;
/// Largest number of elements of one per-sample tensor (or one weight tensor).
pub const MAX_ELEMENTS: usize = 1 << 32;

/// A per-sample shape: `[C, H, W]` for feature maps, `[F]` for feature vectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn chw(c: usize, h: usize, w: usize) -> Shape {
        Shape(vec![c, h, w])
    }

    pub fn vector(n: usize) -> Shape {
        Shape(vec![n])
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements per sample (shapes are validated so this does not overflow).
    pub fn elements(&self) -> usize {
        self.0.iter().product()
    }

    /// `(C, H, W)` of a rank-3 shape.
    pub fn as_chw(&self) -> Option<(usize, usize, usize)> {
        match self.0[..] {
            [c, h, w] => Some((c, h, w)),
            _ => None,
        }
    }

    /// Whether this is one factor per channel of the feature map `x` (`[C, 1, 1]` against
    /// `[C, H, W]`): the broadcast `mul` takes (squeeze-and-excitation's scale).
    pub fn is_channel_factors_of(&self, x: &Shape) -> bool {
        matches!((x.as_chw(), self.as_chw()), (Some((c, _, _)), Some((fc, 1, 1))) if c == fc)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Dims(&self.0).fmt(f)
    }
}

/// Displays any list of sizes as `[1, 3, 224, 224]` (shapes in messages, batch included or not).
pub struct Dims<'a>(pub &'a [usize]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Why an operation cannot produce a shape from its inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("{op} expects a [C, H, W] input, got {got}")]
    NotFeatureMap { op: &'static str, got: Shape },
    #[error("{op} expects a feature vector [F] input, got {got}; add `flatten` first")]
    NotVector { op: &'static str, got: Shape },
    #[error("cannot add values of shapes {left} and {right}")]
    AddMismatch { left: Shape, right: Shape },
    #[error("cannot multiply values of shapes {left} and {right}: the shapes must be equal, or one [C, H, W] and the other [C, 1, 1] (one factor per channel)")]
    MulMismatch { left: Shape, right: Shape },
    #[error("concat needs equal spatial sizes, but input {index} has shape {got} while input 0 has {first}")]
    ConcatMismatch { index: usize, first: Shape, got: Shape },
    #[error("{op}: {what}")]
    Invalid { op: &'static str, what: String },
    #[error("{op}: output {axis} would be {size} (input {input}, kernel {kernel}, stride {stride}, padding {pad}, dilation {dilation})")]
    EmptyOutput {
        op: &'static str,
        axis: &'static str,
        size: i64,
        input: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    },
    #[error("{op}: size arithmetic overflows")]
    Overflow { op: &'static str },
    #[error("{op}: a tensor of shape {shape} is larger than the limit of {limit} elements")]
    TooLarge { op: &'static str, shape: String, limit: usize },
    #[error("{op}: size {size} is larger than the limit of {limit}")]
    DimTooLarge { op: &'static str, size: usize, limit: usize },
}

/// Checks that every dimension is in `1..=MAX_DIM` and the element count is at most `MAX_ELEMENTS`.
pub fn check_size(op: &'static str, dims: &[usize]) -> Result<(), ShapeError> {
    let too_large = || ShapeError::TooLarge { op, shape: format!("{dims:?}"), limit: MAX_ELEMENTS };
    let mut n: usize = 1;
    for &d in dims {
        if d == 0 {
            return Err(ShapeError::Invalid { op, what: format!("shape {dims:?} has a zero dimension") });
        }
        if d > MAX_DIM {
            return Err(ShapeError::DimTooLarge { op, size: d, limit: MAX_DIM });
        }
        n = n.checked_mul(d).ok_or_else(too_large)?;
    }
    if n > MAX_ELEMENTS {
        return Err(too_large());
    }
    Ok(())
}

/// Output length of a sliding window: `floor((I + 2P - D(K-1) - 1) / S) + 1`, or with `ceil` instead of
/// `floor` in ceil mode, where the last window must start inside the input or the left padding
/// (PyTorch's rule).
#[allow(clippy::too_many_arguments)] // the named quantities of PyTorch's formula, in its order
pub fn window_output(
    op: &'static str,
    axis: &'static str,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Result<usize, ShapeError> {
    let overflow = || ShapeError::Overflow { op };
    let i = i64::try_from(input).map_err(|_| overflow())?;
    let k = i64::try_from(kernel).map_err(|_| overflow())?;
    let s = i64::try_from(stride).map_err(|_| overflow())?;
    let p = i64::try_from(pad).map_err(|_| overflow())?;
    let d = i64::try_from(dilation).map_err(|_| overflow())?;
    let span = d.checked_mul(k - 1).ok_or_else(overflow)?;
    let padded = i.checked_add(p.checked_mul(2).ok_or_else(overflow)?).ok_or_else(overflow)?;
    let numer = padded - span - 1;
    let empty = |size| ShapeError::EmptyOutput { op, axis, size, input, kernel, stride, pad, dilation };
    if numer < 0 {
        return Err(empty(numer.div_euclid(s) + 1));
    }
    let mut out = if ceil_mode { (numer + s - 1) / s + 1 } else { numer / s + 1 };
    if ceil_mode && (out - 1) * s >= i + p {
        out -= 1;
    }
    if out <= 0 {
        return Err(empty(out));
    }
    usize::try_from(out).map_err(|_| overflow())
}
