//! Where a command's results go: standard output or a file (written atomically).
//!
//! A reader that stops early (`netc ir M.net | head`) closes the pipe; Rust ignores SIGPIPE, so the
//! next write fails with `BrokenPipe`. That is the reader's choice, not an error: the rest of the
//! output is dropped and the command succeeds quietly.

use anyhow::Context as _;
use netc_runtime::io::atomic;
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

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, renamed when
/// complete, with the usual permissions), or to standard output when `path` is `None`.
pub fn write(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        None => stdout(bytes),
        Some(path) => {
            // Names the missing directory, not the temporary file that could not be created.
            atomic::check_writable(path)?;
            Ok(atomic::write_bytes(path, bytes)?)
        }
    }
}
