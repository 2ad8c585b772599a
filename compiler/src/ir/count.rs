//! Parameter and multiply-accumulate accounting: the data behind `netc summary`.

use super::graph::Graph;
use super::op::Op;
use super::shape::Shape;
use serde::Serialize;

/// One row of the summary: a node with its output shape, learnable parameters and MACs per sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub output_shape: Shape,
    pub params: u64,
    pub macs: u64,
}

/// The whole summary of a graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub model: String,
    pub input: Shape,
    pub total_params: u64,
    pub total_macs: u64,
    pub layers: Vec<LayerRow>,
}

/// Summarises a graph in topological order. Training-only parts (auxiliary heads, dropout) are left out
/// unless `train` is set.
pub fn summarize(graph: &Graph, train: bool) -> Summary {
    let order = graph.topo_order().unwrap_or_else(|| graph.node_ids().collect());
    let mut layers = Vec::new();
    for id in order {
        let node = graph.node(id);
        let training_part = node.training_only || matches!(node.op, Op::Dropout(_));
        if node.op == Op::Input || (training_part && !train) {
            continue;
        }
        layers.push(LayerRow {
            name: node.name.clone(),
            op: match node.op {
                Op::AdaptiveAvgPool(_) => node.op.display_name().to_string(),
                _ => node.op.label(),
            },
            output_shape: node.shape.clone(),
            params: node.op.param_count(),
            macs: node.op.macs(&node.shape),
        });
    }
    let input = graph.inputs.first().map(|&v| graph.shape(v).clone()).unwrap_or(Shape(Vec::new()));
    Summary {
        model: graph.name.clone(),
        input,
        total_params: layers.iter().map(|l| l.params).sum(),
        total_macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    }
}
