//! One module per subcommand, plus what they share: loading a model and reporting errors.

pub mod check;
pub mod init;
pub mod ir;
pub mod run;
pub mod summary;

use anyhow::Context as _;
use netc_compiler::ir::Graph;
use netc_compiler::Diagnostic;
use std::io::Write as _;
use std::path::Path;

/// Prints an error: diagnostics as rendered (source line and caret), anything else as `error: ...`.
pub fn report(e: &anyhow::Error) {
    if let Some(d) = e.downcast_ref::<Diagnostic>() {
        eprint!("{d}");
    } else {
        eprintln!("error: {e:#}");
    }
}

/// A per-sample shape given on the command line (`3x224x224`).
#[derive(Debug, Clone)]
pub struct ShapeArg(pub Vec<usize>);

/// Parses `3x224x224` (or `3,224,224`) into sizes.
pub fn parse_shape(text: &str) -> Result<ShapeArg, String> {
    let dims: Result<Vec<usize>, _> = text.split(['x', 'X', ',']).map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&x| x > 0) => Ok(ShapeArg(d)),
        _ => Err(format!("`{text}` is not a shape like 3x224x224 (positive sizes separated by `x`)")),
    }
}

/// Loads and elaborates a `.net` file.
pub fn load_model(path: &Path, input: Option<ShapeArg>) -> anyhow::Result<Graph> {
    let options = netc_compiler::Options { input_shape: input.map(|s| s.0) };
    Ok(netc_compiler::compile_file(path, &options)?)
}

/// Writes `text` to `path` atomically (temporary file in the same directory, then rename), or to
/// stdout when `path` is `None`.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).context("cannot write to standard output")?;
            Ok(())
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            tmp.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
            tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        }
    }
}
