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
