//! Dead code: the inference graph keeps only what its outputs need.
//!
//! Rewrite: every dropout becomes the identity (its readers read its input); training-only outputs
//! (GoogLeNet's auxiliary logits) are dropped; every node that no remaining output depends on is removed
//! (inputs stay: they are the graph's interface).
//!
//! Soundness: at inference dropout is the identity (PyTorch's `eval()`), and removing nodes that no
//! output depends on cannot change any output.

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{Graph, NodeId, Op};
use std::collections::HashSet;

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }

    fn summary(&self) -> &'static str {
        "dropout becomes identity; training-only outputs and everything no output needs are removed"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        remove_dead(graph)
    }
}

/// The pass's rewrite (also legalisation's first step), returning how many nodes it removed.
pub(super) fn remove_dead(graph: &mut Graph) -> usize {
    let mut rewrites = 0;
    let dropouts: Vec<NodeId> =
        graph.node_ids().filter(|&id| matches!(graph.node(id).op, Op::Dropout(_))).collect();
    for id in dropouts {
        let input = graph.inputs(id)[0];
        graph.replace_uses(id.value(), input);
        graph.remove_node(id);
        rewrites += 1;
    }
    let before = graph.outputs.len();
    graph.outputs.retain(|o| !o.training_only);
    rewrites += before - graph.outputs.len();

    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = graph.outputs.iter().map(|o| o.value.producer()).collect();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            stack.extend(graph.inputs(id).iter().map(|v| v.producer()));
        }
    }
    let dead: Vec<NodeId> =
        graph.node_ids().filter(|id| !live.contains(id) && graph.node(*id).op != Op::Input).collect();
    for id in dead {
        graph.remove_node(id);
        rewrites += 1;
    }
    rewrites
}
