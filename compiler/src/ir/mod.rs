//! The intermediate representation: a graph of typed ops with static per-sample shapes.

pub mod count;
pub mod graph;
pub mod op;
pub mod print;
pub mod shape;
pub mod verify;

pub use count::{summarize, LayerRow, Summary};
pub use graph::{Graph, GraphOutput, Node, NodeId, ValueId};
pub use op::{AdaptiveAvgPool2d, Arity, AvgPool2d, BatchNorm, Conv2d, Dropout, Linear, Lrn, MaxPool2d, Op, WeightKind, WeightSpec};
pub use shape::{Shape, ShapeError};
pub use verify::{verify, VerifyError};
