//! `verify()`: every structural invariant of a graph, checked. Every pass must leave a graph that
//! passes; tests and debug builds run it after each pass.

use super::graph::{Graph, NodeId};
use super::op::Op;
use super::shape::check_size;
use std::collections::HashMap;

/// A broken invariant, naming the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the graph has a cycle")]
    Cycle,
    #[error("node `{node}`: input ports {ports:?} are not 0..{count}")]
    Ports { node: String, ports: Vec<u32>, count: usize },
    #[error("node `{node}` ({op}) has {count} inputs")]
    Arity { node: String, op: &'static str, count: usize },
    #[error("node `{node}`: recorded shape {recorded} but its inputs give {inferred}")]
    ShapeDrift { node: String, recorded: String, inferred: String },
    #[error("node `{node}`: {message}")]
    BadShape { node: String, message: String },
    #[error("input list and input nodes disagree at `{node}`")]
    Inputs { node: String },
    #[error("the graph has no outputs")]
    NoOutputs,
    #[error("an output refers to a removed node")]
    DanglingOutput,
    #[error("two nodes are named `{name}`")]
    DuplicateName { name: String },
    #[error("two nodes own weights under scope `{scope}`")]
    DuplicateScope { scope: String },
    #[error("node `{node}`: weight slot `{slot}`: {message}")]
    BadWeight { node: String, slot: String, message: String },
    #[error("weight `{key}` is read with shapes {first:?} and {second:?}")]
    WeightShapeConflict { key: String, first: Vec<usize>, second: Vec<usize> },
    #[error("node `{node}` is used for inference but reads training-only `{input}`")]
    TrainingLeak { node: String, input: String },
}

/// Checks the invariants of `graph`; the first broken one is returned.
pub fn verify(graph: &Graph) -> Result<(), VerifyError> {
    let order = graph.topo_order().ok_or(VerifyError::Cycle)?;
    let mut names = HashMap::new();
    let mut scopes = HashMap::new();
    let mut params: HashMap<String, Vec<usize>> = HashMap::new();
    for &id in &order {
        let node = graph.node(id);
        let label = || node.name.clone();
        if names.insert(node.name.as_str(), id).is_some() {
            return Err(VerifyError::DuplicateName { name: label() });
        }
        let mut ports = graph.input_ports(id);
        ports.sort_unstable();
        if ports.iter().enumerate().any(|(i, &p)| p as usize != i) {
            return Err(VerifyError::Ports { node: label(), ports, count: graph.inputs(id).len() });
        }
        let inputs = graph.inputs(id);
        if !node.op.arity().accepts(inputs.len()) {
            return Err(VerifyError::Arity { node: label(), op: node.op.name(), count: inputs.len() });
        }
        if node.op == Op::Input {
            if !graph.inputs.contains(&id.value()) {
                return Err(VerifyError::Inputs { node: label() });
            }
            check_size("input", node.shape.dims())
                .map_err(|e| VerifyError::BadShape { node: label(), message: e.to_string() })?;
        } else {
            let shapes: Vec<_> = inputs.iter().map(|&v| graph.shape(v)).collect();
            let inferred = node
                .op
                .infer_shape(&shapes)
                .map_err(|e| VerifyError::BadShape { node: label(), message: e.to_string() })?;
            if inferred != node.shape {
                return Err(VerifyError::ShapeDrift {
                    node: label(),
                    recorded: node.shape.to_string(),
                    inferred: inferred.to_string(),
                });
            }
        }
        let specs = node.op.weights();
        if specs.len() != node.weights.len() {
            return Err(VerifyError::BadWeight {
                node: label(),
                slot: "*".into(),
                message: format!("{} slots for {} weights", node.weights.len(), specs.len()),
            });
        }
        for (spec, expr) in specs.iter().zip(&node.weights) {
            let bad =
                |message: String| VerifyError::BadWeight { node: label(), slot: spec.suffix.into(), message };
            let shape = expr.check().map_err(bad)?;
            if shape != spec.shape {
                return Err(bad(format!("expression gives {shape:?}, the op needs {:?}", spec.shape)));
            }
            let mut leaves = Vec::new();
            expr.params(&mut leaves);
            for (key, shape) in leaves {
                match params.get(&key) {
                    Some(first) if *first != shape => {
                        return Err(VerifyError::WeightShapeConflict {
                            key,
                            first: first.clone(),
                            second: shape,
                        })
                    }
                    _ => {
                        params.insert(key, shape);
                    }
                }
            }
        }
        if matches!(node.op, Op::Conv(_) | Op::Linear(_) | Op::BatchNorm(_)) {
            if let Some(scope) = node.scope.as_deref() {
                if scopes.insert(scope, id).is_some() {
                    return Err(VerifyError::DuplicateScope { scope: scope.to_string() });
                }
            }
        }
        if !node.training_only {
            if let Some(&leak) = inputs.iter().find(|v| graph.node(v.producer()).training_only) {
                return Err(VerifyError::TrainingLeak {
                    node: label(),
                    input: graph.node(leak.producer()).name.clone(),
                });
            }
        }
    }
    for &v in &graph.inputs {
        if !graph.contains(v.producer()) || graph.node(v.producer()).op != Op::Input {
            return Err(VerifyError::Inputs { node: format!("%{}", v.index()) });
        }
    }
    if graph.outputs.is_empty() {
        return Err(VerifyError::NoOutputs);
    }
    for out in &graph.outputs {
        if !graph.contains(out.value.producer()) {
            return Err(VerifyError::DanglingOutput);
        }
        let producer: NodeId = out.value.producer();
        if !out.training_only && graph.node(producer).training_only {
            return Err(VerifyError::TrainingLeak {
                node: "output".into(),
                input: graph.node(producer).name.clone(),
            });
        }
    }
    Ok(())
}
