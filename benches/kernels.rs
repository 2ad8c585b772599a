//! GFLOP/s of the JIT convolution kernels on ResNet-50's layer shapes, on 1 and 2 threads.
//!
//! `cargo bench --bench kernels` prints a table; `-- --sweep` also tries register tiles (and
//! `--orders` both loop orders) and opt_level=speed; `-- --quick` runs fewer iterations. FLOPs are `2 * MACs` of the
//! convolution (epilogue work not counted). Peak on this machine (notes): 49 GFLOP/s per core with
//! 128-bit FMA, 97 with 256-bit; ONNX Runtime's AVX2 kernels about 68 per core.

use netc_compiler::codegen::isa::OptLevel;
use netc_compiler::codegen::{
    compile, pack_conv_weights, AlignedF32, CompileOptions, ConvPlan, ConvSpec, KernelArgs, KernelRequest,
    KernelSpec,
};
use netc_compiler::ir::{Conv2d, ConvKind, FusedConv, Relu};
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
    Shape { name: "1x1 1024->256 @14", cin: 1024, cout: 256, hw: 14, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 2048->512 @7", cin: 2048, cout: 512, hw: 7, k: 1, stride: 1, residual: false },
    Shape { name: "1x1 512->2048 @7", cin: 512, cout: 2048, hw: 7, k: 1, stride: 1, residual: true },
    Shape { name: "1x1s2 512->1024 @28", cin: 512, cout: 1024, hw: 28, k: 1, stride: 2, residual: true },
    Shape { name: "7x7s2 3->64 @224", cin: 3, cout: 64, hw: 224, k: 7, stride: 2, residual: false },
];

fn spec(s: &Shape) -> ConvSpec {
    let kind = match (s.k, s.stride) {
        (1, 1) => ConvKind::Gemm1x1,
        (1, _) => ConvKind::StridedGemm1x1,
        _ => ConvKind::Direct,
    };
    let op = FusedConv {
        conv: Conv2d {
            in_channels: s.cin,
            out_channels: s.cout,
            kernel: [s.k, s.k],
            stride: [s.stride, s.stride],
            padding: [s.k / 2, s.k / 2],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        },
        kind,
        prologue: None,
        affine: false,
        residual: s.residual,
        post_affine: false,
        relu: Relu::All,
    };
    ConvSpec::contiguous(op, [s.cin, s.hw, s.hw]).expect("valid shape")
}

/// Best (minimum) seconds per call of the kernel over a batch of 1, on `threads` threads.
fn time(spec: &ConvSpec, opt: Option<OptLevel>, threads: usize, iters: usize) -> Result<f64, String> {
    let kspec = KernelSpec::Conv(spec.clone());
    let ks = compile(
        &[KernelRequest { name: "bench".into(), spec: kspec }],
        CompileOptions { keep_clif: false, opt_level: opt },
    )
    .map_err(|e| e.to_string())?;
    let k = &ks.kernels[0];
    let c = &spec.op.conv;
    let wlen = c.out_channels * c.in_channels * c.kernel[0] * c.kernel[1];
    let w: Vec<f32> = (0..wlen).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let b = vec![0.1f32; c.out_channels];
    let packed = AlignedF32::from_slice(&pack_conv_weights(spec, &[&w, &b]).map_err(|e| e.to_string())?);
    let x = AlignedF32::from_slice(&vec![0.5f32; spec.in_stride]);
    let res = AlignedF32::from_slice(&vec![0.25f32; spec.res_stride]);
    let mut out = AlignedF32::zeros(spec.out_stride);
    let items = k.work_items(1);
    let (x_ptr, res_ptr, w_ptr) = (x.as_ptr() as usize, res.as_ptr() as usize, packed.as_ptr() as usize);
    let out_ptr = out.as_mut_ptr() as usize;
    let mut scratches: Vec<AlignedF32> =
        (0..threads).map(|_| AlignedF32::zeros(k.scratch_floats().max(1))).collect();
    let mut samples = Vec::with_capacity(iters);
    for it in 0..iters + 3 {
        let t0 = Instant::now();
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
                    };
                    // SAFETY: buffers sized for batch 1 of this spec; each thread has its own
                    // scratch and a disjoint item range.
                    unsafe { k.call(&args, lo, hi) };
                };
                if threads == 1 {
                    run();
                } else {
                    scope.spawn(run);
                }
            }
        });
        if it >= 3 {
            samples.push(t0.elapsed().as_secs_f64());
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[0])
}

/// A kernel variant to time: (register tile, opt level, loop order), `None` for the default.
type Variant = (Option<(usize, usize)>, Option<OptLevel>, Option<bool>);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sweep = args.iter().any(|a| a == "--sweep");
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned();
    println!("{:<22} {:>8} {:>10} {:>10} {:>10}", "shape", "MFLOP", "tile", "1 thread", "2 threads");
    for s in SHAPES.iter().filter(|s| filter.as_deref().is_none_or(|f| s.name.contains(f))) {
        let base = spec(s);
        let [co, oh, ow] = base.output().expect("valid");
        let flops = 2.0 * (co * oh * ow * s.cin * s.k * s.k) as f64;
        let iters = if quick { 5 } else { (2e10 / flops).clamp(10.0, 200.0) as usize };
        let mut variants: Vec<Variant> = vec![(None, None, None)];
        if sweep {
            let orders: &[Option<bool>] =
                if args.iter().any(|a| a == "--orders") { &[Some(false), Some(true)] } else { &[None] };
            for tile in [(6, 2), (5, 2), (4, 3), (3, 3), (3, 4), (2, 6)] {
                for &order in orders {
                    variants.push((Some(tile), None, order));
                }
            }
            variants.push((None, Some(OptLevel::Speed), None));
        }
        for (tile, opt, order) in variants {
            let mut sp = base.clone();
            sp.tile = tile;
            sp.order = order;
            let plan = ConvPlan::new(&sp).expect("plan");
            let label = format!(
                "{}x{}{}{}",
                plan.mr,
                plan.nv * 4,
                if plan.tiles_outer { " T" } else { " P" },
                if opt == Some(OptLevel::Speed) { " spd" } else { "" }
            );
            let gflops = |threads| match time(&sp, opt, threads, iters) {
                Ok(t) => format!("{:.1}", flops / t * 1e-9),
                Err(e) => format!("err: {e}"),
            };
            let (one, two) = (gflops(1), gflops(2));
            println!("{:<22} {:>8.1} {:>10} {:>10} {:>10}", s.name, flops * 1e-6, label, one, two);
        }
    }
}
