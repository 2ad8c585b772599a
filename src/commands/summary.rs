//! `netc summary`: a table (or JSON) of layers with output shapes, parameters and MACs.

use netc_compiler::ir::{summarize, Summary};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Summarise a model: one row per layer (weight scope name, op, output shape, parameters,
/// multiply-accumulates per image), then totals.
///
/// Training-only parts (auxiliary classifiers, dropout) are left out unless --train.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    pub file: PathBuf,
    /// Override the declared input shape, e.g. 3x299x299.
    #[arg(long, value_parser = super::parse_shape, value_name = "CxHxW")]
    pub input: Option<super::ShapeArg>,
    /// Include training-only parts.
    #[arg(long)]
    pub train: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Activation memory per image of the graph `netc run` executes: the static plan's arena against the
/// naive sum of every value.
#[derive(serde::Serialize)]
struct Activations {
    planned_bytes: usize,
    naive_bytes: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = super::load_model(&args.file, args.input)?;
    let summary = summarize(&graph, args.train);
    let mut optimized = graph.clone();
    super::optimize(&mut optimized, &args.opt, None)?;
    let activations = Activations {
        planned_bytes: netc_compiler::lower::plan(&optimized).arena_bytes(1),
        naive_bytes: netc_compiler::lower::memory::naive_bytes(&optimized),
    };
    let text = match args.format {
        Format::Table => table(&summary, &activations),
        Format::Json => {
            let mut value = serde_json::to_value(&summary)?;
            value["activations"] = serde_json::to_value(&activations)?;
            serde_json::to_string_pretty(&value)? + "\n"
        }
    };
    super::write_output(None, text.as_bytes())
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(s: &Summary, activations: &Activations) -> String {
    let name_w = s.layers.iter().map(|l| l.name.len()).max().unwrap_or(4).max(5);
    let op_w = s.layers.iter().map(|l| l.op.len()).max().unwrap_or(2).max(2);
    let shape_w = s.layers.iter().map(|l| l.output_shape.to_string().len()).max().unwrap_or(5).max(12);
    let mut out = String::new();
    let _ = writeln!(out, "{} (input {})", s.model, s.input);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<op_w$}  {:<shape_w$}  {:>12}  {:>15}",
        "layer", "op", "output shape", "params", "MACs"
    );
    for l in &s.layers {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<op_w$}  {:<shape_w$}  {:>12}  {:>15}",
            l.name,
            l.op,
            l.output_shape.to_string(),
            thousands(l.params),
            thousands(l.macs)
        );
    }
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<op_w$}  {:<shape_w$}  {:>12}  {:>15}",
        "total",
        "",
        "",
        thousands(s.total_params),
        thousands(s.total_macs)
    );
    let _ = writeln!(
        out,
        "activations per image: {} planned (static memory plan), {} naive (every value on its own)",
        mib(activations.planned_bytes),
        mib(activations.naive_bytes)
    );
    out
}
