//! `netc ir`: dump the IR at a stage, as text, Graphviz DOT or JSON.

use netc_compiler::ir::print;
use std::path::PathBuf;

/// Dump a model's IR.
///
/// text: one value per line with op, inputs, attributes, shape, weight scope and block instance.
/// dot:  Graphviz, one cluster per block instance, shapes on edges (`| dot -Tsvg > model.svg`).
/// json: {"inputs", "outputs", "nodes": [{"id", "name", "op", "inputs", "shape", "attrs"}]}.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    pub file: PathBuf,
    /// Which stage of compilation to show.
    #[arg(long, value_enum, default_value_t = Stage::Parsed)]
    pub stage: Stage,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Override the declared input shape, e.g. 3x299x299.
    #[arg(long, value_parser = super::parse_shape, value_name = "CxHxW")]
    pub input: Option<super::ShapeArg>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Stage {
    /// The graph as written: every layer, training-only parts included.
    Parsed,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = super::load_model(&args.file, args.input)?;
    match args.stage {
        Stage::Parsed => {}
    }
    let text = match args.format {
        Format::Text => print::to_text(&graph),
        Format::Dot => print::to_dot(&graph),
        Format::Json => serde_json::to_string_pretty(&print::to_json(&graph))? + "\n",
    };
    super::write_output(args.output.as_deref(), text.as_bytes())
}
