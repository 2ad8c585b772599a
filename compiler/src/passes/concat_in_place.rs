//! Concat elimination: each input of a concat is written by its producer straight into its channel
//! range of the concat's output, chained concats included.
//!
//! Rewrite: a concat is marked `in_place`; the memory plan then places each input inside the concat's
//! buffer at its channel offset, so producers write there directly and the concat moves no data.
//! Concats nest: when an input is itself a concat (a DenseNet layer's `concat(features, new)`, whose
//! `features` is the previous layer's concat), that inner concat is placed at its offset in the outer
//! one and its own inputs inside it, so a whole dense block lives in one block-wide buffer: each layer
//! writes its slice once and reads a prefix of the buffer as its input. A concat of values that
//! later concats already placed one after the other (`concat(x, f1)` beside `concat(x, f1, f2)`)
//! becomes a view of them where they lie.
//!
//! Precondition (decided by [`concat_layout`], the same function the memory plan follows): visiting
//! concats from last to first, each input is either not placed yet, produced by a computing node
//! (not a graph input, a slice, a flatten or dropout, which cannot write elsewhere) and not a graph
//! output, or already placed exactly where this concat needs it; no value is an input twice. An input
//! may have other readers (the next dense layer, other concats): they read it where it lies, through
//! the plan's placement and sample stride like any channel view. Otherwise the concat copies.
//!
//! Soundness: a value is placed once, inside the range of the concat that placed it at its channel
//! offset, so the inputs of one concat occupy disjoint bytes and a concat's range holds exactly its
//! inputs' bytes in order. Each of those bytes is written once, by the producer of the value it
//! belongs to, before any concat containing it is read, and nothing else writes there while it is
//! live: concats in place write nothing, and the plan lets an elementwise op write over such a buffer
//! only after every value stored in it has been read for the last time. Every reader therefore sees
//! the value it would have seen in a buffer of its own; `MemoryPlan::check` verifies this per plan
//! (no write lands on a live value) and `MemoryPlan::concat_is_view` that each view is where its
//! concat needs it.

use super::Pass;
use crate::codegen::Isa;
use crate::ir::{Concat, Graph, NodeId, Op};
use crate::lower::memory::concat_layout;

pub struct ConcatInPlace;

impl Pass for ConcatInPlace {
    fn name(&self) -> &'static str {
        "concat-in-place"
    }

    fn summary(&self) -> &'static str {
        "branches write straight into their channel slice of the concat output (chains share one buffer)"
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let Some(order) = graph.topo_order() else { return 0 };
        let layout = concat_layout(graph, &order, |_| true);
        let concats: Vec<NodeId> = graph
            .node_ids()
            .filter(|&id| matches!(graph.node(id).op, Op::Concat(Concat { in_place: false })))
            .collect();
        let mut rewrites = 0;
        for id in concats {
            if layout.in_place.contains(&id) {
                graph.node_mut(id).op = Op::Concat(Concat { in_place: true });
                rewrites += 1;
            }
        }
        rewrites
    }
}
