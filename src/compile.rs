//! [`compile_bundle`]: a `.net` model and its weights compiled into a bundle (`.netc`), what
//! `netc compile` writes, as a library call.

use crate::{Error, Options};
use netc_compiler::codegen::jit::check_program;
use netc_compiler::codegen::{Isa, IsaChoice};
use netc_compiler::lower::Program;
use netc_runtime::{bundle, jit, BoundWeights};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

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
    let tuned_for = match options.isa {
        IsaChoice::Fixed(isa) => Some(isa),
        IsaChoice::Auto => Isa::best().ok(),
    };
    write_bundle(&program, &bound, output, tuned_for, file.metadata().clone(), threads)?;
    Ok(())
}

/// What [`write_bundle`] proved: distinct kernels per ISA, and the seconds the proofs took.
#[derive(Debug, Clone)]
pub struct BundleReport {
    pub proved: Vec<(Isa, usize)>,
    pub check_secs: f64,
}

/// Writes `program` with its bound weights as the bundle `output`, after proving every kernel in
/// bounds for each ISA this machine runs (on `threads` threads), with its provenance: the ISAs
/// proved, the ISA the optimiser planned for, and the weight file's metadata (`netc init` marks
/// random weights there). The step `netc compile` and [`compile_bundle`] share.
pub fn write_bundle(
    program: &Program,
    bound: &BoundWeights,
    output: &Path,
    tuned_for: Option<Isa>,
    weights_metadata: BTreeMap<String, String>,
    threads: usize,
) -> Result<BundleReport, Error> {
    let check_start = Instant::now();
    let mut proved = Vec::new();
    for isa in Isa::available() {
        proved.push((isa, check_program(&program.requests(), isa, threads)?));
    }
    let check_secs = check_start.elapsed().as_secs_f64();
    let packed = jit::pack(program, bound)?;
    let provenance = bundle::Provenance {
        proved: proved.iter().map(|&(isa, _)| isa).collect(),
        tuned_for,
        weights_metadata,
    };
    bundle::write_program_with(output, program, &packed, &provenance)?;
    Ok(BundleReport { proved, check_secs })
}

#[cfg(test)]
mod tests {
    use crate::{Model, Options, Tensor};

    const TINY: &str = "network tiny(image: [3, 10, 10]) {
  image |> conv(4, 3, pad = 1) @conv |> batchnorm @bn |> relu |> global_avgpool |> flatten |> linear(3) @fc
}
";

    /// A bundle from `compile_bundle` loads, runs like the `.net` model it came from, and is
    /// summarised as it runs (BatchNorm folded); `check_source` and `summary` see the source.
    #[test]
    fn compile_bundle_matches_the_source_model() -> Result<(), crate::Error> {
        let dir = tempfile::tempdir()?;
        let (net, weights, out) =
            (dir.path().join("tiny.net"), dir.path().join("w.safetensors"), dir.path().join("tiny.netc"));
        std::fs::write(&net, TINY)?;
        crate::write_random_weights(&net, &weights, 5)?;
        let options = Options { threads: Some(1), ..Default::default() };
        super::compile_bundle(&net, &weights, &out, &options)?;
        let input = Tensor::new(vec![2, 3, 10, 10], (0..600).map(|i| (i % 17) as f32 / 17.0).collect())?;
        let from_bundle = Model::load_with(&out, &options)?.run(&input)?;
        let from_net = Model::from_net(&net, &weights, &options)?.run(&input)?;
        assert_eq!(from_bundle.shape, [2, 3]);
        assert_eq!(from_bundle.data, from_net.data);

        let source = crate::summary(&net, false)?;
        assert_eq!(source.layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>()[..2], ["conv", "bn"]);
        let bundle = crate::summary(&out, false)?;
        assert!(bundle.layers.len() < source.layers.len(), "BatchNorm folded into the conv");
        assert_eq!(bundle.total_macs, source.total_macs - source.layers[1].macs);

        crate::check_source("<string>", TINY)?;
        let bad = crate::check_source("<string>", &TINY.replace("relu", "rleu")).unwrap_err();
        assert!(bad.to_string().contains("<string>:2:"), "{bad}");
        assert!(super::compile_bundle(&net, dir.path().join("missing"), dir.path().join("x.netc"), &options)
            .is_err());
        assert!(!dir.path().join("x.netc").exists());
        Ok(())
    }
}
