//! From the optimised IR toward execution: the static memory plan (and, later, kernel plans).

pub mod memory;

pub use memory::{plan, Buffer, BufferId, MemoryPlan, Placement};
