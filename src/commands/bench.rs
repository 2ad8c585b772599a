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
    /// Also time every kernel: --iters more batches, each kernel's median over them, listed
    /// slowest first with its implementation and GFLOP/s, then summed by kernel family
    /// (conv.depthwise, conv.gemm1x1, ...). With --format json, under "profile" and "families".
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub isa: super::exec::IsaArgs,
    #[command(flatten)]
    pub micro_batch: super::exec::MicroBatchArgs,
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
    let model = source.model(&args.opt, &args.isa, &args.micro_batch, threads)?;
    let build_s = build.elapsed().as_secs_f64();
    let jit_ms = model.build_times().jit.as_secs_f64() * 1e3;
    let load_ms = build_s * 1e3 - jit_ms;
    let exe = model.executable();
    let mut session = model.session();
    let micro_batch = exe.micro_batch(&session, batch);
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
    let profile = if args.profile {
        Some(profile_kernels(exe, &mut session, &views, batch, args.iters)?)
    } else {
        None
    };
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (median, p90, min) = (pick(0.5), pick(0.9), times[0]);
    let mut result = serde_json::json!({
        "model": exe.graph().name,
        "median_ms": median,
        "p90_ms": p90,
        "min_ms": min,
        "images_per_s": batch as f64 / (median / 1e3),
        "batch": batch,
        "micro_batch": micro_batch,
        "threads": threads,
        "iters": args.iters,
        "build_s": build_s,
        "load_ms": load_ms,
        "jit_ms": jit_ms,
        "first_run_ms": first_run_ms,
        "isa": exe.isa().name(),
    });
    if let (Some(rows), Format::Json) = (&profile, args.format) {
        result["profile"] = serde_json::to_value(rows)?;
        result["families"] = serde_json::to_value(families(rows))?;
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&result)? + "\n",
        Format::Text => format!(
            "{}: batch {batch}{}, {threads} threads, {}: median {median:.2} ms, p90 {p90:.2} ms, {:.1} images/s ({} timed batches; load {load_ms:.0} ms, jit {jit_ms:.0} ms, first run {first_run_ms:.0} ms)\n",
            exe.graph().name,
            if micro_batch < batch { format!(" (micro-batches of {micro_batch})") } else { String::new() },
            exe.isa(),
            batch as f64 / (median / 1e3),
            args.iters
        ),
    };
    let text = match (profile, args.format) {
        (Some(rows), Format::Text) => text + &profile_table(&rows),
        _ => text,
    };
    super::write_output(None, text.as_bytes())
}

/// One kernel's time in a profile: the median over the profiled batches.
#[derive(serde::Serialize)]
struct KernelTime {
    kernel: String,
    implementation: &'static str,
    ms: f64,
    gflops: f64,
}

/// Times every kernel over `iters` batches (one call timeline per batch, see
/// `Executable::run_profiled`) and returns each kernel's median, slowest first. A single batch is
/// at the mercy of one interruption; the median over many is what the kernel takes.
fn profile_kernels(
    exe: &netc_runtime::jit::Executable,
    session: &mut netc_runtime::jit::Session,
    views: &[TensorView],
    batch: usize,
    iters: u32,
) -> anyhow::Result<Vec<KernelTime>> {
    let mut runs: Vec<Vec<f64>> = Vec::with_capacity(iters as usize);
    for _ in 0..iters.max(1) {
        runs.push(exe.run_profiled(session, views)?);
    }
    let graph = exe.graph();
    let mut rows: Vec<KernelTime> = exe
        .program()
        .steps()
        .iter()
        .zip(&exe.kernels().kernels)
        .enumerate()
        .map(|(i, (step, kernel))| {
            let mut times: Vec<f64> = runs.iter().map(|run| run[i]).collect();
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            let node = graph.node(step.node);
            KernelTime {
                kernel: step.name.clone(),
                implementation: kernel.implementation,
                ms: t * 1e3,
                gflops: 2.0 * node.op.macs(&node.shape) as f64 * batch as f64 / t / 1e9,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(rows)
}

/// The kernels of one family (an implementation name without its ISA: `conv.depthwise`), summed.
#[derive(serde::Serialize)]
struct FamilyTime {
    family: String,
    kernels: usize,
    ms: f64,
    gflops: f64,
}

/// Sums the profile by kernel family, slowest family first: how depthwise layers fare against the
/// 1x1 GEMMs of the same network, say. GFLOP/s of a family: its FLOPs over its time.
fn families(rows: &[KernelTime]) -> Vec<FamilyTime> {
    // (family, kernels, ms, MFLOP)
    let mut sums: Vec<(&str, usize, f64, f64)> = Vec::new();
    for row in rows {
        let family = row.implementation.rsplit_once('.').map_or(row.implementation, |(f, _)| f);
        let mflop = row.gflops * row.ms;
        match sums.iter_mut().find(|s| s.0 == family) {
            Some(s) => *s = (family, s.1 + 1, s.2 + row.ms, s.3 + mflop),
            None => sums.push((family, 1, row.ms, mflop)),
        }
    }
    let mut out: Vec<FamilyTime> = sums
        .into_iter()
        .map(|(family, kernels, ms, mflop)| FamilyTime {
            family: family.to_string(),
            kernels,
            ms,
            gflops: if ms > 0.0 { mflop / ms } else { 0.0 },
        })
        .collect();
    out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    out
}

/// The kernels by time (slowest first), with their share, GFLOP/s (2 FLOPs per MAC) and the
/// implementation each got; then the same by kernel family.
fn profile_table(rows: &[KernelTime]) -> String {
    let total: f64 = rows.iter().map(|r| r.ms).sum();
    let mut out = format!("{:>9} {:>6} {:>8}  {:<22} kernel\n", "ms", "share", "GFLOP/s", "implementation");
    for r in rows {
        out += &format!(
            "{:>9.3} {:>5.1}% {:>8.1}  {:<22} {}\n",
            r.ms,
            100.0 * r.ms / total,
            r.gflops,
            r.implementation,
            r.kernel
        );
    }
    out += &format!(
        "\nby kernel family:\n{:>9} {:>6} {:>8} {:>8}  family\n",
        "ms", "share", "GFLOP/s", "kernels"
    );
    for f in families(rows) {
        out += &format!(
            "{:>9.3} {:>5.1}% {:>8.1} {:>8}  {}\n",
            f.ms,
            100.0 * f.ms / total,
            f.gflops,
            f.kernels,
            f.family
        );
    }
    out
}
