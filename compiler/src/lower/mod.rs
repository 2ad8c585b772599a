//! From the optimised IR toward execution: the static memory plan and the [`Program`] (one kernel
//! step per computing node, its weight layout, and the plan), the one form the packer, the bundle
//! format, the executor and the kernel dumps all consume.

pub mod memory;
pub mod program;

pub use memory::{plan, Buffer, BufferId, MemoryPlan, Placement};
pub use program::{PackError, Program, Step, PACKED_LAYOUT};
