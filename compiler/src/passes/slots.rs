//! Named access to a node's weight slots, which are stored in [`Op::weights`] order.

use crate::ir::{Node, Op, WeightExpr};
use std::collections::HashMap;

/// The node's weight expressions by slot name.
pub fn by_name(node: &Node) -> HashMap<&'static str, WeightExpr> {
    node.op.weights().into_iter().map(|s| s.suffix).zip(node.weights.iter().cloned()).collect()
}

/// Sets `node.op` and rebuilds `node.weights` in the new op's slot order from `slots`.
///
/// # Panics
/// When a slot the new op needs is missing: a bug in the calling pass.
pub fn rebuild(node: &mut Node, op: Op, mut slots: HashMap<&'static str, WeightExpr>) {
    node.weights = op
        .weights()
        .iter()
        .map(|s| {
            slots
                .remove(s.suffix)
                .unwrap_or_else(|| panic!("pass bug: no `{}` slot for {}", s.suffix, op.label()))
        })
        .collect();
    node.op = op;
}
