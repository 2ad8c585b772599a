//! netc-runtime: weights, the reference interpreter, the executor and tensor I/O.
pub mod bundle;
