//! `netc run FILE.net --weights W.safetensors --input X...`: run a model on real inputs.

use super::exec::Source;
use super::labels::Labels;
use super::top;
use anyhow::{bail, Context as _};
use netc_compiler::ir::Graph;
use netc_runtime::io::{atomic, image, npy};
use netc_runtime::tensor::Dims;
use netc_runtime::{reference, Tensor};
use std::path::{Path, PathBuf};

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
    /// Input files: .npy arrays or JPEG/PNG images (several make a batch).
    #[arg(long, short, value_name = "X", num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Write the logits [N, classes] to this .npy file.
    #[arg(long, short, value_name = "Y.npy")]
    pub output: Option<PathBuf>,
    /// Print the K most likely classes of each input.
    #[arg(long, value_name = "K", value_parser = positive)]
    pub top: Option<usize>,
    /// How to print the top classes: text, or json (one object per input, implies --top 5).
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
}

/// The most threads a run may ask for (each is an OS thread with its own scratch).
const MAX_THREADS: usize = 1024;

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a thread count from 1 to {MAX_THREADS}")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let source = Source::open(&args.file, args.weights.as_deref(), args.allow_nonfinite)?;
    let labels = match &args.labels {
        Some(path) => Labels::read(path)?,
        None => Labels::Builtin,
    };
    let json = args.format == Format::Json;
    let top = args.top.or(if args.output.is_none() || json { Some(5) } else { None });
    if top.is_none() && args.labels.is_some() {
        bail!("--labels names the classes that --top prints: give --top K too");
    }
    if let Some(out) = &args.output {
        // Fail before the (possibly long) run, not after it.
        atomic::check_writable(out)?;
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (model, outputs, images) = match args.backend {
        Backend::Jit => {
            let model = source.model(&args.opt, &args.isa, threads)?;
            labels.check_graph(model.graph())?;
            let (batch, images) = load_inputs(model.graph(), &args.input)?;
            (model.graph().name.clone(), model.run_all(&[batch.view()])?, images)
        }
        Backend::Reference => {
            // Weights are checked against the model as written (so a state_dict with the auxiliary
            // heads' tensors is accepted), then read by the optimised graph, whose folded weights
            // combine them.
            let (_, weights) = source.bound()?;
            let graph = source.graph(&args.opt)?;
            labels.check_graph(&graph)?;
            let (batch, images) = load_inputs(&graph, &args.input)?;
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
    Ok(())
}

/// Reads every input into one batch, with a label per sample for printing.
fn load_inputs(graph: &Graph, paths: &[PathBuf]) -> anyhow::Result<(Tensor, Vec<String>)> {
    let [input] = graph.inputs[..] else {
        bail!("`netc run` runs models with one input; `{}` has {}", graph.name, graph.inputs.len());
    };
    let declared = graph.shape(input).dims();
    let input_name = &graph.node(input.producer()).name;
    let mut parts = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let t = if is_npy {
            let t = npy::read(path)?;
            from_npy(path, t, declared)?
        } else {
            let [3, h, w] = declared[..] else {
                bail!(
                    "{}: images can only feed a [3, H, W] input, but input `{input_name}` of `{}` is {}",
                    path.display(),
                    graph.name,
                    Dims(declared)
                );
            };
            image::load(path, h, w)?
        };
        if t.sample_shape() != declared {
            bail!(
                "{}: a sample of shape {} does not fit model `{}`, whose input `{input_name}` is {}",
                path.display(),
                Dims(t.sample_shape()),
                graph.name,
                Dims(declared)
            );
        }
        let n = t.batch();
        labels.extend((0..n).map(|i| {
            if n == 1 {
                path.display().to_string()
            } else {
                format!("{}[{i}]", path.display())
            }
        }));
        parts.push(t);
    }
    Ok((Tensor::concat_batch(parts)?, labels))
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
