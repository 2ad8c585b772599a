//! [`check_file`] and [`check_source`]: what `netc check` does (parse, elaborate, verify every
//! shape), returning the model's graph or the first diagnostic.

use crate::Error;
use netc_compiler::ir::Graph;
use std::path::Path;

/// Checks the `.net` file at `path` (and every file it `use`s): syntax, names, types, every
/// shape. A malformed model is [`Error::Source`], whose `Display` renders the diagnostic with
/// its file, line, column, source line and caret.
pub fn check_file(path: impl AsRef<Path>) -> Result<Graph, Error> {
    let path = path.as_ref();
    verified(path, netc_compiler::compile_file(path, &Default::default())?)
}

/// [`check_file`] for `.net` text in memory; `path` labels the diagnostics and anchors relative
/// `use` paths (it need not exist).
pub fn check_source(path: impl AsRef<Path>, text: &str) -> Result<Graph, Error> {
    let path = path.as_ref();
    verified(path, netc_compiler::compile_source(path, text, &Default::default())?)
}

/// The graph, if it passes the IR verifier (elaboration already checks what a user can get
/// wrong; a failure here is a bug in netc, reported against the file).
fn verified(path: &Path, graph: Graph) -> Result<Graph, Error> {
    netc_compiler::ir::verify(&graph).map_err(|e| Error::Usage {
        path: path.to_path_buf(),
        what: format!("the elaborated graph fails verification (a bug in netc): {e}"),
    })?;
    Ok(graph)
}
