//! [`Model`]: a compiled model that owns its kernels and weights and runs on `&self`.

use crate::Error;
use netc_compiler::codegen::{CompileOptions, IsaChoice};
use netc_compiler::ir::Graph;
use netc_compiler::lower::Program;
use netc_runtime::bundle::{self, Bundle};
use netc_runtime::jit::{self, Executable, MicroBatch, Session, WeightBuf};
use netc_runtime::{Tensor, TensorView};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to build and run a model (the optimiser settings apply to `.net` sources only).
#[derive(Debug, Clone)]
pub struct Options {
    /// Threads of each run, the caller's included (default: the machine's available parallelism).
    pub threads: Option<usize>,
    /// How a batch is split into micro-batches run one after the other (default: as the cost
    /// model of `netc_runtime::jit::micro_batch` says).
    pub micro_batch: MicroBatch,
    /// The kernels' instruction set (default: the widest the CPU has, or `NETC_ISA`).
    pub isa: IsaChoice,
    /// Run the optimiser on `.net` sources (default true; a bundle is optimised already).
    pub optimize: bool,
    /// Optimisation passes to skip, by name (`netc ir --list-passes`).
    pub disabled_passes: Vec<String>,
    /// Accept NaN and infinite weights in a `.net` model's weight file (by default an error).
    pub allow_nonfinite: bool,
    /// When to prove every generated kernel's memory accesses in bounds before it runs (see
    /// `netc_compiler::codegen::bounds`).
    pub check_bounds: BoundsCheck,
}

/// When the JIT runs the static bounds check of generated kernels (it costs a few hundred
/// milliseconds of start-up on a ResNet-50).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BoundsCheck {
    /// Unless the bundle records that `netc compile` proved its kernels for the ISA they are
    /// generated for: `.net` sources and programs are always checked.
    #[default]
    Auto,
    Always,
    Never,
}

impl BoundsCheck {
    /// Whether to check kernels generated for `isa`, given whether they were proved before.
    pub fn wanted(self, proved_before: bool) -> bool {
        match self {
            BoundsCheck::Auto => !proved_before,
            BoundsCheck::Always => true,
            BoundsCheck::Never => false,
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: None,
            micro_batch: MicroBatch::Auto,
            isa: IsaChoice::Auto,
            optimize: true,
            disabled_passes: Vec::new(),
            allow_nonfinite: false,
            check_bounds: BoundsCheck::Auto,
        }
    }
}

/// Where the time of building a model went.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildTimes {
    /// Reading the model: mapping and checking a bundle, or parsing, optimising, binding and
    /// packing a `.net` source and its weights.
    pub load: Duration,
    /// Generating and compiling the kernels.
    pub jit: Duration,
}

/// A compiled model, ready to run on any batch size. `Send + Sync`: share one `Arc<Model>`
/// between threads; each concurrent run takes its own [`Session`] from a pool inside the model.
pub struct Model {
    exe: Executable,
    threads: usize,
    micro_batch: MicroBatch,
    sessions: Mutex<Vec<Session>>,
    times: BuildTimes,
}

impl Model {
    /// Loads a compiled bundle (`netc compile`), mapping its packed weights in place.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, Error> {
        Model::load_with(path, &Options::default())
    }

    /// [`Model::load`] with options (threads, ISA; the optimiser settings do not apply).
    pub fn load_with(path: impl AsRef<Path>, options: &Options) -> Result<Model, Error> {
        let start = Instant::now();
        let bundle = Arc::new(Bundle::open(path.as_ref())?);
        let program = bundle.program()?;
        let weights = WeightBuf::from_bundle(&bundle, &program)?;
        Model::build(program, weights, options, bundle.bounds_proved(options.isa), start)
    }

    /// Compiles a `.net` model with its weights (safetensors with the model's scoped names).
    #[cfg(feature = "frontend")]
    pub fn from_net(
        net: impl AsRef<Path>,
        weights: impl AsRef<Path>,
        options: &Options,
    ) -> Result<Model, Error> {
        let start = Instant::now();
        let parsed = netc_compiler::compile_file(net.as_ref(), &Default::default())?;
        let file = netc_runtime::WeightFile::open(weights.as_ref())?;
        // Bound to the model as written: missing, extra and mis-shaped weights are reported by
        // their names in the file; folded and merged slots are evaluated from them when packing.
        let bound = netc_runtime::bind_with(
            &parsed,
            &file,
            netc_runtime::weights::BindOptions { allow_nonfinite: options.allow_nonfinite },
        )?;
        let program = Program::new(optimized(net.as_ref(), parsed, options)?)?;
        let packed = jit::pack(&program, &bound)?;
        Model::build(program, WeightBuf::owned(packed), options, false, start)
    }

    /// A bundle (by its content) or a `.net` source with its weights: what `netc run` accepts.
    #[cfg(feature = "frontend")]
    pub fn open(model: impl AsRef<Path>, weights: Option<&Path>, options: &Options) -> Result<Model, Error> {
        let model = model.as_ref();
        match (is_bundle(model), weights) {
            (true, None) => Model::load_with(model, options),
            (true, Some(_)) => Err(Error::Usage {
                path: model.to_path_buf(),
                what: "a compiled bundle carries its weights: give no weight file".into(),
            }),
            (false, Some(w)) => Model::from_net(model, w, options),
            (false, None) => Err(Error::Usage {
                path: model.to_path_buf(),
                what:
                    "a .net model needs its weights (W.safetensors), or compile a bundle with `netc compile`"
                        .into(),
            }),
        }
    }

    /// Compiles an already lowered program with its steps' weight buffers (what `netc run` and
    /// `netc bench` do after their own optimisation with `--stats` and the like);
    /// `proved_before`: its kernels were proved in bounds for the ISA they will be generated for
    /// (a bundle's [`Bundle::bounds_proved_for`]).
    pub fn from_program(
        program: Program,
        weights: Vec<Vec<WeightBuf>>,
        options: &Options,
        proved_before: bool,
    ) -> Result<Model, Error> {
        Model::build(program, weights, options, proved_before, Instant::now())
    }

    fn build(
        program: Program,
        weights: Vec<Vec<WeightBuf>>,
        options: &Options,
        proved_before: bool,
        start: Instant,
    ) -> Result<Model, Error> {
        let load = start.elapsed();
        let jit_start = Instant::now();
        let exe = Executable::new(
            program,
            weights,
            CompileOptions {
                isa: options.isa,
                check_bounds: options.check_bounds.wanted(proved_before),
                ..Default::default()
            },
        )?;
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        Ok(Model {
            exe,
            threads,
            micro_batch: options.micro_batch,
            sessions: Mutex::new(Vec::new()),
            times: BuildTimes { load, jit: jit_start.elapsed() },
        })
    }

    /// Runs a one-input, one-output model on `input` (`[N, ...]`, the batch first).
    pub fn run<'a>(&self, input: impl Into<TensorView<'a>>) -> Result<Tensor, Error> {
        let graph = self.graph();
        let outputs = graph.inference_outputs().count();
        if graph.inputs.len() != 1 || outputs != 1 {
            return Err(Error::Usage {
                path: graph.name.clone().into(),
                what: format!(
                    "the model has {} inputs and {outputs} outputs; use `run_all`",
                    graph.inputs.len()
                ),
            });
        }
        Ok(self.run_all(&[input.into()])?.remove(0))
    }

    /// Runs the model on one tensor per input; returns one tensor per inference output.
    pub fn run_all(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>, Error> {
        self.with_session(|exe, session| exe.run(session, inputs))
    }

    /// Runs the model, writing output `i` into `outputs[i]` (exactly its `[N, ...]` floats; see
    /// [`Model::output_shapes`]).
    pub fn run_into(&self, inputs: &[TensorView], outputs: &mut [&mut [f32]]) -> Result<(), Error> {
        self.with_session(|exe, session| exe.run_into(session, inputs, outputs))
    }

    /// Runs the model in the caller's session (see [`Model::session`]).
    pub fn run_in(&self, session: &mut Session, inputs: &[TensorView]) -> Result<Vec<Tensor>, Error> {
        Ok(self.exe.run(session, inputs)?)
    }

    /// A new session with the model's thread count, for [`Model::run_in`].
    pub fn session(&self) -> Session {
        Session::new(self.threads).with_micro_batch(self.micro_batch)
    }

    /// The shapes of the outputs for a batch of `n`, batch dimension first.
    pub fn output_shapes(&self, n: usize) -> Vec<Vec<usize>> {
        self.exe.output_shapes(n)
    }

    /// The per-sample shapes of the inputs, by name.
    pub fn input_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let graph = self.graph();
        graph
            .inputs
            .iter()
            .map(|&v| (graph.node(v.producer()).name.clone(), graph.shape(v).dims().to_vec()))
            .collect()
    }

    /// The optimised, legalised graph that runs.
    pub fn graph(&self) -> &Graph {
        self.exe.graph()
    }

    /// The compiled program (kernels, implementations, plan), for inspection and profiling.
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// Threads of each run, the caller's included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Where building the model spent its time.
    pub fn build_times(&self) -> BuildTimes {
        self.times
    }

    fn with_session<T>(
        &self,
        run: impl FnOnce(&Executable, &mut Session) -> Result<T, jit::JitError>,
    ) -> Result<T, Error> {
        let pooled = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut session = pooled.unwrap_or_else(|| self.session());
        let result = run(&self.exe, &mut session);
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).push(session);
        Ok(result?)
    }
}

/// Whether `path` starts with the bundle magic bytes (bundles are recognised by content, not
/// by extension).
pub fn is_bundle(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 8];
    // Regular files only: opening a FIFO would block.
    netc_compiler::files::regular_file_len(path).is_ok()
        && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == bundle::MAGIC
}

/// The parsed graph of `net`, optimised as `options` say.
#[cfg(feature = "frontend")]
pub(crate) fn optimized(net: &Path, mut graph: Graph, options: &Options) -> Result<Graph, Error> {
    if !options.optimize {
        return Ok(graph);
    }
    for name in &options.disabled_passes {
        if netc_compiler::passes::find(name).is_none() {
            return Err(Error::Usage {
                path: net.to_path_buf(),
                what: format!("no optimisation pass named `{name}` (`netc ir --list-passes` lists them)"),
            });
        }
    }
    let passes = netc_compiler::passes::Options {
        disabled: options.disabled_passes.clone(),
        stop_after: None,
        verify_each: true,
        target: match options.isa {
            IsaChoice::Fixed(isa) => Some(isa),
            IsaChoice::Auto => None,
        },
    };
    netc_compiler::passes::optimize(&mut graph, &passes)?;
    Ok(graph)
}

/// Writes deterministic He-initialised weights for a `.net` model (what `netc init` does): for
/// trying a model out; the outputs mean nothing until real weights are bound.
#[cfg(feature = "frontend")]
pub fn write_random_weights(net: impl AsRef<Path>, out: impl AsRef<Path>, seed: u64) -> Result<(), Error> {
    let graph = netc_compiler::compile_file(net.as_ref(), &Default::default())?;
    let tensors = netc_runtime::init::he_init(&graph, seed)?;
    let metadata = netc_runtime::init::metadata(&graph.name, seed);
    netc_runtime::weights::write_file_with_metadata(out.as_ref(), &tensors, &metadata)?;
    Ok(())
}
