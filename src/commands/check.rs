//! `netc check FILE.net`: parse, elaborate and verify; exit 0 when the model is valid.

use std::path::PathBuf;

/// Check a .net file: syntax, names, types, every shape. Prints nothing and exits 0 when valid;
/// otherwise prints diagnostics (file:line:col, the source line, the chain of block instances) and
/// exits 1.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    pub file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = super::load_model(&args.file, None)?;
    netc_compiler::ir::verify(&graph)?;
    Ok(())
}
