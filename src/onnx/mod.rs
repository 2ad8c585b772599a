//! ONNX export: a netc graph and its bound weights as an ONNX model (opset 17) that ONNX Runtime,
//! Netron and every ONNX tool read.
//!
//! The model as written ([`export`] of the elaborated graph) maps op for op: `conv` to `Conv`,
//! `batchnorm` to `BatchNormalization`, `linear` to `Gemm` (`transB = 1`), `adaptive_avgpool` to
//! `GlobalAveragePool` (or an `AveragePool` when the input divides evenly into the output bins),
//! and so on, with the weights as initializers under their torchvision names. Training-only parts
//! (auxiliary heads) are left out. The optimised graph maps too: a fused convolution becomes its
//! `Conv` followed by the `Mul`/`Add`/`Relu` nodes of its prologue and epilogue, with the folded
//! weights evaluated (a Winograd layer's weights are exported untransformed: the transform is how
//! netc runs the layer, not what it computes). Every value keeps its netc name, so a node in Netron
//! is the node of `netc ir`. The batch dimension is symbolic (`N`).

mod proto;

use netc_compiler::ir::{Activation, ConvKind, Graph, Node, NodeId, Op, Relu, WeightExpr};
use netc_runtime::BoundWeights;
use prost::Message as _;
use proto::*;

/// The ONNX operator set the export targets, and the IR version that goes with it.
pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// Why a graph cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An op (or a configuration of one) has no ONNX equivalent with the same results.
    #[error("node `{node}`: {what}")]
    Unsupported { node: String, what: String },
    /// A weight the graph refers to is not bound.
    #[error("node `{node}`: weight `{slot}` cannot be evaluated: {why}")]
    Weight { node: String, slot: String, why: String },
    /// The graph has a cycle (it was not verified).
    #[error("the graph has a cycle")]
    Cycle,
}

/// Encodes `graph` with `weights` as an ONNX model (protobuf bytes).
pub fn export(graph: &Graph, weights: &BoundWeights) -> Result<Vec<u8>, ExportError> {
    let mut b = Builder { graph, weights, nodes: Vec::new(), initializers: Vec::new() };
    let order = graph.topo_order().ok_or(ExportError::Cycle)?;
    let mut inputs = Vec::new();
    for id in order {
        let node = graph.node(id);
        if node.training_only {
            continue;
        }
        if matches!(node.op, Op::Input) {
            inputs.push(value_info(&node.name, &node.shape.0));
            continue;
        }
        b.node(id)?;
    }
    let outputs = graph
        .outputs
        .iter()
        .filter(|o| !o.training_only)
        .map(|o| {
            let node = graph.node(o.value.producer());
            value_info(&node.name, &node.shape.0)
        })
        .collect();
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("netc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: None,
        graph: Some(GraphProto {
            node: b.nodes,
            name: Some(graph.name.clone()),
            initializer: b.initializers,
            input: inputs,
            output: outputs,
        }),
    };
    Ok(model.encode_to_vec())
}

/// A float tensor `[N, ...shape]` with a symbolic batch.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension { dim_value: None, dim_param: Some("N".into()) }];
    dim.extend(shape.iter().map(|&d| Dimension { dim_value: Some(d as i64), dim_param: None }));
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ATTR_INTS),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(ATTR_INT), i: Some(value), ..Default::default() }
}

fn float(name: &str, value: f64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ATTR_FLOAT),
        f: Some(value as f32),
        ..Default::default()
    }
}

/// ONNX `pads`: begins of every spatial axis, then ends.
fn pads(p: [usize; 2]) -> Vec<usize> {
    vec![p[0], p[1], p[0], p[1]]
}

struct Builder<'g, 'w> {
    graph: &'g Graph,
    weights: &'g BoundWeights<'w>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder<'_, '_> {
    fn push(&mut self, op: &str, name: &str, inputs: Vec<String>, output: &str, attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            attribute: attrs,
        });
    }

    fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(FLOAT),
            name: Some(name.to_string()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        });
        name.to_string()
    }

    fn int64_initializer(&mut self, name: &str, data: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(INT64),
            name: Some(name.to_string()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        });
        name.to_string()
    }

    /// The initializer of `node`'s weight slot `suffix`, shaped `dims`: under its weight-file key
    /// when the slot is a plain tensor of the file, else evaluated under `<node>.<suffix>`.
    /// `untransformed` exports a Winograd slot's source filter.
    fn weight(&mut self, node: &Node, suffix: &str, dims: &[usize]) -> Result<String, ExportError> {
        let err = |why: String| ExportError::Weight { node: node.name.clone(), slot: suffix.into(), why };
        let slot = node.op.weights().iter().position(|s| s.suffix == suffix);
        let expr =
            slot.and_then(|i| node.weights.get(i)).ok_or_else(|| err("the node has no such slot".into()))?;
        let expr = match expr {
            WeightExpr::Winograd { x, .. } => x,
            e => e,
        };
        let weights = self.weights;
        let (name, data) = match expr {
            WeightExpr::Param { key, .. } => {
                if self.initializers.iter().any(|t| t.name.as_deref() == Some(key)) {
                    return Ok(key.clone());
                }
                let t = weights.get(key).ok_or_else(|| err(format!("`{key}` is not bound")))?;
                (key.clone(), t.data.to_vec())
            }
            e => {
                let data = e.eval(&|key| weights.get(key).map(|t| &*t.data)).map_err(err)?;
                (format!("{}.{suffix}", node.name), data)
            }
        };
        if data.len() != dims.iter().product::<usize>() {
            return Err(err(format!("{} values for shape {dims:?}", data.len())));
        }
        Ok(self.initializer(&name, dims, &data))
    }

    fn input_names(&self, id: NodeId) -> Vec<String> {
        self.graph.inputs(id).iter().map(|v| self.graph.node(v.producer()).name.clone()).collect()
    }

    fn unsupported(node: &Node, what: impl Into<String>) -> ExportError {
        ExportError::Unsupported { node: node.name.clone(), what: what.into() }
    }

    fn node(&mut self, id: NodeId) -> Result<(), ExportError> {
        let graph = self.graph;
        let node = graph.node(id);
        let xs = self.input_names(id);
        let name = node.name.as_str();
        match &node.op {
            Op::Input => {}
            Op::Conv(c) => {
                let mut inputs = vec![xs[0].clone()];
                let w_dims = [c.out_channels, c.in_channels / c.groups.max(1), c.kernel[0], c.kernel[1]];
                inputs.push(self.weight(node, "weight", &w_dims)?);
                if c.bias {
                    inputs.push(self.weight(node, "bias", &[c.out_channels])?);
                }
                self.push("Conv", name, inputs, name, conv_attrs(c));
            }
            Op::BatchNorm(bn) => {
                let ch = [bn.channels];
                let inputs = vec![
                    xs[0].clone(),
                    self.weight(node, "weight", &ch)?,
                    self.weight(node, "bias", &ch)?,
                    self.weight(node, "running_mean", &ch)?,
                    self.weight(node, "running_var", &ch)?,
                ];
                self.push("BatchNormalization", name, inputs, name, vec![float("epsilon", bn.eps)]);
            }
            Op::Relu => self.push("Relu", name, xs, name, vec![]),
            Op::MaxPool(p) => {
                let attrs = vec![
                    ints("kernel_shape", &p.kernel),
                    ints("strides", &p.stride),
                    ints("pads", &pads(p.padding)),
                    ints("dilations", &p.dilation),
                    int("ceil_mode", p.ceil_mode as i64),
                ];
                self.push("MaxPool", name, xs, name, attrs);
            }
            Op::AvgPool(p) => {
                let attrs = vec![
                    ints("kernel_shape", &p.kernel),
                    ints("strides", &p.stride),
                    ints("pads", &pads(p.padding)),
                    int("ceil_mode", p.ceil_mode as i64),
                    int("count_include_pad", p.count_include_pad as i64),
                ];
                self.push("AveragePool", name, xs, name, attrs);
            }
            Op::AdaptiveAvgPool(p) => {
                let input = graph.shape(graph.inputs(id)[0]);
                let Some((_, h, w)) = input.as_chw() else {
                    return Err(Self::unsupported(node, "adaptive pooling of a value that is not [C, H, W]"));
                };
                if p.output == [1, 1] {
                    self.push("GlobalAveragePool", name, xs, name, vec![]);
                } else if h % p.output[0] == 0 && w % p.output[1] == 0 {
                    // Equal bins: PyTorch's bins are exactly the windows of this pooling.
                    let k = [h / p.output[0], w / p.output[1]];
                    let attrs = vec![ints("kernel_shape", &k), ints("strides", &k)];
                    self.push("AveragePool", name, xs, name, attrs);
                } else {
                    return Err(Self::unsupported(
                        node,
                        format!(
                            "adaptive average pooling from {h}x{w} to {}x{} has unequal bins, which ONNX cannot express",
                            p.output[0], p.output[1]
                        ),
                    ));
                }
            }
            Op::Lrn(l) => {
                if l.size % 2 == 0 {
                    // PyTorch centres an even window one channel lower than ONNX does.
                    return Err(Self::unsupported(
                        node,
                        format!("LRN of even size {}: PyTorch and ONNX place the window differently", l.size),
                    ));
                }
                let attrs = vec![
                    int("size", l.size as i64),
                    float("alpha", l.alpha),
                    float("beta", l.beta),
                    float("bias", l.k),
                ];
                self.push("LRN", name, xs, name, attrs);
            }
            Op::Linear(l) => self.gemm(node, &xs[0], l, name)?,
            Op::FusedLinear(f) => {
                if f.relu {
                    let pre = format!("{name}/gemm");
                    self.gemm(node, &xs[0], &f.linear, &pre)?;
                    self.push("Relu", &format!("{name}/relu"), vec![pre], name, vec![]);
                } else {
                    self.gemm(node, &xs[0], &f.linear, name)?;
                }
            }
            Op::Dropout(d) => {
                // An identity at inference (`training_mode` defaults to false); the rate is kept.
                let ratio = self.initializer(&format!("{name}.ratio"), &[], &[d.p as f32]);
                self.push("Dropout", name, vec![xs[0].clone(), ratio], name, vec![]);
            }
            Op::Flatten => self.push("Flatten", name, xs, name, vec![int("axis", 1)]),
            Op::Add => self.push("Add", name, xs, name, vec![]),
            // `[N, C, H, W] * [N, C, 1, 1]` broadcasts as ONNX's (numpy's) rules say.
            Op::Mul => self.push("Mul", name, xs, name, vec![]),
            Op::Activation(a) => self.activation(*a, &xs[0], name),
            Op::ChannelShuffle(p) => {
                let s = node.shape.dims();
                let (c, h, w) = (s[0] as i64, s[1] as i64, s[2] as i64);
                let g = p.groups as i64;
                let split = self.int64_initializer(&format!("{name}.groups_shape"), &[-1, g, c / g, h, w]);
                let back = self.int64_initializer(&format!("{name}.shape"), &[-1, c, h, w]);
                let (r, t) = (format!("{name}/grouped"), format!("{name}/transposed"));
                self.push("Reshape", &r, vec![xs[0].clone(), split], &r, vec![]);
                self.push("Transpose", &t, vec![r], &t, vec![ints("perm", &[0, 2, 1, 3, 4])]);
                self.push("Reshape", name, vec![t, back], name, vec![]);
            }
            Op::Concat(_) => self.push("Concat", name, xs, name, vec![int("axis", 1)]),
            Op::Softmax => self.push("Softmax", name, xs, name, vec![int("axis", 1)]),
            Op::Affine(a) => {
                let out = if a.relu { format!("{name}/affine") } else { name.to_string() };
                self.affine(node, &xs[0], ("scale", "shift"), a.channels, &out)?;
                if a.relu {
                    self.push("Relu", &format!("{name}/relu"), vec![out], name, vec![]);
                }
            }
            Op::Slice(s) => self.slice(&xs[0], s.start, s.start + s.len, name),
            Op::FusedConv(f) => self.fused_conv(node, f, &xs)?,
        }
        Ok(())
    }

    fn gemm(
        &mut self,
        node: &Node,
        x: &str,
        l: &netc_compiler::ir::Linear,
        out: &str,
    ) -> Result<(), ExportError> {
        let mut inputs = vec![x.to_string(), self.weight(node, "weight", &[l.out_features, l.in_features])?];
        if l.bias {
            inputs.push(self.weight(node, "bias", &[l.out_features])?);
        }
        self.push("Gemm", out, inputs, out, vec![int("transB", 1)]);
        Ok(())
    }

    /// `y = x * scale[c] + shift[c]` as `Mul` and `Add` with `[C, 1, 1]` initializers.
    fn affine(
        &mut self,
        node: &Node,
        x: &str,
        (scale, shift): (&str, &str),
        channels: usize,
        out: &str,
    ) -> Result<(), ExportError> {
        let dims = [channels, 1, 1];
        let s = self.weight(node, scale, &dims)?;
        let b = self.weight(node, shift, &dims)?;
        let scaled = format!("{out}/{scale}");
        self.push("Mul", &scaled, vec![x.to_string(), s], &scaled, vec![]);
        self.push("Add", out, vec![scaled, b], out, vec![]);
        Ok(())
    }

    /// Channels `start..end` of `x`.
    /// An activation as ONNX operators: `Clip`, `Sigmoid`, `HardSigmoid` / `HardSwish` (alpha
    /// 1/6, beta 0.5: PyTorch's definitions up to rounding), SiLU as `x * Sigmoid(x)`.
    fn activation(&mut self, a: Activation, x: &str, name: &str) {
        let x = x.to_string();
        match a {
            Activation::Clamp { min, max } => {
                // Clip's bounds are optional inputs; an absent one is named "" (a max alone
                // still takes the third position).
                let mut inputs = vec![x];
                inputs.push(
                    min.map_or_else(String::new, |v| self.initializer(&format!("{name}.min"), &[], &[v])),
                );
                if let Some(v) = max {
                    inputs.push(self.initializer(&format!("{name}.max"), &[], &[v]));
                }
                self.push("Clip", name, inputs, name, vec![]);
            }
            Activation::Sigmoid => self.push("Sigmoid", name, vec![x], name, vec![]),
            Activation::Silu => {
                let s = format!("{name}/sigmoid");
                self.push("Sigmoid", &s, vec![x.clone()], &s, vec![]);
                self.push("Mul", name, vec![x, s], name, vec![]);
            }
            Activation::Hardsigmoid => self.push(
                "HardSigmoid",
                name,
                vec![x],
                name,
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            ),
            Activation::Hardswish => self.push("HardSwish", name, vec![x], name, vec![]),
        }
    }

    fn slice(&mut self, x: &str, start: usize, end: usize, out: &str) {
        let starts = self.int64_initializer(&format!("{out}.starts"), &[start as i64]);
        let ends = self.int64_initializer(&format!("{out}.ends"), &[end as i64]);
        let axes = self.int64_initializer(&format!("{out}.axes"), &[1]);
        self.push("Slice", out, vec![x.to_string(), starts, ends, axes], out, vec![]);
    }

    /// A fused convolution as the chain it computes: prologue affine (+ ReLU) or channel scale
    /// (`Mul` by the `[C, 1, 1]` factors), `Conv`, affine,
    /// residual `Add`, post-affine, ReLU (of all channels, or of the first `n` by slicing).
    fn fused_conv(
        &mut self,
        node: &Node,
        f: &netc_compiler::ir::FusedConv,
        xs: &[String],
    ) -> Result<(), ExportError> {
        let name = node.name.as_str();
        let c = &f.conv;
        let (ci, co) = (c.in_channels, c.out_channels);
        let mut x = xs[0].clone();
        if let Some(relu) = f.prologue {
            let pre = format!("{name}/prologue");
            self.affine(node, &x, ("pre_scale", "pre_shift"), ci, &pre)?;
            x = pre;
            if relu {
                let r = format!("{name}/prologue_relu");
                self.push("Relu", &r, vec![x], &r, vec![]);
                x = r;
            }
        }
        if f.channel_scale {
            let scaled = format!("{name}/channel_scale");
            let factors = xs
                .get(f.scale_port())
                .ok_or_else(|| Self::unsupported(node, "a channel-scaled conv without its factors"))?;
            self.push("Mul", &scaled, vec![x, factors.clone()], &scaled, vec![]);
            x = scaled;
        }
        if matches!(f.kind, ConvKind::Winograd(_)) && c.kernel != [3, 3] {
            return Err(Self::unsupported(node, "a Winograd layer whose kernel is not 3x3"));
        }
        let steps = [f.affine, f.residual, f.post_affine, f.relu != Relu::None, f.activation.is_some()];
        let last_step = steps.iter().rposition(|&s| s);
        let step_out = |k: usize, label: &str| {
            if last_step.is_none_or(|l| l == k) {
                name.to_string()
            } else {
                format!("{name}/{label}")
            }
        };
        let conv_out = if last_step.is_none() { name.to_string() } else { format!("{name}/conv") };
        let mut inputs =
            vec![x, self.weight(node, "weight", &[co, ci / c.groups.max(1), c.kernel[0], c.kernel[1]])?];
        if c.bias {
            inputs.push(self.weight(node, "bias", &[co])?);
        }
        self.push("Conv", &conv_out, inputs, &conv_out, conv_attrs(c));
        let mut y = conv_out;
        if f.affine {
            let out = step_out(0, "affine");
            self.affine(node, &y, ("scale", "shift"), co, &out)?;
            y = out;
        }
        if f.residual {
            let out = step_out(1, "add");
            let r =
                xs.get(1).ok_or_else(|| Self::unsupported(node, "a residual conv without a second input"))?;
            self.push("Add", &out, vec![y, r.clone()], &out, vec![]);
            y = out;
        }
        if f.post_affine {
            let out = step_out(2, "post_affine");
            self.affine(node, &y, ("post_scale", "post_shift"), co, &out)?;
            y = out;
        }
        let relu_out = step_out(3, "relu");
        match f.relu {
            Relu::None => {}
            Relu::All => self.push("Relu", &format!("{name}/relu"), vec![y.clone()], &relu_out, vec![]),
            Relu::First(n) if n >= co => {
                self.push("Relu", &format!("{name}/relu"), vec![y.clone()], &relu_out, vec![])
            }
            Relu::First(n) => {
                // ReLU on channels 0..n only (siblings merged into one conv): slice, rectify, concat.
                let (head, tail, rect) =
                    (format!("{name}/head"), format!("{name}/tail"), format!("{name}/head_relu"));
                self.slice(&y, 0, n, &head);
                self.slice(&y, n, co, &tail);
                self.push("Relu", &rect, vec![head], &rect, vec![]);
                self.push("Concat", &relu_out, vec![rect, tail], &relu_out, vec![int("axis", 1)]);
            }
        }
        if f.relu != Relu::None {
            y = relu_out;
        }
        // A fused activation is its own node after the conv's chain, as if it had not been fused.
        if let Some(a) = f.activation {
            self.activation(a, &y, name);
        }
        Ok(())
    }
}

fn conv_attrs(c: &netc_compiler::ir::Conv2d) -> Vec<AttributeProto> {
    vec![
        ints("kernel_shape", &c.kernel),
        ints("strides", &c.stride),
        ints("pads", &pads(c.padding)),
        ints("dilations", &c.dilation),
        int("group", c.groups as i64),
    ]
}
