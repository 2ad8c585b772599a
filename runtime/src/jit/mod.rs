//! The JIT backend: a [`Program`] (legalised graph, memory plan, kernel steps) compiled to native
//! kernels (Cranelift, with register tiles for the host's widest ISA; see
//! `netc_compiler::codegen`) that run over one planned arena.
//!
//! The plan and the state of a run are separate. An [`Executable`] is immutable once built: the
//! program, the compiled kernels and their packed weights (packed from bound weights by
//! [`pack()`], or read in place from a compiled bundle's mapping, which it co-owns). It is `Send +
//! Sync`, so many threads can run one model. Everything a run mutates lives in a [`Session`]: the
//! activation arena (kept between runs of the same batch size), the caller's scratch and the
//! persistent worker pool. [`Executable::run`] binds the batch size (runs it as consecutive
//! micro-batches when the whole batch's activations would not stay in cache, see
//! [`micro_batch`]), copies the inputs into the session's arena, calls the kernels in plan order (each kernel's work items split over the
//! session's threads, which meet at a barrier between kernels) and copies the outputs out. The
//! code does not depend on the batch size: a kernel's work items scale with it, so one compilation
//! serves every batch.

pub mod micro_batch;
pub mod pack;
mod threads;

pub use micro_batch::MicroBatch;
pub use pack::pack;

use crate::bundle::{BlobSpan, Bundle};
use crate::tensor::{Dims, Tensor, TensorView};
use netc_compiler::codegen::{self, AlignedF32, CodegenError, CompileOptions, CompiledKernels, Isa};
use netc_compiler::ir::{Graph, ValueId};
use netc_compiler::lower::{PackError, Placement, Program};
use std::sync::Arc;

/// Why a graph cannot be compiled or run by the JIT.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("weights for `{node}`: {what}")]
    Weights { node: String, what: String },
    #[error("model `{model}` takes {expected} input(s), but {found} were given")]
    InputCount { model: String, expected: usize, found: usize },
    #[error("input `{input}` of model `{model}` must have shape [N, {}], got {}", .expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "), Dims(.found))]
    InputShape { model: String, input: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("model `{model}` has {expected} output(s), but {found} output buffers were given")]
    OutputCount { model: String, expected: usize, found: usize },
    #[error("output `{output}` of model `{model}` holds {expected} floats for this batch, but its buffer holds {found}")]
    OutputLength { model: String, output: String, expected: usize, found: usize },
    #[error("cannot allocate {bytes} bytes of activations for a batch of {batch}")]
    Memory { bytes: usize, batch: usize },
    #[error(transparent)]
    Threads(#[from] threads::PoolError),
}

/// A kernel's weight buffer: read in place from a compiled bundle (whose mapping it keeps alive),
/// or packed in memory (64-byte aligned either way).
pub enum WeightBuf {
    Mapped { bundle: Arc<Bundle>, span: BlobSpan },
    Owned(AlignedF32),
}

impl WeightBuf {
    pub fn as_slice(&self) -> &[f32] {
        match self {
            WeightBuf::Mapped { bundle, span } => bundle.floats(*span),
            WeightBuf::Owned(a) => a.as_slice(),
        }
    }

    /// Every step's weight buffers of `program`, read in place from `bundle`.
    pub fn from_bundle(bundle: &Arc<Bundle>, program: &Program) -> Result<Vec<Vec<WeightBuf>>, JitError> {
        Ok(bundle
            .weight_spans(program)?
            .into_iter()
            .map(|spans| {
                spans.into_iter().map(|span| WeightBuf::Mapped { bundle: Arc::clone(bundle), span }).collect()
            })
            .collect())
    }

    /// Every step's weight buffers, packed in memory.
    pub fn owned(packed: Vec<Vec<AlignedF32>>) -> Vec<Vec<WeightBuf>> {
        packed.into_iter().map(|b| b.into_iter().map(WeightBuf::Owned).collect()).collect()
    }
}

/// A compiled model, ready to run on any batch size: immutable, shared by any number of threads,
/// each running with its own [`Session`].
pub struct Executable {
    program: Program,
    kernels: CompiledKernels,
    /// The weight buffers of each step, in the step's order.
    weights: Vec<Vec<WeightBuf>>,
    /// Where each step's inputs and output live (from the memory plan, looked up once).
    places: Vec<(Vec<Placement>, Placement)>,
    /// Input and weight pointers of all steps together.
    pointers: usize,
    /// Per graph input: whether the kernels read it where the caller holds it instead of from a
    /// copy in the arena (see [`reads_in_place`]).
    inputs_in_place: Vec<bool>,
    scratch: usize,
    /// Each step's per-sample traffic and work, for choosing micro-batches.
    costs: Vec<micro_batch::StepCost>,
}

/// The mutable state of runs of one thread of control: the arena, the caller's scratch and the
/// worker pool of `threads - 1` threads (started on the first run; between runs they spin for a
/// millisecond, then park).
pub struct Session {
    threads: usize,
    micro_batch: MicroBatch,
    /// The arena of the last batch size run, reused while the batch size stays the same. Its base
    /// is 64-byte aligned, so values the plan places at multiples of 16 floats are too (the
    /// `gemm1x1` kernels stream aligned outputs past the cache).
    arena: AlignedF32,
    scratch: Vec<f32>,
    pool: Option<threads::Pool>,
}

impl Session {
    /// A session whose runs use `threads` threads (the caller's included; at least 1).
    pub fn new(threads: usize) -> Session {
        Session {
            threads: threads.max(1),
            micro_batch: MicroBatch::Auto,
            arena: AlignedF32::default(),
            scratch: Vec::new(),
            pool: None,
        }
    }

    /// This session, splitting batches into micro-batches as `micro_batch` says (default
    /// [`MicroBatch::Auto`]; see [`micro_batch`]).
    pub fn with_micro_batch(mut self, micro_batch: MicroBatch) -> Session {
        self.micro_batch = micro_batch;
        self
    }

    /// Threads of each run, the caller's included.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Executable {
    /// Compiles `program` with its steps' weight buffers (`weights[k]`: the buffers of step `k`,
    /// in its layout's order and lengths).
    pub fn new(
        program: Program,
        weights: Vec<Vec<WeightBuf>>,
        options: CompileOptions,
    ) -> Result<Executable, JitError> {
        let steps = program.steps();
        if weights.len() != steps.len() {
            return Err(JitError::Weights {
                node: program.graph().name.clone(),
                what: format!("{} kernels but weights for {}", steps.len(), weights.len()),
            });
        }
        for (step, buffers) in steps.iter().zip(&weights) {
            let want: Vec<usize> = step.weights.iter().map(|w| w.1).collect();
            let got: Vec<usize> = buffers.iter().map(|b| b.as_slice().len()).collect();
            if want != got {
                return Err(JitError::Weights {
                    node: program.graph().node(step.node).name.clone(),
                    what: format!("the kernel takes buffers of {want:?} floats, got {got:?}"),
                });
            }
        }
        let kernels = codegen::compile(&program.requests(), options)?;
        let scratch = kernels.kernels.iter().map(|k| k.scratch_floats()).max().unwrap_or(0);
        let plan = program.plan();
        let places: Vec<(Vec<Placement>, Placement)> = program
            .steps()
            .iter()
            .map(|step| (step.inputs.iter().map(|v| plan.values[v]).collect(), plan.values[&step.output]))
            .collect();
        let pointers = places.iter().zip(&weights).map(|((ins, _), w)| ins.len() + w.len()).sum();
        let inputs_in_place = program.graph().inputs.iter().map(|&v| reads_in_place(&program, v)).collect();
        let costs = step_costs(&program);
        Ok(Executable { program, kernels, weights, places, pointers, inputs_in_place, scratch, costs })
    }

    /// Whether graph input `i` is read where the caller holds it (no copy into the arena) when
    /// the caller's tensor holds exactly its samples; see [`reads_in_place`].
    pub fn reads_input_in_place(&self, i: usize) -> bool {
        self.inputs_in_place.get(i).copied().unwrap_or(false)
    }

    /// The legalised graph that runs.
    pub fn graph(&self) -> &Graph {
        self.program.graph()
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn kernels(&self) -> &CompiledKernels {
        &self.kernels
    }

    /// The ISA the kernels were generated for.
    pub fn isa(&self) -> Isa {
        self.kernels.isa
    }

    /// Arena bytes for a batch of `n`.
    pub fn arena_bytes(&self, n: usize) -> usize {
        self.program.plan().arena_bytes(n)
    }

    /// Runs the inference outputs on `inputs` (one per graph input, `[N, ...]`) in `session`.
    pub fn run(&self, session: &mut Session, inputs: &[TensorView]) -> Result<Vec<Tensor>, JitError> {
        let batch = self.check_inputs(inputs)?;
        let mut outputs: Vec<Tensor> = self.output_shapes(batch).into_iter().map(Tensor::zeros).collect();
        let mut buffers: Vec<&mut [f32]> = outputs.iter_mut().map(|t| t.data.as_mut_slice()).collect();
        self.run_timed(session, inputs, &mut buffers, None)?;
        Ok(outputs)
    }

    /// [`Executable::run`], writing output `i` into `outputs[i]`, which must hold exactly its
    /// `[N, ...]` floats (see [`Executable::output_shapes`]).
    pub fn run_into(
        &self,
        session: &mut Session,
        inputs: &[TensorView],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), JitError> {
        self.run_timed(session, inputs, outputs, None)
    }

    /// [`Executable::run`], also returning each kernel's wall time in seconds, in step order
    /// (step `k` of the program ran kernel `k` of [`Executable::kernels`]).
    pub fn run_profiled(&self, session: &mut Session, inputs: &[TensorView]) -> Result<Vec<f64>, JitError> {
        let batch = self.check_inputs(inputs)?;
        let mut outputs: Vec<Tensor> = self.output_shapes(batch).into_iter().map(Tensor::zeros).collect();
        let mut buffers: Vec<&mut [f32]> = outputs.iter_mut().map(|t| t.data.as_mut_slice()).collect();
        let mut times = Vec::with_capacity(self.program.steps().len());
        self.run_timed(session, inputs, &mut buffers, Some(&mut times))?;
        Ok(times)
    }

    /// The shapes of the inference outputs for a batch of `n`, batch dimension first.
    pub fn output_shapes(&self, n: usize) -> Vec<Vec<usize>> {
        let graph = self.program.graph();
        graph
            .inference_outputs()
            .map(|v| std::iter::once(n).chain(graph.shape(v).dims().iter().copied()).collect())
            .collect()
    }

    /// The samples per pass `session` runs a batch of `n` in (see [`micro_batch`]).
    pub fn micro_batch(&self, session: &Session, n: usize) -> usize {
        match session.micro_batch {
            MicroBatch::Auto => micro_batch::choose(&self.costs, n, micro_batch::last_level_cache_bytes()),
            MicroBatch::Whole => n,
            MicroBatch::Samples(m) => m.get().min(n),
        }
        .max(1)
    }

    /// Runs the batch in micro-batches of [`Executable::micro_batch`] samples, one after the
    /// other, each on views of the caller's inputs and outputs; with `times`, each step's time is
    /// the sum over the micro-batches.
    fn run_timed(
        &self,
        session: &mut Session,
        inputs: &[TensorView],
        outputs: &mut [&mut [f32]],
        mut times: Option<&mut Vec<f64>>,
    ) -> Result<(), JitError> {
        let batch = self.check_inputs(inputs)?;
        let per_pass = self.micro_batch(session, batch);
        // One arena for the largest pass, kept for the next run.
        self.fit_arena(session, per_pass)?;
        if per_pass >= batch {
            return self.run_pass(session, inputs, outputs, times);
        }
        self.check_outputs(batch, outputs)?;
        let output_lens: Vec<usize> = self
            .program
            .graph()
            .inference_outputs()
            .map(|v| self.program.graph().shape(v).elements())
            .collect();
        let mut pass_shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.to_vec()).collect();
        let mut pass_times = Vec::new();
        let mut start = 0;
        while start < batch {
            let n = per_pass.min(batch - start);
            for shape in &mut pass_shapes {
                shape[0] = n;
            }
            let pass_inputs: Vec<TensorView> = inputs
                .iter()
                .zip(&pass_shapes)
                .map(|(t, shape)| {
                    let len = t.sample_len();
                    TensorView { shape, data: &t.data[start * len..(start + n) * len] }
                })
                .collect();
            let mut pass_outputs: Vec<&mut [f32]> = outputs
                .iter_mut()
                .zip(&output_lens)
                .map(|(o, &len)| &mut o[start * len..(start + n) * len])
                .collect();
            pass_times.clear();
            let record = times.as_ref().map(|_| &mut pass_times);
            self.run_pass(session, &pass_inputs, &mut pass_outputs, record)?;
            if let Some(times) = times.as_deref_mut() {
                if times.is_empty() {
                    times.resize(pass_times.len(), 0.0);
                }
                times.iter_mut().zip(&pass_times).for_each(|(t, p)| *t += p);
            }
            start += n;
        }
        Ok(())
    }

    /// Checks that `outputs` holds one buffer of exactly its `[batch, ...]` floats per output.
    fn check_outputs(&self, batch: usize, outputs: &[&mut [f32]]) -> Result<(), JitError> {
        let graph = self.program.graph();
        let output_values: Vec<ValueId> = graph.inference_outputs().collect();
        if outputs.len() != output_values.len() {
            return Err(JitError::OutputCount {
                model: graph.name.clone(),
                expected: output_values.len(),
                found: outputs.len(),
            });
        }
        for (&v, buffer) in output_values.iter().zip(outputs.iter()) {
            let expected = graph.shape(v).elements() * batch;
            if buffer.len() != expected {
                return Err(JitError::OutputLength {
                    model: graph.name.clone(),
                    output: graph.node(v.producer()).name.clone(),
                    expected,
                    found: buffer.len(),
                });
            }
        }
        Ok(())
    }

    /// Makes the session's arena exactly the size a pass of `samples` samples needs (kept while
    /// the size stays the same).
    fn fit_arena(&self, session: &mut Session, samples: usize) -> Result<(), JitError> {
        let floats = self
            .program
            .plan()
            .arena
            .checked_mul(samples)
            .ok_or(JitError::Memory { bytes: usize::MAX, batch: samples })?;
        if session.arena.len() != floats {
            session.arena = AlignedF32::default();
            session.arena = AlignedF32::try_zeros(floats)
                .ok_or(JitError::Memory { bytes: floats * 4, batch: samples })?;
        }
        Ok(())
    }

    /// Runs one pass over all of `inputs`' samples in the session's arena (which
    /// [`Executable::fit_arena`] made large enough), writing `outputs`.
    fn run_pass(
        &self,
        session: &mut Session,
        inputs: &[TensorView],
        outputs: &mut [&mut [f32]],
        times: Option<&mut Vec<f64>>,
    ) -> Result<(), JitError> {
        let batch = self.check_inputs(inputs)?;
        self.check_outputs(batch, outputs)?;
        if session.arena.len() < self.program.plan().arena * batch {
            self.fit_arena(session, batch)?;
        }
        let graph = self.program.graph();
        let output_values: Vec<ValueId> = graph.inference_outputs().collect();
        // The inputs the kernels read where they are (whole samples back to back, as the plan lays
        // them out); the others are copied into the arena.
        let in_place: Vec<Option<(ValueId, *const f32)>> = graph
            .inputs
            .iter()
            .zip(inputs)
            .zip(&self.inputs_in_place)
            .map(|((&v, t), &ok)| {
                (ok && t.data.len() == batch * t.sample_len()).then_some((v, t.data.as_ptr()))
            })
            .collect();
        for ((&v, t), direct) in graph.inputs.iter().zip(inputs).zip(&in_place) {
            if direct.is_some() {
                continue;
            }
            let place = self.program.plan().values[&v];
            let len = t.sample_len();
            for n in 0..batch {
                let at = self.float_offset(place, batch) + n * place.sample_stride;
                session.arena.as_mut_slice()[at..at + len].copy_from_slice(t.sample(n));
            }
        }
        let direct: Vec<(ValueId, *const f32)> = in_place.into_iter().flatten().collect();
        self.execute(session, batch, &direct, times)?;
        for (&v, buffer) in output_values.iter().zip(outputs.iter_mut()) {
            let place = self.program.plan().values[&v];
            let len = graph.shape(v).elements();
            for n in 0..batch {
                let at = self.float_offset(place, batch) + n * place.sample_stride;
                buffer[n * len..(n + 1) * len].copy_from_slice(&session.arena.as_slice()[at..at + len]);
            }
        }
        Ok(())
    }

    /// Where a value's sample 0 starts in the arena of a batch of `n`, in floats.
    fn float_offset(&self, place: Placement, n: usize) -> usize {
        self.program.plan().buffers[place.buffer.0].offset * n + place.offset
    }

    fn check_inputs(&self, inputs: &[TensorView]) -> Result<usize, JitError> {
        let graph = self.program.graph();
        let model = || graph.name.clone();
        if inputs.len() != graph.inputs.len() {
            return Err(JitError::InputCount {
                model: model(),
                expected: graph.inputs.len(),
                found: inputs.len(),
            });
        }
        let batch = inputs.first().map_or(1, |t| t.shape.first().copied().unwrap_or(0));
        for (&v, t) in graph.inputs.iter().zip(inputs) {
            let declared = graph.shape(v).dims();
            if t.shape.len() != declared.len() + 1
                || t.shape[1..] != *declared
                || t.shape[0] == 0
                || t.shape[0] != batch
            {
                return Err(JitError::InputShape {
                    model: model(),
                    input: graph.node(v.producer()).name.clone(),
                    expected: declared.to_vec(),
                    found: t.shape.to_vec(),
                });
            }
        }
        Ok(batch)
    }

    /// Calls every kernel in order, splitting each one's work items over the session's threads.
    /// `direct`: graph inputs read where the caller holds them (their arena copy is not made).
    fn execute(
        &self,
        session: &mut Session,
        batch: usize,
        direct: &[(ValueId, *const f32)],
        times: Option<&mut Vec<f64>>,
    ) -> Result<(), JitError> {
        if session.pool.as_ref().is_none_or(|p| p.threads() != session.threads) {
            session.pool = None;
            session.pool = Some(threads::Pool::new(session.threads)?);
        }
        if session.scratch.len() < self.scratch {
            session.scratch.resize(self.scratch, 0.0);
        }
        let arena = session.arena.as_mut_ptr();
        let offset = |place: Placement| self.float_offset(place, batch);
        // Every call's input and weight pointers in one list and its claim counters in another
        // (two allocations per run, not three per call); the calls borrow their slices.
        let threads = session.threads;
        let mut pointers: Vec<*const f32> = Vec::with_capacity(self.pointers);
        for ((step, (inputs, _)), weights) in self.program.steps().iter().zip(&self.places).zip(&self.weights)
        {
            // In bounds: the plan places every value inside the arena of `batch` samples, and a
            // direct input holds `batch` samples laid out as the plan would.
            pointers.extend(step.inputs.iter().zip(inputs).map(|(v, &p)| {
                direct
                    .iter()
                    .find(|(d, _)| d == v)
                    .map_or(arena.wrapping_add(offset(p)) as *const f32, |&(_, ptr)| ptr)
            }));
            pointers.extend(weights.iter().map(|w| w.as_slice().as_ptr()));
        }
        let counters: Vec<threads::Counter> =
            (0..self.places.len() * threads).map(|_| threads::Counter::default()).collect();
        let mut at = 0;
        let calls: Vec<threads::Call> = self
            .places
            .iter()
            .zip(&self.kernels.kernels)
            .zip(&self.weights)
            .zip(counters.chunks(threads))
            .map(|((((inputs, output), kernel), weights), counters)| {
                let (ins, rest) = pointers[at..].split_at(inputs.len());
                at += inputs.len() + weights.len();
                threads::Call {
                    kernel,
                    inputs: ins,
                    output: arena.wrapping_add(offset(*output)),
                    weights: &rest[..weights.len()],
                    batch,
                    claims: threads::Claims::new(kernel.work_items(batch), counters),
                }
            })
            .collect();
        if let Some(pool) = &session.pool {
            pool.run(&calls, &mut session.scratch, self.scratch, times);
        }
        Ok(())
    }
}

/// Each step's work and traffic per sample (see [`micro_batch::choose`]).
fn step_costs(program: &Program) -> Vec<micro_batch::StepCost> {
    let graph = program.graph();
    let bytes = |v: ValueId| graph.shape(v).elements() as f64 * 4.0;
    program
        .steps()
        .iter()
        .map(|step| {
            let node = graph.node(step.node);
            micro_batch::StepCost {
                flops: 2.0 * node.op.macs(&node.shape) as f64,
                activation_bytes: step.inputs.iter().map(|&v| bytes(v)).sum::<f64>() + bytes(step.output),
                weight_bytes: step.weights.iter().map(|w| w.1 as f64 * 4.0).sum(),
            }
        })
        .collect()
}

/// Whether the kernels can read graph input `v` where the caller holds it, skipping its copy into
/// the arena: the plan lays its samples back to back with nothing between them (as a caller's
/// `[N, ...]` tensor is), only kernels read it (no view such as a slice or a concat made in place
/// lives in its buffer), and it is not also a graph output (which is read back from the arena).
/// Kernels only read their inputs and never assume them aligned, so the caller's memory serves as
/// well as the arena's.
fn reads_in_place(program: &Program, v: ValueId) -> bool {
    let graph = program.graph();
    let place = program.plan().values[&v];
    place.sample_stride == graph.shape(v).elements()
        && !graph.is_output(v)
        && graph
            .consumers(v)
            .iter()
            .all(|&c| program.steps().iter().any(|s| s.node == c && s.inputs.contains(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn an_executable_is_shared_between_threads_and_a_session_moves_between_them() {
        assert_send_sync::<Executable>();
        fn assert_send<T: Send>() {}
        assert_send::<Session>();
    }
}
