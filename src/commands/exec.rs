//! What `run`, `bench` and `compile` share: opening a model for execution, either a `.net` file with
//! a weight file or a compiled bundle, lowering it to a program and building the JIT executable.

use anyhow::bail;
use netc_compiler::codegen::IsaChoice;
use netc_compiler::ir::Graph;
use netc_compiler::lower::Program;
use netc_runtime::bundle::Bundle;
use netc_runtime::jit::{self, MicroBatch, WeightBuf};
use netc_runtime::weights::BindOptions;
use netc_runtime::{BoundWeights, WeightFile};
use std::path::Path;
use std::sync::Arc;

/// A model ready to be executed.
#[allow(clippy::large_enum_variant)] // one per command run
pub enum Source {
    /// A compiled bundle: the optimised graph and packed weights, read in place.
    Bundle(Arc<Bundle>),
    /// A `.net` model as written, and its weight file.
    Net { parsed: Graph, file: WeightFile, options: BindOptions },
}

/// The instruction-set option of `run` and `bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IsaArgs {
    /// Instruction set of the kernels: auto (the widest the CPU has, or the NETC_ISA environment
    /// variable), avx512, avx2 or sse (128-bit Cranelift code). An ISA the CPU lacks is an error.
    #[arg(long, value_name = "ISA", value_parser = IsaChoice::parse, default_value = "auto")]
    pub isa: IsaChoice,
    /// Prove every generated kernel's loads and stores inside their buffers before running it (a
    /// static analysis of the generated code). Done anyway for `.net` sources and for bundles not
    /// proved for this ISA by `netc compile`; this forces it for the others too.
    #[arg(long)]
    pub check_bounds: bool,
}

/// The micro-batch option of `run` and `bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MicroBatchArgs {
    /// Run a batch as consecutive micro-batches of at most this many images: auto (when the whole
    /// batch's activations would spill out of the last-level cache between layers and the weights
    /// are cheap to read again: MobileNetV2 at batch 8 runs in pairs), whole (one pass), or a
    /// number. Results are the same either way; speed and activation memory differ.
    #[arg(long, value_name = "auto|whole|N", value_parser = MicroBatch::parse, default_value = "auto")]
    pub micro_batch: MicroBatch,
}

impl Source {
    pub fn open(model: &Path, weights: Option<&Path>, allow_nonfinite: bool) -> anyhow::Result<Source> {
        netc_compiler::files::regular_file_len(model)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", model.display()))?;
        // Bundles are recognised by content; a `.netc` file that is not one is a damaged or
        // foreign file, and says so, rather than being parsed as a `.net` source.
        if super::inspect::is_bundle_file(model) {
            if weights.is_some() {
                bail!("{} is a compiled bundle, which carries its weights: drop --weights", model.display());
            }
            return Ok(Source::Bundle(Arc::new(Bundle::open(model)?)));
        }
        let Some(weights) = weights else {
            bail!(
                "{}: a .net model needs --weights W.safetensors (or compile a bundle with `netc compile`)",
                model.display()
            );
        };
        let parsed = super::load_model(model, None)?;
        let file = WeightFile::open(weights)?;
        Ok(Source::Net { parsed, file, options: BindOptions { allow_nonfinite } })
    }

    /// The metadata of the weights: the weight file's, or the one a bundle was packed from.
    pub fn weights_metadata(&self) -> std::collections::BTreeMap<String, String> {
        match self {
            Source::Bundle(b) => b.weights_metadata(),
            Source::Net { file, .. } => file.metadata().clone(),
        }
    }

    /// Prints a one-line note on standard error when the weights are `netc init`'s random ones.
    pub fn note_random_weights(&self) {
        if let Some(note) = netc_runtime::init::random_weights_note(&self.weights_metadata()) {
            eprintln!("note: {note}");
        }
    }

    /// The weights bound to the model as written (a `.net` source only).
    pub fn bound(&self) -> anyhow::Result<(&Graph, BoundWeights<'_>)> {
        match self {
            Source::Net { parsed, file, options } => Ok((parsed, netc_runtime::bind_with(parsed, file, *options)?)),
            Source::Bundle(b) => bail!(
                "{} holds weights packed for the JIT only; the reference backend needs the .net file and --weights",
                b.path().display()
            ),
        }
    }

    /// The optimised graph of a `.net` source (as `opt` says), or the bundle's.
    pub fn graph(&self, opt: &super::OptArgs) -> anyhow::Result<Graph> {
        match self {
            Source::Bundle(b) => Ok(b.program()?.graph().clone()),
            Source::Net { parsed, .. } => {
                let mut graph = parsed.clone();
                super::optimize(&mut graph, opt, None)?;
                Ok(graph)
            }
        }
    }

    /// The program that executes: the bundle's, or the `.net` model optimised and lowered.
    pub fn program(&self, opt: &super::OptArgs) -> anyhow::Result<Program> {
        match self {
            Source::Bundle(b) => Ok(b.program()?),
            Source::Net { .. } => Ok(Program::new(self.graph(opt)?)?),
        }
    }

    /// Builds the JIT model: kernels compiled for `isa`, weights packed (or mapped from the
    /// bundle), runs on `threads` threads in micro-batches as `micro_batch` says.
    pub fn model(
        &self,
        opt: &super::OptArgs,
        isa: &IsaArgs,
        micro_batch: &MicroBatchArgs,
        threads: usize,
    ) -> anyhow::Result<netc::Model> {
        let program = self.program(opt)?;
        let weights = match self {
            Source::Bundle(b) => WeightBuf::from_bundle(b, &program)?,
            Source::Net { .. } => {
                let (_, bound) = self.bound()?;
                WeightBuf::owned(jit::pack(&program, &bound)?)
            }
        };
        let check_bounds = if isa.check_bounds { netc::BoundsCheck::Always } else { netc::BoundsCheck::Auto };
        let options = netc::Options {
            threads: Some(threads),
            isa: isa.isa,
            check_bounds,
            micro_batch: micro_batch.micro_batch,
            ..Default::default()
        };
        // A bundle's kernels were proved by `netc compile` for the ISAs it records.
        let proved = match self {
            Source::Bundle(b) => b.bounds_proved(isa.isa),
            Source::Net { .. } => false,
        };
        Ok(netc::Model::from_program(program, weights, &options, proved)?)
    }
}
