//! `netc bench`: latency and throughput of the JIT backend.

use super::exec::Source;
use netc_runtime::{fill, Tensor, TensorView};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Instant;

/// Measure inference latency and throughput (JIT backend).
///
/// Builds the model (JIT compile; from a .net file, also optimise and pack the weights), runs a few
/// warm-up batches, then --iters timed batches of --batch inputs, and reports the median and 90th
/// percentile latency per batch and the throughput. Inputs are deterministic pseudo-random tensors
/// (the values do not change the work done).
///
/// Examples:
///   netc bench models/resnet50.net --weights resnet50.safetensors
///   netc bench resnet50.netc --batch 8 --threads 2 --iters 50 --format json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model: a .net file (with --weights) or a compiled bundle (.netc).
    pub file: PathBuf,
    /// The weights (.safetensors) of a .net model.
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// Accept NaN and infinite weights (by default the first one is an error naming the tensor).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Images per batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Timed batches.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub iters: u32,
    /// Untimed batches before timing (at least one runs: the first, reported as first_run_ms).
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also time every kernel (one extra batch) and list the slowest, with their implementation
    /// and GFLOP/s.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub isa: super::exec::IsaArgs,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = args
        .threads
        .map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    let batch = args.batch as usize;
    let build = Instant::now();
    let source = Source::open(&args.file, args.weights.as_deref(), args.allow_nonfinite)?;
    let model = source.model(&args.opt, &args.isa, threads)?;
    let build_s = build.elapsed().as_secs_f64();
    let jit_ms = model.build_times().jit.as_secs_f64() * 1e3;
    let load_ms = build_s * 1e3 - jit_ms;
    let exe = model.executable();
    let mut session = model.session();
    let inputs: Vec<Tensor> = exe
        .graph()
        .inputs
        .iter()
        .map(|&v| {
            let mut shape = vec![batch];
            shape.extend_from_slice(exe.graph().shape(v).dims());
            Tensor { data: fill::input(&shape), shape }
        })
        .collect();
    let progress = (std::io::stderr().is_terminal() && matches!(args.format, Format::Text)).then(|| {
        let bar = indicatif::ProgressBar::new(u64::from(args.warmup.max(1) + args.iters));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} batches ({eta} left)")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{} batch {batch}", exe.graph().name));
        bar
    });
    let views: Vec<TensorView> = inputs.iter().map(Tensor::view).collect();
    let first = Instant::now();
    exe.run(&mut session, &views)?;
    let first_run_ms = first.elapsed().as_secs_f64() * 1e3;
    if let Some(p) = &progress {
        p.inc(1);
    }
    for _ in 1..args.warmup {
        exe.run(&mut session, &views)?;
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    let mut times = Vec::with_capacity(args.iters as usize);
    for _ in 0..args.iters {
        let t = Instant::now();
        exe.run(&mut session, &views)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    times.sort_by(f64::total_cmp);
    let profile = if args.profile { Some(exe.run_profiled(&mut session, &views)?) } else { None };
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (median, p90, min) = (pick(0.5), pick(0.9), times[0]);
    let result = serde_json::json!({
        "model": exe.graph().name,
        "median_ms": median,
        "p90_ms": p90,
        "min_ms": min,
        "images_per_s": batch as f64 / (median / 1e3),
        "batch": batch,
        "threads": threads,
        "iters": args.iters,
        "build_s": build_s,
        "load_ms": load_ms,
        "jit_ms": jit_ms,
        "first_run_ms": first_run_ms,
        "isa": exe.isa().name(),
    });
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&result)? + "\n",
        Format::Text => format!(
            "{}: batch {batch}, {threads} threads, {}: median {median:.2} ms, p90 {p90:.2} ms, {:.1} images/s ({} timed batches; load {load_ms:.0} ms, jit {jit_ms:.0} ms, first run {first_run_ms:.0} ms)\n",
            exe.graph().name,
            exe.isa(),
            batch as f64 / (median / 1e3),
            args.iters
        ),
    };
    let text = match profile {
        None => text,
        Some(times) => text + &profile_table(exe, &times, batch),
    };
    super::write_output(None, text.as_bytes())
}

/// The kernels by time, slowest first, with their share, GFLOP/s (2 FLOPs per MAC) and the
/// implementation each got.
fn profile_table(exe: &netc_runtime::jit::Executable, times: &[f64], batch: usize) -> String {
    let graph = exe.graph();
    let total: f64 = times.iter().sum();
    let mut rows: Vec<(f64, f64, &str, &str)> = exe
        .program()
        .steps()
        .iter()
        .zip(&exe.kernels().kernels)
        .zip(times)
        .map(|((step, kernel), &t)| {
            let node = graph.node(step.node);
            let gflops = 2.0 * node.op.macs(&node.shape) as f64 * batch as f64 / t / 1e9;
            (t, gflops, kernel.implementation, step.name.as_str())
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = format!("{:>9} {:>6} {:>8}  {:<22} kernel\n", "ms", "share", "GFLOP/s", "implementation");
    for (t, gflops, implementation, name) in rows {
        out += &format!(
            "{:>9.3} {:>5.1}% {:>8.1}  {implementation:<22} {name}\n",
            t * 1e3,
            100.0 * t / total,
            gflops
        );
    }
    out
}
