//! Compile-time values of the `.net` language.

use crate::ir::ValueId;

/// A value during elaboration: numbers, booleans and strings are compile-time constants; tensors are
/// graph values whose shapes are known.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Lists `[a, b]`, tuples `(a, b)` and ranges `0..n` alike.
    List(Vec<Value>),
    Tensor(ValueId),
    /// What a statement without a value (an `if` without `else`, a loop) produces.
    Unit,
}

impl Value {
    /// The type name used in messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Tensor(_) => "tensor",
            Value::Unit => "nothing",
        }
    }
}
