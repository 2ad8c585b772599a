// Diagnostics are returned once per compilation on the error path; boxing them would only add
// indirection to every `?` in the front end.
#![allow(clippy::result_large_err)]

//! netc-compiler: the `.net` front end (grammar, AST, diagnostics), the IR with shape inference,
//! and the stages that turn it into an executable program.

pub mod codegen;
pub mod elaborate;
pub mod ir;
pub mod lower;
pub mod passes;
pub mod syntax;

pub use elaborate::{compile_file, compile_source, Options};
pub use syntax::Diagnostic;
