//! [`compile_bundle`]: a `.net` model and its weights compiled into a bundle (`.netc`), what
//! `netc compile` writes, as a library call.

use crate::{Error, Options};
use netc_compiler::codegen::jit::check_program;
use netc_compiler::codegen::Isa;
use netc_compiler::lower::Program;
use netc_runtime::{bundle, jit};
use std::path::Path;

/// Compiles the `.net` model `net` with its weights (safetensors with the model's scoped names)
/// into the bundle `output`: the optimised program (as `options` say: optimiser on or off,
/// passes skipped, the ISA the optimiser tunes for) and every kernel's weights already packed.
///
/// Before anything is written, every kernel the bundle needs is proved in bounds (a static
/// analysis of the generated code) for each ISA this machine runs, and the bundle records those
/// ISAs, so [`crate::Model::load`] skips the proof for them. `options.threads` bounds the threads
/// of that proof (default: the machine's available parallelism); `options.isa` does not restrict
/// it. On error nothing is left at `output` by this call (the bundle writer writes a temporary
/// file and renames it).
pub fn compile_bundle(
    net: impl AsRef<Path>,
    weights: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &Options,
) -> Result<(), Error> {
    let (net, output) = (net.as_ref(), output.as_ref());
    let parsed = netc_compiler::compile_file(net, &Default::default())?;
    let file = netc_runtime::WeightFile::open(weights.as_ref())?;
    let bound = netc_runtime::bind_with(
        &parsed,
        &file,
        netc_runtime::weights::BindOptions { allow_nonfinite: options.allow_nonfinite },
    )?;
    let program = Program::new(crate::model::optimized(net, parsed, options)?)?;
    let threads =
        options.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let mut proved = Vec::new();
    for isa in Isa::available() {
        check_program(&program.requests(), isa, threads)?;
        proved.push(isa);
    }
    let packed = jit::pack(&program, &bound)?;
    bundle::write_proved_program(output, &program, &packed, &proved)?;
    Ok(())
}
