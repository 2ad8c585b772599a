//! Concat elimination: each branch writes straight into its channel range of the concat's output.
//!
//! Rewrite: a concat is marked `in_place`; the memory plan then places each input's buffer inside
//! the concat's buffer at its channel offset, so producers write there directly and the concat moves
//! no data.
//!
//! Precondition: every input is produced by a computing node (not a graph input, a slice view or another
//! in-place concat) whose only reader is this concat, reached through one port, and that is not a graph
//! output; otherwise the value must exist on its own and the concat copies.
//!
//! Soundness: each input value is written once, by its producer, and read only by the concat, so
//! storing it at its final place yields the same concatenated tensor with no reader ever seeing a
//! different layout.

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{Concat, Graph, NodeId, Op};

pub struct ConcatInPlace;

impl Pass for ConcatInPlace {
    fn name(&self) -> &'static str {
        "concat-in-place"
    }

    fn summary(&self) -> &'static str {
        "branches write straight into their channel slice of the concat output"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let concats: Vec<NodeId> = graph
            .node_ids()
            .filter(|&id| matches!(graph.node(id).op, Op::Concat(Concat { in_place: false })))
            .collect();
        let mut rewrites = 0;
        for id in concats {
            let inputs = graph.inputs(id);
            let eligible = inputs.iter().all(|&v| {
                let producer = graph.node(v.producer());
                !matches!(producer.op, Op::Input | Op::Slice(_) | Op::Concat(_) | Op::Flatten)
                    && graph.sole_consumer(v) == Some(id)
            });
            if eligible {
                graph.node_mut(id).op = Op::Concat(Concat { in_place: true });
                rewrites += 1;
            }
        }
        rewrites
    }
}
