//! The `.net` language front: source files, the pest grammar walk into an AST, and diagnostics.

pub mod ast;
pub mod diagnostic;
pub mod parser;
pub mod source;

pub use diagnostic::{Diagnostic, ErrorKind, Label, TraceFrame};
pub use source::{FileId, Location, SourceMap, Span};
