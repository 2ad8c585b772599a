//! `KernelCx`: the function-building context every kernel family writes through.
//!
//! It owns the Cranelift `FunctionBuilder` of one kernel and knows the kernel ABI (see
//! [`super::KernelFn`]): eight parameters `inputs, output, weights, scratch, begin, end, batch,
//! setup`. It offers
//! the few building blocks the families share: typed loads and stores at constant float offsets,
//! counted loops (with Cranelift-frontend `Variable`s carrying accumulators, so the frontend builds
//! the SSA block parameters), splats, ReLU/max in the single-instruction form, and block notes that
//! the CLIF dump prints beside the blocks.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, Block, Endianness, Function, InstBuilder, MemFlagsData, Signature, Type, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

/// The vector type every kernel computes with: Cranelift's x64 backend lowers 128-bit vectors only.
pub(crate) const VEC: Type = F32X4;
/// Lanes of [`VEC`].
pub(crate) const LANES: usize = 4;

/// The kernel signature: `(inputs, output, weights, scratch: ptr, begin, end, batch: u64, setup:
/// ptr)`.
pub(crate) fn kernel_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..8 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// Loads and stores of activations and weights: never trapping (the caller guarantees the pointers,
/// see [`super::KernelFn`]), not assumed aligned (tiles overlap at arbitrary float offsets).
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

pub(crate) struct KernelCx<'f> {
    pub b: FunctionBuilder<'f>,
    pub inputs: Value,
    pub output: Value,
    pub weights: Value,
    pub scratch: Value,
    pub begin: Value,
    pub end: Value,
    pub batch: Value,
    /// The caller's set-up memo (null or one `i64`: see [`super::KernelArgs::setup`]).
    pub setup: Value,
    notes: Vec<(Block, String)>,
    frontend: TargetFrontendConfig,
    /// Whether the target lowers `fma` to an instruction (see [`KernelCx::fma`]).
    has_fma: bool,
}

impl<'f> KernelCx<'f> {
    /// Starts a kernel body in `func` (whose signature must be [`kernel_signature`]).
    pub fn new(
        func: &'f mut Function,
        fctx: &'f mut FunctionBuilderContext,
        frontend: TargetFrontendConfig,
        has_fma: bool,
    ) -> Self {
        let mut b = FunctionBuilder::new(func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        KernelCx {
            b,
            inputs: p[0],
            output: p[1],
            weights: p[2],
            scratch: p[3],
            begin: p[4],
            end: p[5],
            batch: p[6],
            setup: p[7],
            notes: vec![(entry, "entry: kernel arguments".into())],
            frontend,
            has_fma,
        }
    }

    /// Ends the function (`return`) and hands back the block notes for the CLIF dump.
    pub fn finish(mut self) -> Vec<(Block, String)> {
        self.b.ins().return_(&[]);
        self.b.finalize(self.frontend);
        self.notes
    }

    /// Records a note printed before `block` in the annotated CLIF.
    pub fn note(&mut self, block: Block, text: impl Into<String>) {
        self.notes.push((block, text.into()));
    }

    pub fn ic(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// Entry `i` of a pointer array (`inputs` or `weights`).
    pub fn ptr_at(&mut self, array: Value, i: usize) -> Value {
        self.b.ins().load(I64, mem(), array, (i * 8) as i32)
    }

    /// `base + index * scale` floats (`index` is an i64 value).
    pub fn offset(&mut self, base: Value, index: Value, scale_floats: usize) -> Value {
        let bytes = self.b.ins().imul_imm_s(index, (scale_floats * 4) as i64);
        self.b.ins().iadd(base, bytes)
    }

    /// `base + floats` for a compile-time float count.
    pub fn add_floats(&mut self, base: Value, floats: usize) -> Value {
        if floats == 0 {
            base
        } else {
            self.b.ins().iadd_imm_s(base, (floats * 4) as i64)
        }
    }

    /// Splits a constant float offset into an address and a 32-bit byte displacement.
    fn disp(&mut self, base: Value, floats: usize) -> (Value, i32) {
        let bytes = floats * 4;
        match i32::try_from(bytes) {
            Ok(d) => (base, d),
            Err(_) => (self.b.ins().iadd_imm_s(base, bytes as i64), 0),
        }
    }

    pub fn load(&mut self, ty: Type, base: Value, floats: usize) -> Value {
        let (addr, d) = self.disp(base, floats);
        self.b.ins().load(ty, mem(), addr, d)
    }

    pub fn load_v(&mut self, base: Value, floats: usize) -> Value {
        self.load(VEC, base, floats)
    }

    pub fn load_s(&mut self, base: Value, floats: usize) -> Value {
        self.load(F32, base, floats)
    }

    pub fn store(&mut self, value: Value, base: Value, floats: usize) {
        let (addr, d) = self.disp(base, floats);
        self.b.ins().store(mem(), value, addr, d);
    }

    /// Stores the first `lanes` lanes of the vector `value` at `base + floats`: one vector store
    /// when all are wanted, else one scalar store per lane (a row's tail, never past it).
    pub fn store_lanes(&mut self, value: Value, base: Value, floats: usize, lanes: usize) {
        if lanes == LANES {
            self.store(value, base, floats);
            return;
        }
        for lane in 0..lanes {
            let s = self.b.ins().extractlane(value, lane as u8);
            self.store(s, base, floats + lane);
        }
    }

    /// `x * y + z`: one fused multiply-add where the target has FMA; a multiply and an add (two
    /// roundings) on hosts without it, where Cranelift would otherwise call a library routine per
    /// lane.
    pub fn fma(&mut self, x: Value, y: Value, z: Value) -> Value {
        if self.has_fma {
            self.b.ins().fma(x, y, z)
        } else {
            let p = self.b.ins().fmul(x, y);
            self.b.ins().fadd(p, z)
        }
    }

    /// A scalar loaded and broadcast to every lane.
    pub fn load_splat(&mut self, base: Value, floats: usize) -> Value {
        let s = self.load_s(base, floats);
        self.b.ins().splat(VEC, s)
    }

    /// A constant of type `ty` (`F32` or `VEC`).
    pub fn fconst(&mut self, ty: Type, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if ty == F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    /// `max(x, y)` as one `maxps`/`maxss`: `y < x ? x : y`, so a NaN in `y` propagates (x86 `max`
    /// semantics, not IEEE `fmax`, which Cranelift lowers to eight instructions).
    pub fn max(&mut self, x: Value, y: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let lt = self.b.ins().fcmp(FloatCC::LessThan, y, x);
        if ty == F32 {
            self.b.ins().select(lt, x, y)
        } else {
            let mask = self.b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), lt);
            self.b.ins().bitselect(mask, x, y)
        }
    }

    /// `min(x, y)` as one `minps`/`minss` (`x < y ? x : y`).
    pub fn min(&mut self, x: Value, y: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let lt = self.b.ins().fcmp(FloatCC::LessThan, x, y);
        if ty == F32 {
            self.b.ins().select(lt, x, y)
        } else {
            let mask = self.b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), lt);
            self.b.ins().bitselect(mask, x, y)
        }
    }

    /// `y * s + b` with whichever of `s`, `b` is present (an epilogue's affine step).
    pub fn affine(&mut self, y: Value, s: Option<Value>, b: Option<Value>) -> Value {
        match (s, b) {
            (Some(s), Some(b)) => self.fma(y, s, b),
            (Some(s), None) => self.b.ins().fmul(y, s),
            (None, Some(b)) => self.b.ins().fadd(y, b),
            (None, None) => y,
        }
    }

    /// `relu(x) = max(0, x)`, keeping a NaN `x` as NaN like PyTorch.
    pub fn relu(&mut self, x: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let zero = self.fconst(ty, 0.0);
        // `x < 0 ? 0 : x`: maxps with `x` second, so a NaN `x` is returned.
        self.max(zero, x)
    }

    /// A fresh variable of type `ty` holding `init`.
    pub fn var(&mut self, ty: Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// `for i in (lo..hi).step_by(step)` with run-time bounds; `body` gets `i`.
    pub fn for_range(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        note: &str,
        mut body: impl FnMut(&mut Self, Value),
    ) {
        let i = self.var(I64, lo);
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.note(header, format!("loop head: {note}"));
        self.note(body_block, format!("loop body: {note}"));
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let iv = self.b.use_var(i);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv, hi);
        self.b.ins().brif(more, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        self.b.seal_block(body_block);
        body(self, iv);
        let next = self.b.ins().iadd_imm_s(iv, step);
        self.b.def_var(i, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// `for i in 0..count` for a compile-time count: no loop for 0 or 1 iterations.
    pub fn for_count(&mut self, count: usize, note: &str, mut body: impl FnMut(&mut Self, Value)) {
        match count {
            0 => {}
            1 => {
                let zero = self.ic(0);
                body(self, zero);
            }
            _ => {
                let lo = self.ic(0);
                let hi = self.ic(count as i64);
                self.for_range(lo, hi, 1, note, body);
            }
        }
    }

    /// A run of `len` consecutive floats: `body(ty, i)` for vectors (`ty = VEC`, run-time `i` in steps
    /// of 4, unrolled twice) and then for the scalar tail (`ty = F32`, constant `i`). `i` is a float
    /// index from the run's start.
    pub fn for_run(&mut self, len: usize, mut body: impl FnMut(&mut Self, Type, Value)) {
        let pairs = len / (2 * LANES);
        if pairs > 0 {
            let (lo, hi) = (self.ic(0), self.ic((pairs * 2 * LANES) as i64));
            self.for_range(lo, hi, (2 * LANES) as i64, "vectors", |cx, i| {
                body(cx, VEC, i);
                let i2 = cx.b.ins().iadd_imm_s(i, LANES as i64);
                body(cx, VEC, i2);
            });
        }
        let mut at = pairs * 2 * LANES;
        if len - at >= LANES {
            let i = self.ic(at as i64);
            body(self, VEC, i);
            at += LANES;
        }
        for t in at..len {
            let i = self.ic(t as i64);
            body(self, F32, i);
        }
    }

    /// Runs `body(item)` for every work item in `begin..end`.
    pub fn for_items(&mut self, body: impl FnMut(&mut Self, Value)) {
        let (lo, hi) = (self.begin, self.end);
        self.for_range(lo, hi, 1, "work items", body);
    }

    /// `(q, r) = (x / d, x % d)` for a constant divisor.
    pub fn divmod(&mut self, x: Value, d: usize) -> (Value, Value) {
        if d == 1 {
            let zero = self.ic(0);
            return (x, zero);
        }
        let q = self.b.ins().udiv_imm_u(x, d as i64);
        let qd = self.b.ins().imul_imm_s(q, d as i64);
        let r = self.b.ins().isub(x, qd);
        (q, r)
    }

    /// `if cond { then }` (cond: an `i8` boolean).
    pub fn if_then(&mut self, cond: Value, then: impl FnOnce(&mut Self)) {
        let yes = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, yes, &[], done, &[]);
        self.b.switch_to_block(yes);
        self.b.seal_block(yes);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// `if cond { a } else { b }`, both branches given `state` (which both may borrow mutably).
    pub fn if_else_with<T: ?Sized>(
        &mut self,
        state: &mut T,
        cond: Value,
        a: impl FnOnce(&mut Self, &mut T),
        b: impl FnOnce(&mut Self, &mut T),
    ) {
        let (yes, no, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(cond, yes, &[], no, &[]);
        self.b.switch_to_block(yes);
        self.b.seal_block(yes);
        a(self, state);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(no);
        self.b.seal_block(no);
        b(self, state);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// Integer `min(a, b)` / `max(a, b)` of i64 values (signed).
    pub fn imin(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().smin(a, b)
    }

    pub fn imax(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().smax(a, b)
    }

    /// Horizontal sum of the four lanes of a vector.
    pub fn hsum(&mut self, v: Value) -> Value {
        let mut acc = self.b.ins().extractlane(v, 0);
        for lane in 1..LANES as u8 {
            let x = self.b.ins().extractlane(v, lane);
            acc = self.b.ins().fadd(acc, x);
        }
        acc
    }

    /// Horizontal max of the four lanes of a vector.
    pub fn hmax(&mut self, v: Value) -> Value {
        let mut acc = self.b.ins().extractlane(v, 0);
        for lane in 1..LANES as u8 {
            let x = self.b.ins().extractlane(v, lane);
            acc = self.max(acc, x);
        }
        acc
    }

    /// Lanes of `a` (0..4) and `b` (4..8) picked by `lanes` (one `shuffle` of the bytes; x64
    /// lowers the usual patterns to `unpcklps`/`shufps`).
    pub fn shuffle(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        use cranelift_codegen::ir::types::I8X16;
        use cranelift_codegen::ir::ConstantData;
        let bytes: Vec<u8> = lanes.iter().flat_map(|&lane| (0..4).map(move |k| lane * 4 + k)).collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let (a, b) = (self.bitcast(I8X16, a), self.bitcast(I8X16, b));
        let v = self.b.ins().shuffle(a, b, mask);
        self.bitcast(VEC, v)
    }

    /// The 4x4 transpose of four vectors (`out[j][i] = v[i][j]`; eight shuffles).
    pub fn transpose4(&mut self, v: [Value; 4]) -> [Value; 4] {
        let t0 = self.shuffle(v[0], v[1], [0, 4, 1, 5]);
        let t1 = self.shuffle(v[0], v[1], [2, 6, 3, 7]);
        let t2 = self.shuffle(v[2], v[3], [0, 4, 1, 5]);
        let t3 = self.shuffle(v[2], v[3], [2, 6, 3, 7]);
        [
            self.shuffle(t0, t2, [0, 1, 4, 5]),
            self.shuffle(t0, t2, [2, 3, 6, 7]),
            self.shuffle(t1, t3, [0, 1, 4, 5]),
            self.shuffle(t1, t3, [2, 3, 6, 7]),
        ]
    }

    /// Reinterprets an `f32x4` as `i32x4` bits or back.
    pub fn bitcast(&mut self, ty: Type, v: Value) -> Value {
        self.b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), v)
    }
}

/// The integer vector type matching [`VEC`].
#[allow(dead_code)]
pub(crate) const IVEC: Type = I32X4;
