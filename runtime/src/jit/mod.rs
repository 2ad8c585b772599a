//! The JIT backend: a [`Program`] (legalised graph, memory plan, kernel steps) compiled to native
//! kernels (Cranelift, with register tiles for the host's widest ISA; see
//! `netc_compiler::codegen`) that run over one planned arena.
//!
//! [`Executable::new`] compiles every step of the program and takes the kernels' packed weights
//! (packed from bound weights by [`pack()`], or read in place from a compiled bundle).
//! [`Executable::run`] binds the batch size, copies the inputs into the arena, calls the kernels in
//! plan order (each kernel's work items split over the worker threads, which meet at a barrier
//! between kernels) and copies the outputs out. The code does not depend on the batch size: a
//! kernel's work items scale with it, so one compilation serves every batch, and the arena is kept
//! between runs of the same batch size.

pub mod pack;
mod threads;

pub use pack::pack;

use crate::tensor::{Dims, Tensor};
use netc_compiler::codegen::{self, AlignedF32, CodegenError, CompileOptions, CompiledKernels, Isa};
use netc_compiler::ir::{Graph, ValueId};
use netc_compiler::lower::{PackError, Placement, Program};

/// Why a graph cannot be compiled or run by the JIT.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("weights for `{node}`: {what}")]
    Weights { node: String, what: String },
    #[error("model `{model}` takes {expected} input(s), but {found} were given")]
    InputCount { model: String, expected: usize, found: usize },
    #[error("input `{input}` of model `{model}` must have shape [N, {}], got {}", .expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "), Dims(.found))]
    InputShape { model: String, input: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("cannot allocate {bytes} bytes of activations for a batch of {batch}")]
    Memory { bytes: usize, batch: usize },
    #[error(transparent)]
    Threads(#[from] threads::PoolError),
}

/// A kernel's weight buffer: read in place from a compiled bundle, or packed in memory (64-byte
/// aligned either way).
pub enum WeightBuf<'w> {
    Borrowed(&'w [f32]),
    Owned(AlignedF32),
}

impl WeightBuf<'_> {
    pub fn as_slice(&self) -> &[f32] {
        match self {
            WeightBuf::Borrowed(s) => s,
            WeightBuf::Owned(a) => a.as_slice(),
        }
    }
}

/// A compiled model, ready to run on any batch size.
pub struct Executable<'w> {
    program: Program,
    kernels: CompiledKernels,
    /// The weight buffers of each step, in the step's order.
    weights: Vec<Vec<WeightBuf<'w>>>,
    scratch: usize,
    /// The arena of the last batch size run, reused while the batch size stays the same.
    arena: Vec<f32>,
    /// The worker threads of the last thread count run.
    pool: Option<threads::Pool>,
}

impl<'w> Executable<'w> {
    /// Compiles `program` with its steps' weight buffers (`weights[k]`: the buffers of step `k`,
    /// in its layout's order and lengths).
    pub fn new(
        program: Program,
        weights: Vec<Vec<WeightBuf<'w>>>,
        options: CompileOptions,
    ) -> Result<Executable<'w>, JitError> {
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
        Ok(Executable { program, kernels, weights, scratch, arena: Vec::new(), pool: None })
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

    /// Runs the inference outputs on `inputs` (one per graph input, `[N, ...]`) with `threads`
    /// threads (the caller's included).
    pub fn run(&mut self, inputs: &[Tensor], threads: usize) -> Result<Vec<Tensor>, JitError> {
        self.run_timed(inputs, threads, None)
    }

    /// [`Executable::run`], also returning each kernel's wall time in seconds, in step order
    /// (step `k` of the program ran kernel `k` of [`Executable::kernels`]).
    pub fn run_profiled(&mut self, inputs: &[Tensor], threads: usize) -> Result<Vec<f64>, JitError> {
        let mut times = Vec::with_capacity(self.program.steps().len());
        self.run_timed(inputs, threads, Some(&mut times))?;
        Ok(times)
    }

    fn run_timed(
        &mut self,
        inputs: &[Tensor],
        threads: usize,
        times: Option<&mut Vec<f64>>,
    ) -> Result<Vec<Tensor>, JitError> {
        let batch = self.check_inputs(inputs)?;
        let floats = self
            .program
            .plan()
            .arena
            .checked_mul(batch)
            .ok_or(JitError::Memory { bytes: usize::MAX, batch })?;
        if self.arena.len() != floats {
            self.arena = Vec::new();
            self.arena
                .try_reserve_exact(floats)
                .map_err(|_| JitError::Memory { bytes: floats * 4, batch })?;
            self.arena.resize(floats, 0.0);
        }
        let graph = self.program.graph();
        let places: Vec<Placement> = graph.inputs.iter().map(|v| self.program.plan().values[v]).collect();
        for (place, t) in places.into_iter().zip(inputs) {
            let len = t.sample_len();
            for n in 0..batch {
                let at = self.float_offset(place, batch) + n * place.sample_stride;
                self.arena[at..at + len].copy_from_slice(t.sample(n));
            }
        }
        self.execute(batch, threads, times)?;
        let graph = self.program.graph();
        let outputs: Vec<ValueId> = graph.inference_outputs().collect();
        Ok(outputs
            .into_iter()
            .map(|v| {
                let place = self.program.plan().values[&v];
                let sample = graph.shape(v);
                let len = sample.elements();
                let mut data = Vec::with_capacity(batch * len);
                for n in 0..batch {
                    let at = self.float_offset(place, batch) + n * place.sample_stride;
                    data.extend_from_slice(&self.arena[at..at + len]);
                }
                let mut shape = vec![batch];
                shape.extend_from_slice(sample.dims());
                Tensor { shape, data }
            })
            .collect())
    }

    /// Where a value's sample 0 starts in the arena of a batch of `n`, in floats.
    fn float_offset(&self, place: Placement, n: usize) -> usize {
        self.program.plan().buffers[place.buffer.0].offset * n + place.offset
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<usize, JitError> {
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
                    found: t.shape.clone(),
                });
            }
        }
        Ok(batch)
    }

    /// Calls every kernel in order, splitting each one's work items over `threads` threads.
    fn execute(
        &mut self,
        batch: usize,
        threads: usize,
        times: Option<&mut Vec<f64>>,
    ) -> Result<(), JitError> {
        let threads = threads.max(1);
        if self.pool.as_ref().is_none_or(|p| p.threads() != threads) {
            self.pool = None;
            self.pool = Some(threads::Pool::new(threads)?);
        }
        let arena = threads::SharedPtr(self.arena.as_mut_ptr());
        let calls: Vec<threads::Call> = self
            .program
            .steps()
            .iter()
            .zip(&self.kernels.kernels)
            .zip(&self.weights)
            .map(|((step, kernel), weights)| {
                let pointer = |v: ValueId| {
                    let offset = self.float_offset(self.program.plan().values[&v], batch);
                    // In bounds: the plan places every value inside the arena of `batch` samples.
                    arena.0.wrapping_add(offset)
                };
                threads::Call {
                    kernel,
                    inputs: step.inputs.iter().map(|&v| pointer(v) as *const f32).collect(),
                    output: pointer(step.output),
                    weights: weights.iter().map(|w| w.as_slice().as_ptr()).collect(),
                    items: kernel.work_items(batch),
                    batch,
                    next: std::sync::atomic::AtomicU64::new(0),
                }
            })
            .collect();
        if let Some(pool) = &self.pool {
            pool.run(&calls, self.scratch, times);
        }
        Ok(())
    }
}
