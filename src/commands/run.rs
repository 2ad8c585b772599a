//! `netc run FILE.net --weights W.safetensors --input X...`: run a model on real inputs.

use super::exec::Source;
use super::labels::Labels;
use super::{stream, top};
use anyhow::{bail, Context as _};
use netc_compiler::ir::Graph;
use netc_runtime::io::{atomic, image, npy};
use netc_runtime::tensor::Dims;
use netc_runtime::{reference, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run a model on images or tensors and print the top classes or save the logits.
///
/// Inputs are .npy float32 arrays ([N, C, H, W] or [C, H, W]) or JPEG/PNG images. Images are
/// preprocessed like torchvision's ImageNet preset: the shorter side resized to 256 (antialiased
/// bilinear), centre crop to the model's input size, scaled to [0, 1], normalised by the ImageNet
/// mean and std. Several inputs form one batch, in the order given.
///
/// --top K prints the K most likely classes of each input with softmax probabilities and class
/// names: ImageNet's for a model with 1000 classes, or one per line of --labels FILE (top 5 by
/// default when there is no --output). --format json prints them as a JSON array, one object per
/// input: {"image", "top": [{"class", "label", "prob"}]}. --output writes the model's first output
/// (the logits, [N, classes]) as .npy; the file appears only when complete.
///
/// Folders: --format jsonl or csv streams the inputs through the model --batch at a time (32 by
/// default), so a folder of any size runs in the memory of a few batches. An --input folder
/// stands for its .jpg, .jpeg, .png and .npy files (by extension, any case), sorted by name; its
/// subfolders are not searched, and other files are ignored and counted in a note on standard
/// error. Folders and files mix: each --input is expanded in the order given (a file named
/// explicitly is read whatever its extension); a .npy of N samples gives N results, `file[i]`,
/// and may hold at most --batch samples. A thread decodes the next batch while the model runs
/// this one. Results stream to standard output in input order, each batch's as it completes:
///   jsonl  one line per input: {"image", "top": [{"class", "label", "prob"}]}, or
///          {"image", "error"} for an input that could not be read;
///   csv    a header `image,rank,class,label,prob`, then one row per top class of each input.
/// An unreadable or corrupt input is reported on standard error (one line naming it and why) and
/// skipped; --strict stops at the first one instead. A progress bar shows on standard error when
/// it is a terminal. --output Y.npy writes the logits of the samples that ran, [N, classes] in
/// the order of the results (skipped inputs have no row), when the run completes (not when
/// --strict stops it).
///
/// Exit status: 0 when every input ran; 1 on an error that stops the run (a bad model, a folder
/// that cannot be listed, an input with --strict); 2 for a usage error; 3 when the run finished
/// but skipped some inputs.
///
/// Weights written by `netc init` are random: a note on standard error says so, as their
/// predictions mean nothing.
///
/// The optimised graph runs (see `netc ir --stage optimized`), as native JIT-compiled kernels by
/// default; -O0 runs the model as written. A compiled bundle (`netc compile`) runs without --weights.
///
/// Weights are a .safetensors file with PyTorch state_dict names (`netc init` writes one; a
/// torchvision state_dict saved with safetensors.torch.save_file loads as-is, f16/bf16 included).
///
/// Examples:
///   netc init models/resnet18.net -o resnet18.safetensors
///   netc run models/resnet18.net --weights resnet18.safetensors --input models/sample/cat.jpg
///   netc run models/vgg16.net --weights vgg16.safetensors --input a.jpg b.png --output logits.npy
///   netc compile models/resnet50.net --weights resnet50.safetensors -o resnet50.netc
///   netc run resnet50.netc --input models/sample/cat.jpg --top 5
///   netc run resnet50.netc --input photos/ --batch 32 --format jsonl > results.jsonl
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model: a .net file (with --weights) or a compiled bundle (.netc, from `netc compile`).
    pub file: PathBuf,
    /// The weights (.safetensors) of a .net model.
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// Accept NaN and infinite weights (by default the first one is an error naming the tensor).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Input files: .npy arrays or JPEG/PNG images (several make a batch), or folders of them
    /// (with --format jsonl or csv; not recursive).
    #[arg(long, short, value_name = "X", num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// With --format jsonl or csv: run the inputs this many samples at a time [default: 32].
    #[arg(long, value_name = "N", value_parser = batch_size)]
    pub batch: Option<usize>,
    /// With --format jsonl or csv: stop at the first unreadable input instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Write the logits [N, classes] to this .npy file.
    #[arg(long, short, value_name = "Y.npy")]
    pub output: Option<PathBuf>,
    /// Print the K most likely classes of each input.
    #[arg(long, value_name = "K", value_parser = positive)]
    pub top: Option<usize>,
    /// How to print the top classes: text, json (one object per input, implies --top 5), or
    /// streamed a batch at a time: jsonl (one line per input) or csv.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Class names, one per line in class order (default: ImageNet's, for 1000 classes).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// How to execute the model.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub isa: super::exec::IsaArgs,
    #[command(flatten)]
    pub micro_batch: super::exec::MicroBatchArgs,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Backend {
    /// Native kernels compiled with Cranelift, run over one planned arena on worker threads.
    Jit,
    /// The reference interpreter: plain loops with f64 accumulation, the oracle. Simple, not fast.
    Reference,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Per input: its name, then probability, class id and name of each top class.
    Text,
    /// A JSON array, one object per input: {"image", "top": [{"class", "label", "prob"}]}.
    Json,
    /// Streamed, one JSON object per line and input: {"image", "top": [...]} or {"image", "error"}.
    Jsonl,
    /// Streamed CSV: a header `image,rank,class,label,prob`, then a row per top class of each input.
    Csv,
}

impl Format {
    /// Whether the inputs stream through the model a batch at a time.
    fn streams(self) -> bool {
        matches!(self, Format::Jsonl | Format::Csv)
    }
}

/// The most threads a run may ask for (each is an OS thread with its own scratch).
const MAX_THREADS: usize = 1024;

/// The largest --batch.
const MAX_BATCH: usize = 4096;

/// The --batch of streamed runs when none is given.
const DEFAULT_BATCH: usize = 32;

fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a batch size from 1 to {MAX_BATCH}")),
    }
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a thread count from 1 to {MAX_THREADS}")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let streams = args.format.streams();
    if !streams {
        if args.batch.is_some() || args.strict {
            bail!("--batch and --strict stream the inputs: give --format jsonl or csv");
        }
        if let Some(dir) = args.input.iter().find(|p| p.is_dir()) {
            bail!("{} is a folder: stream it with --format jsonl or csv", dir.display());
        }
    }
    let source = Source::open(&args.file, args.weights.as_deref(), args.allow_nonfinite)?;
    let labels = match &args.labels {
        Some(path) => Labels::read(path)?,
        None => Labels::Builtin,
    };
    let json = args.format != Format::Text;
    let top = args.top.or(if args.output.is_none() || json { Some(5) } else { None });
    if top.is_none() && args.labels.is_some() {
        bail!("--labels names the classes that --top prints: give --top K too");
    }
    if let Some(out) = &args.output {
        // Fail before the (possibly long) run, not after it.
        atomic::check_writable(out)?;
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if streams {
        let inputs = stream::expand(&args.input)?;
        let options = stream::Options {
            batch: args.batch.unwrap_or(DEFAULT_BATCH),
            strict: args.strict,
            csv: args.format == Format::Csv,
            top: top.unwrap_or(5),
            output: args.output.clone(),
        };
        let skipped = match args.backend {
            Backend::Jit => {
                let model = source.model(&args.opt, &args.isa, &args.micro_batch, threads)?;
                labels.check_graph(model.graph())?;
                let spec = InputSpec::new(model.graph())?;
                let infer = |batch: Tensor| Ok(model.run_all(&[batch.view()])?);
                stream::run(&spec, inputs, &options, &labels, infer)?
            }
            Backend::Reference => {
                let (_, weights) = source.bound()?;
                let graph = source.graph(&args.opt)?;
                labels.check_graph(&graph)?;
                let spec = InputSpec::new(&graph)?;
                let run_options = reference::Options { threads };
                let infer =
                    |batch: Tensor| Ok(reference::run_with(&graph, &weights, &[batch], &run_options)?);
                stream::run(&spec, inputs, &options, &labels, infer)?
            }
        };
        source.note_random_weights();
        return Ok(if skipped > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS });
    }
    let (model, outputs, images) = match args.backend {
        Backend::Jit => {
            let model = source.model(&args.opt, &args.isa, &args.micro_batch, threads)?;
            labels.check_graph(model.graph())?;
            let (batch, images) = load_inputs(&InputSpec::new(model.graph())?, &args.input)?;
            (model.graph().name.clone(), model.run_all(&[batch.view()])?, images)
        }
        Backend::Reference => {
            // Weights are checked against the model as written (so a state_dict with the auxiliary
            // heads' tensors is accepted), then read by the optimised graph, whose folded weights
            // combine them.
            let (_, weights) = source.bound()?;
            let graph = source.graph(&args.opt)?;
            labels.check_graph(&graph)?;
            let (batch, images) = load_inputs(&InputSpec::new(&graph)?, &args.input)?;
            let outputs = reference::run_with(&graph, &weights, &[batch], &reference::Options { threads })?;
            (graph.name.clone(), outputs, images)
        }
    };
    let logits = outputs.into_iter().next().context("the model has no inference output")?;
    source.note_random_weights();

    if let Some(out) = &args.output {
        npy::write(out, &logits)?;
    }
    if let Some(k) = top {
        if logits.shape.len() != 2 {
            bail!(
                "--top needs logits of shape [N, classes], but model `{model}` outputs {}",
                Dims(&logits.shape)
            );
        }
        labels.check(logits.shape[1], &model)?;
        let tops = top::rank(&logits, &images, &labels, k);
        let text = if json { top::json(&tops)? } else { top::text(&tops) };
        super::output::stdout(text.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads every input into one batch, with a label per sample for printing.
fn load_inputs(spec: &InputSpec, paths: &[PathBuf]) -> anyhow::Result<(Tensor, Vec<String>)> {
    let mut parts = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let t = spec.read(path, None)?;
        labels.extend(sample_names(path, t.batch()));
        parts.push(t);
    }
    Ok((Tensor::concat_batch(parts)?, labels))
}

/// How the samples of one input file are named in the results: the file, or `file[i]` for the
/// samples of a batched `.npy`.
pub fn sample_names(path: &Path, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| if n == 1 { path.display().to_string() } else { format!("{}[{i}]", path.display()) })
}

/// What the model's one input takes, to read input files for it.
pub struct InputSpec {
    pub model: String,
    input: String,
    declared: Vec<usize>,
}

impl InputSpec {
    pub fn new(graph: &Graph) -> anyhow::Result<InputSpec> {
        let [input] = graph.inputs[..] else {
            bail!("`netc run` runs models with one input; `{}` has {}", graph.name, graph.inputs.len());
        };
        Ok(InputSpec {
            model: graph.name.clone(),
            input: graph.node(input.producer()).name.clone(),
            declared: graph.shape(input).dims().to_vec(),
        })
    }

    /// Reads one input file as a batch: an `.npy` array (`[N, ...]` or one sample) or an image.
    /// With `max_samples`, a `.npy` file of more samples is refused, before it is read when its
    /// size says so.
    pub fn read(&self, path: &Path, max_samples: Option<usize>) -> anyhow::Result<Tensor> {
        let declared = &self.declared[..];
        let (model, input_name) = (&self.model, &self.input);
        let too_many = |n: &dyn std::fmt::Display, max: usize| {
            anyhow::anyhow!(
                "{}: the array holds {n} samples, more than a batch of {max} (give a larger --batch)",
                path.display()
            )
        };
        let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let t = if is_npy {
            if let Some(max) = max_samples {
                // The header of a .npy file is at most a few KiB; more bytes than `max` samples
                // and a generous header cannot fit.
                let sample_bytes = declared.iter().product::<usize>().saturating_mul(4).max(1);
                let len = netc_compiler::files::regular_file_len(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                if len > (max.saturating_mul(sample_bytes) as u64).saturating_add(1 << 20) {
                    return Err(too_many(&format_args!("about {}", len / sample_bytes as u64), max));
                }
            }
            let t = npy::read(path)?;
            from_npy(path, t, declared)?
        } else {
            let [3, h, w] = declared[..] else {
                bail!(
                    "{}: images can only feed a [3, H, W] input, but input `{input_name}` of `{model}` is {}",
                    path.display(),
                    Dims(declared)
                );
            };
            image::load(path, h, w)?
        };
        if t.sample_shape() != declared {
            bail!(
                "{}: a sample of shape {} does not fit model `{model}`, whose input `{input_name}` is {}",
                path.display(),
                Dims(t.sample_shape()),
                Dims(declared)
            );
        }
        if let Some(max) = max_samples.filter(|&max| t.batch() > max) {
            return Err(too_many(&t.batch(), max));
        }
        Ok(t)
    }
}

/// A `[C, H, W]` array becomes a batch of one; `[N, C, H, W]` is taken as is.
fn from_npy(path: &Path, mut t: Tensor, declared: &[usize]) -> anyhow::Result<Tensor> {
    if t.shape.len() == declared.len() {
        t.shape.insert(0, 1);
    } else if t.shape.len() != declared.len() + 1 {
        let expected = if declared.len() == 3 {
            "[N, C, H, W] or [C, H, W]".to_string()
        } else {
            format!("rank {} or {}", declared.len() + 1, declared.len())
        };
        bail!("{}: expected an array of shape {expected}, got {}", path.display(), Dims(&t.shape));
    } else if t.shape[0] == 0 {
        bail!("{}: the array holds no samples (shape {})", path.display(), Dims(&t.shape));
    }
    Ok(t)
}
