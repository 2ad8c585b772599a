//! The portable tile: f32x4 Cranelift code inlined into the calling kernel ([`Isa::Sse`]).
//!
//! Loop nest: `for group { for tap { for r { a = splat(A[tap][r]); for j { acc[r][j] =
//! fma(a, B[tap][j], acc[r][j]) } } } }`, then the tail taps, then the epilogue on `acc` in
//! registers, then the stores. The generator emits the FMAs in this order and the GEMM families are
//! compiled with `opt_level=none`, which keeps that order (the e-graph pass of `speed` would sink
//! the splats to their uses and serialise the chains).
//!
//! Registers: x64 `fma` lowers to `vfmadd132ps/213ps`, which overwrite a *multiplicand*; a
//! multiplicand with a later use is copied first. With B read straight from memory by the FMA, only
//! the splat of A stays live across a row's FMAs: `rows*nv` accumulators + 1 splat + 1 copy <= 16
//! xmm registers (3x16, the measured best, uses 14).
//!
//! [`Isa::Sse`]: super::Isa::Sse

use super::super::cx::{KernelCx, LANES, VEC};
use super::{Axis, ChanVec, DepthwiseSpec, Piece, TileArgs, TileOut, TileSpec};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

/// Emits the tile inline (see the module documentation).
pub(crate) fn emit(cx: &mut KernelCx, spec: &TileSpec, args: TileArgs) {
    let acc = kloop(cx, spec, args);
    match &spec.out {
        TileOut::Partial { row } => {
            for (r, acc_r) in acc.iter().enumerate() {
                for (j, &v) in acc_r.iter().enumerate() {
                    cx.store(v, args.out, r * row + j * LANES);
                }
            }
        }
        TileOut::Final { row, pieces, epilogue, .. } => {
            let epi = args.epi;
            let vec_of = |cx: &mut KernelCx, cv: Option<ChanVec>, r: usize, j: usize| {
                let (cv, base) = (cv?, epi?);
                Some(match cv.axis {
                    Axis::Row => cx.load_splat(base, cv.at + r),
                    Axis::Col => cx.load_v(base, cv.at + j * LANES),
                })
            };
            for (r, row_acc) in acc.into_iter().enumerate() {
                for (j, mut y) in row_acc.into_iter().enumerate() {
                    let (s1, b1) = (vec_of(cx, epilogue.s1, r, j), vec_of(cx, epilogue.b1, r, j));
                    y = cx.affine(y, s1, b1);
                    if let (Some(res_row), Some(res)) = (epilogue.residual, args.res) {
                        for p in &pieces[j] {
                            let x = load_piece(cx, res, r * res_row, *p);
                            y = cx.b.ins().fadd(y, x);
                        }
                    }
                    let (s2, b2) = (vec_of(cx, epilogue.s2, r, j), vec_of(cx, epilogue.b2, r, j));
                    y = cx.affine(y, s2, b2);
                    if epilogue.relu_rows[r] {
                        y = cx.relu(y);
                    }
                    if let Some(act) = epilogue.activation {
                        y = crate::codegen::eltwise::activation(cx, VEC, act.0, y);
                    }
                    for p in &pieces[j] {
                        store_piece(cx, y, args.out, r * row, *p);
                    }
                }
            }
        }
    }
}

/// The K loop; returns the accumulators `acc[r][j]`.
fn kloop(cx: &mut KernelCx, spec: &TileSpec, args: TileArgs) -> Vec<Vec<Value>> {
    let k = &spec.kloop;
    let zero = cx.fconst(VEC, 0.0);
    let acc: Vec<Vec<Variable>> = (0..spec.rows)
        .map(|r| {
            (0..spec.nv)
                .map(|j| {
                    let v = match (spec.init, args.init) {
                        (Some(row), Some(base)) => cx.load_v(base, r * row + j * LANES),
                        _ => zero,
                    };
                    cx.var(VEC, v)
                })
                .collect()
        })
        .collect();
    let rows_a = spec.rows_a;
    let emit_taps = |cx: &mut KernelCx, taps: &[super::Tap], a: Value, b: Value| {
        for tap in taps {
            for (r, acc_r) in acc.iter().enumerate() {
                let w = cx.load_splat(a, tap.a + rows_a.offset(r));
                for (j, &var) in acc_r.iter().enumerate() {
                    let x = cx.load_v(b, tap.b + j * LANES);
                    let old = cx.b.use_var(var);
                    let new = cx.fma(w, x, old);
                    cx.b.def_var(var, new);
                }
            }
        }
    };
    // Group `g`'s bases are computed from `g` (not carried from group to group), so the static
    // bounds check sees them bounded by the loop's counter.
    cx.for_count(k.groups, "K groups", |cx, g| {
        let a = cx.offset(args.a, g, k.a_step);
        let b = cx.offset(args.b, g, k.b_step);
        emit_taps(cx, &k.taps, a, b);
    });
    if !k.tail.is_empty() {
        let a = cx.add_floats(args.a, k.groups * k.a_step);
        let b = cx.add_floats(args.b, k.groups * k.b_step);
        emit_taps(cx, &k.tail, a, b);
    }
    acc.iter().map(|row| row.iter().map(|&v| cx.b.use_var(v)).collect()).collect()
}

/// The lanes `p.lo..p.hi` of a vector read from `base + row + p.at + lane` (zero elsewhere; one
/// vector load when the piece is whole).
fn load_piece(cx: &mut KernelCx, base: Value, row: usize, p: Piece) -> Value {
    if p.lo == 0 && p.hi == LANES {
        return cx.load_v(base, offset(row, p.at, 0));
    }
    let mut v = cx.fconst(VEC, 0.0);
    for lane in p.lo..p.hi {
        let s = cx.load_s(base, offset(row, p.at, lane));
        v = cx.b.ins().insertlane(v, s, lane as u8);
    }
    v
}

/// Stores lanes `p.lo..p.hi` of `v` at `base + row + p.at + lane`.
fn store_piece(cx: &mut KernelCx, v: Value, base: Value, row: usize, p: Piece) {
    if p.lo == 0 && p.hi == LANES {
        cx.store(v, base, offset(row, p.at, 0));
        return;
    }
    for lane in p.lo..p.hi {
        let s = cx.b.ins().extractlane(v, lane as u8);
        debug_assert_eq!(cx.b.func.dfg.value_type(s), F32);
        cx.store(s, base, offset(row, p.at, lane));
    }
}

/// `row + at + lane` floats; never negative for a stored lane (a piece's lanes lie in its row).
fn offset(row: usize, at: isize, lane: usize) -> usize {
    let o = row as isize + at + lane as isize;
    debug_assert!(o >= 0, "a tile lane before its base");
    o.max(0) as usize
}

/// Runs a Winograd transform program on f32x4 values.
fn run_program(cx: &mut KernelCx, program: &crate::ir::winograd::Program, inputs: &[Value]) -> Vec<Value> {
    use crate::ir::winograd::Step;
    let mut v: Vec<Value> = inputs.to_vec();
    for step in program.steps {
        let y = match *step {
            Step::Add(a, b) => cx.b.ins().fadd(v[a], v[b]),
            Step::Sub(a, b) => cx.b.ins().fsub(v[a], v[b]),
            Step::Fma(a, c, b) => {
                let c = cx.fconst(VEC, c);
                cx.fma(v[a], c, v[b])
            }
        };
        v.push(y);
    }
    program.outputs.iter().map(|&o| v[o]).collect()
}

/// The Winograd input transform with f32x4 vectors of tiles (see [`super::InputTransformSpec`]).
pub(crate) fn input_transform(
    cx: &mut KernelCx,
    spec: &super::InputTransformSpec,
    [src, dst, _tmp]: [Value; 3],
) {
    let a = spec.tile.alpha();
    let program = spec.tile.input_program();
    cx.for_count(spec.channels, "winograd input transform: channels", |cx, c| {
        let (s, d) = (cx.offset(src, c, spec.src_stride), cx.offset(dst, c, spec.dst_stride));
        let mut t = vec![Vec::new(); a];
        for j in 0..a {
            let col: Vec<Value> = (0..a).map(|i| cx.load_v(s, spec.offsets[i * a + j])).collect();
            for (i, value) in run_program(cx, program, &col).into_iter().enumerate() {
                t[i].push(value);
            }
        }
        let whole = spec.lanes.len() == LANES && spec.lanes.iter().enumerate().all(|(k, &l)| l as usize == k);
        for (i, row) in t.iter().enumerate() {
            for (j, value) in run_program(cx, program, row).into_iter().enumerate() {
                let at = (i * a + j) * spec.point_stride;
                if whole {
                    cx.store(value, d, at);
                } else {
                    // Compacted: lane `lanes[k]` to `at + k`.
                    for (k, &lane) in spec.lanes.iter().enumerate() {
                        let x = cx.b.ins().extractlane(value, lane);
                        cx.store(x, d, at + k);
                    }
                }
            }
        }
    });
}

/// The Winograd output transform with f32x4 vectors of tiles: each output row's vectors
/// interleaved so a tile's pixels sit side by side, then the epilogue and the pieces' stores (see
/// [`super::OutputTransformSpec`]).
pub(crate) fn output_transform(
    cx: &mut KernelCx,
    spec: &super::OutputTransformSpec,
    [src, out, epi, res, _tmp]: [Value; 5],
) {
    let (m, a) = (spec.tile.m(), spec.tile.alpha());
    let program = spec.tile.output_program();
    let mut t = vec![Vec::new(); m];
    for j in 0..a {
        let col: Vec<Value> = (0..a).map(|i| cx.load_v(src, (i * a + j) * spec.point_stride)).collect();
        for (i, value) in run_program(cx, program, &col).into_iter().enumerate() {
            t[i].push(value);
        }
    }
    let e = &spec.epilogue;
    let scalar = |cx: &mut KernelCx, cv: Option<ChanVec>| cv.map(|c| cx.load_splat(epi, c.at));
    for (i, row) in t.iter().enumerate() {
        let y = run_program(cx, program, row);
        let interleaved: Vec<Value> = match m {
            4 => {
                let t0 = cx.shuffle(y[0], y[1], [0, 4, 1, 5]);
                let t1 = cx.shuffle(y[0], y[1], [2, 6, 3, 7]);
                let t2 = cx.shuffle(y[2], y[3], [0, 4, 1, 5]);
                let t3 = cx.shuffle(y[2], y[3], [2, 6, 3, 7]);
                vec![
                    cx.shuffle(t0, t2, [0, 1, 4, 5]),
                    cx.shuffle(t0, t2, [2, 3, 6, 7]),
                    cx.shuffle(t1, t3, [0, 1, 4, 5]),
                    cx.shuffle(t1, t3, [2, 3, 6, 7]),
                ]
            }
            _ => vec![cx.shuffle(y[0], y[1], [0, 4, 1, 5]), cx.shuffle(y[0], y[1], [2, 6, 3, 7])],
        };
        for (mut v, pieces) in interleaved.into_iter().zip(&spec.pieces[i]) {
            let (s1, b1) = (scalar(cx, e.s1), scalar(cx, e.b1));
            v = cx.affine(v, s1, b1);
            if e.residual.is_some() {
                for p in pieces {
                    let x = load_piece(cx, res, 0, *p);
                    v = cx.b.ins().fadd(v, x);
                }
            }
            let (s2, b2) = (scalar(cx, e.s2), scalar(cx, e.b2));
            v = cx.affine(v, s2, b2);
            if e.relu_rows.first().copied().unwrap_or(false) {
                v = cx.relu(v);
            }
            if let Some(act) = e.activation {
                v = crate::codegen::eltwise::activation(cx, VEC, act.0, v);
            }
            for p in pieces {
                store_piece(cx, v, out, 0, *p);
            }
        }
    }
}

/// Vectors per step of the f32x4 depthwise stencil: two chains of FMAs share each weight splat.
const DEPTHWISE_UNROLL: usize = 2;

/// The depthwise stencil inline ([`DepthwiseSpec`]): per step of [`DEPTHWISE_UNROLL`] vectors, per
/// tap, one weight splat and an FMA per vector (the first tap a multiply).
pub(crate) fn depthwise(cx: &mut KernelCx, spec: &DepthwiseSpec, [src, w, dst]: [Value; 3]) {
    let stencil = |cx: &mut KernelCx, src: Value, dst: Value, vectors: usize| {
        let mut acc: Vec<Option<Value>> = vec![None; vectors];
        for (t, &off) in spec.taps.iter().enumerate() {
            let wt = cx.load_splat(w, t);
            for (j, a) in acc.iter_mut().enumerate() {
                let x = cx.load_v(src, off + j * LANES);
                *a = Some(match *a {
                    None => cx.b.ins().fmul(x, wt),
                    Some(a) => cx.fma(x, wt, a),
                });
            }
        }
        for (j, a) in acc.into_iter().enumerate() {
            if let Some(a) = a {
                cx.store(a, dst, j * LANES);
            }
        }
    };
    let steps = spec.vectors / DEPTHWISE_UNROLL;
    cx.for_count(steps, "depthwise stencil", |cx, i| {
        let s = cx.offset(src, i, DEPTHWISE_UNROLL * LANES);
        let d = cx.offset(dst, i, DEPTHWISE_UNROLL * LANES);
        stencil(cx, s, d, DEPTHWISE_UNROLL);
    });
    let done = steps * DEPTHWISE_UNROLL;
    if spec.vectors > done {
        let s = cx.add_floats(src, done * LANES);
        let d = cx.add_floats(dst, done * LANES);
        stencil(cx, s, d, spec.vectors - done);
    }
}
