//! Where a command's results go: standard output or a file (written atomically).
//!
//! A reader that stops early (`netc ir M.net | head`) closes the pipe; Rust ignores SIGPIPE, so the
//! next write fails with `BrokenPipe`. That is the reader's choice, not an error: the rest of the
//! output is dropped and the command succeeds quietly.

use anyhow::Context as _;
use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to standard output; a closed pipe ends the output quietly (see the module doc).
pub fn stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then renamed), or
/// to standard output when `path` is `None`.
pub fn write(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        None => stdout(bytes),
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            tmp.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
            tmp.persist(path)
                .map_err(|e| e.error)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        }
    }
}
