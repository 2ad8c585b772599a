//! Code generation: one native kernel per executable IR node, generated with Cranelift, whose
//! register tiles are Cranelift f32x4 code or AVX2/AVX-512 machine code assembled at JIT time
//! (see [`tile`] and [`isa`]).
//!
//! ## Kernel ABI
//! Every kernel is a [`KernelFn`]:
//! `extern "C" fn(inputs, output, weights, scratch, begin, end, batch, setup)`.
//! - `inputs[i]` points at element `(0, 0)` of the node's `i`-th input value (for the memory plan's
//!   placements: `arena + buffer.offset * N + placement.offset`, in floats); sample `n` of a value
//!   starts `n * sample_stride` floats further, with the strides baked into the spec.
//! - `output` likewise for the node's output value.
//! - `weights[j]`: the kernel's weight buffers, as listed by [`KernelSpec::weight_layout`] (packed
//!   conv/linear weights from [`pack`], or plain per-channel vectors).
//! - `scratch`: per-thread memory of [`KernelSpec::scratch_floats`] floats (may be null when 0).
//! - `begin..end`: the work items to run, of the [`KernelSpec::work_items`] a batch of `batch`
//!   samples has. Items write disjoint outputs and only read inputs, weights and their own
//!   scratch, so an executor may split `0..work_items` into any ranges and run them on different
//!   threads (each with its own scratch).
//! - `batch`: the batch size `N` (kernels that block several samples into one item need it).
//! - `setup`: null, or the calling thread's memo of which set-up work (a fill, a Winograd input
//!   transform) its scratch holds for this kernel, carried from one call to the next when one
//!   thread runs several chunks of a kernel's items (see [`KernelArgs::setup`]).
//!
//! Shapes, strides, padding and offsets are compile-time constants of each kernel; the batch size
//! is not (it only scales the item range), so one compilation serves every batch size.
//!
//! ## Families and implementations
//! [`conv`] (every `FusedConv`, on the tiles), [`linear`] (on the tiles), [`pool`], [`lrn`],
//! [`eltwise`] (add, ReLU, affine, copies for concatenation), [`softmax`]. Which implementation a
//! kernel gets for an ISA (`conv.rowpanel.avx512`, `pool.sse`, ...) is decided by the ordered
//! [`registry`]. Views (`Slice`, `Flatten`, in-place `Concat`, `Input`, `Dropout`) need no kernel:
//! see [`KernelSpec::for_node`].

pub mod bounds;
pub mod conv;
mod cx;
pub mod eltwise;
pub mod isa;
pub mod jit;
pub mod linear;
pub mod lrn;
pub mod pack;
pub mod pool;
pub mod registry;
mod rows;
pub mod softmax;
pub mod tile;

pub use conv::{
    chanvec::row_channels as chanvec_row_channels, default_tile, reads_b_in_place, ConvLayout, ConvPath,
    ConvPlan, ConvSpec,
};
pub use eltwise::{EltwiseOp, EltwiseSpec};
pub use isa::{Isa, IsaChoice};
pub use jit::{compile, CompileOptions, CompiledKernel, CompiledKernels, KernelArgs, KernelRequest};
pub use linear::{pack_linear_weights, LinearPlan, LinearSpec};
pub use lrn::LrnSpec;
pub use pack::{pack_conv_weights, AlignedF32};
pub use pool::{PoolKind, PoolSpec};
pub use softmax::SoftmaxSpec;

use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::lower::memory::MemoryPlan;

use cx::KernelCx;
use tile::Tiles;

/// The entry point of every kernel (see the module documentation for the contract).
///
/// # Safety
/// `inputs` must hold as many valid pointers as the node has inputs, each valid for reads of the
/// whole value for every sample the items `begin..end` touch (sample strides as in the spec);
/// `weights` likewise for the buffers of [`KernelSpec::weight_layout`]; `output` valid for writes
/// of those samples; `scratch` valid for reads and writes of `scratch_floats()` floats and used by
/// no one else during the call; `end <= work_items(batch)`; `setup` null or valid for reads and
/// writes of one `i64` (see [`KernelArgs::setup`]).
pub type KernelFn = unsafe extern "C" fn(
    inputs: *const *const f32,
    output: *mut f32,
    weights: *const *const f32,
    scratch: *mut f32,
    begin: u64,
    end: u64,
    batch: u64,
    setup: *mut i64,
);

/// Errors of code generation.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("this machine cannot run netc's kernels: {0}")]
    UnsupportedHost(String),
    #[error("this machine lacks {missing}: it cannot run {isa} kernels (`--isa auto` picks what it has)")]
    IsaUnavailable { isa: &'static str, missing: String },
    #[error("unsupported kernel: {0}")]
    Unsupported(String),
    #[error("weights do not fit the kernel: {0}")]
    Weights(String),
    #[error("Cranelift failed: {0}")]
    Cranelift(String),
    #[error("generated code failed the static bounds check (a bug in netc; please report it): {0}")]
    OutOfBounds(String),
}

/// What one kernel computes, with every shape and stride it is specialised for.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelSpec {
    Conv(ConvSpec),
    Linear(LinearSpec),
    Pool(PoolSpec),
    Lrn(LrnSpec),
    Eltwise(EltwiseSpec),
    Softmax(SoftmaxSpec),
}

impl KernelSpec {
    /// The kernel for node `id` of an optimised graph placed by `plan`, or `None` for nodes that
    /// move no data (inputs, views: flatten, channel slices, in-place concatenation, dropout).
    pub fn for_node(
        graph: &Graph,
        id: NodeId,
        plan: &MemoryPlan,
    ) -> Result<Option<KernelSpec>, CodegenError> {
        let node = graph.node(id);
        let inputs = graph.inputs(id);
        let stride = |v: ValueId| {
            plan.values.get(&v).map(|p| p.sample_stride).ok_or_else(|| {
                CodegenError::Unsupported(format!("`{}`: a value has no place in the memory plan", node.name))
            })
        };
        let out_stride = stride(id.value())?;
        let in_strides = inputs.iter().map(|&v| stride(v)).collect::<Result<Vec<_>, _>>()?;
        let chw = |v: ValueId| -> Result<[usize; 3], CodegenError> {
            graph.shape(v).as_chw().map(|(c, h, w)| [c, h, w]).ok_or_else(|| {
                CodegenError::Unsupported(format!(
                    "`{}` expects a feature map, got {}",
                    node.name,
                    graph.shape(v)
                ))
            })
        };
        let len = node.shape.elements();
        let spec = match &node.op {
            Op::Input | Op::Flatten | Op::Slice(_) | Op::Dropout(_) => return Ok(None),
            // In place when the plan put every input where the concat would copy it (a concat marked
            // in place that the plan could not place, say from a hand-edited bundle, still copies).
            Op::Concat(_) if plan.concat_is_view(graph, id) => return Ok(None),
            Op::FusedConv(f) => KernelSpec::Conv(ConvSpec {
                op: f.clone(),
                input: chw(inputs[0])?,
                in_stride: in_strides[0],
                out_stride,
                res_stride: if f.residual { in_strides[1] } else { 0 },
                scale_stride: if f.channel_scale { in_strides[f.scale_port()] } else { 0 },
                tile: None,
                order: None,
                stream_bytes: None,
            }),
            Op::FusedLinear(l) => {
                KernelSpec::Linear(LinearSpec { op: l.clone(), in_stride: in_strides[0], out_stride })
            }
            Op::MaxPool(p) => KernelSpec::Pool(PoolSpec {
                kind: PoolKind::Max,
                input: chw(inputs[0])?,
                output: chw(id.value())?,
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                dilation: p.dilation,
                in_stride: in_strides[0],
                out_stride,
            }),
            Op::AvgPool(p) => KernelSpec::Pool(PoolSpec {
                kind: PoolKind::Avg { count_include_pad: p.count_include_pad },
                input: chw(inputs[0])?,
                output: chw(id.value())?,
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                dilation: [1, 1],
                in_stride: in_strides[0],
                out_stride,
            }),
            Op::AdaptiveAvgPool(_) => KernelSpec::Pool(PoolSpec {
                kind: PoolKind::Adaptive,
                input: chw(inputs[0])?,
                output: chw(id.value())?,
                kernel: [1, 1],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                in_stride: in_strides[0],
                out_stride,
            }),
            Op::Lrn(l) => {
                let [c, h, w] = chw(inputs[0])?;
                KernelSpec::Lrn(LrnSpec {
                    channels: c,
                    plane: h * w,
                    size: l.size,
                    alpha: l.alpha,
                    beta: l.beta,
                    k: l.k,
                    in_stride: in_strides[0],
                    out_stride,
                })
            }
            Op::Add => KernelSpec::Eltwise(EltwiseSpec { op: EltwiseOp::Add, len, in_strides, out_stride }),
            Op::Relu => KernelSpec::Eltwise(EltwiseSpec { op: EltwiseOp::Relu, len, in_strides, out_stride }),
            Op::Activation(a) => KernelSpec::Eltwise(EltwiseSpec {
                op: EltwiseOp::Activation(*a),
                len,
                in_strides,
                out_stride,
            }),
            Op::Mul => {
                let op = match chw(inputs[1]) {
                    Ok([c, 1, 1]) if graph.shape(inputs[1]) != &node.shape => {
                        EltwiseOp::ScaleChannels { channels: c, plane: len / c.max(1) }
                    }
                    _ => EltwiseOp::Mul,
                };
                KernelSpec::Eltwise(EltwiseSpec { op, len, in_strides, out_stride })
            }
            Op::ChannelShuffle(p) => {
                let [c, h, w] = chw(inputs[0])?;
                let op = EltwiseOp::Shuffle { channels: c, plane: h * w, groups: p.groups };
                KernelSpec::Eltwise(EltwiseSpec { op, len, in_strides, out_stride })
            }
            Op::Affine(a) => {
                let plane = len / a.channels.max(1);
                let op = EltwiseOp::Affine { channels: a.channels, plane, relu: a.relu };
                KernelSpec::Eltwise(EltwiseSpec { op, len, in_strides, out_stride })
            }
            Op::Concat(_) => {
                let lens = inputs.iter().map(|&v| graph.shape(v).elements()).collect();
                KernelSpec::Eltwise(EltwiseSpec {
                    op: EltwiseOp::Concat { lens },
                    len,
                    in_strides,
                    out_stride,
                })
            }
            Op::Softmax => KernelSpec::Softmax(SoftmaxSpec { len, in_stride: in_strides[0], out_stride }),
            Op::Conv(_) | Op::BatchNorm(_) | Op::Linear(_) => {
                return Err(CodegenError::Unsupported(format!(
                    "`{}` ({}) must be rewritten by the optimiser before code generation",
                    node.name,
                    node.op.name()
                )))
            }
        };
        // Reject what the generator cannot do now, not at compile time.
        if let KernelSpec::Conv(c) = &spec {
            ConvLayout::new(c).map_err(|e| CodegenError::Unsupported(format!("`{}`: {e}", node.name)))?;
        }
        Ok(Some(spec))
    }

    /// Work items of a batch of `n` samples for kernels of `isa` (see the module documentation).
    pub fn work_items(&self, isa: Isa, n: usize) -> usize {
        match self {
            KernelSpec::Conv(s) => n * ConvPlan::new(s, isa).map_or(1, |p| p.items_per_sample()),
            KernelSpec::Linear(s) => LinearPlan::new(isa).work_items(s, n),
            KernelSpec::Pool(s) => n * s.items_per_sample(),
            KernelSpec::Lrn(s) => n * s.items_per_sample(),
            KernelSpec::Eltwise(s) => n * s.items_per_sample(),
            KernelSpec::Softmax(_) => n,
        }
    }

    /// How many consecutive work items share set-up work that a thread running them together does
    /// once (the chunks of one block of a row panel share its fill, of a Winograd kernel also its
    /// input transform); an executor should hand them out together when that still balances its
    /// threads.
    pub fn items_sharing_setup(&self, isa: Isa) -> usize {
        match self {
            KernelSpec::Conv(s) => ConvPlan::new(s, isa).ok().map_or(1, |p| match p.path {
                // A row block's chunks share its fill; a Winograd block's also its input transform.
                ConvPath::RowPanel | ConvPath::Winograd(_) => p.chunks,
                // The padded copy of a sample serves all its items.
                ConvPath::ChanVec if p.chanvec.as_ref().is_some_and(|v| v.fill) => p.items_per_sample(),
                _ => 1,
            }),
            _ => 1,
        }
    }

    /// Floats of per-thread scratch for kernels of `isa`.
    pub fn scratch_floats(&self, isa: Isa) -> usize {
        match self {
            KernelSpec::Conv(s) => ConvPlan::new(s, isa).map_or(0, |p| p.scratch_floats()),
            KernelSpec::Pool(s) => s.scratch_floats(),
            _ => 0,
        }
    }

    /// The algorithm, as the registry's names start: `conv.gemm1x1`, `conv.rowpanel`,
    /// `conv.winograd`, `conv.chanvec`, `conv.depthwise`, `linear`, `pool`, `lrn`, `eltwise`, `softmax`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            KernelSpec::Conv(s) => match ConvPath::of(s) {
                ConvPath::Direct1x1 => "conv.gemm1x1",
                ConvPath::RowPanel => "conv.rowpanel",
                ConvPath::Winograd(_) => "conv.winograd",
                ConvPath::ChanVec => "conv.chanvec",
                ConvPath::Depthwise => "conv.depthwise",
            },
            KernelSpec::Linear(_) => "linear",
            KernelSpec::Pool(_) => "pool",
            KernelSpec::Lrn(_) => "lrn",
            KernelSpec::Eltwise(_) => "eltwise",
            KernelSpec::Softmax(_) => "softmax",
        }
    }

    /// `(floats per sample, floats between samples)` of each input and of the output, as the
    /// executor lays them out.
    pub fn extents(&self) -> (Vec<(usize, usize)>, (usize, usize)) {
        let chw = |[c, h, w]: [usize; 3]| c * h * w;
        match self {
            KernelSpec::Conv(s) => {
                let out = s.output().map_or(0, chw);
                let mut inputs = vec![(chw(s.input), s.in_stride)];
                if s.op.residual {
                    inputs.push((out, s.res_stride));
                }
                if s.op.channel_scale {
                    inputs.push((s.op.conv.in_channels, s.scale_stride));
                }
                (inputs, (out, s.out_stride))
            }
            KernelSpec::Linear(s) => {
                let l = &s.op.linear;
                (vec![(l.in_features, s.in_stride)], (l.out_features, s.out_stride))
            }
            KernelSpec::Pool(s) => (vec![(chw(s.input), s.in_stride)], (chw(s.output), s.out_stride)),
            KernelSpec::Lrn(s) => {
                let len = s.channels * s.plane;
                (vec![(len, s.in_stride)], (len, s.out_stride))
            }
            KernelSpec::Eltwise(s) => {
                let lens = (0..s.input_count()).map(|i| s.input_len(i));
                (lens.zip(s.in_strides.iter().copied()).collect(), (s.len, s.out_stride))
            }
            KernelSpec::Softmax(s) => (vec![(s.len, s.in_stride)], (s.len, s.out_stride)),
        }
    }

    /// Number of input pointers the kernel reads.
    pub fn input_count(&self) -> usize {
        match self {
            KernelSpec::Conv(s) => 1 + s.op.residual as usize + s.op.channel_scale as usize,
            KernelSpec::Eltwise(s) => s.input_count(),
            _ => 1,
        }
    }

    /// The weight buffers the kernel expects, in order, with their lengths in floats.
    pub fn weight_layout(&self) -> Vec<(&'static str, usize)> {
        match self {
            KernelSpec::Conv(s) => {
                vec![(
                    "packed conv weights (pack_conv_weights)",
                    ConvLayout::new(s).map_or(0, |l| l.packed_len),
                )]
            }
            KernelSpec::Linear(s) => vec![("packed linear weights (pack_linear_weights)", s.packed_len())],
            KernelSpec::Eltwise(EltwiseSpec { op: EltwiseOp::Affine { channels, .. }, .. }) => {
                vec![("scale", *channels), ("shift", *channels)]
            }
            _ => Vec::new(),
        }
    }

    /// One line for dumps, for kernels of `isa`.
    pub fn describe(&self, isa: Isa) -> String {
        match self {
            KernelSpec::Conv(s) => match ConvPlan::new(s, isa) {
                Ok(p) => format!(
                    "{} {:?} -> {:?}, {} path, tile {}x{}, {} items/sample, scratch {} floats",
                    s.op_label(),
                    s.input,
                    p.out,
                    p.path.name(),
                    p.mt,
                    p.nv * p.lanes,
                    p.items_per_sample(),
                    p.scratch_floats()
                ),
                Err(e) => e.to_string(),
            },
            KernelSpec::Linear(s) => {
                let plan = LinearPlan::new(isa);
                format!(
                    "linear {} -> {}{}{}, {} panels of {}, {} samples per tile",
                    s.op.linear.in_features,
                    s.op.linear.out_features,
                    if s.op.linear.bias { " +bias" } else { "" },
                    if s.op.relu { " +relu" } else { "" },
                    s.panels(),
                    linear::PANEL,
                    plan.rows
                )
            }
            KernelSpec::Pool(s) => format!("{:?} pool {:?} -> {:?}", s.kind, s.input, s.output),
            KernelSpec::Lrn(s) => {
                format!("lrn size={} over {} channels x {} pixels", s.size, s.channels, s.plane)
            }
            KernelSpec::Eltwise(s) => format!("{:?} of {} floats", s.op, s.len),
            KernelSpec::Softmax(s) => format!("softmax of {} floats", s.len),
        }
    }

    /// Which Cranelift optimisation level the family is compiled with (see [`isa::OptLevel`]):
    /// `None` for the register-blocked GEMM families (the order the generator chose matters) and
    /// pooling (whose loop-invariant address arithmetic the optimiser sank into the inner loops),
    /// `Speed` for the others, whose loops benefit from GVN/LICM of address arithmetic.
    pub fn opt_level(&self) -> isa::OptLevel {
        match self {
            // The depthwise kernels' fill and epilogue loops are Cranelift code worth optimising;
            // their stencil is assembled (or, on sse, splat-per-tap code whose order is harmless).
            KernelSpec::Conv(s) if ConvPath::of(s) == ConvPath::Depthwise => isa::OptLevel::Speed,
            KernelSpec::Conv(_) | KernelSpec::Linear(_) | KernelSpec::Pool(_) => isa::OptLevel::None,
            _ => isa::OptLevel::Speed,
        }
    }

    fn emit(&self, cx: &mut KernelCx, tiles: &mut Tiles, isa: Isa) -> Result<(), CodegenError> {
        match self {
            KernelSpec::Conv(s) => {
                let plan = ConvPlan::new(s, isa)?;
                conv::emit(cx, tiles, s, &plan);
            }
            KernelSpec::Linear(s) => linear::emit(cx, tiles, s, LinearPlan::new(isa)),
            KernelSpec::Pool(s) => pool::emit(cx, s),
            KernelSpec::Lrn(s) => lrn::emit(cx, tiles.module, s)?,
            KernelSpec::Eltwise(s) => eltwise::emit(cx, s),
            KernelSpec::Softmax(s) => softmax::emit(cx, s),
        }
        tiles.take_error()
    }
}

impl ConvSpec {
    fn op_label(&self) -> String {
        crate::ir::Op::FusedConv(self.op.clone()).label()
    }
}

mod helpers {
    /// Symbol of `f32::powf` for kernels (LRN with an uncommon exponent).
    pub const POWF: &str = "netc_powf";

    extern "C" fn powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }

    /// Extern helpers kernels may call, by symbol name.
    pub fn symbols() -> Vec<(&'static str, *const u8)> {
        vec![(POWF, powf as extern "C" fn(f32, f32) -> f32 as *const u8)]
    }
}

#[cfg(test)]
mod tests;
