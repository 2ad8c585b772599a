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

/// The most characters of a source line a diagnostic shows.
const EXCERPT_CHARS: usize = 120;

/// The part of `line` a diagnostic shows, with the caret's column and width in it: the whole line
/// when short, else [`EXCERPT_CHARS`] characters around the caret, cut ends marked `...` (a
/// machine-generated source can be one line of megabytes).
fn excerpt(line: &str, col: usize, width: usize) -> (String, usize, usize) {
    let len = line.chars().count();
    if len <= EXCERPT_CHARS {
        return (line.to_string(), col, width);
    }
    let start = (col - 1).saturating_sub(EXCERPT_CHARS / 3).min(len - EXCERPT_CHARS);
    let end = start + EXCERPT_CHARS;
    let mut text: String = line.chars().skip(start).take(EXCERPT_CHARS).collect();
    let mut col = col - start;
    if start > 0 {
        text.insert_str(0, "...");
        col += 3;
    }
    if end < len {
        text.push_str("...");
    }
    let width = width.min(EXCERPT_CHARS + 1 - (col - if start > 0 { 3 } else { 0 })).max(1);
    (text, col, width)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error[{}]: {}", self.kind.code(), self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(f, "{pad}--> {loc}")?;
            writeln!(f, "{pad} |")?;
            let (text, col, width) = excerpt(&loc.line_text, loc.col, loc.width);
            writeln!(f, "{} | {text}", loc.line)?;
            // Keep tabs in the prefix so the caret lines up under the source.
            let prefix: String =
                text.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            writeln!(f, "{pad} | {prefix}{}", "^".repeat(width))?;
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
