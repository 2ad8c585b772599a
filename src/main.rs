//! `netc`: compile `.net` models, run them, and look inside.
//!
//! The binary is thin: argument parsing (clap) and printing. The work is in `netc-compiler` and
//! `netc-runtime`.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// netc - a neural-network graph compiler and runtime.
///
/// Describe a CNN in a `.net` file (layers, blocks, residual skips, inception branches), check it,
/// inspect its IR and run it on torchvision weights.
///
/// Examples:
///   netc check models/resnet50.net
///   netc summary models/googlenet.net --train
///   netc ir models/resnet18.net --format dot > resnet18.dot
///   netc init models/resnet50.net -o resnet50.safetensors
///   netc run models/resnet50.net --weights resnet50.safetensors --input models/sample/cat.jpg
///   netc compile models/resnet50.net --weights resnet50.safetensors -o resnet50.netc
///   netc bench resnet50.netc --batch 8
///   netc export models/resnet50.net --weights resnet50.safetensors --onnx resnet50.onnx
///   netc info resnet50.netc
#[derive(Parser)]
#[command(name = "netc", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// When to colour diagnostics: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: clap::ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Check(commands::check::Args),
    Summary(commands::summary::Args),
    Ir(commands::ir::Args),
    Init(commands::init::Args),
    Run(commands::run::Args),
    Compile(commands::compile::Args),
    Bench(commands::bench::Args),
    Export(commands::export::Args),
    Info(commands::info::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    anstream::ColorChoice::write_global(match cli.color {
        clap::ColorChoice::Auto => anstream::ColorChoice::Auto,
        clap::ColorChoice::Always => anstream::ColorChoice::Always,
        clap::ColorChoice::Never => anstream::ColorChoice::Never,
    });
    // `netc run` streaming a folder exits with 3 when it skipped unreadable inputs.
    let mut status = ExitCode::SUCCESS;
    let result = match cli.command {
        Command::Check(args) => commands::check::run(args),
        Command::Summary(args) => commands::summary::run(args),
        Command::Ir(args) => commands::ir::run(args),
        Command::Init(args) => commands::init::run(args),
        Command::Run(args) => commands::run::run(args).map(|code| status = code),
        Command::Compile(args) => commands::compile::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Info(args) => commands::info::run(args),
    };
    match result {
        Ok(()) => status,
        Err(e) => {
            commands::report(&e);
            ExitCode::FAILURE
        }
    }
}
