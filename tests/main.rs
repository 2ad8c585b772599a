//! netc's integration tests: one binary, one module per area.
//!
//! Heavy numeric tests run whole models through the reference interpreter; run the suite with the
//! optimised test profile: `cargo test --profile ci-test --workspace`.

#![allow(clippy::result_large_err)] // test helpers return the front end's diagnostics as they are

mod common;

// Front end.
mod cli_frontend;
mod diagnostics;
mod hostile_inputs;
mod language;
mod models;
mod robustness;

// Runtime: weights, reference interpreter, input files, `netc init` / `netc run`.
mod runtime_cli;
mod runtime_folder;
mod runtime_io;
mod runtime_reference;
mod runtime_weights;

// Optimiser.
mod cli_optimizer;

// JIT backend.
mod cli_jit;
mod jit;

// The CLI's output, errors and bundle inspection.
mod cli_inspect;
mod cli_output;

// The library facade.
mod library;

// Export.
mod onnx_export;
