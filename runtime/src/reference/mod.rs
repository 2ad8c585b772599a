//! The reference interpreter: runs an IR graph on f32 tensors with plain loops, one op at a time.
//!
//! It is the oracle every optimisation pass and JIT kernel is tested against, so it is written to be
//! obviously correct rather than fast: each op is its definition (PyTorch's semantics, see the
//! kernel modules), accumulations are in f64, and nothing is fused or reordered. It still avoids
//! needless slowness: loops run along contiguous rows, values are freed after their last use,
//! single-use inputs of elementwise ops are updated in place, and conv/linear can split their output
//! over threads ([`Options::threads`]).
//!
//! Only what the inference outputs need is executed: training-only parts (GoogLeNet's auxiliary
//! classifiers) are skipped, and their weights need not be bound.

mod conv;
mod dense;
mod eltwise;
mod fused;
mod norm;
mod parallel;
mod pool;
mod winograd;

use crate::tensor::{Dims, Tensor};
use crate::weights::BoundWeights;
use netc_compiler::ir::{ConvKind, Graph, Node, NodeId, Op, Relu, ValueId};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// How to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Threads for convolutions and linear layers (1 = run on the calling thread only).
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { threads: 1 }
    }
}

/// Why a graph cannot run on the given inputs and weights.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("model `{model}` takes {expected} input(s), but {found} were given")]
    InputCount { model: String, expected: usize, found: usize },
    #[error(
        "input `{input}` of model `{model}` must have shape [N, {}] (a batch of N >= 1 samples of {}), got {}",
        .expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "), Dims(.expected), Dims(.found)
    )]
    InputShape { model: String, input: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("input `{input}` has batch size {found}, but input `{first}` has {expected}; all inputs share one batch size")]
    BatchMismatch { input: String, found: usize, first: String, expected: usize },
    #[error("the graph of model `{model}` has a cycle")]
    Cycle { model: String },
    #[error("node `{node}` needs weight `{key}` of {} values, which is not bound{}", .expected, .found.map(|n| format!(" (a tensor of {n} values is)")).unwrap_or_default())]
    Weight { node: String, key: String, expected: usize, found: Option<usize> },
    #[error("node `{node}` ({op}) cannot run: {what}")]
    Unsupported { node: String, op: &'static str, what: String },
}

/// Runs the graph's inference outputs, in order, on `inputs` (one per graph input, each
/// `[N, ...declared shape]`), on the calling thread.
pub fn run(graph: &Graph, weights: &BoundWeights, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    run_with(graph, weights, inputs, &Options::default())
}

/// [`run`] with options.
pub fn run_with(
    graph: &Graph,
    weights: &BoundWeights,
    inputs: &[Tensor],
    options: &Options,
) -> Result<Vec<Tensor>, RunError> {
    let batch = check_inputs(graph, inputs)?;
    let outputs: Vec<ValueId> = graph.inference_outputs().collect();
    let order = graph.topo_order().ok_or_else(|| RunError::Cycle { model: graph.name.clone() })?;
    let needed = needed(graph, &outputs);

    // Remaining reads of each value; a value is freed when its count drops to zero.
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for &id in order.iter().filter(|id| needed.contains(id)) {
        for v in graph.inputs(id) {
            *uses.entry(v).or_default() += 1;
        }
    }
    for &v in &outputs {
        *uses.entry(v).or_default() += 1;
    }

    let mut values: HashMap<ValueId, Tensor> = HashMap::new();
    for id in order.into_iter().filter(|id| needed.contains(id)) {
        let node = graph.node(id);
        let args = graph.inputs(id);
        let out = match &node.op {
            Op::Input => {
                let k = graph.inputs.iter().position(|&v| v == id.value()).ok_or_else(|| {
                    RunError::Unsupported {
                        node: node.name.clone(),
                        op: node.op.name(),
                        what: "an input node that is not among the graph's declared inputs".to_string(),
                    }
                })?;
                inputs[k].clone()
            }
            // Single-input ops that can reuse their input's buffer when they are its last reader.
            Op::Relu | Op::Activation(_) | Op::Dropout(_) | Op::Flatten | Op::BatchNorm(_) => {
                let x = if uses[&args[0]] == 1 {
                    values.remove(&args[0]).expect("inputs run before their readers")
                } else {
                    values[&args[0]].clone()
                };
                unary_in_place(node, x, weights)?
            }
            _ => {
                let xs: Vec<&Tensor> = args.iter().map(|v| &values[v]).collect();
                eval(node, &xs, weights, options)?
            }
        };
        let expected: Vec<usize> = std::iter::once(batch).chain(node.shape.dims().iter().copied()).collect();
        if out.shape != expected {
            return Err(RunError::Unsupported {
                node: node.name.clone(),
                op: node.op.name(),
                what: format!("produced shape {} where the IR says {}", Dims(&out.shape), Dims(&expected)),
            });
        }
        for v in args {
            let n = uses.get_mut(&v).expect("counted above");
            *n -= 1;
            if *n == 0 {
                values.remove(&v);
            }
        }
        values.insert(id.value(), out);
    }
    Ok(outputs
        .iter()
        .map(|v| {
            let n = uses.get_mut(v).expect("counted above");
            *n -= 1;
            if *n == 0 {
                values.remove(v).expect("computed")
            } else {
                values[v].clone()
            }
        })
        .collect())
}

/// Checks the inputs against the declared shapes; returns the batch size.
fn check_inputs(graph: &Graph, inputs: &[Tensor]) -> Result<usize, RunError> {
    if inputs.len() != graph.inputs.len() {
        return Err(RunError::InputCount {
            model: graph.name.clone(),
            expected: graph.inputs.len(),
            found: inputs.len(),
        });
    }
    let mut batch = None;
    for (&v, t) in graph.inputs.iter().zip(inputs) {
        let node = graph.node(v.producer());
        let declared = graph.shape(v).dims();
        if t.shape.len() != declared.len() + 1 || t.shape[1..] != *declared || t.shape[0] == 0 {
            return Err(RunError::InputShape {
                model: graph.name.clone(),
                input: node.name.clone(),
                expected: declared.to_vec(),
                found: t.shape.clone(),
            });
        }
        match batch {
            None => batch = Some((t.shape[0], node.name.clone())),
            Some((n, ref first)) if n != t.shape[0] => {
                return Err(RunError::BatchMismatch {
                    input: node.name.clone(),
                    found: t.shape[0],
                    first: first.clone(),
                    expected: n,
                })
            }
            Some(_) => {}
        }
    }
    Ok(batch.map_or(1, |(n, _)| n))
}

/// The nodes the given outputs depend on.
fn needed(graph: &Graph, outputs: &[ValueId]) -> HashSet<NodeId> {
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeId> = outputs.iter().map(|v| v.producer()).collect();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(graph.inputs(id).into_iter().map(|v| v.producer()));
        }
    }
    seen
}

/// A node's weight slot `suffix` (a bound tensor, or a folded/merged one evaluated from bound
/// tensors), checked to hold `len` values.
fn weight<'w>(
    weights: &'w BoundWeights,
    node: &Node,
    suffix: &str,
    len: usize,
) -> Result<Cow<'w, [f32]>, RunError> {
    match weights.slot(node, suffix) {
        Some(data) if data.len() == len => Ok(data),
        other => Err(RunError::Weight {
            node: node.name.clone(),
            key: slot_source(node, suffix),
            expected: len,
            found: other.map(|d| d.len()),
        }),
    }
}

/// What a slot is made of, for messages: `layer1.0.conv1.weight`, or the folding expression.
fn slot_source(node: &Node, suffix: &str) -> String {
    let i = node.op.weights().iter().position(|s| s.suffix == suffix);
    i.and_then(|i| node.weights.get(i)).map_or_else(|| format!("{}.{suffix}", node.name), |e| e.to_string())
}

/// ReLU and the other activations, dropout (identity at inference), flatten (a reshape) and BatchNorm, updating `x` in place.
fn unary_in_place(node: &Node, mut x: Tensor, weights: &BoundWeights) -> Result<Tensor, RunError> {
    match &node.op {
        Op::Relu => eltwise::relu(&mut x),
        Op::Activation(a) => eltwise::activation(&mut x, *a),
        Op::Dropout(_) => {}
        Op::Flatten => x.shape = vec![x.shape[0], x.sample_len()],
        Op::BatchNorm(p) => {
            let c = p.channels;
            let w = weight(weights, node, "weight", c)?;
            let b = weight(weights, node, "bias", c)?;
            let mean = weight(weights, node, "running_mean", c)?;
            let var = weight(weights, node, "running_var", c)?;
            norm::batchnorm(&mut x, p, &w, &b, &mean, &var);
        }
        _ => unreachable!("only called for in-place ops"),
    }
    Ok(x)
}

/// Every other op, producing a new tensor.
fn eval(node: &Node, xs: &[&Tensor], weights: &BoundWeights, options: &Options) -> Result<Tensor, RunError> {
    let out = node.shape.dims();
    Ok(match &node.op {
        Op::Conv(p) => {
            let per_out = p.in_channels / p.groups * p.kernel[0] * p.kernel[1];
            let w = weight(weights, node, "weight", p.out_channels * per_out)?;
            let b = if p.bias { Some(weight(weights, node, "bias", p.out_channels)?) } else { None };
            conv::conv2d(xs[0], p, &w, b.as_deref(), out, options.threads)
        }
        Op::Linear(p) => {
            let w = weight(weights, node, "weight", p.out_features * p.in_features)?;
            let b = if p.bias { Some(weight(weights, node, "bias", p.out_features)?) } else { None };
            dense::linear(xs[0], &w, b.as_deref(), p.out_features, options.threads)
        }
        Op::MaxPool(p) => pool::maxpool(xs[0], p, out),
        Op::AvgPool(p) => pool::avgpool(xs[0], p, out),
        Op::AdaptiveAvgPool(p) => pool::adaptive_avgpool(xs[0], p, out),
        Op::Lrn(p) => norm::lrn(xs[0], p),
        Op::Softmax => dense::softmax(xs[0]),
        Op::Add => eltwise::add(xs[0], xs[1]),
        Op::Mul => eltwise::mul(xs[0], xs[1]),
        Op::ChannelShuffle(p) => eltwise::channel_shuffle(xs[0], p.groups),
        Op::Concat(_) => eltwise::concat(xs, out),
        Op::FusedConv(f) => {
            let p = &f.conv;
            let (ci, co) = (p.in_channels, p.out_channels);
            let per_out = ci / p.groups * p.kernel[0] * p.kernel[1];
            let input = match f.prologue {
                None if f.channel_scale => Cow::Owned(eltwise::mul(xs[0], xs[f.scale_port()])),
                None => Cow::Borrowed(xs[0]),
                Some(relu) => {
                    let mut x = xs[0].clone();
                    fused::affine(
                        &mut x,
                        &weight(weights, node, "pre_scale", ci)?,
                        &weight(weights, node, "pre_shift", ci)?,
                    );
                    if relu {
                        fused::relu(&mut x, Relu::All);
                    }
                    Cow::Owned(x)
                }
            };
            let b = if p.bias { Some(weight(weights, node, "bias", co)?) } else { None };
            let mut y = match f.kind {
                ConvKind::Winograd(tile) => {
                    let u = weight(weights, node, "weight", tile.alpha() * tile.alpha() * co * ci)?;
                    winograd::conv2d(&input, p, tile, &u, b.as_deref(), out, options.threads)
                }
                _ => {
                    let w = weight(weights, node, "weight", co * per_out)?;
                    conv::conv2d(&input, p, &w, b.as_deref(), out, options.threads)
                }
            };
            if f.affine {
                fused::affine(
                    &mut y,
                    &weight(weights, node, "scale", co)?,
                    &weight(weights, node, "shift", co)?,
                );
            }
            if f.residual {
                fused::add_in_place(&mut y, xs[1]);
            }
            if f.post_affine {
                fused::affine(
                    &mut y,
                    &weight(weights, node, "post_scale", co)?,
                    &weight(weights, node, "post_shift", co)?,
                );
            }
            fused::relu(&mut y, f.relu);
            if let Some(a) = f.activation {
                eltwise::activation(&mut y, a);
            }
            y
        }
        Op::FusedLinear(f) => {
            let p = &f.linear;
            let w = weight(weights, node, "weight", p.out_features * p.in_features)?;
            let b = if p.bias { Some(weight(weights, node, "bias", p.out_features)?) } else { None };
            let mut y = dense::linear(xs[0], &w, b.as_deref(), p.out_features, options.threads);
            if f.relu {
                fused::relu(&mut y, Relu::All);
            }
            y
        }
        Op::Affine(a) => {
            let mut y = xs[0].clone();
            fused::affine(
                &mut y,
                &weight(weights, node, "scale", a.channels)?,
                &weight(weights, node, "shift", a.channels)?,
            );
            if a.relu {
                fused::relu(&mut y, Relu::All);
            }
            y
        }
        Op::Slice(s) => fused::slice(xs[0], s),
        Op::Input | Op::Relu | Op::Activation(_) | Op::Dropout(_) | Op::Flatten | Op::BatchNorm(_) => {
            unreachable!("handled by the caller")
        }
    })
}
