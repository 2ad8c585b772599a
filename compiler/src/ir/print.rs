//! Printers of the IR: a stable typed text form, Graphviz DOT with a cluster per block instance, and JSON.
//!
//! All three number values densely in topological order (`%0`, `%1`, ...), so dumps are stable across
//! runs and comparable across stages.

use super::graph::{Graph, NodeId};
use super::op::Op;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Dense display numbering: topological position of every node.
fn numbering(graph: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = graph.topo_order().unwrap_or_else(|| graph.node_ids().collect());
    let index = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    (order, index)
}

/// The flat text form: one value per line with op, inputs, attributes, shape, scope and block instance.
///
/// ```text
/// %4 = conv(%3) out=64 kernel=3 stride=1 pad=1 bias=false : [64, 56, 56]  @layer1.0.conv1  in basic_block@layer1.0
/// ```
pub fn to_text(graph: &Graph) -> String {
    let (order, index) = numbering(graph);
    let mut out = String::new();
    let inputs: Vec<String> = graph
        .inputs
        .iter()
        .map(|&v| format!("{}: {}", graph.node(v.producer()).name, graph.shape(v)))
        .collect();
    let _ = writeln!(out, "network {}({})", graph.name, inputs.join(", "));
    for id in order {
        let node = graph.node(id);
        let args: Vec<String> =
            graph.inputs(id).iter().map(|v| format!("%{}", index[&v.producer()])).collect();
        let _ = write!(out, "  %{} = ", index[&id]);
        if node.op == Op::Input {
            let _ = write!(out, "input \"{}\"", node.name);
        } else {
            let _ = write!(out, "{}({})", node.op.label(), args.join(", "));
            let attrs = node.op.attrs_text();
            if !attrs.is_empty() {
                let _ = write!(out, " {attrs}");
            }
        }
        let _ = write!(out, " : {}", node.shape);
        match &node.scope {
            Some(scope) if *scope == node.name => {
                let _ = write!(out, "  @{scope}");
            }
            Some(scope) => {
                let _ = write!(out, "  {} @{scope}", node.name);
            }
            None if node.op != Op::Input => {
                let _ = write!(out, "  {}", node.name);
            }
            None => {}
        }
        if !node.instance.is_empty() {
            let _ = write!(out, "  in {}", node.instance.join(" > "));
        }
        if node.training_only {
            let _ = write!(out, "  [train]");
        }
        out.push('\n');
    }
    let outs: Vec<String> = graph
        .outputs
        .iter()
        .map(|o| {
            let id = format!("%{}", index.get(&o.value.producer()).copied().unwrap_or(usize::MAX));
            if o.training_only {
                format!("{id} [train]")
            } else {
                id
            }
        })
        .collect();
    let _ = writeln!(out, "  return {}", outs.join(", "));
    out
}

/// The JSON form: `{"name", "inputs", "outputs", "nodes": [{"id", "name", "op", "inputs", "shape", "attrs", ...}]}`.
pub fn to_json(graph: &Graph) -> serde_json::Value {
    use serde_json::json;
    let (order, index) = numbering(graph);
    let nodes: Vec<serde_json::Value> = order
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let inputs: Vec<usize> = graph.inputs(id).iter().map(|v| index[&v.producer()]).collect();
            json!({
                "id": index[&id],
                "name": node.name,
                "op": node.op.label(),
                "weights": node.op.weights().iter().zip(&node.weights).map(|(spec, expr)| json!({"slot": spec.suffix, "shape": spec.shape, "value": expr.to_string()})).collect::<Vec<_>>(),
                "inputs": inputs,
                "shape": node.shape.dims(),
                "attrs": node.op.attrs_json(),
                "scope": node.scope,
                "instance": node.instance,
                "training_only": node.training_only,
            })
        })
        .collect();
    let inputs: Vec<usize> = graph.inputs.iter().map(|v| index[&v.producer()]).collect();
    let outputs: Vec<usize> = graph.inference_outputs().map(|v| index[&v.producer()]).collect();
    let training_outputs: Vec<usize> =
        graph.outputs.iter().filter(|o| o.training_only).map(|o| index[&o.value.producer()]).collect();
    json!({
        "name": graph.name,
        "inputs": inputs,
        "outputs": outputs,
        "training_outputs": training_outputs,
        "nodes": nodes,
    })
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT: one cluster per block instance (nested as the instances nest), shapes on the edges.
pub fn to_dot(graph: &Graph) -> String {
    let (order, index) = numbering(graph);
    // A tree of clusters keyed by instance path; nodes attach to their innermost instance.
    #[derive(Default)]
    struct Cluster {
        children: Vec<(String, Cluster)>,
        nodes: Vec<NodeId>,
    }
    let mut root = Cluster::default();
    for &id in &order {
        let mut cur = &mut root;
        for inst in &graph.node(id).instance {
            let pos = match cur.children.iter().position(|(n, _)| n == inst) {
                Some(p) => p,
                None => {
                    cur.children.push((inst.clone(), Cluster::default()));
                    cur.children.len() - 1
                }
            };
            cur = &mut cur.children[pos].1;
        }
        cur.nodes.push(id);
    }
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&graph.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
    let mut counter = 0usize;
    fn emit(
        graph: &Graph,
        index: &HashMap<NodeId, usize>,
        c: &Cluster,
        depth: usize,
        counter: &mut usize,
        out: &mut String,
    ) {
        let pad = "  ".repeat(depth + 1);
        for &id in &c.nodes {
            let node = graph.node(id);
            let attrs = node.op.attrs_text();
            let label = if attrs.is_empty() {
                format!("{}\\n{}", dot_escape(&node.name), node.op.label())
            } else {
                format!("{}\\n{} {}", dot_escape(&node.name), node.op.label(), dot_escape(&attrs))
            };
            let style = if node.training_only { ", style=\"rounded,dashed\"" } else { "" };
            let _ = writeln!(out, "{pad}n{} [label=\"{label}\"{style}];", index[&id]);
        }
        for (name, child) in &c.children {
            *counter += 1;
            let _ = writeln!(out, "{pad}subgraph cluster_{} {{", *counter);
            let _ = writeln!(out, "{pad}  label=\"{}\"; style=rounded; color=gray50;", dot_escape(name));
            emit(graph, index, child, depth + 1, counter, out);
            let _ = writeln!(out, "{pad}}}");
        }
    }
    emit(graph, &index, &root, 0, &mut counter, &mut out);
    for &id in &order {
        for v in graph.inputs(id) {
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                index[&v.producer()],
                index[&id],
                graph.shape(v)
            );
        }
    }
    for (i, v) in graph.inference_outputs().enumerate() {
        let _ = writeln!(out, "  out{i} [label=\"output {i}\", shape=oval];");
        let _ = writeln!(out, "  n{} -> out{i} [label=\"{}\"];", index[&v.producer()], graph.shape(v));
    }
    out.push_str("}\n");
    out
}
