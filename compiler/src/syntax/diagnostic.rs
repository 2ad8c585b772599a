//! Compiler diagnostics: what went wrong, where (file:line:col with the source line and a caret), and the
//! chain of block instances that led there.

use super::source::Location;
use std::fmt;

/// The kind of a front-end error; stable, shown as `error[kind]` and matched on by tests and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The text does not follow the grammar.
    Syntax,
    /// A name (variable, block, op) is not defined.
    UnknownName,
    /// A name is defined twice.
    Duplicate,
    /// An argument has the wrong type, or a value is used where another type is needed.
    Type,
    /// Too many or too few arguments, or an unknown/duplicated named argument.
    Arity,
    /// Operand shapes do not fit the operation.
    Shape,
    /// A shape assertion `: [...]` does not hold.
    Assertion,
    /// `use` files or blocks that include or call themselves.
    Recursion,
    /// A size that is zero, negative or too large, or an integer overflow.
    Size,
    /// Loops, lists or graphs beyond the compiler's limits.
    Limit,
    /// A structural rule of the language (a network per file, weights need a scope, ...).
    Structure,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Syntax => "syntax",
            ErrorKind::UnknownName => "unknown-name",
            ErrorKind::Duplicate => "duplicate",
            ErrorKind::Type => "type",
            ErrorKind::Arity => "arity",
            ErrorKind::Shape => "shape",
            ErrorKind::Assertion => "assertion",
            ErrorKind::Recursion => "recursion",
            ErrorKind::Size => "size",
            ErrorKind::Limit => "limit",
            ErrorKind::Structure => "structure",
        }
    }
}

/// One step of the block-instance chain: `in bottleneck @layer3.4`, with the call site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFrame {
    pub description: String,
    pub call_site: Option<Location>,
}

/// A front-end error with everything needed to show it to a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub message: String,
    pub location: Option<Location>,
    /// Innermost block instance first.
    pub trace: Vec<TraceFrame>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(kind: ErrorKind, message: impl Into<String>, location: Option<Location>) -> Diagnostic {
        Diagnostic { kind, message: message.into(), location, trace: Vec::new(), notes: Vec::new() }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error[{}]: {}", self.kind.code(), self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(f, "{pad}--> {loc}")?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", loc.line, loc.line_text)?;
            // Keep tabs in the prefix so the caret lines up under the source.
            let prefix: String =
                loc.line_text.chars().take(loc.col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            writeln!(f, "{pad} | {prefix}{}", "^".repeat(loc.width))?;
        }
        for frame in &self.trace {
            match &frame.call_site {
                Some(site) => writeln!(f, "  = in {} ({site})", frame.description)?,
                None => writeln!(f, "  = in {}", frame.description)?,
            }
        }
        for note in &self.notes {
            writeln!(f, "  = note: {note}")?;
        }
        Ok(())
    }
}
