//! The IR graph: a petgraph `StableDiGraph` of single-output nodes behind typed ids.
//!
//! An edge `a -> b` with weight `k` means "the value of `a` is input `k` of `b`". Every node produces
//! exactly one value, so a [`ValueId`] names the value produced by a node. Ids stay valid when other
//! nodes are removed (that is what `StableDiGraph` is for), so passes can rewrite in place.

use super::op::Op;
use super::shape::Shape;
use super::weights::WeightExpr;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// A node of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex);

/// The value produced by a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) NodeIndex);

impl NodeId {
    pub fn value(self) -> ValueId {
        ValueId(self.0)
    }
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl ValueId {
    pub fn producer(self) -> NodeId {
        NodeId(self.0)
    }
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// One operation with its output shape and provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    /// The node's weight tensors, one per [`Op::weights`] slot and in that order, as expressions over
    /// the weight file (plain `<scope>.<suffix>` tensors until a pass folds something in).
    pub weights: Vec<WeightExpr>,
    /// Unique display name: the weight scope for layers that have one, else a name derived from the
    /// enclosing scope and the op (`layer1.0.relu_1`).
    pub name: String,
    /// Weight scope: the node's tensors are `<scope>.<suffix>` (`layer1.0.conv1.weight`).
    pub scope: Option<String>,
    /// Block instances this node was created in, outermost first (`["bottleneck@layer1.0"]`).
    pub instance: Vec<String>,
    /// Per-sample output shape.
    pub shape: Shape,
    /// Part of the training graph only (auxiliary heads); removed for inference.
    pub training_only: bool,
}

/// A network output.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphOutput {
    pub value: ValueId,
    pub training_only: bool,
}

/// A whole network: nodes, the declared inputs (in order) and the outputs (primary first).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub(crate) g: StableDiGraph<Node, u32>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<GraphOutput>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds a node whose inputs are `inputs` in order. The caller has inferred `node.shape`.
    pub fn add_node(&mut self, node: Node, inputs: &[ValueId]) -> NodeId {
        let id = self.g.add_node(node);
        for (port, v) in inputs.iter().enumerate() {
            self.g.add_edge(v.0, id, port as u32);
        }
        NodeId(id)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    pub fn shape(&self, v: ValueId) -> &Shape {
        &self.g[v.0].shape
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Node ids in insertion order (which is a topological order for graphs built by the front end).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    /// The inputs of a node, in port order.
    pub fn inputs(&self, id: NodeId) -> Vec<ValueId> {
        let mut edges: Vec<(u32, NodeIndex)> =
            self.g.edges_directed(id.0, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, src)| ValueId(src)).collect()
    }

    /// The input ports of a node as recorded on the edges, unsorted (for `verify`).
    pub(crate) fn input_ports(&self, id: NodeId) -> Vec<u32> {
        self.g.edges_directed(id.0, Direction::Incoming).map(|e| *e.weight()).collect()
    }

    /// The nodes that read a value (each once per port it feeds).
    pub fn consumers(&self, v: ValueId) -> Vec<NodeId> {
        let mut c: Vec<NodeId> =
            self.g.edges_directed(v.0, Direction::Outgoing).map(|e| NodeId(e.target())).collect();
        c.sort_unstable();
        c
    }

    /// Nodes in a topological order (inputs before their consumers), or `None` if the graph has a cycle.
    ///
    /// Among the nodes that are ready, the earliest created comes first (Kahn's algorithm with a
    /// min-heap), so the order is deterministic and follows the source as closely as possible.
    pub fn topo_order(&self) -> Option<Vec<NodeId>> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut pending: std::collections::HashMap<NodeIndex, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BinaryHeap<Reverse<NodeIndex>> =
            pending.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| Reverse(n)).collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(NodeId(n));
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = pending.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        (order.len() == self.g.node_count()).then_some(order)
    }

    /// Looks a node up by its display name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.node_ids().find(|&id| self.node(id).name == name)
    }

    /// The outputs kept for inference (training-only ones dropped).
    pub fn inference_outputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.outputs.iter().filter(|o| !o.training_only).map(|o| o.value)
    }

    /// Removes a node and its edges. The caller keeps the graph consistent (see `verify`).
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.g.remove_node(id.0)
    }

    /// Replaces a node's inputs with `inputs` (in port order).
    pub fn set_inputs(&mut self, id: NodeId, inputs: &[ValueId]) {
        let old: Vec<petgraph::stable_graph::EdgeIndex> =
            self.g.edges_directed(id.0, Direction::Incoming).map(|e| e.id()).collect();
        for e in old {
            self.g.remove_edge(e);
        }
        for (port, v) in inputs.iter().enumerate() {
            self.g.add_edge(v.0, id.0, port as u32);
        }
    }

    /// Whether `v` is one of the graph's outputs.
    pub fn is_output(&self, v: ValueId) -> bool {
        self.outputs.iter().any(|o| o.value == v)
    }

    /// The only reader of `v`, if it has exactly one reader (one edge) and is not a graph output.
    pub fn sole_consumer(&self, v: ValueId) -> Option<NodeId> {
        match self.consumers(v)[..] {
            [c] if !self.is_output(v) => Some(c),
            _ => None,
        }
    }

    /// Makes every reader of `old` read `new` instead (graph outputs included).
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        let uses: Vec<(petgraph::stable_graph::EdgeIndex, NodeIndex, u32)> = self
            .g
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (edge, target, port) in uses {
            self.g.remove_edge(edge);
            self.g.add_edge(new.0, target, port);
        }
        for out in &mut self.outputs {
            if out.value == old {
                out.value = new;
            }
        }
    }
}
