//! A serialisable form of a graph (node list in topological order), for compiled bundles: the
//! optimised graph is stored as it is and loaded without re-optimising.

use super::{verify, Graph, GraphOutput, Node, Op, Shape, ValueId, WeightExpr};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SerialNode {
    pub op: Op,
    pub weights: Vec<WeightExpr>,
    pub name: String,
    pub scope: Option<String>,
    pub instance: Vec<String>,
    pub shape: Vec<usize>,
    pub training_only: bool,
    /// Indices of earlier nodes, in port order.
    pub inputs: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SerialGraph {
    pub name: String,
    pub nodes: Vec<SerialNode>,
    pub inputs: Vec<usize>,
    /// (node index, training-only).
    pub outputs: Vec<(usize, bool)>,
}

impl SerialGraph {
    /// The graph's nodes in topological order; ids become positions in `nodes`.
    pub fn from_graph(graph: &Graph) -> SerialGraph {
        let order = graph.topo_order().expect("a verified graph is acyclic");
        let index: HashMap<ValueId, usize> =
            order.iter().enumerate().map(|(i, id)| (id.value(), i)).collect();
        let nodes = order
            .iter()
            .map(|&id| {
                let n = graph.node(id);
                SerialNode {
                    op: n.op.clone(),
                    weights: n.weights.clone(),
                    name: n.name.clone(),
                    scope: n.scope.clone(),
                    instance: n.instance.clone(),
                    shape: n.shape.0.clone(),
                    training_only: n.training_only,
                    inputs: graph.inputs(id).iter().map(|v| index[v]).collect(),
                }
            })
            .collect();
        SerialGraph {
            name: graph.name.clone(),
            nodes,
            inputs: graph.inputs.iter().map(|v| index[v]).collect(),
            outputs: graph.outputs.iter().map(|o| (index[&o.value], o.training_only)).collect(),
        }
    }

    /// Rebuilds the graph, checking every reference and then every invariant (`verify`).
    pub fn to_graph(&self) -> Result<Graph, String> {
        let mut graph = Graph::new(self.name.clone());
        let mut ids: Vec<ValueId> = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let inputs = n
                .inputs
                .iter()
                .map(|&k| {
                    ids.get(k)
                        .copied()
                        .ok_or_else(|| format!("node {i} reads node {k}, which does not precede it"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let node = Node {
                op: n.op.clone(),
                weights: n.weights.clone(),
                name: n.name.clone(),
                scope: n.scope.clone(),
                instance: n.instance.clone(),
                shape: Shape(n.shape.clone()),
                training_only: n.training_only,
            };
            ids.push(graph.add_node(node, &inputs).value());
        }
        let lookup =
            |k: usize| ids.get(k).copied().ok_or_else(|| format!("reference to node {k} of {}", ids.len()));
        graph.inputs = self.inputs.iter().map(|&k| lookup(k)).collect::<Result<_, _>>()?;
        graph.outputs = self
            .outputs
            .iter()
            .map(|&(k, training_only)| Ok(GraphOutput { value: lookup(k)?, training_only }))
            .collect::<Result<_, String>>()?;
        verify(&graph).map_err(|e| e.to_string())?;
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_optimised_seed_model_survives_a_round_trip() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/googlenet.net");
        let mut g = crate::compile_file(&path, &Default::default()).unwrap();
        crate::passes::optimize(&mut g, &Default::default()).unwrap();
        let json = serde_json::to_string(&SerialGraph::from_graph(&g)).unwrap();
        let back: SerialGraph = serde_json::from_str(&json).unwrap();
        let g2 = back.to_graph().unwrap();
        assert_eq!(super::super::print::to_text(&g), super::super::print::to_text(&g2));
    }

    /// MobileNetV2's fused activations survive a round trip, and a graph written before fused
    /// convs had an `activation` field (a bundle of an earlier netc) still reads, without one.
    #[test]
    fn fused_activations_round_trip_and_older_graphs_read_without_them() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mobilenet_v2.net");
        let mut g = crate::compile_file(&path, &Default::default()).unwrap();
        crate::passes::optimize(&mut g, &Default::default()).unwrap();
        let text = super::super::print::to_text(&g);
        assert!(text.contains("+relu6("), "{text}");
        let mut json = serde_json::to_value(SerialGraph::from_graph(&g)).unwrap();
        let back: SerialGraph = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(text, super::super::print::to_text(&back.to_graph().unwrap()));
        let mut removed = 0;
        for node in json["nodes"].as_array_mut().unwrap() {
            if let Some(f) = node["op"].get_mut("FusedConv").and_then(|f| f.as_object_mut()) {
                removed += f.remove("activation").is_some() as usize;
            }
        }
        assert!(removed > 0);
        let old: SerialGraph = serde_json::from_value(json).unwrap();
        let old = super::super::print::to_text(&old.to_graph().unwrap());
        assert!(!old.contains("+relu6("), "{old}");
    }

    #[test]
    fn a_forward_reference_is_rejected() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/resnet18.net");
        let g = crate::compile_file(&path, &Default::default()).unwrap();
        let mut s = SerialGraph::from_graph(&g);
        s.nodes[1].inputs = vec![5];
        assert!(s.to_graph().unwrap_err().contains("does not precede"));
    }
}
