//! `netc compile FILE.net --weights W.safetensors -o M.netc`: a bundle with the optimised plan and the
//! weights already in the kernels' packed layouts, which `netc run M.netc` maps without copying.

use netc_compiler::codegen::{Isa, IsaChoice};
use std::path::PathBuf;
use std::time::Instant;

/// Compile a model and its weights into a bundle (.netc).
///
/// The bundle holds the optimised graph (BatchNorm folded, layers fused, ...) and every kernel's
/// weights already packed (blocked, 64-byte aligned), behind a header with a format version and a
/// checksum. `netc run M.netc` and `netc bench M.netc` memory-map it and JIT-compile the kernels:
/// no weight is copied and nothing is re-optimised. The packed layout is the same for every ISA, so
/// a bundle compiled on one machine runs on any other (AVX-512, AVX2 or SSE). Before writing,
/// every kernel the bundle will need is proved, by a static analysis of the generated code, to
/// load and store only inside its buffers, for each ISA this machine runs; the bundle records
/// them, and a machine with another ISA proves its kernels when it loads the bundle. The weight
/// file's metadata (e.g. `netc init`'s mark of random weights) is kept in the bundle.
/// `netc info M.netc` shows what a bundle records.
///
/// Example:
///   netc compile models/resnet50.net --weights resnet50.safetensors -o resnet50.netc
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model file.
    pub file: PathBuf,
    /// The weights (.safetensors).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    /// Accept NaN and infinite weights (by default the first one is an error naming the tensor).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// The bundle to write.
    #[arg(short, long, value_name = "M.netc")]
    pub output: PathBuf,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let source = super::exec::Source::open(&args.file, Some(&args.weights), args.allow_nonfinite)?;
    // Fail before the (possibly long) compilation, not after it.
    netc_runtime::io::atomic::check_writable(&args.output)?;
    let (_, bound) = source.bound()?;
    let program = source.program(&args.opt)?;
    // Every kernel proved in bounds for each ISA this machine runs, before anything is written.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tuned_for = match args.opt.tune_for {
        IsaChoice::Fixed(isa) => Some(isa),
        IsaChoice::Auto => Isa::best().ok(),
    };
    let report =
        netc::write_bundle(&program, &bound, &args.output, tuned_for, source.weights_metadata(), threads)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let proved: Vec<String> = report.proved.iter().map(|(isa, n)| format!("{n} for {isa}")).collect();
    let check_secs = report.check_secs;
    let bytes = std::fs::metadata(&args.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{}: {} kernels, {:.1} MiB, in {:.2} s (distinct kernels proved in bounds: {}, {check_secs:.2} s)",
        args.output.display(),
        program.steps().len(),
        bytes as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64(),
        proved.join(", "),
    );
    Ok(())
}
