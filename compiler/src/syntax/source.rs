//! Source files and byte spans, and their translation to `line:col` locations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both `self` and `other` (same file).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// A span resolved to a human location: path, 1-based line and column, and the text of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub line: usize,
    pub col: usize,
    /// The whole source line the span starts on, without its newline.
    pub line_text: String,
    /// Width of the caret underline in characters (at least 1, at most the rest of the line).
    pub width: usize,
    /// The source lines the span covers (long lines cut around the span, cut ends marked `...`), and
    /// the span's byte range in them: what a renderer quotes and underlines.
    pub excerpt: String,
    pub range: std::ops::Range<usize>,
    /// The whole file, when it is small enough to quote from freely (a diagnostic with several
    /// places in one file shows them in one snippet), with the span's byte range in it.
    pub file_text: Option<Arc<str>>,
    pub file_range: std::ops::Range<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.path, self.line, self.col)
    }
}

/// One loaded source file.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
    /// Small, with short lines: diagnostics may quote any of it.
    quotable: bool,
    line_starts: Vec<usize>,
}

/// Every file read while compiling one network.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Adds a file; a leading UTF-8 byte-order mark (some editors write one) is dropped.
    pub fn add(&mut self, path: impl Into<PathBuf>, text: String) -> FileId {
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        };
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let quotable = text.len() <= QUOTABLE_FILE_BYTES && text.lines().all(|l| l.len() <= EXCERPT_CHARS);
        self.files.push(SourceFile { path: path.into(), text: text.into(), line_starts, quotable });
        FileId((self.files.len() - 1) as u32)
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files.iter().position(|f| f.path == path).map(|i| FileId(i as u32))
    }

    pub fn text(&self, span: Span) -> &str {
        let text = &self.file(span.file).text;
        text.get(span.start as usize..span.end as usize).unwrap_or("")
    }

    /// Resolves a span to path, line, column and the line's text.
    pub fn locate(&self, span: Span) -> Location {
        let file = self.file(span.file);
        let start = (span.start as usize).min(file.text.len());
        let line_index = file.line_starts.partition_point(|&s| s <= start).saturating_sub(1);
        let line_start = file.line_starts[line_index];
        let line_end = file.text[line_start..].find('\n').map_or(file.text.len(), |i| line_start + i);
        let line_text = file.text[line_start..line_end].trim_end_matches('\r').to_string();
        let col = file.text[line_start..start].chars().count() + 1;
        let end = (span.end as usize).clamp(start, line_end);
        let rest = line_text.chars().count().saturating_sub(col - 1);
        let width = file.text[start..end].chars().count().clamp(1, rest.max(1));
        let (excerpt, range) =
            excerpt(&file.text, line_start, line_end, start, span.end as usize, col, width);
        Location {
            path: file.path.display().to_string(),
            line: line_index + 1,
            col,
            line_text,
            width,
            excerpt,
            range,
            file_text: file.quotable.then(|| file.text.clone()),
            file_range: start..(span.end as usize).clamp(start, file.text.len()),
        }
    }
}

/// The largest file a diagnostic may quote from freely.
const QUOTABLE_FILE_BYTES: usize = 1 << 20;

/// The most characters of a source line a diagnostic quotes.
const EXCERPT_CHARS: usize = 120;
/// The most lines a multi-line span quotes; a longer span is underlined on its first line only.
const EXCERPT_LINES: usize = 8;

/// The text a diagnostic quotes for the span `start..end` of `text` whose first line is
/// `line_start..line_end`, with the span's range in it. A span over a few short lines quotes them
/// whole; otherwise the first line is quoted, and a line longer than [`EXCERPT_CHARS`] is cut around
/// the caret (a machine-generated source can be one line of megabytes).
fn excerpt(
    text: &str,
    line_start: usize,
    line_end: usize,
    start: usize,
    end: usize,
    col: usize,
    width: usize,
) -> (String, std::ops::Range<usize>) {
    let end = end.clamp(start, text.len());
    if end > line_end {
        let last_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
        let quoted = &text[line_start..last_end];
        let short = quoted.lines().count() <= EXCERPT_LINES
            && quoted.lines().all(|l| l.chars().count() <= EXCERPT_CHARS);
        // A span ending right after a newline underlines up to that line's end.
        let end = if text[..end].ends_with('\n') { end - 1 } else { end };
        if short {
            let quoted = quoted.trim_end_matches(['\r', '\n']);
            let clamp = |i: usize| (i - line_start).min(quoted.len());
            return (quoted.to_string(), clamp(start)..clamp(end));
        }
    }
    let line = text[line_start..line_end].trim_end_matches('\r');
    let len = line.chars().count();
    let byte_of = |s: &str, chars: usize| s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i);
    if len <= EXCERPT_CHARS {
        let a = byte_of(line, col - 1);
        let b = byte_of(line, col - 1 + width).max(a);
        return (line.to_string(), a..b);
    }
    let first = (col - 1).saturating_sub(EXCERPT_CHARS / 3).min(len - EXCERPT_CHARS);
    let last = first + EXCERPT_CHARS;
    let mut quoted = String::new();
    if first > 0 {
        quoted.push_str("...");
    }
    let lead = quoted.len();
    let cut: String = line.chars().skip(first).take(EXCERPT_CHARS).collect();
    quoted.push_str(&cut);
    if last < len {
        quoted.push_str("...");
    }
    let a = lead + byte_of(&cut, col - 1 - first);
    let b = (lead + byte_of(&cut, (col - 1 + width).min(last) - first)).max(a + 1).min(quoted.len());
    (quoted, a..b)
}
