//! The built-in layers: their signatures (PyTorch's argument names and defaults) and the construction
//! of an [`Op`] from checked arguments.

use super::value::Value;
use crate::ir::{
    Activation, AdaptiveAvgPool2d, AvgPool2d, BatchNorm, ChannelShuffle, Conv2d, Dropout, Linear, Lrn,
    MaxPool2d, Op, Shape,
};

/// Every built-in layer name.
pub const BUILTINS: &[&str] = &[
    "conv",
    "linear",
    "batchnorm",
    "relu",
    "maxpool",
    "avgpool",
    "adaptive_avgpool",
    "global_avgpool",
    "lrn",
    "dropout",
    "flatten",
    "softmax",
    "concat",
    "relu6",
    "clamp",
    "hardtanh",
    "sigmoid",
    "silu",
    "hardsigmoid",
    "hardswish",
    "channel_shuffle",
    "chunk",
];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// A parameter of a built-in after the input tensor; `None` default means required.
struct ParamSig {
    name: &'static str,
    default: Option<Value>,
}

const fn req(name: &'static str) -> ParamSig {
    ParamSig { name, default: None }
}

fn opt(name: &'static str, v: Value) -> ParamSig {
    ParamSig { name, default: Some(v) }
}

/// The parameters a built-in takes after its input, in positional order.
fn signature(op: &str) -> Vec<ParamSig> {
    use Value::{Bool, Float, Int, Unit};
    match op {
        "conv" => vec![
            req("out"),
            req("kernel"),
            opt("stride", Int(1)),
            opt("pad", Int(0)),
            opt("dilation", Int(1)),
            opt("groups", Int(1)),
            opt("bias", Bool(true)),
        ],
        "linear" => vec![req("out"), opt("bias", Bool(true))],
        "batchnorm" => vec![opt("eps", Float(1e-5))],
        "maxpool" => vec![
            req("kernel"),
            opt("stride", Unit),
            opt("pad", Int(0)),
            opt("dilation", Int(1)),
            opt("ceil_mode", Bool(false)),
        ],
        "avgpool" => vec![
            req("kernel"),
            opt("stride", Unit),
            opt("pad", Int(0)),
            opt("ceil_mode", Bool(false)),
            opt("count_include_pad", Bool(true)),
        ],
        "adaptive_avgpool" => vec![req("size")],
        "lrn" => vec![req("size"), opt("alpha", Float(1e-4)), opt("beta", Float(0.75)), opt("k", Float(1.0))],
        "dropout" => vec![opt("p", Float(0.5))],
        "clamp" => vec![opt("min", Unit), opt("max", Unit)],
        "hardtanh" => vec![opt("min_val", Float(-1.0)), opt("max_val", Float(1.0))],
        "channel_shuffle" => vec![req("groups")],
        _ => Vec::new(),
    }
}

/// An argument as the caller wrote it: optional name, value, and an index into the caller's spans.
pub struct CallArg {
    pub name: Option<String>,
    pub value: Value,
    pub site: usize,
}

/// Why a built-in call is wrong; the elaborator attaches the location (`site` indexes the arguments,
/// `None` means the call itself).
pub struct ArgError {
    pub kind: crate::syntax::ErrorKind,
    pub message: String,
    pub site: Option<usize>,
    /// How to fix it, when known.
    pub help: Option<String>,
}

fn err(kind: crate::syntax::ErrorKind, message: impl Into<String>, site: Option<usize>) -> ArgError {
    ArgError { kind, message: message.into(), site, help: None }
}

impl ArgError {
    fn help(mut self, help: impl Into<String>) -> ArgError {
        self.help = Some(help.into());
        self
    }
}

/// PyTorch's argument names for what netc spells otherwise (when `op` takes the netc spelling), and
/// arguments that only matter when training or that netc infers: the help line for each.
fn pytorch_argument(op: &str, name: &str, takes: &[&str]) -> Option<String> {
    let to = match name {
        "padding" => "pad",
        "kernel_size" => "kernel",
        "out_channels" | "out_features" => "out",
        "output_size" => "size",
        "epsilon" => "eps",
        "momentum" | "affine" | "track_running_stats" if op == "batchnorm" => {
            return Some(format!(
                "`{name}` only matters when training; inference uses the stored running statistics, so leave it out"
            ))
        }
        "inplace" => return Some("netc plans memory itself; leave `inplace` out".to_string()),
        "in_channels" | "in_features" | "num_features" => {
            return Some(format!("netc infers `{name}` from the input's shape; leave it out"))
        }
        _ => return None,
    };
    takes.contains(&to).then(|| format!("netc spells PyTorch's `{name}` as `{to}`: write `{to} = ...`"))
}

/// Binds a call's arguments (after the input) to the signature: positional first, then by name.
fn bind(op: &str, sig: &[ParamSig], args: Vec<CallArg>) -> Result<Vec<(Value, Option<usize>)>, ArgError> {
    use crate::syntax::ErrorKind::Arity;
    let mut slots: Vec<Option<(Value, Option<usize>)>> = sig.iter().map(|_| None).collect();
    let mut positional = 0;
    for arg in args {
        let idx = match &arg.name {
            None => {
                if positional >= sig.len() {
                    return Err(err(
                        Arity,
                        format!(
                            "`{op}` takes at most {} argument{} after its input",
                            sig.len(),
                            plural(sig.len())
                        ),
                        Some(arg.site),
                    ));
                }
                positional += 1;
                positional - 1
            }
            Some(name) => match sig.iter().position(|p| p.name == name) {
                Some(i) => i,
                None => {
                    let names: Vec<&str> = sig.iter().map(|p| p.name).collect();
                    let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
                    let e = err(
                        Arity,
                        format!("`{op}` has no argument named `{name}` (it takes: {known})"),
                        Some(arg.site),
                    );
                    let help = pytorch_argument(op, name, &names).or_else(|| {
                        closest(name, names.iter().copied()).map(|s| format!("did you mean `{s}`?"))
                    });
                    return Err(match help {
                        Some(h) => e.help(h),
                        None => e,
                    });
                }
            },
        };
        if slots[idx].is_some() {
            return Err(err(
                Arity,
                format!("argument `{}` of `{op}` is given twice", sig[idx].name),
                Some(arg.site),
            ));
        }
        slots[idx] = Some((arg.value, Some(arg.site)));
    }
    slots
        .into_iter()
        .zip(sig)
        .map(|(slot, p)| match (slot, &p.default) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok((d.clone(), None)),
            (None, None) => Err(err(Arity, format!("`{op}` needs argument `{}`", p.name), None)),
        })
        .collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Typed access to bound arguments.
struct Args {
    op: &'static str,
    values: Vec<(Value, Option<usize>)>,
    names: Vec<&'static str>,
}

impl Args {
    fn type_error(&self, i: usize, want: &str) -> ArgError {
        let (v, site) = &self.values[i];
        let e = err(
            crate::syntax::ErrorKind::Type,
            format!("argument `{}` of `{}` must be {want}, got {}", self.names[i], self.op, describe(v)),
            *site,
        );
        match v {
            Value::Float(f) if want.contains("integer") && f.fract() == 0.0 => {
                e.help("`/` gives a number even when it divides evenly; use `//` for integer division")
            }
            _ => e,
        }
    }

    fn size_error(&self, i: usize, what: String) -> ArgError {
        err(
            crate::syntax::ErrorKind::Size,
            format!("argument `{}` of `{}` {what}", self.names[i], self.op),
            self.values[i].1,
        )
    }

    /// A positive integer (sizes, channel counts, strides): at least `min`.
    fn count(&self, i: usize, min: i64) -> Result<usize, ArgError> {
        match self.values[i].0 {
            Value::Int(v) if v < min => Err(self.size_error(i, format!("must be at least {min}, got {v}"))),
            Value::Int(v) if v > crate::ir::shape::MAX_DIM as i64 => {
                Err(self
                    .size_error(i, format!("is {v}, larger than the limit of {}", crate::ir::shape::MAX_DIM)))
            }
            Value::Int(v) => Ok(v as usize),
            _ => Err(self.type_error(i, "an integer")),
        }
    }

    /// An integer or a pair `(h, w)` of integers, each at least `min`.
    fn pair(&self, i: usize, min: i64) -> Result<[usize; 2], ArgError> {
        match &self.values[i].0 {
            Value::Int(_) => {
                let v = self.count(i, min)?;
                Ok([v, v])
            }
            Value::List(items) if items.len() == 2 => {
                let mut out = [0; 2];
                for (o, item) in out.iter_mut().zip(items) {
                    let sub = Args {
                        op: self.op,
                        values: vec![(item.clone(), self.values[i].1)],
                        names: vec![self.names[i]],
                    };
                    *o = sub.count(0, min)?;
                }
                Ok(out)
            }
            _ => Err(self.type_error(i, "an integer or a pair (h, w) of integers")),
        }
    }

    fn float(&self, i: usize) -> Result<f64, ArgError> {
        match self.values[i].0 {
            Value::Int(v) => Ok(v as f64),
            Value::Float(v) if v.is_finite() => Ok(v),
            Value::Float(v) => Err(self.size_error(i, format!("must be finite, got {v}"))),
            _ => Err(self.type_error(i, "a number")),
        }
    }

    /// A finite number that f32 holds (an activation's bound, computed in f32 like PyTorch's).
    fn f32_bound(&self, i: usize) -> Result<f32, ArgError> {
        let v = self.float(i)?;
        if v.abs() > f32::MAX as f64 {
            return Err(self.size_error(i, format!("is {v}, outside the range of f32")));
        }
        Ok(v as f32)
    }

    fn boolean(&self, i: usize) -> Result<bool, ArgError> {
        match self.values[i].0 {
            Value::Bool(b) => Ok(b),
            _ => Err(self.type_error(i, "true or false")),
        }
    }

    fn is_unit(&self, i: usize) -> bool {
        self.values[i].0 == Value::Unit
    }
}

pub fn describe(v: &Value) -> String {
    match v {
        Value::Int(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Bool(b) => format!("`{b}`"),
        Value::Str(s) => format!("the string \"{s}\""),
        Value::List(l) => format!("a list of {} item{}", l.len(), plural(l.len())),
        Value::Tensor(_) => "a tensor".to_string(),
        Value::Unit => "nothing".to_string(),
    }
}

/// Builds the op for a call of built-in `op` on an input of shape `input` with the caller's other
/// arguments. `concat` is handled by the elaborator (its arguments are all tensors).
pub fn build_op(op: &str, input: &Shape, args: Vec<CallArg>) -> Result<Op, ArgError> {
    let sig = signature(op);
    let names: Vec<&'static str> = sig.iter().map(|p| p.name).collect();
    let op_name: &'static str = BUILTINS.iter().find(|b| **b == op).copied().unwrap_or("op");
    let a = Args { op: op_name, values: bind(op, &sig, args)?, names };
    Ok(match op {
        "conv" => {
            let in_channels = input.dims().first().copied().unwrap_or(0);
            Op::Conv(Conv2d {
                in_channels,
                out_channels: a.count(0, 1)?,
                kernel: a.pair(1, 1)?,
                stride: a.pair(2, 1)?,
                padding: a.pair(3, 0)?,
                dilation: a.pair(4, 1)?,
                groups: a.count(5, 1)?,
                bias: a.boolean(6)?,
            })
        }
        "linear" => Op::Linear(Linear {
            in_features: input.dims().first().copied().unwrap_or(0),
            out_features: a.count(0, 1)?,
            bias: a.boolean(1)?,
        }),
        "batchnorm" => Op::BatchNorm(BatchNorm {
            channels: input.dims().first().copied().unwrap_or(0),
            eps: a.float(0)?,
        }),
        "relu" => Op::Relu,
        "flatten" => Op::Flatten,
        "softmax" => Op::Softmax,
        "maxpool" => {
            let kernel = a.pair(0, 1)?;
            Op::MaxPool(MaxPool2d {
                kernel,
                stride: if a.is_unit(1) { kernel } else { a.pair(1, 1)? },
                padding: a.pair(2, 0)?,
                dilation: a.pair(3, 1)?,
                ceil_mode: a.boolean(4)?,
            })
        }
        "avgpool" => {
            let kernel = a.pair(0, 1)?;
            Op::AvgPool(AvgPool2d {
                kernel,
                stride: if a.is_unit(1) { kernel } else { a.pair(1, 1)? },
                padding: a.pair(2, 0)?,
                ceil_mode: a.boolean(3)?,
                count_include_pad: a.boolean(4)?,
            })
        }
        "adaptive_avgpool" => Op::AdaptiveAvgPool(AdaptiveAvgPool2d { output: a.pair(0, 1)? }),
        "global_avgpool" => Op::AdaptiveAvgPool(AdaptiveAvgPool2d { output: [1, 1] }),
        "lrn" => Op::Lrn(Lrn { size: a.count(0, 1)?, alpha: a.float(1)?, beta: a.float(2)?, k: a.float(3)? }),
        "dropout" => Op::Dropout(Dropout { p: a.float(0)? }),
        "relu6" => Op::Activation(Activation::Clamp { min: Some(0.0), max: Some(6.0) }),
        "clamp" | "hardtanh" => {
            // `clamp(min = ...)` or `clamp(max = ...)` alone, as `torch.clamp` allows.
            let bound = |i: usize| if a.is_unit(i) { Ok(None) } else { a.f32_bound(i).map(Some) };
            let (min, max) = (bound(0)?, bound(1)?);
            match (min, max) {
                (None, None) => {
                    return Err(err(
                        crate::syntax::ErrorKind::Size,
                        format!("`{op}` needs a bound: give min, max or both"),
                        None,
                    )
                    .help(format!(
                        "`{op}(x, min = 0)` keeps values of at least 0, `{op}(x, max = 6)` of at most 6"
                    )))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(err(
                        crate::syntax::ErrorKind::Size,
                        format!("`{op}` needs min <= max, got min {lo} and max {hi}"),
                        a.values[0].1,
                    ))
                }
                _ => {}
            }
            Op::Activation(Activation::Clamp { min, max })
        }
        "sigmoid" => Op::Activation(Activation::Sigmoid),
        "silu" => Op::Activation(Activation::Silu),
        "hardsigmoid" => Op::Activation(Activation::Hardsigmoid),
        "hardswish" => Op::Activation(Activation::Hardswish),
        "channel_shuffle" => Op::ChannelShuffle(ChannelShuffle { groups: a.count(0, 1)? }),
        other => unreachable!("build_op called for `{other}`"),
    })
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (levenshtein(name, c), c))
        .filter(|&(d, c)| d <= 2.max(name.len().min(c.len()) / 3))
        .min()
        .map(|(_, c)| c)
}

pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The help line for a layer name a PyTorch user would write (`Conv2d`, `add`, `cat`, ...), if it is one.
pub fn pytorch_layer(name: &str) -> Option<String> {
    // `nn.Conv2d`, `F.relu`, `torch.cat`: the part after the module.
    let bare = name.rsplit('.').next().unwrap_or(name);
    if name.contains('.') && is_builtin(bare) {
        return Some(format!("did you mean `{bare}`?"));
    }
    let key = bare.to_ascii_lowercase().replace('_', "");
    let ours = match key.as_str() {
        "add" | "sum" => return Some("a residual sum is written with `+`: `a + b`".to_string()),
        "mul" | "multiply" | "prod" => {
            return Some("an elementwise product is written with `*`: `a * b`".to_string())
        }
        "relu6" => "relu6",
        "hardtanh" => "hardtanh",
        "sigmoid" => "sigmoid",
        "silu" | "swish" => "silu",
        "hardswish" | "hswish" => "hardswish",
        "hardsigmoid" | "hsigmoid" => "hardsigmoid",
        "channelshuffle" => "channel_shuffle",
        "split" => "chunk",
        "conv2d" | "convolution" => "conv",
        "batchnorm2d" | "bn" | "batchnormalization" => "batchnorm",
        "maxpool2d" => "maxpool",
        "avgpool2d" => "avgpool",
        "adaptiveavgpool2d" => "adaptive_avgpool",
        "globalavgpool" | "globalaveragepool" => "global_avgpool",
        "cat" | "concatenate" => "concat",
        "localresponsenorm" => "lrn",
        "dense" | "fc" => "linear",
        _ => return None,
    };
    (ours != name).then(|| format!("did you mean `{ours}`? (netc's name for PyTorch's `{name}`)"))
}
