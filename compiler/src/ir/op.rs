//! The closed set of operations, one parameter struct per op, and what each op knows about itself:
//! its output shape, its weight tensors, its learnable-parameter and multiply-accumulate counts.

use super::shape::{check_size, window_output, Shape, ShapeError};
use serde::{Deserialize, Serialize};

/// 2-D convolution with PyTorch's `Conv2d` semantics (cross-correlation, zero padding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    pub channels: usize,
    pub eps: f64,
}

/// Max pooling; padding is `-inf`, PyTorch's `MaxPool2d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

/// Average pooling, PyTorch's `AvgPool2d` (`count_include_pad` counts the zero padding, never the
/// part of a ceil-mode window that lies past the padded input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvgPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

/// Adaptive average pooling to a fixed output size (global pooling is output `[1, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveAvgPool2d {
    pub output: [usize; 2],
}

/// Local response normalisation across channels, PyTorch's `LocalResponseNorm`:
/// `b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_{c'}^2) ^ beta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
}

/// Fully connected layer on a feature vector, PyTorch's `Linear` (`y = W x + b`, `W` is `[out, in]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

/// Dropout: identity at inference, kept in the IR to document the training graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropout {
    pub p: f64,
}

/// Which kernel family a fused convolution lowers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvKind {
    /// A general convolution (im2col-free direct kernel).
    Direct,
    /// A 1x1, stride-1, unpadded convolution: a GEMM over channels, no im2col.
    Gemm1x1,
    /// A 1x1 strided, unpadded convolution: subsample the input, then a GEMM over channels.
    StridedGemm1x1,
    /// A 3x3, stride-1, undilated, ungrouped convolution computed with Winograd's minimal filtering
    /// (see [`crate::ir::winograd`]); its weight slot holds the transformed filter `G g G^T`,
    /// `[a*a, Cout, Cin]`.
    Winograd(super::winograd::WinogradTile),
    /// An ungrouped convolution without a prologue, any window, computed with output channels in
    /// the vector lanes and output pixels in the rows of the register tiles: for small planes
    /// (7x7, 14x14), whose pixels fill vectors badly while their channel counts fill them whole.
    ChanVec,
    /// A depthwise convolution (`groups == in_channels == out_channels`), square window, stride 1
    /// or 2, padding `k / 2`, undilated, no prologue: each channel's plane is filtered on its own
    /// with output pixels in the vector lanes (see `codegen::conv::depthwise`).
    Depthwise,
}

impl ConvKind {
    /// Whether this family's kernels apply a fused [`FusedConv::activation`] in their epilogue;
    /// `fuse-activation` leaves the activation a separate elementwise op for the others.
    pub fn supports_activation(self) -> bool {
        match self {
            ConvKind::Direct
            | ConvKind::Gemm1x1
            | ConvKind::StridedGemm1x1
            | ConvKind::Winograd(_)
            | ConvKind::ChanVec
            | ConvKind::Depthwise => true,
        }
    }
}

/// Which output channels a fused ReLU applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relu {
    None,
    All,
    /// The first `n` output channels only (siblings merged into one wider GEMM where only some of them
    /// were followed by a ReLU).
    First(usize),
}

/// A convolution with the elementwise work around it fused in, in this order:
/// `x' = relu?(x * pre_scale + pre_shift)` per input channel (the prologue, 1x1 unpadded convs only),
/// or `x' = x * factor` with a per-sample factor per input channel read from the last input
/// (`channel_scale`: squeeze-and-excitation's scale; `Gemm1x1` only), `y = conv(x') + bias`, `y = y * scale + shift` (affine), `y = y + residual` (input 1),
/// `y = y * post_scale + post_shift` (post-affine), `y = relu(y)` on the channels `relu` names,
/// `y = activation(y)` on every channel.
///
/// The epilogue stays a fixed sequence of optional steps rather than a list of post-ops: every
/// kernel family applies the steps in this one order from per-channel vectors laid out once per
/// layer, the activation only ever comes last (it is what follows a conv + BatchNorm (+ residual)
/// in every network the language can express), and each step is validated and printed the same
/// way everywhere; a list would add orders no kernel implements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusedConv {
    /// Geometry; `conv.bias` says whether the bias step is present.
    pub conv: Conv2d,
    pub kind: ConvKind,
    /// `Some(relu)` when the prologue affine is present; `relu` says whether a ReLU follows it.
    pub prologue: Option<bool>,
    pub affine: bool,
    pub residual: bool,
    pub post_affine: bool,
    pub relu: Relu,
    /// A pointwise activation applied last, to all channels (`fuse-activation`). Absent from
    /// bundles written before it existed, which therefore load with `None`.
    #[serde(default)]
    pub activation: Option<Activation>,
    /// The input is scaled per channel by a factor computed at run time: the last input, of shape
    /// `[Cin, 1, 1]` per sample (`fuse-channel-scale`). Written only when set, so a bundle without
    /// it reads in an earlier netc; a bundle with it has format version 3, which an earlier netc
    /// refuses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub channel_scale: bool,
}

impl FusedConv {
    /// Whether `c` is a depthwise convolution the `Depthwise` kernels take: one input and one
    /// output channel per group, a square `k x k` window (odd `k`), stride 1 or 2 (both axes),
    /// padding `k / 2`, no dilation.
    pub fn depthwise_geometry(c: &Conv2d) -> bool {
        let k = c.kernel[0];
        c.groups == c.in_channels
            && c.groups == c.out_channels
            && c.groups > 0
            && c.kernel == [k, k]
            && k % 2 == 1
            && c.stride[0] == c.stride[1]
            && (1..=2).contains(&c.stride[0])
            && c.padding == [k / 2, k / 2]
            && c.dilation == [1, 1]
    }

    /// A square `k x k` convolution with bias, stride `stride`, padding `k / 2`, one group and a
    /// ReLU, nothing else fused: the usual starting point of kernel tests and benchmarks.
    pub fn square(cin: usize, cout: usize, k: usize, stride: usize, kind: ConvKind) -> FusedConv {
        FusedConv {
            conv: Conv2d {
                in_channels: cin,
                out_channels: cout,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [k / 2, k / 2],
                dilation: [1, 1],
                groups: 1,
                bias: true,
            },
            kind,
            prologue: None,
            affine: false,
            residual: false,
            post_affine: false,
            relu: Relu::All,
            activation: None,
            channel_scale: false,
        }
    }

    /// Input port of the `channel_scale` factors (after the residual, if any).
    pub fn scale_port(&self) -> usize {
        1 + self.residual as usize
    }
}

/// A fully connected layer with its ReLU fused (`linear.bias` says whether a bias is added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusedLinear {
    pub linear: Linear,
    pub relu: bool,
}

/// A per-channel affine map `x * scale + shift` (a BatchNorm at inference), optionally followed by ReLU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub channels: usize,
    pub relu: bool,
}

/// Channels `start .. start + len` of the input: a view, no data is copied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelSlice {
    pub start: usize,
    pub len: usize,
}

/// Concatenation along channels. `in_place`: every input is written by its producer straight into its
/// channel range of the output buffer, so the concat itself moves no data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    pub in_place: bool,
}

/// A pointwise activation, with PyTorch's definitions computed in f32.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// `min(max(x, min), max)`, NaN kept: `torch.clamp`, `hardtanh`; `relu6` is `[0, 6]`. Either bound
    /// may be absent (`torch.clamp(x, min=0.5)`), but not both; absent is `null` in a bundle, and a
    /// bundle written before one-sided clamps (both bounds numbers) reads as it did.
    Clamp { min: Option<f32>, max: Option<f32> },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x * sigmoid(x)` (swish).
    Silu,
    /// `min(max(x + 3, 0), 6) / 6`.
    Hardsigmoid,
    /// `x * min(max(x + 3, 0), 6) / 6`.
    Hardswish,
}

impl Activation {
    /// Why the activation cannot run, if it cannot: a clamp needs a bound, every bound finite, and
    /// `min <= max` when it has both.
    pub fn malformed(&self) -> Option<String> {
        let Activation::Clamp { min, max } = *self else { return None };
        let finite = |b: Option<f32>| b.is_none_or(f32::is_finite);
        let ordered = match (min, max) {
            (Some(lo), Some(hi)) => lo <= hi,
            (None, None) => false,
            _ => true,
        };
        (!(finite(min) && finite(max) && ordered))
            .then(|| format!("needs a finite min or max (min <= max), got min {min:?}, max {max:?}"))
    }

    /// The activation's name in dumps (`relu6` for the clamp to `[0, 6]`).
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Clamp { min: Some(min), max: Some(max) } if *min == 0.0 && *max == 6.0 => "relu6",
            Activation::Clamp { .. } => "clamp",
            Activation::Sigmoid => "sigmoid",
            Activation::Silu => "silu",
            Activation::Hardsigmoid => "hardsigmoid",
            Activation::Hardswish => "hardswish",
        }
    }
}

/// Channel shuffle (ShuffleNet): channels viewed as `[groups, C / groups]`, transposed, flattened;
/// output channel `i * groups + k` is input channel `k * (C / groups) + i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelShuffle {
    pub groups: usize,
}

/// Every operation a netc graph can contain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    Concat(Concat),
    /// Softmax over a feature vector.
    Softmax,
    /// A pointwise activation other than ReLU.
    Activation(Activation),
    /// Elementwise product: equal shapes, or `[C, H, W] * [C, 1, 1]` (one factor per channel,
    /// squeeze-and-excitation's scale); the broadcast factor is always input 1.
    Mul,
    ChannelShuffle(ChannelShuffle),
    // ---- ops produced by the optimiser
    FusedConv(FusedConv),
    FusedLinear(FusedLinear),
    Affine(Affine),
    Slice(ChannelSlice),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
            Op::Concat(_) => "concat",
            Op::Softmax => "softmax",
            Op::Activation(a) => a.name(),
            Op::Mul => "mul",
            Op::ChannelShuffle(_) => "channel_shuffle",
            Op::FusedConv(f) => match f.kind {
                ConvKind::Direct => "conv",
                ConvKind::Gemm1x1 => "gemm1x1",
                ConvKind::StridedGemm1x1 => "subsample+gemm1x1",
                ConvKind::Winograd(_) => "winograd",
                ConvKind::ChanVec => "chanvec",
                ConvKind::Depthwise => "depthwise",
            },
            Op::FusedLinear(_) => "linear",
            Op::Affine(_) => "affine",
            Op::Slice(_) => "slice",
        }
    }

    /// The op as a user writes it, for names derived from it and for `netc summary`: a one-bin
    /// adaptive pooling is `global_avgpool` (the same op as `adaptive_avgpool(1)`). [`Op::name`]
    /// stays the op's identity, which bundles record in their step tables.
    pub fn display_name(&self) -> &'static str {
        match self {
            Op::AdaptiveAvgPool(p) if p.output == [1, 1] => "global_avgpool",
            op => op.name(),
        }
    }

    /// The op as shown in dumps: fused ops name their parts in order (`conv+bias+add+relu`,
    /// `affine+relu+gemm1x1+bias`); other ops are their [`Op::name`].
    pub fn label(&self) -> String {
        match self {
            Op::FusedConv(f) => {
                let mut parts = Vec::new();
                if let Some(relu) = f.prologue {
                    parts.push("affine");
                    if relu {
                        parts.push("relu");
                    }
                }
                if f.channel_scale {
                    parts.push("scale");
                }
                parts.push(self.name());
                if f.conv.bias {
                    parts.push("bias");
                }
                if f.affine {
                    parts.push("affine");
                }
                if f.residual {
                    parts.push("add");
                }
                if f.post_affine {
                    parts.push("affine");
                }
                if f.relu != Relu::None {
                    parts.push("relu");
                }
                if let Some(a) = &f.activation {
                    parts.push(a.name());
                }
                parts.join("+")
            }
            Op::FusedLinear(l) => {
                let mut s = "linear".to_string();
                if l.linear.bias {
                    s += "+bias";
                }
                if l.relu {
                    s += "+relu";
                }
                s
            }
            Op::Affine(a) if a.relu => "affine+relu".to_string(),
            Op::Concat(c) if c.in_place => "concat(in-place)".to_string(),
            _ => self.name().to_string(),
        }
    }

    pub fn arity(&self) -> Arity {
        match self {
            Op::Input => Arity::Exactly(0),
            Op::Add | Op::Mul => Arity::Exactly(2),
            Op::Concat(_) => Arity::AtLeast(1),
            Op::FusedConv(f) => Arity::Exactly(1 + f.residual as usize + f.channel_scale as usize),
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
            Op::Conv(c) => conv_shape(name, c, inputs[0])?,
            Op::FusedConv(f) => fused_conv_shape(name, f, inputs)?,
            Op::Linear(l) => linear_shape(name, l, inputs[0])?,
            Op::FusedLinear(f) => linear_shape(name, &f.linear, inputs[0])?,
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
            Op::Affine(a) => {
                if inputs[0].dims().first() != Some(&a.channels) {
                    return Err(invalid(name, format!("expects {} channels, got {}", a.channels, inputs[0])));
                }
                inputs[0].clone()
            }
            Op::MaxPool(p) => {
                let (c, h, w) = feature_map(name, inputs[0])?;
                check_params(name, &p.kernel, &p.stride, &p.dilation)?;
                check_half_kernel_padding(name, &p.kernel, &p.padding)?;
                let oh = window_output(
                    name,
                    "height",
                    h,
                    p.kernel[0],
                    p.stride[0],
                    p.padding[0],
                    p.dilation[0],
                    p.ceil_mode,
                )?;
                let ow = window_output(
                    name,
                    "width",
                    w,
                    p.kernel[1],
                    p.stride[1],
                    p.padding[1],
                    p.dilation[1],
                    p.ceil_mode,
                )?;
                Shape::chw(c, oh, ow)
            }
            Op::AvgPool(p) => {
                let (c, h, w) = feature_map(name, inputs[0])?;
                check_params(name, &p.kernel, &p.stride, &[1, 1])?;
                check_half_kernel_padding(name, &p.kernel, &p.padding)?;
                let oh =
                    window_output(name, "height", h, p.kernel[0], p.stride[0], p.padding[0], 1, p.ceil_mode)?;
                let ow =
                    window_output(name, "width", w, p.kernel[1], p.stride[1], p.padding[1], 1, p.ceil_mode)?;
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
            Op::Dropout(d) => {
                if !(0.0..1.0).contains(&d.p) {
                    return Err(invalid(name, format!("p must be in [0, 1), got {}", d.p)));
                }
                inputs[0].clone()
            }
            Op::Relu => inputs[0].clone(),
            Op::Activation(a) => {
                if let Some(why) = a.malformed() {
                    return Err(invalid(name, why));
                }
                inputs[0].clone()
            }
            Op::Mul => {
                let (l, r) = (inputs[0], inputs[1]);
                if l != r && !r.is_channel_factors_of(l) {
                    return Err(ShapeError::MulMismatch { left: l.clone(), right: r.clone() });
                }
                l.clone()
            }
            Op::ChannelShuffle(p) => {
                let (c, _, _) = feature_map(name, inputs[0])?;
                if p.groups == 0 || c % p.groups != 0 {
                    return Err(invalid(name, format!("groups = {} must divide the {c} channels", p.groups)));
                }
                inputs[0].clone()
            }
            Op::Flatten => Shape::vector(inputs[0].elements()),
            Op::Softmax => {
                if inputs[0].rank() != 1 {
                    return Err(ShapeError::NotVector { op: name, got: inputs[0].clone() });
                }
                inputs[0].clone()
            }
            Op::Add => {
                if inputs[0] != inputs[1] {
                    return Err(ShapeError::AddMismatch {
                        left: inputs[0].clone(),
                        right: inputs[1].clone(),
                    });
                }
                inputs[0].clone()
            }
            Op::Concat(_) => {
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
            Op::Slice(sl) => {
                let c = inputs[0].dims().first().copied().unwrap_or(0);
                if sl.len == 0 || sl.start.checked_add(sl.len).is_none_or(|end| end > c) {
                    return Err(invalid(
                        name,
                        format!("channels {}..{} of {}", sl.start, sl.start + sl.len, inputs[0]),
                    ));
                }
                let mut dims = inputs[0].0.clone();
                dims[0] = sl.len;
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
        let conv = |c: &Conv2d| {
            let mut w = vec![learn(
                "weight",
                vec![c.out_channels, c.in_channels / c.groups.max(1), c.kernel[0], c.kernel[1]],
            )];
            if c.bias {
                w.push(learn("bias", vec![c.out_channels]));
            }
            w
        };
        let linear = |l: &Linear| {
            let mut w = vec![learn("weight", vec![l.out_features, l.in_features])];
            if l.bias {
                w.push(learn("bias", vec![l.out_features]));
            }
            w
        };
        match self {
            Op::Conv(c) => conv(c),
            Op::Linear(l) => linear(l),
            Op::FusedLinear(f) => linear(&f.linear),
            Op::FusedConv(f) => {
                let mut w = conv(&f.conv);
                let (ci, co) = (f.conv.in_channels, f.conv.out_channels);
                if let ConvKind::Winograd(tile) = f.kind {
                    // The transformed filter, one `Cout x Cin` matrix per point of the input tile.
                    w[0].shape = vec![tile.alpha() * tile.alpha(), co, ci];
                }
                if f.prologue.is_some() {
                    w.push(learn("pre_scale", vec![ci]));
                    w.push(learn("pre_shift", vec![ci]));
                }
                if f.affine {
                    w.push(learn("scale", vec![co]));
                    w.push(learn("shift", vec![co]));
                }
                if f.post_affine {
                    w.push(learn("post_scale", vec![co]));
                    w.push(learn("post_shift", vec![co]));
                }
                w
            }
            Op::Affine(a) => vec![learn("scale", vec![a.channels]), learn("shift", vec![a.channels])],
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
        let conv = |c: &Conv2d| {
            output.elements() as u64
                * (c.in_channels / c.groups.max(1)) as u64
                * (c.kernel[0] * c.kernel[1]) as u64
        };
        match self {
            Op::Conv(c) => conv(c),
            Op::FusedConv(f) => conv(&f.conv),
            Op::Linear(l) | Op::FusedLinear(FusedLinear { linear: l, .. }) => {
                l.in_features as u64 * l.out_features as u64
            }
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
            Op::FusedConv(p) => serde_json::to_value(p),
            Op::FusedLinear(p) => serde_json::to_value(p),
            Op::Affine(p) => serde_json::to_value(p),
            Op::Slice(p) => serde_json::to_value(p),
            Op::Concat(p) => serde_json::to_value(p),
            Op::Activation(p) => serde_json::to_value(p),
            Op::ChannelShuffle(p) => serde_json::to_value(p),
            Op::Input | Op::Relu | Op::Flatten | Op::Add | Op::Mul | Op::Softmax => {
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
            Op::Conv(c) => conv_text(c),
            Op::FusedConv(f) => {
                let mut s = conv_text(&f.conv);
                if let ConvKind::Winograd(tile) = f.kind {
                    s += &format!(" tile={}", tile.name());
                }
                match f.relu {
                    Relu::First(n) => s += &format!(" relu_channels={n}"),
                    Relu::None | Relu::All => {}
                }
                if let Some(a @ Activation::Clamp { min, max }) = f.activation {
                    if a.name() == "clamp" {
                        s.extend(min.map(|v| format!(" clamp_min={v}")));
                        s.extend(max.map(|v| format!(" clamp_max={v}")));
                    }
                }
                s
            }
            Op::FusedLinear(f) => format!("out={} bias={}", f.linear.out_features, f.linear.bias),
            Op::Affine(_) | Op::Concat(_) => String::new(),
            Op::Slice(sl) => format!("channels={}..{}", sl.start, sl.start + sl.len),
            Op::BatchNorm(b) => format!("eps={}", b.eps),
            Op::MaxPool(p) => {
                let mut s =
                    format!("kernel={} stride={} pad={}", pair(p.kernel), pair(p.stride), pair(p.padding));
                if p.dilation != [1, 1] {
                    s += &format!(" dilation={}", pair(p.dilation));
                }
                if p.ceil_mode {
                    s += " ceil_mode";
                }
                s
            }
            Op::AvgPool(p) => {
                let mut s =
                    format!("kernel={} stride={} pad={}", pair(p.kernel), pair(p.stride), pair(p.padding));
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
            Op::Activation(a @ Activation::Clamp { min, max }) if a.name() == "clamp" => {
                let bounds = [min.map(|v| format!("min={v}")), max.map(|v| format!("max={v}"))];
                bounds.into_iter().flatten().collect::<Vec<_>>().join(" ")
            }
            Op::Activation(_) => String::new(),
            Op::ChannelShuffle(p) => format!("groups={}", p.groups),
            Op::Input | Op::Relu | Op::Flatten | Op::Add | Op::Mul | Op::Softmax => String::new(),
        }
    }
}

fn conv_text(c: &Conv2d) -> String {
    let pair = |p: [usize; 2]| if p[0] == p[1] { p[0].to_string() } else { format!("{}x{}", p[0], p[1]) };
    let mut s = format!(
        "out={} kernel={} stride={} pad={}",
        c.out_channels,
        pair(c.kernel),
        pair(c.stride),
        pair(c.padding)
    );
    if c.dilation != [1, 1] {
        s += &format!(" dilation={}", pair(c.dilation));
    }
    if c.groups != 1 {
        s += &format!(" groups={}", c.groups);
    }
    s += &format!(" bias={}", c.bias);
    s
}

fn conv_shape(name: &'static str, c: &Conv2d, input: &Shape) -> Result<Shape, ShapeError> {
    let (ci, h, w) = feature_map(name, input)?;
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
    Ok(Shape::chw(c.out_channels, oh, ow))
}

fn fused_conv_shape(name: &'static str, f: &FusedConv, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
    let out = conv_shape(name, &f.conv, inputs[0])?;
    let c = &f.conv;
    if f.prologue.is_some() && (c.padding != [0, 0] || c.groups != 1) {
        return Err(invalid(name, "a prologue needs an unpadded, ungrouped convolution"));
    }
    let one_by_one = c.kernel == [1, 1] && c.padding == [0, 0] && c.dilation == [1, 1] && c.groups == 1;
    match f.kind {
        ConvKind::Direct => {}
        ConvKind::Gemm1x1 if one_by_one && c.stride == [1, 1] => {}
        ConvKind::StridedGemm1x1 if one_by_one && c.stride != [1, 1] => {}
        ConvKind::Winograd(_)
            if c.kernel == [3, 3]
                && c.stride == [1, 1]
                && c.dilation == [1, 1]
                && c.groups == 1
                && c.padding[0] <= 2
                && c.padding[1] <= 2
                && f.prologue.is_none() => {}
        ConvKind::ChanVec if c.groups == 1 && f.prologue.is_none() => {}
        ConvKind::Depthwise if FusedConv::depthwise_geometry(c) && f.prologue.is_none() => {}
        _ => return Err(invalid(name, format!("{:?} does not fit this convolution's geometry", f.kind))),
    }
    if let Some(why) = f.activation.and_then(|a| a.malformed()) {
        return Err(invalid(name, why));
    }
    if let Relu::First(n) = f.relu {
        if n == 0 || n >= c.out_channels {
            return Err(invalid(name, format!("relu on the first {n} of {} channels", c.out_channels)));
        }
    }
    if f.residual && inputs[1] != &out {
        return Err(ShapeError::AddMismatch { left: out, right: inputs[1].clone() });
    }
    if f.channel_scale {
        if f.kind != ConvKind::Gemm1x1 || f.prologue.is_some() {
            return Err(invalid(name, "a channel scale needs a stride-1 1x1 GEMM without a prologue"));
        }
        let factors = inputs[f.scale_port()];
        if factors.as_chw() != Some((c.in_channels, 1, 1)) {
            return Err(ShapeError::MulMismatch { left: inputs[0].clone(), right: factors.clone() });
        }
    }
    Ok(out)
}

fn linear_shape(name: &'static str, l: &Linear, input: &Shape) -> Result<Shape, ShapeError> {
    let [f] = input.dims() else {
        return Err(ShapeError::NotVector { op: name, got: input.clone() });
    };
    if *f != l.in_features {
        return Err(invalid(name, format!("expects {} input features, got {f}", l.in_features)));
    }
    Ok(Shape::vector(l.out_features))
}

fn check_params(
    op: &'static str,
    kernel: &[usize; 2],
    stride: &[usize; 2],
    dilation: &[usize; 2],
) -> Result<(), ShapeError> {
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

fn check_half_kernel_padding(
    op: &'static str,
    kernel: &[usize; 2],
    padding: &[usize; 2],
) -> Result<(), ShapeError> {
    if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
        return Err(invalid(op, format!("padding {padding:?} must be at most half the kernel {kernel:?}")));
    }
    Ok(())
}
