//! A static bounds check of generated kernels.
//!
//! Before a kernel becomes machine code, an interval analysis of its CLIF proves that every load
//! and store it makes, and every buffer it hands to an assembled routine, stays inside the buffer it
//! addresses, for every work item of a batch: a kernel it cannot prove is rejected with the
//! offending access, never run.
//!
//! ## What the analysis knows
//! The kernel ABI ([`super::KernelFn`]): argument 0 is the table of input pointers, 1 the
//! output, 2 the table of weight pointers, 3 the calling thread's scratch, 4 and 5 the work items
//! `begin..end` (any sub-range of `0..work_items(batch)`), 6 the batch, 7 the set-up memo (one
//! `i64`; the kernels only touch it behind a null check). The buffers' sizes come from
//! the spec alone ([`Buffers::of`]): input `i` holds `(batch - 1) * stride_i + len_i` floats from
//! its pointer (samples `stride_i` apart), the output likewise, weight `j` its
//! [`KernelSpec::weight_layout`] length, scratch [`KernelSpec::scratch_floats`]. The analysis runs
//! for concrete batch sizes (the JIT checks 1 and 2: the drivers address sample `n` at
//! `n * stride`, so a wrong stride or a read of the next sample shows at 2).
//!
//! ## The domain
//! Every integer value is an interval of `i128` (so `i64` arithmetic cannot overflow unseen: a
//! result outside `i64` becomes unknown), or a pointer: one of the buffers above plus an interval of
//! byte offsets. Instructions map intervals to intervals (sums, products, division and remainder by
//! positive constants, shifts, masks, minima, selects); anything else is unknown. Loops are the
//! drivers' counted loops (`i < n` at the head): the branch conditions refine the compared values
//! on each edge (`i < n` on the edge into the body, `0 <= x < n` for an unsigned `x < n`), so a
//! counter is bounded inside its body; loop-carried values that no condition bounds are widened
//! to unknown after a few rounds, which makes the fixpoint finite.
//!
//! ## What is checked
//! Every load and store in a reachable block: its address must be a pointer into one buffer whose
//! offset interval, plus the instruction's offset and the access's size, lies inside the buffer.
//! Every call of an assembled routine (register tiles, Winograd transforms): each pointer operand
//! against the footprint the routine's spec documents ([`super::tile`]'s contract: which floats of
//! each operand it may read or write); calls of extern helpers take no pointers.
//!
//! Soundness: each transfer function over-approximates its instruction (for all values in the
//! operands' intervals, the result is in the result's interval), refinements only drop values that
//! cannot take the edge, and joins take the union; so at the fixpoint every value a run can produce
//! lies in its abstraction, and an access proved in bounds is in bounds. Unknown is never assumed
//! safe. What it does not prove: the assembled routines' own code against their documented
//! footprints (their tests check them against the contract), and accesses staying inside a
//! value's own floats when it shares a buffer (a concatenation's slices): the check is about
//! memory safety, the tests about values.

use super::isa::Isa;
use super::KernelSpec;
use cranelift_codegen::entity::EntityRef;
use cranelift_codegen::ir::condcodes::{CondCode, IntCC};
use cranelift_codegen::ir::{
    types, Block, BlockArg, ExternalName, FuncRef, Function, Inst, InstructionData, Opcode, Value,
};
use std::collections::{BTreeSet, HashMap};

/// Floats in each buffer a kernel may touch, and its work items, for one batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffers {
    pub inputs: Vec<usize>,
    pub output: usize,
    pub weights: Vec<usize>,
    pub scratch: usize,
    pub items: usize,
    pub batch: usize,
    /// Items per repetition of the kernel's outer work split, when it has one (a row-panel
    /// convolution's items of one row block: `groups x chunks`, the row block outermost), else 1:
    /// items this far apart differ only in the outer index (see [`check`]).
    pub period: usize,
}

impl Buffers {
    /// The buffers of `spec`'s kernel for `isa` at batch `batch` (at least 1), as the executor
    /// lays them out.
    pub fn of(spec: &KernelSpec, isa: Isa, batch: usize) -> Buffers {
        let span = |len: usize, stride: usize| (batch - 1) * stride + len;
        let (inputs, output) = spec.extents();
        Buffers {
            inputs: inputs.iter().map(|&(len, stride)| span(len, stride)).collect(),
            output: span(output.0, output.1),
            weights: spec.weight_layout().iter().map(|&(_, len)| len).collect(),
            scratch: spec.scratch_floats(isa),
            items: spec.work_items(isa, batch),
            batch,
            period: match spec {
                KernelSpec::Conv(s) => super::ConvPlan::new(s, isa)
                    .ok()
                    .filter(|p| p.path == super::ConvPath::RowPanel)
                    .map_or(1, |p| p.layout.groups * p.chunks),
                _ => 1,
            },
        }
    }
}

/// Which floats of its pointer operands an assembled routine may touch: `(operand, lo, hi)`,
/// floats `lo..hi` from operand `operand` (a routine may list an operand more than once).
pub type Footprint = Vec<(usize, i64, i64)>;

/// A buffer a pointer points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Base {
    InputTable,
    WeightTable,
    Input(usize),
    Output,
    Weight(usize),
    Scratch,
    /// The set-up memo: one `i64`.
    SetupMemo,
}

impl std::fmt::Display for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Base::InputTable => write!(f, "the input table"),
            Base::WeightTable => write!(f, "the weight table"),
            Base::Input(i) => write!(f, "input {i}"),
            Base::Output => write!(f, "the output"),
            Base::Weight(i) => write!(f, "weight buffer {i}"),
            Base::Scratch => write!(f, "the scratch"),
            Base::SetupMemo => write!(f, "the set-up memo"),
        }
    }
}

/// Bounds beyond `i64`: unknown.
const INF: i128 = 1 << 100;

/// A strided interval: the integers `lo, lo + step, ..., hi` (`step` 0: the single value `lo`;
/// `lo > hi`: none). Strides keep a counter stepping by 8 below `n` from reaching `n - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lo: i128,
    hi: i128,
    step: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Range {
    const ALL: Range = Range { lo: -INF, hi: INF, step: 1 };

    fn at(k: i128) -> Range {
        Range { lo: k, hi: k, step: 0 }
    }

    /// Every integer in `lo..=hi` (bounds may be `±INF`).
    fn span(lo: i128, hi: i128) -> Range {
        Range { lo, hi, step: if lo == hi { 0 } else { 1 } }
    }

    /// `lo..=hi` in steps of `step`, as the machine computes it: a finite bound outside `i64`
    /// means the arithmetic may have wrapped, and no bound survives.
    fn new_stepped(lo: i128, hi: i128, step: i128) -> Range {
        if (lo > -INF && lo < i64::MIN as i128) || (hi < INF && hi > i64::MAX as i128) {
            return Range::ALL;
        }
        let step = if lo == hi { 0 } else { step.max(1) };
        Range { lo, hi, step }
    }

    fn new(lo: i128, hi: i128) -> Range {
        Range::new_stepped(lo, hi, 1)
    }

    fn is_empty(self) -> bool {
        self.lo > self.hi
    }

    fn is_known(self) -> bool {
        self.lo > -INF && self.hi < INF
    }

    fn constant(self) -> Option<i128> {
        (self.lo == self.hi).then_some(self.lo)
    }

    fn join(self, o: Range) -> Range {
        let step = gcd(gcd(self.step, o.step), self.lo - o.lo);
        let lo = self.lo.min(o.lo);
        Range { lo, hi: self.hi.max(o.hi), step: if lo == self.hi.max(o.hi) { 0 } else { step.max(1) } }
    }

    /// The values of `self` inside `lo..=hi` (keeping `self`'s stride).
    fn within(self, lo: i128, hi: i128) -> Range {
        if self.step == 0 {
            return if self.lo >= lo && self.lo <= hi { self } else { Range { lo: 1, hi: 0, step: 0 } };
        }
        let align_up = |x: i128| {
            if x <= self.lo || x <= -INF {
                self.lo
            } else {
                self.lo + (x - self.lo + self.step - 1) / self.step * self.step
            }
        };
        let align_down = |x: i128| {
            if x >= self.hi || x >= INF || self.lo <= -INF {
                self.hi.min(x)
            } else {
                self.lo + (x - self.lo).div_euclid(self.step) * self.step
            }
        };
        let (l, h) = (align_up(lo.max(self.lo)), align_down(hi.min(self.hi)));
        if l > h {
            Range { lo: 1, hi: 0, step: 0 }
        } else {
            Range { lo: l, hi: h, step: if l == h { 0 } else { self.step } }
        }
    }

    fn meet(self, o: Range) -> Range {
        self.within(o.lo, o.hi)
    }

    fn add(self, o: Range) -> Range {
        if !self.is_known() || !o.is_known() {
            return Range::ALL;
        }
        Range::new_stepped(self.lo + o.lo, self.hi + o.hi, gcd(self.step, o.step))
    }

    fn neg(self) -> Range {
        Range { lo: -self.hi, hi: -self.lo, step: self.step }
    }

    fn mul(self, o: Range) -> Range {
        if !self.is_known() || !o.is_known() {
            return Range::ALL;
        }
        let c = [self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi];
        let step = match (self.constant(), o.constant()) {
            (Some(k), _) => k.abs() * o.step,
            (_, Some(k)) => k.abs() * self.step,
            _ => 1,
        };
        Range::new_stepped(*c.iter().min().unwrap(), *c.iter().max().unwrap(), step)
    }

    /// Division truncating toward zero by a positive divisor; unknown otherwise.
    fn div(self, d: Range) -> Range {
        if d.lo <= 0 || !self.is_known() || !d.is_known() {
            return Range::ALL;
        }
        if let Some(k) = d.constant() {
            if self.lo >= 0 && self.step > 0 && self.step % k == 0 {
                // `lo + i * m * k` over `k` is `lo / k + i * m`: the stride survives.
                return Range::new_stepped(self.lo / k, self.hi / k, self.step / k);
            }
        }
        let c = [self.lo / d.lo, self.lo / d.hi, self.hi / d.lo, self.hi / d.hi];
        Range::new(*c.iter().min().unwrap(), *c.iter().max().unwrap())
    }

    fn nonnegative(self) -> bool {
        self.lo >= 0
    }
}

/// The abstraction of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abs {
    Int(Range),
    Ptr(Base, Range),
    Unknown,
}

impl Abs {
    fn join(self, o: Abs) -> Abs {
        match (self, o) {
            (Abs::Int(a), Abs::Int(b)) => Abs::Int(a.join(b)),
            (Abs::Ptr(x, a), Abs::Ptr(y, b)) if x == y => Abs::Ptr(x, a.join(b)),
            _ => Abs::Unknown,
        }
    }

    /// `self` grown past `old` in some bound: that bound becomes unbounded.
    fn widen(old: Abs, new: Abs) -> Abs {
        let w = |a: Range, b: Range| Range {
            lo: if b.lo < a.lo { -INF } else { a.lo },
            hi: if b.hi > a.hi { INF } else { a.hi },
            step: gcd(gcd(a.step, b.step), a.lo - b.lo).max(1),
        };
        match (old, new) {
            (Abs::Int(a), Abs::Int(b)) => Abs::Int(w(a, b)),
            (Abs::Ptr(x, a), Abs::Ptr(y, b)) if x == y => Abs::Ptr(x, w(a, b)),
            _ => Abs::Unknown,
        }
    }

    /// What both `self` and `o` say (each a sound abstraction of the same value).
    fn meet(self, o: Abs) -> Abs {
        match (self, o) {
            (Abs::Int(a), Abs::Int(b)) if !a.meet(b).is_empty() => Abs::Int(a.meet(b)),
            (Abs::Ptr(x, a), Abs::Ptr(y, b)) if x == y && !a.meet(b).is_empty() => Abs::Ptr(x, a.meet(b)),
            (Abs::Unknown, other) => other,
            (known, _) => known,
        }
    }

    fn range(self) -> Option<Range> {
        match self {
            Abs::Int(r) => Some(r),
            _ => None,
        }
    }
}

/// An access the analysis could not prove inside its buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BoundsError(pub String);

/// Values known better than their definition says, by value (a short sorted list: the loop
/// counters and bounds compared on the way to a block).
#[derive(Debug, Clone, Default, PartialEq)]
struct Facts(Vec<(Value, Abs)>);

impl Facts {
    fn get(&self, v: &Value) -> Option<&Abs> {
        self.0.binary_search_by_key(v, |e| e.0).ok().map(|i| &self.0[i].1)
    }

    fn insert(&mut self, v: Value, a: Abs) {
        match self.0.binary_search_by_key(&v, |e| e.0) {
            Ok(i) => self.0[i].1 = a,
            Err(i) => self.0.insert(i, (v, a)),
        }
    }

    fn remove(&mut self, v: &Value) {
        if let Ok(i) = self.0.binary_search_by_key(v, |e| e.0) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Facts both have, joined.
    fn join(&self, o: &Facts) -> Facts {
        Facts(self.0.iter().filter_map(|(v, a)| o.get(v).map(|b| (*v, a.join(*b)))).collect())
    }
}

/// What a block is entered with: its parameters' abstractions and the values refined by the
/// branch conditions on the way (overriding their defining abstraction).
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    params: Vec<Abs>,
    facts: Facts,
}

/// A linear form `sum(k * v) + constant` over SSA values (see [`Analysis::linear`]).
struct Linear {
    terms: Vec<(Value, i128)>,
    constant: i128,
}

impl Linear {
    /// `self + sign * o`, like terms collected, zero terms dropped.
    fn plus(mut self, o: &Linear, sign: i128) -> Linear {
        for &(v, k) in &o.terms {
            match self.terms.iter_mut().find(|(w, _)| *w == v) {
                Some((_, c)) => *c += sign * k,
                None => self.terms.push((v, sign * k)),
            }
        }
        self.terms.retain(|&(_, k)| k != 0);
        self.constant += sign * o.constant;
        self
    }

    fn times(mut self, k: i128) -> Linear {
        self.terms.iter_mut().for_each(|(_, c)| *c *= k);
        self.terms.retain(|&(_, c)| c != 0);
        self.constant *= k;
        self
    }
}

/// Levels of sums and products a linear form looks through, and most terms it keeps.
const LINEAR_DEPTH: u32 = 6;
const LINEAR_TERMS: usize = 8;

/// Levels of definitions re-evaluated under a block's facts (see [`Analysis::get_at`]).
const REEVALUATE_DEPTH: u32 = 4;

/// Levels of definitions a branch condition refines backwards (see [`Analysis::learn`]).
const LEARN_DEPTH: u32 = 4;

/// Rounds of a block's entry growing before its growing bounds are widened.
const WIDEN_AFTER: usize = 1;

/// Proves every memory access of `func` (a kernel with the [`super::KernelFn`] ABI) inside
/// `buffers`; `footprint` gives each called assembled routine's footprint (`None`: a helper that
/// takes no pointers).
pub fn check(
    func: &Function,
    buffers: &Buffers,
    footprint: &dyn Fn(u32) -> Option<Footprint>,
) -> Result<(), BoundsError> {
    let forms = std::cell::RefCell::new(vec![None; func.dfg.num_values()]);
    let dominated = dominated_blocks(func);
    let order: HashMap<Block, usize> = func.layout.blocks().enumerate().map(|(i, b)| (b, i)).collect();
    let run = |item: Option<Range>| {
        let mut analysis = Analysis {
            func,
            buffers,
            item,
            vals: vec![Abs::Unknown; func.dfg.num_values()],
            entries: HashMap::new(),
            memo: std::cell::RefCell::new(vec![(0, Abs::Unknown); func.dfg.num_values()]),
            generation: std::cell::Cell::new(1),
            forms: &forms,
            dominated: &dominated,
            order: &order,
        };
        analysis.fixpoint()?;
        analysis.verify(footprint)
    };
    let all = run(None);
    if all.is_ok() || !runs_items_in_a_loop(func) {
        return all;
    }
    // Intervals lose how a work item's values are related (an output-channel panel and the number
    // of channels it holds); with the item fixed they are constants. Each item's iteration is
    // analysed on its own, whatever the items before it left in the loop's other variables.
    let per_sample = buffers.items / buffers.batch.max(1);
    let samples = buffers.batch.max(1) as i128 - 1;
    let one_item = |q: usize| {
        let q = q as i128;
        run(Some(Range::new_stepped(q, q + samples * per_sample as i128, per_sample as i128)))
    };
    // With a period `s` (items `s` apart differ only in the outer index, as a row-panel
    // convolution's row block), the items congruent to `r` modulo `s`, in every sample, are one
    // strided set: their inner indices are constants and only the outer one is an interval, which
    // is usually precise enough (an imprecise bound of an inner index reaches past a buffer's end
    // only in its last classes). `s` analyses instead of one per item; a class that fails is
    // analysed item by item. The classes cover every item, so proving each proves them all.
    let s = buffers.period;
    if s > 1 && s < per_sample && per_sample % s == 0 {
        let last = (buffers.batch.max(1) * per_sample - s) as i128;
        return (0..s).try_for_each(|r| {
            match run(Some(Range::new_stepped(r as i128, r as i128 + last, s as i128))) {
                Ok(()) => Ok(()),
                Err(_) => (r..per_sample).step_by(s).try_for_each(one_item),
            }
        });
    }
    (0..per_sample).try_for_each(one_item)
}

/// Whether the entry block jumps straight to the work-item loop with `begin` as its counter
/// (what `KernelCx::for_items` emits): the precondition of analysing one item at a time.
fn runs_items_in_a_loop(func: &Function) -> bool {
    let Some(entry) = func.layout.entry_block() else { return false };
    let Some(last) = func.layout.last_inst(entry) else { return false };
    let begin = func.dfg.block_params(entry).get(4).copied();
    match func.dfg.insts[last] {
        InstructionData::Jump { destination, .. } => {
            matches!(destination.args(&func.dfg.value_lists).next(), Some(BlockArg::Value(v)) if Some(v) == begin)
        }
        _ => false,
    }
}

struct Analysis<'a> {
    func: &'a Function,
    buffers: &'a Buffers,
    /// Analyse only the iterations of these work items (item `q` of every sample, `q + n *
    /// items_per_sample`, or the items of one residue class modulo [`Buffers::period`]), entering
    /// the loop with its other variables unknown and leaving after one iteration.
    item: Option<Range>,
    /// Re-evaluations under the current facts (see [`Analysis::get_at`]); cleared when they change.
    memo: std::cell::RefCell<Vec<(u32, Abs)>>,
    /// The generation of `memo` entries that are current.
    generation: std::cell::Cell<u32>,
    /// Each value's linear form, once computed (they do not depend on the analysis state).
    forms: &'a std::cell::RefCell<Vec<Option<Option<std::rc::Rc<Linear>>>>>,
    /// Each value's abstraction where it is defined, by value index.
    vals: Vec<Abs>,
    entries: HashMap<Block, Entry>,
    /// The blocks each block strictly dominates, by block index.
    dominated: &'a [Vec<Block>],
    /// Each block's position in the layout (the worklist's order).
    order: &'a HashMap<Block, usize>,
}

/// For each block (by index), the blocks it strictly dominates.
fn dominated_blocks(func: &Function) -> Vec<Vec<Block>> {
    let cfg = cranelift_codegen::flowgraph::ControlFlowGraph::with_function(func);
    let tree = cranelift_codegen::dominator_tree::DominatorTree::with_function(func, &cfg);
    let n = func.dfg.num_blocks();
    let mut children: Vec<Vec<Block>> = vec![Vec::new(); n];
    for block in func.layout.blocks() {
        if let Some(idom) = tree.idom(block) {
            children[idom.index()].push(block);
        }
    }
    let mut out = vec![Vec::new(); n];
    for block in func.layout.blocks() {
        let mut stack = children[block.index()].clone();
        while let Some(b) = stack.pop() {
            out[block.index()].push(b);
            stack.extend(children[b.index()].iter().copied());
        }
    }
    out
}

impl Analysis<'_> {
    fn fixpoint(&mut self) -> Result<(), BoundsError> {
        let entry =
            self.func.layout.entry_block().ok_or_else(|| BoundsError("the kernel has no code".into()))?;
        let b = self.buffers;
        let items = b.items as i128;
        let params = vec![
            Abs::Ptr(Base::InputTable, Range::at(0)),
            Abs::Ptr(Base::Output, Range::at(0)),
            Abs::Ptr(Base::WeightTable, Range::at(0)),
            Abs::Ptr(Base::Scratch, Range::at(0)),
            Abs::Int(self.item.unwrap_or(Range::new(0, items))),
            Abs::Int(Range::new(0, items)),
            Abs::Int(Range::at(b.batch as i128)),
            Abs::Ptr(Base::SetupMemo, Range::at(0)),
        ];
        if self.func.dfg.block_params(entry).len() != params.len() {
            return Err(BoundsError("the kernel does not have the kernel ABI's eight arguments".into()));
        }
        self.entries.insert(entry, Entry { params, facts: Facts::default() });
        let order = self.order;
        let mut visits: HashMap<Block, usize> = HashMap::new();
        let mut item_loop = None;
        let mut work: BTreeSet<(usize, Block)> = BTreeSet::from([(order[&entry], entry)]);
        while let Some((_, block)) = work.pop_first() {
            let (mut edges, values_changed) = self.transfer(block);
            if self.item.is_some() {
                if block == entry {
                    // The loop's variables but its counter: whatever earlier items left in them.
                    for (target, incoming) in &mut edges {
                        item_loop = Some(*target);
                        incoming.params.iter_mut().skip(1).for_each(|p| *p = Abs::Unknown);
                    }
                } else {
                    // One item's iteration: the next item's is another analysis.
                    edges.retain(|(target, _)| Some(*target) != item_loop);
                }
            }
            for (target, incoming) in edges {
                let n = visits.entry(target).or_default();
                *n += 1;
                let merged = match self.entries.get(&target) {
                    None => incoming,
                    Some(old) => merge(old, &incoming, *n > WIDEN_AFTER),
                };
                if self.entries.get(&target) != Some(&merged) {
                    self.entries.insert(target, merged);
                    work.insert((order[&target], target));
                }
            }
            // Blocks this one dominates read its values (directly, or through re-evaluated
            // definitions); they are not part of their entries, so those blocks are evaluated
            // again when the values change.
            if values_changed {
                for &d in &self.dominated[block.index()] {
                    if self.entries.contains_key(&d) {
                        work.insert((order[&d], d));
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops the re-evaluations: the facts they were made under changed.
    fn forget(&self) {
        self.generation.set(self.generation.get() + 1);
    }

    /// The abstraction of `v` in a block entered with `facts`.
    fn get(&self, facts: &Facts, v: Value) -> Abs {
        self.get_at(facts, v, REEVALUATE_DEPTH)
    }

    /// [`Analysis::get`], re-evaluating `v`'s definition (to `depth` levels of operands) under
    /// `facts`: a branch that bounds a counter also bounds the addresses computed from it before
    /// the branch (the definition's semantics hold wherever it is evaluated, and the facts hold
    /// here, so the result is as sound as the recorded one; both are kept).
    fn get_at(&self, facts: &Facts, v: Value, depth: u32) -> Abs {
        if let Some(&a) = facts.get(&v) {
            return a;
        }
        let recorded = self.vals[v.index()];
        if facts.is_empty() || depth == 0 || !self.func.dfg.value_type(v).is_int() {
            return recorded;
        }
        let generation = self.generation.get();
        let (g, a) = self.memo.borrow()[v.index()];
        if g == generation {
            return a;
        }
        let a = match self.func.dfg.value_def(v).inst() {
            Some(inst) if self.func.dfg.inst_results(inst).len() == 1 => {
                recorded.meet(self.eval_at(facts, inst, depth - 1))
            }
            _ => recorded,
        };
        self.memo.borrow_mut()[v.index()] = (generation, a);
        a
    }

    /// Evaluates `block`'s instructions (recording their results' abstractions) and returns what
    /// each successor is entered with, and whether any of the block's values changed.
    fn transfer(&mut self, block: Block) -> (Vec<(Block, Entry)>, bool) {
        let mut changed = false;
        self.forget();
        let entry = self.entries[&block].clone();
        let mut facts = entry.facts;
        for (&p, &a) in self.func.dfg.block_params(block).iter().zip(&entry.params) {
            changed |= std::mem::replace(&mut self.vals[p.index()], a) != a;
            // A fact learnt about an earlier definition says nothing about this one.
            facts.remove(&p);
        }
        for inst in self.func.layout.block_insts(block) {
            for r in self.func.dfg.inst_results(inst) {
                facts.remove(r);
            }
        }
        let mut out = Vec::new();
        for inst in self.func.layout.block_insts(block) {
            let data = &self.func.dfg.insts[inst];
            match *data {
                InstructionData::Jump { destination, .. } => {
                    out.extend(self.edge(&facts, destination, None));
                }
                InstructionData::Brif { arg, blocks, .. } => {
                    let cond = self.condition(arg);
                    out.extend(self.edge(&facts, blocks[0], cond.map(|c| (c, true))));
                    out.extend(self.edge(&facts, blocks[1], cond.map(|c| (c, false))));
                }
                _ if data.opcode().is_branch() => {
                    // No driver emits other branches (jump tables); every target, unrefined.
                    let dfg = &self.func.dfg;
                    for &call in data.branch_destination(&dfg.jump_tables, &dfg.exception_tables) {
                        out.extend(self.edge(&facts, call, None));
                    }
                }
                _ => {
                    let results = self.func.dfg.inst_results(inst);
                    if results.len() == 1 {
                        let r = results[0];
                        let a = if self.func.dfg.value_type(r).is_int() {
                            self.eval(&facts, inst)
                        } else {
                            Abs::Unknown
                        };
                        changed |= std::mem::replace(&mut self.vals[r.index()], a) != a;
                    } else {
                        for &r in results {
                            changed |=
                                std::mem::replace(&mut self.vals[r.index()], Abs::Unknown) != Abs::Unknown;
                        }
                    }
                }
            }
        }
        (out, changed)
    }

    /// The comparison deciding a branch on `cond`, if `cond` is an `icmp`.
    fn condition(&self, cond: Value) -> Option<(IntCC, Value, Value)> {
        let inst = self.func.dfg.value_def(cond).inst()?;
        match self.func.dfg.insts[inst] {
            InstructionData::IntCompare { cond: cc, args, .. } => Some((cc, args[0], args[1])),
            _ => None,
        }
    }

    /// What `call`'s target is entered with, the comparison `(cc, x, y)` having come out `taken`;
    /// `None` when the comparison cannot come out that way (the edge is never taken).
    fn edge(
        &self,
        facts: &Facts,
        call: cranelift_codegen::ir::BlockCall,
        refinement: Option<((IntCC, Value, Value), bool)>,
    ) -> Option<(Block, Entry)> {
        let pool = &self.func.dfg.value_lists;
        let target = call.block(pool);
        let mut facts = facts.clone();
        self.forget();
        if let Some(((cc, x, y), taken)) = refinement {
            let cc = if taken { cc } else { cc.complement() };
            if !self.assume(&mut facts, cc, x, y, LEARN_DEPTH) {
                return None;
            }
        }
        let params = call
            .args(pool)
            .map(|arg| match arg {
                BlockArg::Value(v) => self.get(&facts, v),
                _ => Abs::Unknown,
            })
            .collect();
        Some((target, Entry { params, facts }))
    }

    /// Records in `facts` what `x cc y` teaches; `false` when it cannot hold. Both operands become
    /// facts even when unchanged, so that later rounds, in which they may be wider, still meet
    /// them with the condition; what a refined operand was computed from is refined in turn (see
    /// [`Analysis::learn`]).
    fn assume(&self, facts: &mut Facts, cc: IntCC, x: Value, y: Value, depth: u32) -> bool {
        let (ax, ay) = (self.get(facts, x), self.get(facts, y));
        for (v, refined, before) in [(x, refine(ax, cc, ay), ax), (y, refine(ay, cc.swap_args(), ax), ay)] {
            match refined {
                Refined::Never => return false,
                Refined::To(a) => {
                    facts.insert(v, a);
                    self.forget();
                    if !self.learn(facts, v, a, depth) {
                        return false;
                    }
                }
                Refined::Same if !matches!(before, Abs::Unknown) => {
                    facts.insert(v, before);
                }
                Refined::Same => {}
            }
        }
        true
    }

    /// `v` was learnt to lie in `a`: what that says about the values it was computed from (a
    /// `select` that can only have taken one side decides its condition; `x + k` and `x - k`
    /// bound `x`). `false` when that cannot hold.
    fn learn(&self, facts: &mut Facts, v: Value, a: Abs, depth: u32) -> bool {
        let dfg = &self.func.dfg;
        let (Some(inst), Some(r), true) = (dfg.value_def(v).inst(), a.range(), depth > 0) else {
            return true;
        };
        let constant = |v: Value| self.get(facts, v).range().and_then(Range::constant);
        match dfg.insts[inst] {
            InstructionData::Ternary { opcode: Opcode::Select, args: [c, p, q] } => {
                let disjoint = |w: Value| self.get(facts, w).range().is_some_and(|wr| wr.meet(r).is_empty());
                let cond = dfg.value_def(c).inst().and_then(|i| match dfg.insts[i] {
                    InstructionData::IntCompare { cond, args, .. } => Some((cond, args[0], args[1])),
                    _ => None,
                });
                match cond {
                    // `p` impossible: the condition was false.
                    Some((cc, x, y)) if disjoint(p) => self.assume(facts, cc.complement(), x, y, depth - 1),
                    Some((cc, x, y)) if disjoint(q) => self.assume(facts, cc, x, y, depth - 1),
                    _ => true,
                }
            }
            InstructionData::Binary { opcode: op @ (Opcode::Iadd | Opcode::Isub), args: [x, k] } => {
                let Some(k) = constant(k) else { return true };
                let Some(xr) = self.get(facts, x).range() else { return true };
                // Only when `x ± k` cannot wrap is `x` the learnt range shifted back.
                let sign = if op == Opcode::Iadd { 1 } else { -1 };
                if !xr.is_known() || !xr.add(Range::at(sign * k)).is_known() {
                    return true;
                }
                let k = -sign * k;
                let narrowed = xr.meet(r.add(Range::at(k)));
                if narrowed.is_empty() {
                    return false;
                }
                facts.insert(x, Abs::Int(narrowed));
                self.forget();
                self.learn(facts, x, Abs::Int(narrowed), depth - 1)
            }
            _ => true,
        }
    }

    /// The abstraction of `inst`'s integer result.
    fn eval(&self, facts: &Facts, inst: Inst) -> Abs {
        self.eval_at(facts, inst, REEVALUATE_DEPTH)
    }

    /// [`Analysis::eval`] with operands re-evaluated to `depth` levels (see [`Analysis::get_at`]).
    fn eval_at(&self, facts: &Facts, inst: Inst, depth: u32) -> Abs {
        let dfg = &self.func.dfg;
        let data = &dfg.insts[inst];
        let arg = |i: usize| self.get_at(facts, dfg.inst_args(inst)[i], depth);
        let int = |i: usize| arg(i).range();
        match *data {
            InstructionData::UnaryImm { imm, .. } => Abs::Int(Range::at(imm.bits() as i128)),
            InstructionData::IntCompare { cond, .. } => match (int(0), int(1)) {
                (Some(x), Some(y)) => match decide(cond, x, y) {
                    Some(b) => Abs::Int(Range::at(b as i128)),
                    None => Abs::Int(Range::new(0, 1)),
                },
                _ => Abs::Int(Range::new(0, 1)),
            },
            InstructionData::Binary { opcode: Opcode::Isub, args }
                if self.remainder(facts, args, depth).is_some() =>
            {
                self.remainder(facts, args, depth).expect("just matched")
            }
            InstructionData::Binary { opcode: opcode @ (Opcode::Iadd | Opcode::Isub), .. } => {
                let plain = binary(opcode, arg(0), arg(1));
                let result = dfg.first_result(inst);
                match self.linear(result, LINEAR_DEPTH) {
                    // A form of the result itself would meet it with its own previous value.
                    Some(form) if !form.terms.iter().any(|&(v, _)| v == result) => {
                        plain.meet(self.eval_linear(facts, &form, depth))
                    }
                    _ => plain,
                }
            }
            InstructionData::Binary { opcode, .. } => binary(opcode, arg(0), arg(1)),
            InstructionData::Ternary { opcode: Opcode::Select, .. } => {
                match int(0).and_then(Range::constant) {
                    Some(0) => arg(2),
                    Some(_) => arg(1),
                    None => arg(1).join(arg(2)),
                }
            }
            InstructionData::Unary { opcode, .. } => match opcode {
                Opcode::Uextend | Opcode::Sextend => match int(0) {
                    Some(r) => Abs::Int(r),
                    None => Abs::Unknown,
                },
                Opcode::Ineg => int(0).map_or(Abs::Unknown, |r| Abs::Int(r.neg())),
                _ => Abs::Unknown,
            },
            InstructionData::Load { opcode: Opcode::Load, arg: addr, offset, .. }
                if dfg.value_type(dfg.first_result(inst)) == types::I64 =>
            {
                // A pointer read from one of the ABI's tables.
                match self.get_at(facts, addr, depth) {
                    Abs::Ptr(table @ (Base::InputTable | Base::WeightTable), r) => {
                        match r.add(Range::at(i32::from(offset) as i128)).constant() {
                            Some(at) if at >= 0 && at % 8 == 0 => {
                                let i = (at / 8) as usize;
                                let base =
                                    if table == Base::InputTable { Base::Input(i) } else { Base::Weight(i) };
                                Abs::Ptr(base, Range::at(0))
                            }
                            _ => Abs::Unknown,
                        }
                    }
                    _ => Abs::Unknown,
                }
            }
            _ => Abs::Unknown,
        }
    }

    /// `v` as a sum of constant multiples of other values plus a constant, through sums,
    /// differences and products by constants (`depth` levels): terms that appear on both sides of
    /// a difference cancel (`(6c + 2t) - 6c` is `2t`, where intervals would give `2t ± 6c`).
    fn linear(&self, v: Value, depth: u32) -> Option<std::rc::Rc<Linear>> {
        if depth == LINEAR_DEPTH {
            if let Some(known) = &self.forms.borrow()[v.index()] {
                return known.clone();
            }
            let form = self.linear_uncached(v, depth).map(std::rc::Rc::new);
            self.forms.borrow_mut()[v.index()] = Some(form.clone());
            return form;
        }
        self.linear_uncached(v, depth).map(std::rc::Rc::new)
    }

    fn linear_uncached(&self, v: Value, depth: u32) -> Option<Linear> {
        let dfg = &self.func.dfg;
        let atom = || Some(Linear { terms: vec![(v, 1)], constant: 0 });
        let Some(inst) = dfg.value_def(v).inst() else { return atom() };
        if depth == 0 {
            return atom();
        }
        let constant = |w: Value| match dfg.value_def(w).inst().map(|i| &dfg.insts[i]) {
            Some(InstructionData::UnaryImm { opcode: Opcode::Iconst, imm }) => Some(imm.bits() as i128),
            _ => None,
        };
        let form = match dfg.insts[inst] {
            InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } => {
                Linear { terms: Vec::new(), constant: imm.bits() as i128 }
            }
            InstructionData::Binary { opcode: Opcode::Iadd, args: [x, y] } => {
                self.linear_uncached(x, depth - 1)?.plus(&self.linear_uncached(y, depth - 1)?, 1)
            }
            InstructionData::Binary { opcode: Opcode::Isub, args: [x, y] } => {
                self.linear_uncached(x, depth - 1)?.plus(&self.linear_uncached(y, depth - 1)?, -1)
            }
            InstructionData::Binary { opcode: Opcode::Imul, args: [x, y] } => {
                match (constant(x), constant(y)) {
                    (_, Some(k)) => self.linear_uncached(x, depth - 1)?.times(k),
                    (Some(k), _) => self.linear_uncached(y, depth - 1)?.times(k),
                    _ => return atom(),
                }
            }
            _ => return atom(),
        };
        (form.terms.len() <= LINEAR_TERMS).then_some(form)
    }

    /// The abstraction of a linear form's value under `facts`.
    fn eval_linear(&self, facts: &Facts, form: &Linear, depth: u32) -> Abs {
        let mut pointer = None;
        let mut sum = Range::at(form.constant);
        for &(v, k) in &form.terms {
            match self.get_at(facts, v, depth) {
                Abs::Int(r) => sum = sum.add(r.mul(Range::at(k))),
                Abs::Ptr(base, r) if k == 1 && pointer.is_none() => {
                    pointer = Some(base);
                    sum = sum.add(r);
                }
                _ => return Abs::Unknown,
            }
        }
        match pointer {
            Some(base) => Abs::Ptr(base, sum),
            None => Abs::Int(sum),
        }
    }

    /// `x - (x / d) * d` for a constant `d > 0` and `x >= 0` (the drivers' `divmod`) is in
    /// `0..d`; plain intervals would lose that the two operands are correlated.
    fn remainder(&self, facts: &Facts, [x, qd]: [Value; 2], depth: u32) -> Option<Abs> {
        let dfg = &self.func.dfg;
        let def = |v: Value| dfg.value_def(v).inst().map(|i| &dfg.insts[i]);
        let constant = |v: Value| match def(v) {
            Some(InstructionData::UnaryImm { opcode: Opcode::Iconst, imm }) => Some(imm.bits() as i128),
            _ => None,
        };
        let Some(InstructionData::Binary { opcode: Opcode::Imul, args: [q, d] }) = def(qd) else {
            return None;
        };
        let Some(InstructionData::Binary { opcode: Opcode::Udiv, args: [x2, d2] }) = def(*q) else {
            return None;
        };
        let d = constant(*d)?;
        let xr = self.get_at(facts, x, depth).range()?;
        (*x2 == x && constant(*d2) == Some(d) && d > 0 && xr.nonnegative()).then(|| {
            if xr.step % d == 0 {
                // Every value has the same remainder (a constant, or one item of every sample).
                Abs::Int(Range::at(xr.lo % d))
            } else if xr.step > 1 && d % xr.step == 0 {
                // Values `lo + k * step` with `step` dividing `d`: remainders congruent to `lo`
                // modulo `step` (a residue class of items, split into samples).
                let first = xr.lo % xr.step;
                Abs::Int(Range::new_stepped(first, d - xr.step + first, xr.step))
            } else {
                Abs::Int(Range::new(0, xr.hi.min(d - 1)))
            }
        })
    }

    /// Floats in `base`.
    fn floats(&self, base: Base) -> Option<usize> {
        let b = self.buffers;
        match base {
            Base::InputTable | Base::WeightTable => None,
            Base::Input(i) => b.inputs.get(i).copied(),
            Base::Output => Some(b.output),
            Base::Weight(i) => b.weights.get(i).copied(),
            Base::Scratch => Some(b.scratch),
            Base::SetupMemo => Some(2),
        }
    }

    /// Bytes in `base`.
    fn bytes(&self, base: Base) -> i128 {
        match base {
            Base::InputTable => 8 * self.buffers.inputs.len() as i128,
            Base::WeightTable => 8 * self.buffers.weights.len() as i128,
            _ => 4 * self.floats(base).unwrap_or(0) as i128,
        }
    }

    /// Checks that `size` bytes at `addr + offset` lie in one buffer.
    fn access(
        &self,
        addr: Abs,
        offset: i128,
        size: i128,
        what: &dyn Fn() -> String,
    ) -> Result<(), BoundsError> {
        match addr {
            Abs::Ptr(base, r) => {
                let r = r.add(Range::at(offset));
                let len = self.bytes(base);
                if r.is_known() && r.lo >= 0 && r.hi + size <= len {
                    Ok(())
                } else {
                    let shown = |x: i128| if x.abs() >= INF { "?".to_string() } else { x.to_string() };
                    Err(BoundsError(format!(
                        "{}: bytes {}..{} of {base} may be touched, which has {len}",
                        what(),
                        shown(r.lo),
                        if r.hi >= INF { "?".to_string() } else { shown(r.hi + size) },
                    )))
                }
            }
            Abs::Int(r) => Err(BoundsError(format!(
                "{}: the address is an integer in {}..={}, not a pointer into a buffer",
                what(),
                r.lo,
                r.hi
            ))),
            Abs::Unknown => Err(BoundsError(format!("{}: the address could not be bounded", what()))),
        }
    }

    /// Checks every access of every reachable block.
    fn verify(&self, footprint: &dyn Fn(u32) -> Option<Footprint>) -> Result<(), BoundsError> {
        let dfg = &self.func.dfg;
        for block in self.func.layout.blocks() {
            let Some(entry) = self.entries.get(&block) else { continue };
            let facts = &entry.facts;
            self.forget();
            for inst in self.func.layout.block_insts(block) {
                let what = || format!("`{}` in {block}", dfg.display_inst(inst));
                let data = &dfg.insts[inst];
                if let Some(offset) = data.load_store_offset() {
                    let args = dfg.inst_args(inst);
                    let (addr, size) = match data.opcode() {
                        Opcode::Store => (args[1], dfg.value_type(args[0]).bytes()),
                        Opcode::Istore8 => (args[1], 1),
                        Opcode::Istore16 => (args[1], 2),
                        Opcode::Istore32 => (args[1], 4),
                        Opcode::Uload8 | Opcode::Sload8 => (args[0], 1),
                        Opcode::Uload16 | Opcode::Sload16 => (args[0], 2),
                        Opcode::Uload32 | Opcode::Sload32 => (args[0], 4),
                        Opcode::Load => (args[0], dfg.value_type(dfg.first_result(inst)).bytes()),
                        op => {
                            return Err(BoundsError(format!(
                                "{}: memory access {op} is not modelled",
                                what()
                            )))
                        }
                    };
                    self.access(self.get(facts, addr), offset as i128, size as i128, &what)?;
                } else if let InstructionData::Call { func_ref, .. } = *data {
                    self.call(facts, func_ref, dfg.inst_args(inst), footprint, &what)?;
                } else if data.opcode().can_load() || data.opcode().can_store() || data.opcode().is_call() {
                    return Err(BoundsError(format!("{}: this instruction is not modelled", what())));
                }
            }
        }
        Ok(())
    }

    fn call(
        &self,
        facts: &Facts,
        func_ref: FuncRef,
        args: &[Value],
        footprint: &dyn Fn(u32) -> Option<Footprint>,
        what: &dyn Fn() -> String,
    ) -> Result<(), BoundsError> {
        let ext = &self.func.dfg.ext_funcs[func_ref];
        let index = match &ext.name {
            ExternalName::User(r) => Some(self.func.params.user_named_funcs()[*r].index),
            _ => None,
        };
        match index.and_then(footprint) {
            Some(prints) => {
                for (operand, lo, hi) in prints {
                    let Some(&v) = args.get(operand) else {
                        return Err(BoundsError(format!("{}: no operand {operand}", what())));
                    };
                    if hi > lo {
                        let at = self.get(facts, v);
                        let part = || format!("{}, operand {operand} (floats {lo}..{hi})", what());
                        self.access(at, 4 * lo as i128, 4 * (hi - lo) as i128, &part)?;
                    }
                }
                Ok(())
            }
            // An extern helper: it must take no pointer into a buffer.
            None => {
                for &v in args {
                    if let Abs::Ptr(base, _) = self.get(facts, v) {
                        return Err(BoundsError(format!(
                            "{}: a helper is passed a pointer into {base}",
                            what()
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

/// `old` joined with `new`; facts kept only where both have them. With `widen`, parameters that
/// grew lose the bound that grew (which ends every chain of growth: facts are refinements of
/// values, and values are computed from parameters, so they stop growing when parameters do).
fn merge(old: &Entry, new: &Entry, widen: bool) -> Entry {
    let params = old
        .params
        .iter()
        .zip(&new.params)
        .map(|(&a, &b)| {
            let j = a.join(b);
            if widen && j != a {
                Abs::widen(a, j)
            } else {
                j
            }
        })
        .collect();
    Entry { params, facts: old.facts.join(&new.facts) }
}

/// `x op y` on abstractions.
fn binary(op: Opcode, x: Abs, y: Abs) -> Abs {
    use Abs::{Int, Ptr};
    match (op, x, y) {
        (Opcode::Iadd, Int(a), Int(b)) => Int(a.add(b)),
        (Opcode::Iadd, Ptr(p, a), Int(b)) | (Opcode::Iadd, Int(b), Ptr(p, a)) => Ptr(p, a.add(b)),
        (Opcode::Isub, Int(a), Int(b)) => Int(a.add(b.neg())),
        (Opcode::Isub, Ptr(p, a), Int(b)) => Ptr(p, a.add(b.neg())),
        (Opcode::Isub, Ptr(p, a), Ptr(q, b)) if p == q => Int(a.add(b.neg())),
        (Opcode::Imul, Int(a), Int(b)) => Int(a.mul(b)),
        (Opcode::Udiv, Int(a), Int(b)) if a.nonnegative() => Int(a.div(b)),
        (Opcode::Sdiv, Int(a), Int(b)) => Int(a.div(b)),
        (Opcode::Urem | Opcode::Srem, Int(a), Int(b)) if a.nonnegative() && b.lo > 0 && b.is_known() => {
            Int(Range::new(0, a.hi.min(b.hi - 1)))
        }
        (Opcode::Ishl, Int(a), Int(b)) if b.lo >= 0 && b.hi < 63 => {
            Int(a.mul(Range::new(1 << b.lo, 1 << b.hi)))
        }
        (Opcode::Ushr | Opcode::Sshr, Int(a), Int(b)) if a.nonnegative() && b.lo >= 0 && b.hi < 63 => {
            Int(a.div(Range::new(1 << b.lo, 1 << b.hi)))
        }
        (Opcode::Band, Int(a), Int(b)) if a.nonnegative() || b.nonnegative() => {
            let hi = if a.nonnegative() && b.nonnegative() { a.hi.min(b.hi) } else { a.hi.max(b.hi) };
            Int(Range::new(0, hi))
        }
        (Opcode::Smin | Opcode::Umin, Int(a), Int(b))
            if op == Opcode::Smin || (a.nonnegative() && b.nonnegative()) =>
        {
            Int(Range::span(a.lo.min(b.lo), a.hi.min(b.hi)))
        }
        (Opcode::Smax | Opcode::Umax, Int(a), Int(b))
            if op == Opcode::Smax || (a.nonnegative() && b.nonnegative()) =>
        {
            Int(Range::span(a.lo.max(b.lo), a.hi.max(b.hi)))
        }
        _ => Abs::Unknown,
    }
}

/// The outcome of `x cc y` when the intervals decide it.
fn decide(cc: IntCC, x: Range, y: Range) -> Option<bool> {
    use IntCC::*;
    let unsigned_as_signed = x.nonnegative() && y.nonnegative();
    let lt = |x: Range, y: Range| {
        if x.hi < y.lo {
            Some(true)
        } else if x.lo >= y.hi {
            Some(false)
        } else {
            None
        }
    };
    match cc {
        Equal | NotEqual => {
            let eq = match (x.constant(), y.constant()) {
                (Some(a), Some(b)) => Some(a == b),
                _ if x.meet(y).is_empty() || y.meet(x).is_empty() => Some(false),
                _ => None,
            };
            eq.map(|e| e == (cc == Equal))
        }
        SignedLessThan => lt(x, y),
        SignedGreaterThanOrEqual => lt(x, y).map(|b| !b),
        SignedGreaterThan => lt(y, x),
        SignedLessThanOrEqual => lt(y, x).map(|b| !b),
        UnsignedLessThan if unsigned_as_signed => lt(x, y),
        UnsignedGreaterThanOrEqual if unsigned_as_signed => lt(x, y).map(|b| !b),
        UnsignedGreaterThan if unsigned_as_signed => lt(y, x),
        UnsignedLessThanOrEqual if unsigned_as_signed => lt(y, x).map(|b| !b),
        _ => None,
    }
}

/// What a branch condition teaches about one of its operands.
enum Refined {
    /// The condition cannot hold.
    Never,
    /// The operand's abstraction on the edge.
    To(Abs),
    /// Nothing new.
    Same,
}

/// `x` given that `x cc y` holds.
fn refine(x: Abs, cc: IntCC, y: Abs) -> Refined {
    use IntCC::*;
    let (xr, yr) = match (x, y) {
        (Abs::Int(a), Abs::Int(b)) => (a, b),
        // Offsets into one buffer compare as the integers they are.
        (Abs::Ptr(p, a), Abs::Ptr(q, b)) if p == q => {
            return match refine(Abs::Int(a), cc, Abs::Int(b)) {
                Refined::To(Abs::Int(r)) => Refined::To(Abs::Ptr(p, r)),
                other => other,
            };
        }
        _ => return Refined::Same,
    };
    let bound = match cc {
        SignedLessThan => Range::span(-INF, yr.hi - 1),
        SignedLessThanOrEqual => Range::span(-INF, yr.hi),
        SignedGreaterThan => Range::span(yr.lo + 1, INF),
        SignedGreaterThanOrEqual => Range::span(yr.lo, INF),
        Equal => yr,
        // `x != k` trims `k` off an end of `x`'s interval.
        NotEqual => match yr.constant() {
            Some(k) if k == xr.lo => Range::span(k + 1, INF),
            Some(k) if k == xr.hi => Range::span(-INF, k - 1),
            _ => return Refined::Same,
        },
        // Unsigned `x < y` with a nonnegative `y`: `x` is nonnegative as a signed number too.
        UnsignedLessThan if yr.nonnegative() => Range::span(0, yr.hi - 1),
        UnsignedLessThanOrEqual if yr.nonnegative() => Range::span(0, yr.hi),
        UnsignedGreaterThan | UnsignedGreaterThanOrEqual if xr.nonnegative() && yr.nonnegative() => {
            Range::span(yr.lo + (cc == UnsignedGreaterThan) as i128, INF)
        }
        _ => return Refined::Same,
    };
    let r = xr.meet(bound);
    if r.is_empty() {
        Refined::Never
    } else if r == xr {
        Refined::Same
    } else {
        Refined::To(Abs::Int(r))
    }
}
