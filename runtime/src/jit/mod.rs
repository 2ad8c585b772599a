//! The JIT backend: an optimised graph lowered to native kernels (Cranelift, see
//! `netc_compiler::codegen`) that run over one planned arena.
//!
//! [`Executable::new`] plans memory, picks a kernel for every node that computes something,
//! compiles them all in one go, and takes the kernels' packed weights (packed from bound weights by
//! [`pack`], or read in place from a compiled bundle). [`Executable::run`] binds the batch size,
//! copies the inputs into the arena, calls the kernels in plan order (each kernel's work items split
//! over the worker threads, which meet at a barrier between kernels) and copies the outputs out.
//! The code does not depend on the batch size: a kernel's work items scale with it, so one
//! compilation serves every batch, and the arena is kept between runs of the same batch size.

pub mod pack;
mod threads;

use crate::tensor::{Dims, Tensor};
use netc_compiler::codegen::{
    self, AlignedF32, CodegenError, CompileOptions, CompiledKernels, KernelRequest, KernelSpec,
};
use netc_compiler::ir::{Graph, NodeId, ValueId};
use netc_compiler::lower::{self, MemoryPlan, Placement};

/// Why a graph cannot be compiled or run by the JIT.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("weights for `{node}`: {what}")]
    Weights { node: String, what: String },
    #[error("model `{model}` takes {expected} input(s), but {found} were given")]
    InputCount { model: String, expected: usize, found: usize },
    #[error("input `{input}` of model `{model}` must have shape [N, {}], got {}", .expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "), Dims(.found))]
    InputShape { model: String, input: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("cannot allocate {bytes} bytes of activations for a batch of {batch}")]
    Memory { bytes: usize, batch: usize },
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

/// One kernel call of the plan.
struct Step {
    kernel: usize,
    inputs: Vec<ValueId>,
    output: ValueId,
    /// Indices into [`Executable::weights`].
    weights: Vec<usize>,
}

/// A compiled model, ready to run on any batch size.
pub struct Executable<'w> {
    graph: Graph,
    plan: MemoryPlan,
    kernels: CompiledKernels,
    steps: Vec<Step>,
    weights: Vec<WeightBuf<'w>>,
    scratch: usize,
    /// The arena of the last batch size run, reused while the batch size stays the same.
    arena: Vec<f32>,
}

/// The kernel of every computing node of `graph` in plan order, with the node ids.
pub fn kernel_specs(graph: &Graph, plan: &MemoryPlan) -> Result<Vec<(NodeId, KernelSpec)>, CodegenError> {
    let mut specs = Vec::new();
    for &id in &plan.order {
        if let Some(spec) = KernelSpec::for_node(graph, id, plan)? {
            specs.push((id, spec));
        }
    }
    Ok(specs)
}

/// The name a kernel carries in dumps: `%7 layer1.0.conv1 gemm1x1+bias+relu`.
pub fn kernel_name(graph: &Graph, id: NodeId) -> String {
    let node = graph.node(id);
    format!("{} {}", node.name, node.op.label())
}

impl<'w> Executable<'w> {
    /// Compiles `graph` (optimised or not; it is legalised for code generation first) with the
    /// kernels' packed weights: `weights[k]` are the buffers of the k-th kernel of
    /// [`kernel_specs`], in [`KernelSpec::weight_layout`] order.
    pub fn new(
        mut graph: Graph,
        weights: Vec<Vec<WeightBuf<'w>>>,
        options: CompileOptions,
    ) -> Result<Executable<'w>, JitError> {
        netc_compiler::passes::legalize(&mut graph);
        let plan = lower::plan(&graph);
        let specs = kernel_specs(&graph, &plan)?;
        if weights.len() != specs.len() {
            return Err(JitError::Weights {
                node: graph.name.clone(),
                what: format!("{} kernels but weights for {}", specs.len(), weights.len()),
            });
        }
        let requests: Vec<KernelRequest> = specs
            .iter()
            .map(|(id, spec)| KernelRequest { name: kernel_name(&graph, *id), spec: spec.clone() })
            .collect();
        let kernels = codegen::compile(&requests, options)?;
        let mut steps = Vec::with_capacity(specs.len());
        let mut store = Vec::new();
        for (k, ((id, spec), buffers)) in specs.iter().zip(weights).enumerate() {
            let layout = spec.weight_layout();
            if layout.len() != buffers.len()
                || layout.iter().zip(&buffers).any(|((_, len), b)| *len != b.as_slice().len())
            {
                return Err(JitError::Weights {
                    node: graph.node(*id).name.clone(),
                    what: format!(
                        "the kernel takes buffers of {:?} floats, got {:?}",
                        layout.iter().map(|l| l.1).collect::<Vec<_>>(),
                        buffers.iter().map(|b| b.as_slice().len()).collect::<Vec<_>>()
                    ),
                });
            }
            let first = store.len();
            store.extend(buffers);
            steps.push(Step {
                kernel: k,
                inputs: graph.inputs(*id),
                output: id.value(),
                weights: (first..store.len()).collect(),
            });
        }
        let scratch = kernels.kernels.iter().map(|k| k.scratch_floats()).max().unwrap_or(0);
        Ok(Executable { graph, plan, kernels, steps, weights: store, scratch, arena: Vec::new() })
    }

    /// The legalised graph that runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn kernels(&self) -> &CompiledKernels {
        &self.kernels
    }

    /// Arena bytes for a batch of `n`.
    pub fn arena_bytes(&self, n: usize) -> usize {
        self.plan.arena_bytes(n)
    }

    /// Runs the inference outputs on `inputs` (one per graph input, `[N, ...]`) with `threads`
    /// threads (the caller's included).
    pub fn run(&mut self, inputs: &[Tensor], threads: usize) -> Result<Vec<Tensor>, JitError> {
        self.run_timed(inputs, threads, None)
    }

    /// [`Executable::run`], also recording each kernel's wall time (seconds, in kernel order, named
    /// as in [`kernel_name`]) into `times`.
    pub fn run_profiled(
        &mut self,
        inputs: &[Tensor],
        threads: usize,
    ) -> Result<Vec<(String, f64)>, JitError> {
        let mut times = Vec::with_capacity(self.steps.len());
        self.run_timed(inputs, threads, Some(&mut times))?;
        Ok(self.kernels.kernels.iter().map(|k| k.name.clone()).zip(times).collect())
    }

    fn run_timed(
        &mut self,
        inputs: &[Tensor],
        threads: usize,
        times: Option<&mut Vec<f64>>,
    ) -> Result<Vec<Tensor>, JitError> {
        let batch = self.check_inputs(inputs)?;
        let floats =
            self.plan.arena.checked_mul(batch).ok_or(JitError::Memory { bytes: usize::MAX, batch })?;
        if self.arena.len() != floats {
            self.arena = Vec::new();
            self.arena
                .try_reserve_exact(floats)
                .map_err(|_| JitError::Memory { bytes: floats * 4, batch })?;
            self.arena.resize(floats, 0.0);
        }
        for (&v, t) in self.graph.inputs.iter().zip(inputs) {
            let place = self.plan.values[&v];
            let len = t.sample_len();
            for n in 0..batch {
                let at = self.float_offset(place, batch) + n * place.sample_stride;
                self.arena[at..at + len].copy_from_slice(t.sample(n));
            }
        }
        self.execute(batch, threads, times);
        let outputs: Vec<ValueId> = self.graph.inference_outputs().collect();
        Ok(outputs
            .into_iter()
            .map(|v| {
                let place = self.plan.values[&v];
                let sample = self.graph.shape(v);
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
        self.plan.buffers[place.buffer.0].offset * n + place.offset
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<usize, JitError> {
        let model = || self.graph.name.clone();
        if inputs.len() != self.graph.inputs.len() {
            return Err(JitError::InputCount {
                model: model(),
                expected: self.graph.inputs.len(),
                found: inputs.len(),
            });
        }
        let batch = inputs.first().map_or(1, |t| t.shape.first().copied().unwrap_or(0));
        for (&v, t) in self.graph.inputs.iter().zip(inputs) {
            let declared = self.graph.shape(v).dims();
            if t.shape.len() != declared.len() + 1
                || t.shape[1..] != *declared
                || t.shape[0] == 0
                || t.shape[0] != batch
            {
                return Err(JitError::InputShape {
                    model: model(),
                    input: self.graph.node(v.producer()).name.clone(),
                    expected: declared.to_vec(),
                    found: t.shape.clone(),
                });
            }
        }
        Ok(batch)
    }

    /// Calls every kernel in order, splitting each one's work items over `threads` threads.
    fn execute(&mut self, batch: usize, threads: usize, times: Option<&mut Vec<f64>>) {
        let arena = threads::SharedPtr(self.arena.as_mut_ptr());
        let calls: Vec<threads::Call> = self
            .steps
            .iter()
            .map(|step| {
                let kernel = &self.kernels.kernels[step.kernel];
                let pointer = |v: ValueId| {
                    let offset = self.float_offset(self.plan.values[&v], batch);
                    // In bounds: the plan places every value inside the arena of `batch` samples.
                    arena.0.wrapping_add(offset)
                };
                threads::Call {
                    kernel,
                    inputs: step.inputs.iter().map(|&v| pointer(v) as *const f32).collect(),
                    output: pointer(step.output),
                    weights: step.weights.iter().map(|&w| self.weights[w].as_slice().as_ptr()).collect(),
                    items: kernel.work_items(batch),
                    batch,
                }
            })
            .collect();
        threads::run_all(&calls, threads, self.scratch, times);
    }
}
