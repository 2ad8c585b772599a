//! The `Program`: the one owner of "optimised graph -> something a runtime executes".
//!
//! [`Program::new`] legalises the graph (so any graph runs, `-O0` included), plans the arena
//! ([`super::memory`]) and gives every node that computes something one [`Step`]: the kernel that
//! implements it ([`KernelSpec`], the algorithm the optimiser chose and every shape), the values it
//! reads and writes, and the weight buffers the kernel takes, in their packed layout. The packer
//! ([`Program::pack`]), the runtime's executor, the bundle writer and reader, and
//! `netc ir --stage clif|asm` all read the same steps, so they cannot disagree on which kernel a
//! node gets or which buffers it reads.
//!
//! Nothing in a program depends on the ISA: the packed weight layouts are the same for every tile
//! backend (see [`crate::codegen::pack`]); the JIT picks the ISA, and with it each step's
//! implementation, when it compiles the steps ([`crate::codegen::jit::compile`]). A program is
//! therefore stored in a bundle as its graph: rebuilding the steps from the graph is deterministic.

use super::memory::{self, MemoryPlan};
use crate::codegen::{
    pack_conv_weights, pack_linear_weights, AlignedF32, CodegenError, KernelRequest, KernelSpec,
};
use crate::ir::{Graph, Node, NodeId, ValueId};
use std::borrow::Cow;

/// Names the weight layouts of this netc, stored in bundles: a bundle packed with another layout
/// is refused (it would be read wrongly), whatever machine it was made on.
pub const PACKED_LAYOUT: &str = "conv: A panels of 12 output channels, k-major; linear: panels of 32 outputs";

/// One kernel call of a program.
#[derive(Debug, Clone)]
pub struct Step {
    pub node: NodeId,
    /// The name in dumps and profiles: `%7 layer1.0.conv1 gemm1x1+bias+relu`.
    pub name: String,
    pub kernel: KernelSpec,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The kernel's weight buffers, in order: what each holds and its length in floats.
    pub weights: Vec<(&'static str, usize)>,
}

/// A legalised graph, its memory plan and its kernel steps in execution order.
#[derive(Debug, Clone)]
pub struct Program {
    graph: Graph,
    plan: MemoryPlan,
    steps: Vec<Step>,
}

/// A weight buffer could not be packed.
#[derive(Debug, thiserror::Error)]
#[error("weights for `{node}`: {what}")]
pub struct PackError {
    pub node: String,
    pub what: String,
}

impl Program {
    /// Lowers `graph` (optimised or not).
    pub fn new(mut graph: Graph) -> Result<Program, CodegenError> {
        crate::passes::legalize(&mut graph);
        let plan = memory::plan(&graph);
        let mut steps = Vec::new();
        for &id in &plan.order {
            if let Some(kernel) = KernelSpec::for_node(&graph, id, &plan)? {
                let node = graph.node(id);
                steps.push(Step {
                    node: id,
                    name: format!("{} {}", node.name, node.op.label()),
                    weights: kernel.weight_layout(),
                    kernel,
                    inputs: graph.inputs(id),
                    output: id.value(),
                });
            }
        }
        Ok(Program { graph, plan, steps })
    }

    /// The legalised graph that runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// What the JIT compiles: one request per step, in order.
    pub fn requests(&self) -> Vec<KernelRequest> {
        self.steps.iter().map(|s| KernelRequest { name: s.name.clone(), spec: s.kernel.clone() }).collect()
    }

    /// Packs every step's weight buffers (64-byte aligned), from the node's weight slots as
    /// `slot(node, suffix)` gives them (folded and merged slots already evaluated).
    pub fn pack<'w>(
        &self,
        mut slot: impl FnMut(&Node, &str) -> Option<Cow<'w, [f32]>>,
    ) -> Result<Vec<Vec<AlignedF32>>, PackError> {
        let mut out = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let node = self.graph.node(step.node);
            let err = |what: String| PackError { node: node.name.clone(), what };
            let slots = node
                .op
                .weights()
                .iter()
                .map(|s| slot(node, s.suffix).ok_or_else(|| err(format!("slot `{}` is not bound", s.suffix))))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&[f32]> = slots.iter().map(|s| &**s).collect();
            let buffers = match &step.kernel {
                KernelSpec::Conv(c) => {
                    vec![AlignedF32::from_slice(
                        &pack_conv_weights(c, &refs).map_err(|e| err(e.to_string()))?,
                    )]
                }
                KernelSpec::Linear(l) => {
                    vec![AlignedF32::from_slice(
                        &pack_linear_weights(l, &refs).map_err(|e| err(e.to_string()))?,
                    )]
                }
                _ => refs.iter().map(|data| AlignedF32::from_slice(data)).collect(),
            };
            let lens: Vec<usize> = buffers.iter().map(AlignedF32::len).collect();
            let want: Vec<usize> = step.weights.iter().map(|w| w.1).collect();
            if lens != want {
                return Err(err(format!("packed buffers of {lens:?} floats, the kernel takes {want:?}")));
            }
            out.push(buffers);
        }
        Ok(out)
    }
}
