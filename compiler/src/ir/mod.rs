//! The intermediate representation: a graph of typed ops with static per-sample shapes.

pub mod count;
pub mod graph;
pub mod op;
pub mod print;
pub mod serial;
pub mod shape;
pub mod verify;
pub mod weights;
pub mod winograd;

pub use count::{summarize, LayerRow, Summary};
pub use graph::{Graph, GraphOutput, Node, NodeId, ValueId};
pub use op::{
    Activation, AdaptiveAvgPool2d, Affine, Arity, AvgPool2d, BatchNorm, ChannelShuffle, ChannelSlice, Concat,
    Conv2d, ConvKind, Dropout, FusedConv, FusedLinear, Linear, Lrn, MaxPool2d, Op, Relu, WeightKind,
    WeightSpec,
};
pub use shape::{Shape, ShapeError};
pub use verify::{verify, VerifyError};
pub use weights::WeightExpr;
pub use winograd::WinogradTile;
