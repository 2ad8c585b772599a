//! Compiler diagnostics: what went wrong, where (file:line:col with the source line and a caret), the
//! other places that explain it (secondary labels), the chain of block instances that led there, and
//! `note:` / `help:` lines. Rendered by `annotate-snippets`, plain or coloured.

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

/// A secondary place in the source that explains the error (`first used here`, `this \`if\` has no
/// \`else\``), underlined with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub location: Location,
    pub message: String,
}

/// A front-end error with everything needed to show it to a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub message: String,
    pub location: Option<Location>,
    /// What the primary caret says, if anything beyond the message.
    pub primary_label: Option<String>,
    /// Secondary places, shown with their own underline and message.
    pub labels: Vec<Label>,
    /// Innermost block instance first.
    pub trace: Vec<TraceFrame>,
    pub notes: Vec<String>,
    /// How to fix it: `help:` lines.
    pub helps: Vec<String>,
    /// Further independent errors found in the same run, in source order.
    pub more: Vec<Diagnostic>,
}

impl Diagnostic {
    pub fn new(kind: ErrorKind, message: impl Into<String>, location: Option<Location>) -> Diagnostic {
        Diagnostic {
            kind,
            message: message.into(),
            location,
            primary_label: None,
            labels: Vec::new(),
            trace: Vec::new(),
            notes: Vec::new(),
            helps: Vec::new(),
            more: Vec::new(),
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.helps.push(help.into());
        self
    }

    /// Adds a secondary label at `location`.
    pub fn with_label(mut self, location: Location, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { location, message: message.into() });
        self
    }

    /// Sets what the primary caret says.
    pub fn with_primary_label(mut self, message: impl Into<String>) -> Diagnostic {
        self.primary_label = Some(message.into());
        self
    }

    /// The diagnostic as text, with ANSI colours when `styled` (for a terminal).
    pub fn render(&self, styled: bool) -> String {
        use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};
        let title = Level::ERROR.primary_title(self.message.as_str()).id(self.kind.code());
        // The places to quote: the primary one first, then the secondary ones; places on the same
        // quoted text share one snippet.
        let mut places: Vec<(&Location, Option<&str>, bool)> = Vec::new();
        if let Some(loc) = &self.location {
            places.push((loc, self.primary_label.as_deref(), true));
        }
        places.extend(self.labels.iter().map(|l| (&l.location, Some(l.message.as_str()), false)));
        // Places in one quotable file share one snippet of the whole file (folded to the lines
        // that matter); others are quoted from their own excerpts, one snippet per excerpt.
        let mut group = annotate_snippets::Group::with_title(title);
        let mut done = vec![false; places.len()];
        for i in 0..places.len() {
            if done[i] {
                continue;
            }
            let (loc, ..) = places[i];
            let same_file: Vec<usize> = (i..places.len())
                .filter(|&j| !done[j] && places[j].0.path == loc.path && places[j].0.file_text.is_some())
                .collect();
            let snippet = match (&loc.file_text, same_file.len()) {
                (Some(text), n) if n > 1 => {
                    let annotations = same_file.iter().map(|&j| {
                        let (l, label, primary) = places[j];
                        done[j] = true;
                        let kind = if primary { AnnotationKind::Primary } else { AnnotationKind::Context };
                        kind.span(l.file_range.clone()).label(label)
                    });
                    Snippet::source(&**text)
                        .path(loc.path.as_str())
                        .fold(true)
                        .annotations(annotations.collect::<Vec<_>>())
                }
                _ => {
                    let annotations = (i..places.len())
                        .filter(|&j| {
                            !done[j]
                                && places[j].0.path == loc.path
                                && places[j].0.line == loc.line
                                && places[j].0.excerpt == loc.excerpt
                        })
                        .collect::<Vec<_>>()
                        .into_iter()
                        .map(|j| {
                            let (l, label, primary) = places[j];
                            done[j] = true;
                            let kind =
                                if primary { AnnotationKind::Primary } else { AnnotationKind::Context };
                            kind.span(l.range.clone()).label(label)
                        })
                        .collect::<Vec<_>>();
                    Snippet::source(loc.excerpt.as_str())
                        .line_start(loc.line)
                        .path(loc.path.as_str())
                        .fold(false)
                        .annotations(annotations)
                }
            };
            group = group.element(snippet);
        }
        let trace: Vec<String> = self
            .trace
            .iter()
            .map(|frame| match &frame.call_site {
                Some(site) => format!("in {} ({site})", frame.description),
                None => format!("in {}", frame.description),
            })
            .collect();
        for t in &trace {
            group = group.element(Level::NOTE.no_name().message(plain(t)));
        }
        for note in &self.notes {
            group = group.element(Level::NOTE.message(plain(note)));
        }
        for help in &self.helps {
            group = group.element(Level::HELP.message(plain(help)));
        }
        let renderer = if styled { Renderer::styled() } else { Renderer::plain() };
        let mut text = renderer.render(&[group]);
        text.push('\n');
        for more in &self.more {
            text.push('\n');
            text.push_str(&more.render(styled));
        }
        if !self.more.is_empty() {
            let summary = format!("{} errors", self.more.len() + 1);
            text.push('\n');
            text.push_str(
                &renderer
                    .render(&[annotate_snippets::Group::with_title(Level::ERROR.primary_title(summary))]),
            );
            text.push('\n');
        }
        text
    }
}

/// `text` with control characters (which a quoted file name or string may hold) escaped, so a
/// message cannot drive the terminal: footers are passed to the renderer as trusted text.
fn plain(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}
