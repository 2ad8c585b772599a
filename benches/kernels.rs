//! GFLOP/s of the JIT convolution kernels on ResNet-50's layer shapes, per ISA, as a share of the
//! host's FMA peak for that ISA measured in the same run.
//!
//! `cargo bench --bench kernels` prints, for every ISA the host has (or `--isa NAME`), the peak of
//! a register-only FMA loop, then one row per shape (`--winograd`: 3x3 stride-1 shapes also as
//! Winograd F(2x2) and F(4x4), GFLOP/s counted as direct-convolution FLOPs, i.e. "effective"):
//! the implementation and tile, GFLOP/s on one
//! thread (thread CPU time, best of N: immune to other processes on a shared machine) and its
//! share of the 1-core peak, and GFLOP/s on two threads (wall time, best of N). `-- --sweep` also
//! tries other register tiles, `--orders` both loop orders, `--quick` fewer iterations, and a
//! free argument filters shapes by name, `--one` skips the two-thread timing (its column then
//! repeats one thread's). FLOPs are `2 * MACs` of the convolution (epilogue work not
//! counted). `--batch N` times N samples per call (large planes then stream through memory: the
//! memory-bound regime of batched inference), `--cold` evicts the caches before every timed call
//! (weights from memory, as in a network larger than the last-level cache), and `--inplace`
//! passes the output buffer as the residual too (a convolution writing over its dead residual
//! input).

use netc_compiler::codegen::jit::PeakProbe;
use netc_compiler::codegen::{
    compile, default_tile, pack_conv_weights, AlignedF32, CompileOptions, ConvPath, ConvPlan, ConvSpec, Isa,
    IsaChoice, KernelArgs, KernelRequest, KernelSpec,
};
use netc_compiler::ir::{ConvKind, FusedConv, WeightExpr, WinogradTile};
use std::time::Instant;

struct Shape {
    name: &'static str,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    residual: bool,
}

const SHAPES: &[Shape] = &[
    Shape { name: "1x1 64->256 @56", cin: 64, cout: 256, hw: 56, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 256->64 @56", cin: 256, cout: 64, hw: 56, k: 1, stride: 1, residual: false },
    Shape { name: "3x3 64->64 @56", cin: 64, cout: 64, hw: 56, k: 3, stride: 1, residual: false },
    Shape { name: "3x3 128->128 @28", cin: 128, cout: 128, hw: 28, k: 3, stride: 1, residual: false },
    Shape { name: "3x3 256->256 @14", cin: 256, cout: 256, hw: 14, k: 3, stride: 1, residual: false },
    Shape { name: "3x3 512->512 @7", cin: 512, cout: 512, hw: 7, k: 3, stride: 1, residual: false },
    Shape { name: "3x3s2 128->128 @56", cin: 128, cout: 128, hw: 56, k: 3, stride: 2, residual: false },
    Shape { name: "3x3s2 512->512 @14", cin: 512, cout: 512, hw: 14, k: 3, stride: 2, residual: false },
    Shape { name: "1x1 256->128 @56", cin: 256, cout: 128, hw: 56, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 512->128 @28", cin: 512, cout: 128, hw: 28, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 128->512 @28", cin: 128, cout: 512, hw: 28, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 512->256 @28", cin: 512, cout: 256, hw: 28, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 1024->256 @14", cin: 1024, cout: 256, hw: 14, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 256->1024 @14", cin: 256, cout: 1024, hw: 14, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 1024->512 @14", cin: 1024, cout: 512, hw: 14, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 2048->512 @7", cin: 2048, cout: 512, hw: 7, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 512->2048 @7", cin: 512, cout: 2048, hw: 7, k: 1, stride: 1, residual: true },
    Shape { name: "1x1s2 512->1024 @28", cin: 512, cout: 1024, hw: 28, k: 1, stride: 2, residual: true },
    Shape { name: "1x1s2 1024->2048 @14", cin: 1024, cout: 2048, hw: 14, k: 1, stride: 2, residual: true },
    Shape { name: "7x7s2 3->64 @224", cin: 3, cout: 64, hw: 224, k: 7, stride: 2, residual: false },
    // MobileNetV2's expansions and projections (few channels at large planes: memory-bound).
    Shape { name: "1x1 16->96 @112", cin: 16, cout: 96, hw: 112, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 144->24 @56", cin: 144, cout: 24, hw: 56, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 32->16 @112", cin: 32, cout: 16, hw: 112, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 24->144 @56", cin: 24, cout: 144, hw: 56, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 144->32 @28", cin: 144, cout: 32, hw: 28, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 192->32 @28", cin: 192, cout: 32, hw: 28, k: 1, stride: 1, residual: true },
    // EfficientNet-B0's projections.
    Shape { name: "1x1 240->40 @28", cin: 240, cout: 40, hw: 28, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 480->80 @14", cin: 480, cout: 80, hw: 14, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 672->112 @14", cin: 672, cout: 112, hw: 14, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 112->672 @14", cin: 112, cout: 672, hw: 14, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 240->80 @14", cin: 240, cout: 80, hw: 14, k: 1, stride: 1, residual: false },
    // The MobileNets' and EfficientNet's stem.
    Shape { name: "3x3s2 3->32 @224", cin: 3, cout: 32, hw: 224, k: 3, stride: 2, residual: false },
    // MobileNetV2's at 14x14.
    Shape { name: "1x1 576->96 @14", cin: 576, cout: 96, hw: 14, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 96->576 @14", cin: 96, cout: 576, hw: 14, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 384->64 @14", cin: 384, cout: 64, hw: 14, k: 1, stride: 1, residual: true },
    // MobileNetV2's and EfficientNet-B0's 7x7 projections and heads (channels in lanes on avx2).
    Shape { name: "1x1 320->1280 @7", cin: 320, cout: 1280, hw: 7, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 960->320 @7", cin: 960, cout: 320, hw: 7, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 960->160 @7", cin: 960, cout: 160, hw: 7, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 576->160 @7", cin: 576, cout: 160, hw: 7, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 1152->320 @7", cin: 1152, cout: 320, hw: 7, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 1152->192 @7", cin: 1152, cout: 192, hw: 7, k: 1, stride: 1, residual: true },
    Shape { name: "1x1 672->192 @7", cin: 672, cout: 192, hw: 7, k: 1, stride: 1, residual: false },
];

/// The shape's convolution, of `kind` or the kind its geometry gets by default.
fn spec(s: &Shape, kind: Option<ConvKind>) -> ConvSpec {
    let kind = kind.unwrap_or(match (s.k, s.stride) {
        (1, 1) => ConvKind::Gemm1x1,
        (1, _) => ConvKind::StridedGemm1x1,
        _ => ConvKind::Direct,
    });
    let op = FusedConv { residual: s.residual, ..FusedConv::square(s.cin, s.cout, s.k, s.stride, kind) };
    ConvSpec::contiguous(op, [s.cin, s.hw, s.hw]).expect("valid shape")
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_time() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant the OS knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The host's FMA peak with `isa`'s vectors, GFLOP/s on one core (best of several runs).
fn peak(isa: Isa) -> f64 {
    let probe = PeakProbe::new(isa).expect("the host supports the ISA");
    let iters = 20_000_000u64;
    probe.run(iters / 10);
    (0..5)
        .map(|_| {
            let t0 = thread_cpu_time();
            probe.run(iters);
            probe.flops_per_iteration * iters as f64 / (thread_cpu_time() - t0) * 1e-9
        })
        .fold(0.0, f64::max)
}

/// How the operands of a timed call are laid out: samples per call, and whether the output buffer
/// is also the residual (in place).
#[derive(Clone, Copy)]
struct Run {
    batch: usize,
    inplace: bool,
    /// Evict the caches before every timed call (weights and inputs come from memory, as in a
    /// whole network whose weights exceed the last-level cache).
    cold: bool,
}

/// Bytes streamed through to evict the caches (twice the 32 MiB L3 of the machines we measure).
const EVICT_BYTES: usize = 64 << 20;

/// Best seconds per call of the kernel over `run.batch` samples on `threads` threads: thread CPU
/// time for one thread, wall time for more.
fn time(
    spec: &ConvSpec,
    isa: Isa,
    threads: usize,
    iters: usize,
    run: Run,
) -> Result<(f64, &'static str), String> {
    let batch = run.batch;
    let kspec = KernelSpec::Conv(spec.clone());
    let ks = compile(
        &[KernelRequest { name: "bench".into(), spec: kspec }],
        CompileOptions { isa: IsaChoice::Fixed(isa), ..Default::default() },
    )
    .map_err(|e| e.to_string())?;
    let k = &ks.kernels[0];
    let c = &spec.op.conv;
    let wlen = c.out_channels * c.in_channels * c.kernel[0] * c.kernel[1];
    let mut w: Vec<f32> = (0..wlen).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    if let ConvKind::Winograd(tile) = spec.op.kind {
        let g = WeightExpr::param("w", vec![c.out_channels, c.in_channels, 3, 3]);
        w = WeightExpr::Winograd { x: Box::new(g), tile }
            .eval(&|_| Some(&w[..]))
            .map_err(|e| e.to_string())?;
    }
    let b = vec![0.1f32; c.out_channels];
    let packed = AlignedF32::from_slice(&pack_conv_weights(spec, &[&w, &b]).map_err(|e| e.to_string())?);
    let x = AlignedF32::from_slice(&vec![0.5f32; spec.in_stride * batch]);
    let res = AlignedF32::from_slice(&vec![0.25f32; spec.res_stride * batch]);
    let mut out = AlignedF32::from_slice(&vec![0.25f32; spec.out_stride * batch]);
    let items = k.work_items(batch);
    let (x_ptr, w_ptr) = (x.as_ptr() as usize, packed.as_ptr() as usize);
    let out_ptr = out.as_mut_ptr() as usize;
    // In place: the residual is read from the output buffer (same strides: contiguous specs).
    let res_ptr = if run.inplace { out_ptr } else { res.as_ptr() as usize };
    let mut scratches: Vec<AlignedF32> =
        (0..threads).map(|_| AlignedF32::zeros(k.scratch_floats().max(1))).collect();
    let mut best = f64::INFINITY;
    let mut evict = if run.cold { vec![0u8; EVICT_BYTES] } else { Vec::new() };
    for it in 0..iters + 3 {
        for (i, line) in evict.chunks_mut(64).enumerate() {
            line[0] = line[0].wrapping_add(i as u8);
        }
        std::hint::black_box(&mut evict);
        let t0 = Instant::now();
        let c0 = thread_cpu_time();
        std::thread::scope(|scope| {
            for (t, scratch) in scratches.iter_mut().enumerate() {
                let (lo, hi) = (items * t as u64 / threads as u64, items * (t as u64 + 1) / threads as u64);
                let scratch = scratch.as_mut_ptr() as usize;
                let run = move || {
                    let inputs = [x_ptr as *const f32, res_ptr as *const f32];
                    let weights = [w_ptr as *const f32];
                    let args = KernelArgs {
                        inputs: &inputs[..k.spec.input_count()],
                        output: out_ptr as *mut f32,
                        weights: &weights,
                        scratch: scratch as *mut f32,
                        batch,
                        setup: std::ptr::null_mut(),
                    };
                    // SAFETY: buffers sized for `batch` samples of this spec; each thread has its
                    // own scratch and a disjoint item range; in place, every output element is read
                    // as the residual only by the tile that then stores it.
                    unsafe { k.call(&args, lo, hi) };
                };
                if threads == 1 {
                    run();
                } else {
                    scope.spawn(run);
                }
            }
        });
        let t = if threads == 1 { thread_cpu_time() - c0 } else { t0.elapsed().as_secs_f64() };
        if it >= 3 {
            best = best.min(t);
        }
    }
    Ok((best, k.implementation))
}

/// A kernel variant to time: (register tile, loop order), `None` for the default.
type Variant = (Option<(usize, usize)>, Option<bool>);

/// Tiles worth trying per ISA (rows divide or stack the 12-row weight panels).
fn sweep_tiles(isa: Isa) -> &'static [(usize, usize)] {
    match isa {
        Isa::Sse => &[(6, 2), (4, 3), (3, 3), (3, 4), (2, 6)],
        Isa::Avx2 => &[(6, 2), (4, 3), (3, 4), (12, 1), (2, 6)],
        Isa::Avx512 => &[(12, 2), (6, 4), (4, 6), (3, 8), (24, 1), (12, 1)],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let (sweep, quick) = (flag("--sweep"), flag("--quick"));
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let isa_arg = value("--isa");
    let batch_arg = value("--batch");
    let batch: usize = batch_arg.as_deref().map_or(1, |b| b.parse().expect("--batch takes a number"));
    let run = Run { batch, inplace: flag("--inplace"), cold: flag("--cold") };
    let filter = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with("--") && Some(*a) != isa_arg.as_ref() && Some(*a) != batch_arg.as_ref())
        .cloned();
    let isas: Vec<Isa> = match &isa_arg {
        Some(name) => vec![Isa::parse(name).unwrap_or_else(|| panic!("unknown ISA {name}"))],
        None => Isa::available(),
    };
    for isa in Isa::ALL {
        if !isa.host_supports() {
            println!("skipped {isa}: host lacks {}", isa.missing_features().join(", "));
        }
    }
    for isa in isas {
        let peak1 = peak(isa);
        println!("\n{isa}: FMA peak {peak1:.1} GFLOP/s per core (register-only loop, thread CPU time)");
        println!(
            "{:<22} {:>7} {:>22} {:>9} {:>6} {:>9} {:>6}",
            "shape", "MFLOP", "implementation tile", "1 thread", "peak", "2 threads", "peak"
        );
        // Algorithms to time besides each shape's default.
        let mut kinds: Vec<Option<ConvKind>> = vec![None];
        if flag("--winograd") {
            kinds.extend([
                Some(ConvKind::Winograd(WinogradTile::F2)),
                Some(ConvKind::Winograd(WinogradTile::F4)),
            ]);
        }
        if flag("--chanvec") {
            kinds.push(Some(ConvKind::ChanVec));
        }
        for (s, kind) in SHAPES
            .iter()
            .filter(|s| filter.as_deref().is_none_or(|f| s.name.contains(f)))
            .flat_map(|s| kinds.iter().map(move |&k| (s, k)))
            .filter(|(s, k)| !matches!(k, Some(ConvKind::Winograd(_))) || (s.k == 3 && s.stride == 1))
        {
            let base = spec(s, kind);
            let [co, oh, ow] = base.output().expect("valid");
            let flops = 2.0 * (batch * co * oh * ow * s.cin * s.k * s.k) as f64;
            let iters = if quick { 5 } else { (2e10 / flops).clamp(10.0, 200.0) as usize };
            let mut variants: Vec<Variant> = vec![(None, None)];
            if sweep {
                let orders: &[Option<bool>] =
                    if flag("--orders") { &[Some(false), Some(true)] } else { &[None] };
                // The plan's own tile (a direct 1x1 reading B in place has its own default).
                let default = ConvPlan::new(&base, isa)
                    .map_or_else(|_| default_tile(isa, ConvPath::of(&base), ow), |p| (p.mt, p.nv));
                for &tile in sweep_tiles(isa).iter().filter(|&&t| t != default) {
                    for &order in orders {
                        variants.push((Some(tile), order));
                    }
                }
            }
            for (tile, order) in variants {
                let mut sp = base.clone();
                sp.tile = tile;
                sp.order = order;
                let Ok(plan) = ConvPlan::new(&sp, isa) else { continue };
                let label = format!(
                    "{}{}x{}{}",
                    match kind {
                        Some(ConvKind::Winograd(WinogradTile::F2)) => "F2 ",
                        Some(ConvKind::Winograd(_)) => "F4 ",
                        _ => "",
                    },
                    plan.mt,
                    plan.nv * plan.lanes,
                    if plan.tiles_outer { " T" } else { " P" }
                );
                let timed = |threads| time(&sp, isa, threads, iters, run);
                let two = if flag("--one") { timed(1) } else { timed(2) };
                match (timed(1), two) {
                    (Ok((t1, name)), Ok((t2, _))) => {
                        let (g1, g2) = (flops / t1 * 1e-9, flops / t2 * 1e-9);
                        println!(
                            "{:<22} {:>7.1} {:>22} {:>9.1} {:>5.0}% {:>9.1} {:>5.0}%",
                            s.name,
                            flops * 1e-6,
                            format!("{} {label}", name.rsplit('.').nth(1).unwrap_or(name)),
                            g1,
                            100.0 * g1 / peak1,
                            g2,
                            100.0 * g2 / (2.0 * peak1)
                        );
                    }
                    (Err(e), _) | (_, Err(e)) => println!("{:<22} {label}: {e}", s.name),
                }
            }
        }
    }
}
