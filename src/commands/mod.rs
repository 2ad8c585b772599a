//! One module per subcommand, plus what they share: loading a model and reporting errors.

pub mod bench;
pub mod check;
pub mod compile;
pub mod exec;
pub mod export;
pub mod info;
pub mod init;
pub mod inspect;
pub mod ir;
pub mod labels;
pub mod output;
pub mod run;
pub mod stream;
pub mod summary;
pub mod summary_depth;
pub mod top;

pub use output::write as write_output;

use netc_compiler::codegen::IsaChoice;
use netc_compiler::ir::Graph;
use netc_compiler::Diagnostic;
use std::path::Path;

/// Prints an error: diagnostics as rendered (source line and caret), anything else as `error: ...`.
pub fn report(e: &anyhow::Error) {
    if let Some(d) = e.downcast_ref::<Diagnostic>() {
        // Styled; anstream strips the colours when stderr is not a terminal or `--color never`.
        anstream::eprint!("{}", d.render(true));
    } else {
        eprintln!("error: {}", error_text(e));
    }
}

/// An error as one line: the chain of causes, leaving out a cause whose text its parent already
/// shows (errors that print their source inline).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// A per-sample shape given on the command line (`3x224x224`).
#[derive(Debug, Clone)]
pub struct ShapeArg(pub Vec<usize>);

/// Parses `3x224x224` (or `3,224,224`) into sizes.
pub fn parse_shape(text: &str) -> Result<ShapeArg, String> {
    let dims: Result<Vec<usize>, _> =
        text.split(['x', 'X', ',']).map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&x| x > 0) => Ok(ShapeArg(d)),
        _ => Err(format!("`{text}` is not a shape like 3x224x224 (positive sizes separated by `x`)")),
    }
}

/// Optimisation options shared by every command that optimises.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OptArgs {
    /// Skip an optimisation pass (repeatable); `netc ir --list-passes` lists them.
    #[arg(long = "disable-pass", value_name = "PASS")]
    pub disable_pass: Vec<String>,
    /// Run no optimisation pass at all.
    #[arg(short = 'O', value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub level: Option<u8>,
    /// Print node counts per op before and after each pass (to standard error).
    #[arg(long)]
    pub stats: bool,
    /// The ISA whose kernels the optimiser's cost models plan layer choices for: auto (this
    /// CPU's widest), avx512, avx2 or sse. The result runs on every ISA; only speed depends on it.
    #[arg(long = "tune-for", value_name = "ISA", value_parser = IsaChoice::parse, default_value = "auto")]
    pub tune_for: IsaChoice,
}

/// Runs the optimisation pipeline as the options say, up to `stop_after` when given.
pub fn optimize(graph: &mut Graph, opt: &OptArgs, stop_after: Option<&str>) -> anyhow::Result<()> {
    for name in &opt.disable_pass {
        if netc_compiler::passes::find(name).is_none() {
            anyhow::bail!("no pass named `{name}`; `netc ir --list-passes` lists them");
        }
    }
    if opt.level == Some(0) {
        return Ok(());
    }
    let options = netc_compiler::passes::Options {
        disabled: opt.disable_pass.clone(),
        stop_after: stop_after.map(str::to_string),
        verify_each: true,
        target: match opt.tune_for {
            IsaChoice::Fixed(isa) => Some(isa),
            IsaChoice::Auto => None,
        },
    };
    let stats = netc_compiler::passes::optimize(graph, &options)?;
    if opt.stats {
        let mut text = String::new();
        for s in &stats {
            text += &format!(
                "{} ({} rewrites): {} -> {} nodes\n",
                s.pass,
                s.rewrites,
                s.before.values().sum::<usize>(),
                s.after.values().sum::<usize>()
            );
            for note in &s.notes {
                text += &format!("    {note}\n");
            }
            let ops: std::collections::BTreeSet<&String> = s.before.keys().chain(s.after.keys()).collect();
            for op in ops {
                let (b, a) = (s.before.get(op).copied().unwrap_or(0), s.after.get(op).copied().unwrap_or(0));
                if a != b {
                    text += &format!("    {op:<32} {b:>5} -> {a}\n");
                }
            }
        }
        eprint!("{text}");
    }
    Ok(())
}

/// Loads and elaborates a `.net` file; a compiled bundle is refused by name, not read as text.
pub fn load_model(path: &Path, input: Option<ShapeArg>) -> anyhow::Result<Graph> {
    if netc::is_bundle(path) {
        anyhow::bail!(
            "{}: a compiled bundle, not a .net source; this command needs the .net file (`netc info` \
             describes bundles)",
            path.display()
        );
    }
    let options = netc_compiler::Options { input_shape: input.map(|s| s.0) };
    Ok(netc_compiler::compile_file(path, &options)?)
}
