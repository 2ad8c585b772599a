//! Activations move into the epilogue of the convolution they follow.
//!
//! Rewrite: an activation (`relu6`/`clamp`/`hardtanh`, `sigmoid`, `silu`, `hardsigmoid`,
//! `hardswish`) whose input is a fused conv's output becomes that conv's
//! [`FusedConv::activation`], the last step of its epilogue; the activation node is removed and its
//! readers (and graph outputs) read the conv instead. `conv+bias+relu6` in `netc ir`.
//!
//! Precondition: the activation is the only reader of the conv's output and that output is not a
//! graph output (no one else needs the value before the activation); the conv has no activation
//! yet; its kind's kernels apply activations ([`ConvKind::supports_activation`]; other kinds keep
//! the separate elementwise op). The pass runs after every pass that chooses a conv's kind, so the
//! kind it checks is the one that is compiled.
//!
//! Soundness: the fused epilogue computes, element by element, the activation of exactly the value
//! the removed node read (the activation comes after every other epilogue step, which is the order
//! of the graph: the conv's output was the activation's input). The kernels apply it with the
//! elementwise kernel's own code or, in the assembled x86 tiles, its instruction-for-instruction
//! copy with the same constants (see `codegen::tile::x86`); the one exception, the AVX-512 sigmoid
//! and SiLU, computes the same function to the same accuracy bound with cheaper instructions, so
//! its last bits may differ from the separate kernel's. No edge is added, so the graph stays
//! acyclic.
//!
//! [`FusedConv::activation`]: crate::ir::FusedConv::activation
//! [`ConvKind::supports_activation`]: crate::ir::ConvKind::supports_activation

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{Graph, NodeId, Op};

pub struct FuseActivation;

impl Pass for FuseActivation {
    fn name(&self) -> &'static str {
        "fuse-activation"
    }

    fn summary(&self) -> &'static str {
        "clamp/relu6, sigmoid, silu, hardsigmoid, hardswish after a conv join its epilogue"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let ids: Vec<NodeId> = graph.node_ids().collect();
        let mut rewrites = 0;
        for id in ids {
            let Op::Activation(act) = graph.node(id).op else { continue };
            let input = graph.inputs(id)[0];
            let conv = input.producer();
            if graph.sole_consumer(input) != Some(id) {
                continue;
            }
            let Op::FusedConv(f) = &mut graph.node_mut(conv).op else { continue };
            if f.activation.is_some() || !f.kind.supports_activation() {
                continue;
            }
            f.activation = Some(act);
            graph.replace_uses(id.value(), input);
            graph.remove_node(id);
            rewrites += 1;
        }
        rewrites
    }
}
