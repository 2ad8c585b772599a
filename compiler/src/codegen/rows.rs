//! Runs of floats in scratch rows, shared by the kernels that build padded copies of input rows
//! (convolution row panels, pooling): fills with a constant, and copies (strided, with an
//! optional per-channel affine + ReLU applied on the way).

use super::cx::{KernelCx, LANES, VEC};

/// The phases of a strided window: for taps `k * dilation` (`k < taps`) and stride `stride`, the
/// slot of each phase `(k * dilation) % stride` some tap reads (`None`: none does), in order of
/// first use, and the number of slots. Rows and columns of padded phase rows are kept per slot.
pub(crate) fn phase_slots(taps: usize, dilation: usize, stride: usize) -> (Vec<Option<usize>>, usize) {
    let mut slot = vec![None; stride];
    let mut slots = 0;
    for k in 0..taps {
        let f = (k * dilation) % stride;
        if slot[f].is_none() {
            slot[f] = Some(slots);
            slots += 1;
        }
    }
    (slot, slots)
}
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Stores `len` zeros at `dst + at`.
pub(crate) fn zero_run(cx: &mut KernelCx, dst: Value, at: usize, len: usize) {
    fill_run(cx, dst, at, len, 0.0);
}

/// Stores `len` copies of `value` at `dst + at`.
pub(crate) fn fill_run(cx: &mut KernelCx, dst: Value, at: usize, len: usize, value: f32) {
    let zv = cx.fconst(VEC, value);
    let zs = cx.fconst(F32, value);
    let vecs = len / LANES;
    if vecs > 8 {
        let base = cx.add_floats(dst, at);
        cx.for_count(vecs, "zero fill", |cx, i| {
            let p = cx.offset(base, i, LANES);
            cx.store(zv, p, 0);
        });
    } else {
        for v in 0..vecs {
            cx.store(zv, dst, at + v * LANES);
        }
    }
    for s in vecs * LANES..len {
        cx.store(zs, dst, at + s);
    }
}

/// Copies `len` floats from `src + from + i*step` to `dst + at + i`, applying the prologue
/// (`x * pre_scale + pre_shift`, ReLU) when given as `(pointer to pre_scale[ci], Cin, relu)`.
/// Reads stay inside `src[..row]` (the input row). Stride 2 de-interleaves two vectors per four
/// outputs with a shuffle; other strides gather float by float.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_run(
    cx: &mut KernelCx,
    src: Value,
    from: usize,
    step: usize,
    row: usize,
    dst: Value,
    at: usize,
    len: usize,
    pro: Option<(Value, usize, bool)>,
) {
    let pro_vals = |cx: &mut KernelCx, ty| {
        pro.map(|(p, cin, relu)| {
            let (s, b) = (cx.load_s(p, 0), cx.load_s(p, cin));
            if ty == F32 {
                (s, b, relu)
            } else {
                (cx.b.ins().splat(VEC, s), cx.b.ins().splat(VEC, b), relu)
            }
        })
    };
    let apply = |cx: &mut KernelCx, x: Value, p: Option<(Value, Value, bool)>| match p {
        Some((s, b, relu)) => {
            let y = cx.fma(x, s, b);
            if relu {
                cx.relu(y)
            } else {
                y
            }
        }
        None => x,
    };
    let src = cx.add_floats(src, from);
    let dst = cx.add_floats(dst, at);
    if step == 1 {
        let vecs = len / LANES;
        let pv = pro_vals(cx, VEC);
        if vecs > 0 {
            cx.for_count(vecs, "fill: copy vectors", |cx, i| {
                let s = cx.offset(src, i, LANES);
                let d = cx.offset(dst, i, LANES);
                let v = cx.load_v(s, 0);
                let v = apply(cx, v, pv);
                cx.store(v, d, 0);
            });
        }
        let ps = pro_vals(cx, F32);
        for i in vecs * LANES..len {
            let v = cx.load_s(src, i);
            let v = apply(cx, v, ps);
            cx.store(v, dst, i);
        }
    } else {
        // Stride 2: vector `v` reads src[8v .. 8v + 8] (whole, inside the row) and keeps the even
        // lanes.
        let vecs = if step == 2 { (len / LANES).min(row.saturating_sub(from) / (2 * LANES)) } else { 0 };
        if vecs > 0 {
            let pv = pro_vals(cx, VEC);
            cx.for_count(vecs, "fill: de-interleave stride 2", |cx, i| {
                let s = cx.offset(src, i, 2 * LANES);
                let d = cx.offset(dst, i, LANES);
                let (a, b) = (cx.load_v(s, 0), cx.load_v(s, LANES));
                let v = cx.shuffle(a, b, [0, 2, 4, 6]);
                let v = apply(cx, v, pv);
                cx.store(v, d, 0);
            });
        }
        let done = vecs * LANES;
        let (src, dst) = (cx.add_floats(src, done * step), cx.add_floats(dst, done));
        let ps = pro_vals(cx, F32);
        cx.for_count(len - done, "fill: gather stride", |cx, i| {
            let s = cx.offset(src, i, step);
            let d = cx.offset(dst, i, 1);
            let v = cx.load_s(s, 0);
            let v = apply(cx, v, ps);
            cx.store(v, d, 0);
        });
    }
}

/// The four column phases of `chunks * 4` columns from `col0` of a padded row with column stride 4:
/// phase `f` column `c` is `src[from + 4 (c - col0) + f]`, stored at `dst + at[f] + c`. Each chunk
/// is four vector loads and a 4x4 transpose (eight shuffles), four vector stores.
pub(crate) fn copy_phases4(
    cx: &mut KernelCx,
    src: Value,
    from: usize,
    dst: Value,
    at: &[usize],
    col0: usize,
    chunks: usize,
) {
    let src = cx.add_floats(src, from);
    let dst = cx.add_floats(dst, col0);
    cx.for_count(chunks, "fill: 4x4 transposes of stride-4 phases", |cx, i| {
        let s = cx.offset(src, i, 4 * LANES);
        let d = cx.offset(dst, i, LANES);
        let v = [0, 1, 2, 3].map(|k| cx.load_v(s, k * LANES));
        let out = cx.transpose4(v);
        for (f, o) in out.into_iter().enumerate() {
            cx.store(o, d, at[f]);
        }
    });
}
