//! `netc check FILE.net`: parse, elaborate and verify; exit 0 when the model is valid.

use std::path::PathBuf;

/// Check a .net file: syntax, names, types, every shape. Prints nothing and exits 0 when valid;
/// otherwise prints diagnostics (file:line:col, the source line, the chain of block instances) and
/// exits 1.
///
/// A compiled bundle (.netc) is checked as `netc run` loads it: header, checksum and stored graph.
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .net file, or a compiled bundle (.netc).
    pub file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match super::inspect::open(&args.file, None)? {
        super::inspect::Opened::Source(graph) => netc_compiler::ir::verify(&graph)?,
        super::inspect::Opened::Bundle(_) => {}
    }
    Ok(())
}
