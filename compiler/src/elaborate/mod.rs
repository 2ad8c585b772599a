//! From `.net` source to IR: load files (`use`), then elaborate the network into a graph.

pub mod builtins;
pub mod eval;
pub mod loader;
pub mod value;

pub use eval::Options;

use crate::ir::Graph;
use crate::syntax::Diagnostic;
use std::path::Path;

/// Parses and elaborates the network in `path` (and every file it uses) into a verified-shape graph.
pub fn compile_file(path: &Path, options: &Options) -> Result<Graph, Diagnostic> {
    with_deep_stack(|| eval::elaborate(&loader::load(path, None)?, options))
}

/// Like [`compile_file`] for text already in memory; `path` labels diagnostics and anchors `use`.
pub fn compile_source(path: &Path, text: &str, options: &Options) -> Result<Graph, Diagnostic> {
    with_deep_stack(|| eval::elaborate(&loader::load(path, Some(text.to_string()))?, options))
}

/// Like [`compile_source`] for bytes that should be UTF-8 text (a file read by other means, a
/// fuzzer's input): anything else is a diagnostic naming the first invalid byte.
pub fn compile_bytes(path: &Path, bytes: &[u8], options: &Options) -> Result<Graph, Diagnostic> {
    match std::str::from_utf8(bytes) {
        Ok(text) => compile_source(path, text, options),
        Err(e) => Err(Diagnostic::new(
            crate::syntax::ErrorKind::Io,
            format!(
                "cannot read {}: not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.valid_up_to()
            ),
            None,
        )),
    }
}

/// Stack for the front end. Parsing and elaboration recurse over the program's nesting, which the
/// parser bounds (bracket nesting, expression depth, block depth); this stack holds the worst case
/// of those bounds in an unoptimised build, whatever thread the caller is on.
const FRONT_END_STACK: usize = 256 << 20;

fn with_deep_stack<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netc-front-end".into())
            .stack_size(FRONT_END_STACK)
            .spawn_scoped(s, work)
            .expect("spawning the front-end thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
