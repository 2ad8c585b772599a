//! `netc ir`: dump the IR at a stage, as text, Graphviz DOT or JSON.

use super::inspect::{self, Opened};
use anyhow::bail;
use netc_compiler::ir::print;
use std::path::PathBuf;

/// Dump a model's IR at a stage of compilation.
///
/// Stages (--stage):
///   parsed       the graph as written: every layer, training-only parts included (the default
///                for a .net file)
///   optimized    after the whole optimisation pipeline: what `netc run` executes (the default,
///                and the only graph, of a compiled bundle)
///   after:PASS   after the pipeline up to and including PASS (`--list-passes` names them)
///   clif         each JIT kernel's Cranelift IR, headed by the IR node it implements
///   asm          each JIT kernel's machine code, disassembled, headed the same way
///
/// Formats (--format) of the graph stages:
///   text   one value per line: op, inputs, attributes, shape, weight scope, block instance
///   dot    Graphviz, a cluster per block instance, shapes on edges (`| dot -Tsvg > model.svg`)
///   json   {"inputs", "outputs", "nodes": [{"id", "name", "op", "inputs", "shape", "attrs"}]}
///
/// Examples:
///   netc ir models/resnet18.net --stage optimized
///   netc ir models/resnet18.net --format dot | dot -Tsvg > resnet18.svg
///   netc ir resnet50.netc --stage asm | less
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model: a .net file, or a compiled bundle (.netc), which stores its optimised graph.
    #[arg(required_unless_present = "list_passes")]
    pub file: Option<PathBuf>,
    /// The stage: parsed, optimized, after:PASS, clif or asm (default: parsed for a .net file,
    /// optimized for a bundle).
    #[arg(long, value_parser = parse_stage, value_name = "STAGE")]
    pub stage: Option<Stage>,
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
    let (mut graph, stage, optimized) = match inspect::open(file, args.input)? {
        Opened::Source(graph) => (graph, args.stage.unwrap_or(Stage::Parsed), false),
        Opened::Bundle(graph) => {
            inspect::refuse_optimizer_options(file, &args.opt, "ir")?;
            let stage = args.stage.unwrap_or(Stage::Optimized);
            if matches!(stage, Stage::Parsed | Stage::After(_)) {
                bail!(
                    "{}: a compiled bundle stores the optimised graph only: use --stage optimized (the \
                     default for a bundle), clif or asm, or give the .net source",
                    file.display()
                );
            }
            (graph, stage, true)
        }
    };
    match &stage {
        Stage::Parsed => {}
        Stage::After(pass) => super::optimize(&mut graph, &args.opt, Some(pass))?,
        Stage::Optimized | Stage::Clif | Stage::Asm if !optimized => {
            super::optimize(&mut graph, &args.opt, None)?
        }
        Stage::Optimized | Stage::Clif | Stage::Asm => {}
    }
    if matches!(stage, Stage::Clif | Stage::Asm) {
        let text = kernels(graph, matches!(stage, Stage::Asm), &args.isa)?;
        return super::write_output(args.output.as_deref(), text.as_bytes());
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
