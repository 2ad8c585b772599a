//! The closed set of operations, one parameter struct per op, and what each op knows about itself:
//! its output shape, its weight tensors, its learnable-parameter and multiply-accumulate counts.

use super::shape::{check_size, window_output, Shape, ShapeError};
use serde::Serialize;

/// 2-D convolution with PyTorch's `Conv2d` semantics (cross-correlation, zero padding).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

/// Batch normalisation at inference: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchNorm {
    pub channels: usize,
    pub eps: f64,
}

/// Max pooling; padding is `-inf`, PyTorch's `MaxPool2d`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaxPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

/// Average pooling, PyTorch's `AvgPool2d` (`count_include_pad` counts the zero padding, never the
/// part of a ceil-mode window that lies past the padded input).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AvgPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

/// Adaptive average pooling to a fixed output size (global pooling is output `[1, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdaptiveAvgPool2d {
    pub output: [usize; 2],
}

/// Local response normalisation across channels, PyTorch's `LocalResponseNorm`:
/// `b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_{c'}^2) ^ beta`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
}

/// Fully connected layer on a feature vector, PyTorch's `Linear` (`y = W x + b`, `W` is `[out, in]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

/// Dropout: identity at inference, kept in the IR to document the training graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropout {
    pub p: f64,
}

/// Every operation a netc graph can contain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Op {
    /// A network input; its shape is the declared per-sample shape.
    Input,
    Conv(Conv2d),
    BatchNorm(BatchNorm),
    Relu,
    MaxPool(MaxPool2d),
    AvgPool(AvgPool2d),
    AdaptiveAvgPool(AdaptiveAvgPool2d),
    Lrn(Lrn),
    Linear(Linear),
    Dropout(Dropout),
    /// `[C, H, W] -> [C*H*W]` in C order, like `torch.flatten(x, 1)`.
    Flatten,
    /// Elementwise sum of two equally shaped values.
    Add,
    /// Concatenation along the first per-sample axis (channels).
    Concat,
    /// Softmax over a feature vector.
    Softmax,
}

/// How many inputs an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

/// Whether a weight tensor is trained (counted as a parameter) or a running statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WeightKind {
    Learnable,
    Statistic,
}

/// One weight tensor a node owns: the key suffix after the node's scope, and its shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightSpec {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub kind: WeightKind,
}

fn feature_map(op: &'static str, s: &Shape) -> Result<(usize, usize, usize), ShapeError> {
    s.as_chw().ok_or_else(|| ShapeError::NotFeatureMap { op, got: s.clone() })
}

fn invalid(op: &'static str, what: impl Into<String>) -> ShapeError {
    ShapeError::Invalid { op, what: what.into() }
}

impl Op {
    /// Lower-case op name used in every dump (`conv`, `batchnorm`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv(_) => "conv",
            Op::BatchNorm(_) => "batchnorm",
            Op::Relu => "relu",
            Op::MaxPool(_) => "maxpool",
            Op::AvgPool(_) => "avgpool",
            Op::AdaptiveAvgPool(_) => "adaptive_avgpool",
            Op::Lrn(_) => "lrn",
            Op::Linear(_) => "linear",
            Op::Dropout(_) => "dropout",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Softmax => "softmax",
        }
    }

    pub fn arity(&self) -> Arity {
        match self {
            Op::Input => Arity::Exactly(0),
            Op::Add => Arity::Exactly(2),
            Op::Concat => Arity::AtLeast(1),
            _ => Arity::Exactly(1),
        }
    }

    /// Infers the per-sample output shape from the input shapes, or says why the inputs do not fit.
    /// `Input` has no inputs and is never inferred: its shape is declared.
    pub fn infer_shape(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let name = self.name();
        if !self.arity().accepts(inputs.len()) {
            return Err(invalid(name, format!("takes {:?} inputs, got {}", self.arity(), inputs.len())));
        }
        let shape = match self {
            Op::Input => return Err(invalid(name, "an input's shape is declared, not inferred")),
            Op::Conv(c) => {
                let (ci, h, w) = feature_map(name, inputs[0])?;
                if ci != c.in_channels {
                    return Err(invalid(name, format!("expects {} input channels, got {ci}", c.in_channels)));
                }
                if c.groups == 0 || ci % c.groups != 0 || c.out_channels % c.groups != 0 {
                    return Err(invalid(
                        name,
                        format!(
                            "groups = {} must divide both the input channels ({ci}) and the output channels ({})",
                            c.groups, c.out_channels
                        ),
                    ));
                }
                check_params(name, &c.kernel, &c.stride, &c.dilation)?;
                let oh = window_output(name, "height", h, c.kernel[0], c.stride[0], c.padding[0], c.dilation[0], false)?;
                let ow = window_output(name, "width", w, c.kernel[1], c.stride[1], c.padding[1], c.dilation[1], false)?;
                Shape::chw(c.out_channels, oh, ow)
            }
            Op::BatchNorm(b) => {
                let c = inputs[0].dims().first().copied().unwrap_or(0);
                if c != b.channels {
                    return Err(invalid(name, format!("expects {} channels, got {}", b.channels, inputs[0])));
                }
                if !(b.eps > 0.0 && b.eps.is_finite()) {
                    return Err(invalid(name, format!("eps must be positive, got {}", b.eps)));
                }
                inputs[0].clone()
            }
            Op::MaxPool(p) => {
                let (c, h, w) = feature_map(name, inputs[0])?;
                check_params(name, &p.kernel, &p.stride, &p.dilation)?;
                check_half_kernel_padding(name, &p.kernel, &p.padding)?;
                let oh = window_output(name, "height", h, p.kernel[0], p.stride[0], p.padding[0], p.dilation[0], p.ceil_mode)?;
                let ow = window_output(name, "width", w, p.kernel[1], p.stride[1], p.padding[1], p.dilation[1], p.ceil_mode)?;
                Shape::chw(c, oh, ow)
            }
            Op::AvgPool(p) => {
                let (c, h, w) = feature_map(name, inputs[0])?;
                check_params(name, &p.kernel, &p.stride, &[1, 1])?;
                check_half_kernel_padding(name, &p.kernel, &p.padding)?;
                let oh = window_output(name, "height", h, p.kernel[0], p.stride[0], p.padding[0], 1, p.ceil_mode)?;
                let ow = window_output(name, "width", w, p.kernel[1], p.stride[1], p.padding[1], 1, p.ceil_mode)?;
                Shape::chw(c, oh, ow)
            }
            Op::AdaptiveAvgPool(p) => {
                let (c, _, _) = feature_map(name, inputs[0])?;
                if p.output.contains(&0) {
                    return Err(invalid(name, "output size must be positive"));
                }
                Shape::chw(c, p.output[0], p.output[1])
            }
            Op::Lrn(l) => {
                feature_map(name, inputs[0])?;
                if l.size == 0 {
                    return Err(invalid(name, "size must be positive"));
                }
                inputs[0].clone()
            }
            Op::Linear(l) => {
                let [f] = inputs[0].dims() else {
                    return Err(ShapeError::NotVector { op: name, got: inputs[0].clone() });
                };
                if *f != l.in_features {
                    return Err(invalid(name, format!("expects {} input features, got {f}", l.in_features)));
                }
                Shape::vector(l.out_features)
            }
            Op::Dropout(d) => {
                if !(0.0..1.0).contains(&d.p) {
                    return Err(invalid(name, format!("p must be in [0, 1), got {}", d.p)));
                }
                inputs[0].clone()
            }
            Op::Relu => inputs[0].clone(),
            Op::Flatten => Shape::vector(inputs[0].elements()),
            Op::Softmax => {
                if inputs[0].rank() != 1 {
                    return Err(ShapeError::NotVector { op: name, got: inputs[0].clone() });
                }
                inputs[0].clone()
            }
            Op::Add => {
                if inputs[0] != inputs[1] {
                    return Err(ShapeError::AddMismatch { left: inputs[0].clone(), right: inputs[1].clone() });
                }
                inputs[0].clone()
            }
            Op::Concat => {
                let first = inputs[0];
                let mut channels: usize = 0;
                for (i, s) in inputs.iter().enumerate() {
                    if s.rank() != first.rank() || s.dims()[1..] != first.dims()[1..] {
                        return Err(ShapeError::ConcatMismatch {
                            index: i,
                            first: first.clone(),
                            got: (*s).clone(),
                        });
                    }
                    channels = channels.checked_add(s.dims()[0]).ok_or(ShapeError::Overflow { op: name })?;
                }
                let mut dims = first.0.clone();
                dims[0] = channels;
                Shape(dims)
            }
        };
        check_size(name, shape.dims())?;
        for w in self.weights() {
            check_size(name, &w.shape)?;
        }
        Ok(shape)
    }

    /// The weight tensors this op owns, with shapes (keys are `<scope>.<suffix>`).
    pub fn weights(&self) -> Vec<WeightSpec> {
        let learn = |suffix, shape| WeightSpec { suffix, shape, kind: WeightKind::Learnable };
        match self {
            Op::Conv(c) => {
                let mut w = vec![learn(
                    "weight",
                    vec![c.out_channels, c.in_channels / c.groups.max(1), c.kernel[0], c.kernel[1]],
                )];
                if c.bias {
                    w.push(learn("bias", vec![c.out_channels]));
                }
                w
            }
            Op::Linear(l) => {
                let mut w = vec![learn("weight", vec![l.out_features, l.in_features])];
                if l.bias {
                    w.push(learn("bias", vec![l.out_features]));
                }
                w
            }
            Op::BatchNorm(b) => vec![
                learn("weight", vec![b.channels]),
                learn("bias", vec![b.channels]),
                WeightSpec { suffix: "running_mean", shape: vec![b.channels], kind: WeightKind::Statistic },
                WeightSpec { suffix: "running_var", shape: vec![b.channels], kind: WeightKind::Statistic },
            ],
            _ => Vec::new(),
        }
    }

    /// Number of learnable parameters (running statistics excluded).
    pub fn param_count(&self) -> u64 {
        self.weights()
            .iter()
            .filter(|w| w.kind == WeightKind::Learnable)
            .map(|w| w.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// Multiply-accumulates per sample: conv `Cout*Hout*Wout*Cin/groups*K*K`, linear `in*out`, else 0.
    pub fn macs(&self, output: &Shape) -> u64 {
        match self {
            Op::Conv(c) => {
                output.elements() as u64 * (c.in_channels / c.groups.max(1)) as u64 * (c.kernel[0] * c.kernel[1]) as u64
            }
            Op::Linear(l) => l.in_features as u64 * l.out_features as u64,
            _ => 0,
        }
    }

    /// The op's attributes as JSON (`{}` for ops without any).
    pub fn attrs_json(&self) -> serde_json::Value {
        let value = match self {
            Op::Conv(p) => serde_json::to_value(p),
            Op::BatchNorm(p) => serde_json::to_value(p),
            Op::MaxPool(p) => serde_json::to_value(p),
            Op::AvgPool(p) => serde_json::to_value(p),
            Op::AdaptiveAvgPool(p) => serde_json::to_value(p),
            Op::Lrn(p) => serde_json::to_value(p),
            Op::Linear(p) => serde_json::to_value(p),
            Op::Dropout(p) => serde_json::to_value(p),
            Op::Input | Op::Relu | Op::Flatten | Op::Add | Op::Concat | Op::Softmax => {
                Ok(serde_json::Value::Object(Default::default()))
            }
        };
        value.expect("op attributes are plain numbers and booleans")
    }

    /// The op's attributes as compact `key=value` text for the text IR.
    pub fn attrs_text(&self) -> String {
        fn pair(p: [usize; 2]) -> String {
            if p[0] == p[1] {
                p[0].to_string()
            } else {
                format!("{}x{}", p[0], p[1])
            }
        }
        match self {
            Op::Conv(c) => {
                let mut s = format!("out={} kernel={} stride={} pad={}", c.out_channels, pair(c.kernel), pair(c.stride), pair(c.padding));
                if c.dilation != [1, 1] {
                    s += &format!(" dilation={}", pair(c.dilation));
                }
                if c.groups != 1 {
                    s += &format!(" groups={}", c.groups);
                }
                s += &format!(" bias={}", c.bias);
                s
            }
            Op::BatchNorm(b) => format!("eps={}", b.eps),
            Op::MaxPool(p) => {
                let mut s = format!("kernel={} stride={} pad={}", pair(p.kernel), pair(p.stride), pair(p.padding));
                if p.dilation != [1, 1] {
                    s += &format!(" dilation={}", pair(p.dilation));
                }
                if p.ceil_mode {
                    s += " ceil_mode";
                }
                s
            }
            Op::AvgPool(p) => {
                let mut s = format!("kernel={} stride={} pad={}", pair(p.kernel), pair(p.stride), pair(p.padding));
                if p.ceil_mode {
                    s += " ceil_mode";
                }
                if !p.count_include_pad {
                    s += " exclude_pad";
                }
                s
            }
            Op::AdaptiveAvgPool(p) => format!("output={}", pair(p.output)),
            Op::Lrn(l) => format!("size={} alpha={} beta={} k={}", l.size, l.alpha, l.beta, l.k),
            Op::Linear(l) => format!("out={} bias={}", l.out_features, l.bias),
            Op::Dropout(d) => format!("p={}", d.p),
            Op::Input | Op::Relu | Op::Flatten | Op::Add | Op::Concat | Op::Softmax => String::new(),
        }
    }
}

fn check_params(op: &'static str, kernel: &[usize; 2], stride: &[usize; 2], dilation: &[usize; 2]) -> Result<(), ShapeError> {
    if kernel.contains(&0) {
        return Err(invalid(op, "kernel size must be positive"));
    }
    if stride.contains(&0) {
        return Err(invalid(op, "stride must be positive"));
    }
    if dilation.contains(&0) {
        return Err(invalid(op, "dilation must be positive"));
    }
    Ok(())
}

fn check_half_kernel_padding(op: &'static str, kernel: &[usize; 2], padding: &[usize; 2]) -> Result<(), ShapeError> {
    if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
        return Err(invalid(op, format!("padding {padding:?} must be at most half the kernel {kernel:?}")));
    }
    Ok(())
}
