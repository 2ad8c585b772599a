//! `netc ir`: dump the IR at a stage, as text, Graphviz DOT or JSON.

use netc_compiler::ir::print;
use std::path::PathBuf;

/// Dump a model's IR at a stage of compilation.
///
/// Stages: `parsed` (as written), `optimized` (after the whole pipeline; the default of every command
/// that executes), `after:PASS` (after the pipeline up to and including PASS; see --list-passes),
/// `clif` (each JIT kernel's Cranelift IR, headed by the IR node it implements), `asm` (each kernel's
/// machine code, disassembled).
///
/// text: one value per line with op, inputs, attributes, shape, weight scope and block instance.
/// dot:  Graphviz, one cluster per block instance, shapes on edges (`| dot -Tsvg > model.svg`).
/// json: {"inputs", "outputs", "nodes": [{"id", "name", "op", "inputs", "shape", "attrs"}]}.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    #[arg(required_unless_present = "list_passes")]
    pub file: Option<PathBuf>,
    /// Which stage of compilation to show: parsed, optimized or after:PASS.
    #[arg(long, value_parser = parse_stage, default_value = "parsed")]
    pub stage: Stage,
    /// List the optimisation passes in pipeline order and exit.
    #[arg(long)]
    pub list_passes: bool,
    #[command(flatten)]
    pub opt: super::OptArgs,
    /// For the clif and asm stages: the instruction set to generate for.
    #[command(flatten)]
    pub isa: super::exec::IsaArgs,
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

#[derive(Clone, Debug)]
pub enum Stage {
    /// The graph as written: every layer, training-only parts included.
    Parsed,
    /// After the whole optimisation pipeline.
    Optimized,
    /// After the pipeline up to and including this pass.
    After(String),
    /// Each kernel's Cranelift IR, annotated with the IR node it implements.
    Clif,
    /// Each kernel's machine code, disassembled.
    Asm,
}

fn parse_stage(text: &str) -> Result<Stage, String> {
    match text {
        "parsed" => Ok(Stage::Parsed),
        "optimized" | "optimised" => Ok(Stage::Optimized),
        "clif" => Ok(Stage::Clif),
        "asm" => Ok(Stage::Asm),
        _ => match text.strip_prefix("after:") {
            Some(pass) if netc_compiler::passes::find(pass).is_some() => Ok(Stage::After(pass.to_string())),
            Some(pass) => Err(format!("no pass named `{pass}`; `netc ir --list-passes` lists them")),
            None => Err(format!("`{text}` is not a stage: use parsed, optimized, after:PASS, clif or asm")),
        },
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.list_passes {
        let mut text = String::new();
        for pass in netc_compiler::passes::PIPELINE {
            text += &format!("{:<24} {}\n", pass.name(), pass.summary());
        }
        return super::write_output(None, text.as_bytes());
    }
    let file = args.file.as_deref().expect("clap requires FILE unless --list-passes");
    let mut graph = super::load_model(file, args.input)?;
    match &args.stage {
        Stage::Parsed => {}
        Stage::Optimized => super::optimize(&mut graph, &args.opt, None)?,
        Stage::After(pass) => super::optimize(&mut graph, &args.opt, Some(pass))?,
        Stage::Clif | Stage::Asm => {
            super::optimize(&mut graph, &args.opt, None)?;
            let text = kernels(graph, matches!(args.stage, Stage::Asm), &args.isa)?;
            return super::write_output(args.output.as_deref(), text.as_bytes());
        }
    }
    let text = match args.format {
        Format::Text => print::to_text(&graph),
        Format::Dot => print::to_dot(&graph),
        Format::Json => serde_json::to_string_pretty(&print::to_json(&graph))? + "\n",
    };
    super::write_output(args.output.as_deref(), text.as_bytes())
}

/// The CLIF or disassembly of every kernel of `graph`, each headed by the node it implements and
/// the implementation it got for `isa`.
fn kernels(graph: netc_compiler::ir::Graph, asm: bool, isa: &super::exec::IsaArgs) -> anyhow::Result<String> {
    use netc_compiler::codegen::{compile, CompileOptions};
    let program = netc_compiler::lower::Program::new(graph)?;
    let options = CompileOptions {
        keep_clif: !asm,
        isa: isa.isa,
        check_bounds: isa.check_bounds,
        ..Default::default()
    };
    let compiled = compile(&program.requests(), options)?;
    let mut text = String::new();
    for kernel in &compiled.kernels {
        text += &format!(
            "; ---- kernel `{}`: {}: {}\n",
            kernel.name,
            kernel.implementation,
            kernel.spec.describe(kernel.isa)
        );
        if asm {
            text += &kernel.disassembly();
        } else {
            text += kernel.clif().unwrap_or("");
        }
        text += "\n";
    }
    Ok(text)
}
