//! `netc summary`: a table (or JSON) of layers with output shapes, parameters and MACs.

use super::inspect::{self, Opened};
use super::summary_depth as depth;
use anyhow::bail;
use netc_compiler::ir::{summarize, Summary};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Summarise a model: a row per layer (scope, op, output shape, parameters, MACs), then totals.
///
/// The rows: weight scope name, op, output shape, parameters and multiply-accumulates per image.
/// Training-only parts (auxiliary classifiers, dropout) are left out unless --train. A compiled
/// bundle (.netc) is summarised from the optimised graph it stores (fused layers, folded
/// BatchNorm): what `netc run` executes. --depth N adds up the layers of each block instance by
/// weight scope, a row for every scope 1 to N parts deep (`layer1`, then `layer1.0` under it,
/// ...), like torchinfo's depth; the totals count every layer once.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model: a .net file, or a compiled bundle (.netc).
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
    /// A row per scope 1 to N parts deep, adding up its layers (1: `layer1`, 2: also `layer1.0`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub depth: Option<u32>,
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
    let (summary, optimized, stored) = match inspect::open(&args.file, args.input)? {
        Opened::Source(graph) => {
            let mut optimized = graph.clone();
            super::optimize(&mut optimized, &args.opt, None)?;
            (summarize(&graph, args.train), optimized, false)
        }
        Opened::Bundle(graph) => {
            inspect::refuse_optimizer_options(&args.file, &args.opt, "summary")?;
            if args.train {
                bail!(
                    "{}: a compiled bundle holds the inference graph only; --train needs the .net source",
                    args.file.display()
                );
            }
            (summarize(&graph, false), graph, true)
        }
    };
    let summary = match args.depth {
        Some(depth) => depth::aggregate(summary, depth as usize),
        None => summary,
    };
    let activations = Activations {
        planned_bytes: netc_compiler::lower::plan(&optimized).arena_bytes(1),
        naive_bytes: netc_compiler::lower::memory::naive_bytes(&optimized),
    };
    let text = match args.format {
        Format::Table if args.depth.is_some() => table(&depth::indented(summary), &activations, stored),
        Format::Table => table(&summary, &activations, stored),
        Format::Json => {
            let mut value = serde_json::to_value(&summary)?;
            if let Some(depth) = args.depth {
                value["depth"] = depth.into();
            }
            value["graph"] = (if stored { "optimized" } else { "parsed" }).into();
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

/// The table; `stored`: the graph is a bundle's (optimised), which the title says.
fn table(s: &Summary, activations: &Activations, stored: bool) -> String {
    let name_w = s.layers.iter().map(|l| l.name.len()).max().unwrap_or(4).max(5);
    let op_w = s.layers.iter().map(|l| l.op.len()).max().unwrap_or(2).max(2);
    let shape_w = s.layers.iter().map(|l| l.output_shape.to_string().len()).max().unwrap_or(5).max(12);
    let mut out = String::new();
    let stage = if stored {
        "; the optimised graph stored in the bundle: layers fused, BatchNorm folded"
    } else {
        ""
    };
    let _ = writeln!(out, "{} (input {}{stage})", s.model, s.input);
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
