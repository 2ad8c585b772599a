//! Weight packing: from the IR's weight tensors (as `WeightExpr::eval` produces them, in
//! `Op::weights()` slot order) to the layouts the kernels read. Done once, at load or bundle time.
//!
//! Convolution (`pack_conv_weights`), with `ppg` and the sections from [`ConvLayout`] and
//! `R` = [`ConvLayout::panel`] output channels per panel, whatever the ISA ([`PANEL_ROWS`] = 12
//! rows of the A operand; [`CHANVEC_PANEL`] = 32 lanes of the B operand for `chanvec`, whose tiles
//! read the same array with channels along the vectors):
//! ```text
//! A panels   [points][groups * ppg][k_g][R]
//!                                        a[((x * groups*ppg + gp) * k_g + k) * R + r] = W_x[g*cout_g + p*R + r][k]
//!                                        (k = ci * KH*KW + kh * KW + kw; rows past cout_g are 0;
//!                                        one point x, except Winograd: W_x = U[x], k = ci)
//! s1, b1     [groups * ppg * R] each     y = acc * s1 + b1      (bias, affine, and the post-affine
//!                                                                when there is no residual, folded)
//! s2, b2     [groups * ppg * R] each     y = (y + residual) * s2 + b2   (post-affine with residual)
//! pre        [Cin] scale, then [Cin] shift  (prologue)
//! ```
//! The layout does not depend on the tile: every ISA's tile reads whole or stacked panels (see
//! [`crate::codegen::tile::RowsA::Panels`]), so a bundle packed on one machine runs on any other.
//! Absent sections take no space; their offsets are `None` in the plan. Folding runs in f64 and
//! rounds once. Linear (`pack_linear_weights`): see [`super::linear`].
//!
//! Every packed buffer should start 64-byte aligned (cache line): [`AlignedF32`] does that in
//! memory, and a bundle writer should pad to 64 bytes. Kernels do not *require* alignment.

#[allow(unused_imports)] // named by the documentation
use super::conv::{ConvLayout, ConvSpec, CHANVEC_PANEL, PANEL_ROWS};
use super::CodegenError;

/// A float buffer whose first element is 64-byte aligned.
#[derive(Clone, Default)]
pub struct AlignedF32 {
    blocks: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl AlignedF32 {
    pub fn from_slice(data: &[f32]) -> AlignedF32 {
        let mut blocks = vec![Line::default(); data.len().div_ceil(16)];
        for (line, chunk) in blocks.iter_mut().zip(data.chunks(16)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        AlignedF32 { blocks, len: data.len() }
    }

    pub fn zeros(len: usize) -> AlignedF32 {
        AlignedF32 { blocks: vec![Line::default(); len.div_ceil(16)], len }
    }

    /// [`AlignedF32::zeros`], or `None` when the memory cannot be allocated.
    pub fn try_zeros(len: usize) -> Option<AlignedF32> {
        let mut blocks = Vec::new();
        blocks.try_reserve_exact(len.div_ceil(16)).ok()?;
        blocks.resize(len.div_ceil(16), Line::default());
        Some(AlignedF32 { blocks, len })
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` `[f32; 16]` with no padding (64 bytes, align 64), so the
        // blocks are `16 * blocks.len() >= len` contiguous, initialised floats.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<f32>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<f32>(), self.len) }
    }

    pub fn as_ptr(&self) -> *const f32 {
        self.blocks.as_ptr().cast()
    }

    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.blocks.as_mut_ptr().cast()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn expect_len(what: &str, got: &[f32], want: usize) -> Result<(), CodegenError> {
    if got.len() != want {
        return Err(CodegenError::Weights(format!("{what}: expected {want} floats, got {}", got.len())));
    }
    Ok(())
}

/// Packs a convolution's weights (`weights` in `Op::weights()` order: weight, bias, pre_scale,
/// pre_shift, scale, shift, post_scale, post_shift, as present) into the layout above.
pub fn pack_conv_weights(spec: &ConvSpec, weights: &[&[f32]]) -> Result<Vec<f32>, CodegenError> {
    let plan = ConvLayout::new(spec)?;
    let op = &spec.op;
    let c = &op.conv;
    let mut slots = weights.iter();
    let mut next = |what: &str, len: usize| -> Result<&[f32], CodegenError> {
        let w = slots.next().ok_or_else(|| CodegenError::Weights(format!("missing {what}")))?;
        expect_len(what, w, len)?;
        Ok(w)
    };
    let (cout, cin) = (c.out_channels, c.in_channels);
    let points = plan.points;
    let w = next("weight", points * cout * plan.k_g)?;
    let bias = if c.bias { Some(next("bias", cout)?) } else { None };
    let pre =
        if op.prologue.is_some() { Some((next("pre_scale", cin)?, next("pre_shift", cin)?)) } else { None };
    let affine = if op.affine { Some((next("scale", cout)?, next("shift", cout)?)) } else { None };
    let post =
        if op.post_affine { Some((next("post_scale", cout)?, next("post_shift", cout)?)) } else { None };
    if slots.next().is_some() {
        return Err(CodegenError::Weights("more weight tensors than the convolution has".into()));
    }

    let mut out = vec![0f32; plan.packed_len];
    let (mr, ppg, k_g) = (plan.panel, plan.ppg, plan.k_g);
    for g in 0..plan.groups {
        for p in 0..ppg {
            let gp = g * ppg + p;
            for r in 0..mr.min(plan.cout_g - p * mr) {
                let co = g * plan.cout_g + p * mr + r;
                for xi in 0..points {
                    // Winograd weights are `[points, Cout, Cin]`, others `[Cout, K]` (one point).
                    let (src, dst) = ((xi * cout + co) * k_g, xi * plan.point_stride() + gp * k_g * mr);
                    for k in 0..k_g {
                        out[dst + k * mr + r] = w[src + k];
                    }
                }
                let b = bias.map_or(0.0, |b| b[co] as f64);
                let (s, t) = affine.map_or((1.0, 0.0), |(s, t)| (s[co] as f64, t[co] as f64));
                let (ps, pt) = post.map_or((1.0, 0.0), |(s, t)| (s[co] as f64, t[co] as f64));
                let row = gp * mr + r;
                let (s1, b1) = if op.residual { (s, b * s + t) } else { (s * ps, (b * s + t) * ps + pt) };
                let mut put = |section: Option<usize>, v: f64| {
                    if let Some(at) = section {
                        out[at + row] = v as f32;
                    }
                };
                put(plan.s1, s1);
                put(plan.b1, b1);
                put(plan.s2, ps);
                put(plan.b2, pt);
            }
        }
    }
    if let (Some(at), Some((s, t))) = (plan.pre, pre) {
        out[at..at + cin].copy_from_slice(s);
        out[at + cin..at + 2 * cin].copy_from_slice(t);
    }
    Ok(out)
}
