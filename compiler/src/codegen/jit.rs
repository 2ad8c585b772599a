//! The JIT module lifecycle: build the functions of a set of kernels, compile them, finalize the
//! code memory, and hand out callable kernels owned by [`CompiledKernels`].
//!
//! The target ISA is resolved once ([`CompileOptions::isa`]); each kernel gets the implementation
//! the [`registry`] picks for it. Kernels are compiled in one `JITModule` per
//! optimisation level (the Cranelift target, and so the opt level, is per module; see
//! [`OptLevel`]); the assembled tiles a kernel calls are defined in its module. `CompiledKernels`
//! owns the modules and frees their code memory when dropped; the function pointers are only
//! reachable through `&CompiledKernel`, so they cannot outlive it.

use super::bounds::{self, Buffers};
use super::cx::{kernel_signature, KernelCx};
use super::isa::{self, Isa, IsaChoice, OptLevel};
use super::tile::{AssembledTile, Tiles};
use super::{registry, CodegenError, KernelFn, KernelSpec};
use cranelift_codegen::ir::{Block, Function, UserFuncName};
use cranelift_codegen::write::{FuncWriter, PlainWriter};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One kernel to compile: the IR node it implements (shown in dumps) and what to compute.
#[derive(Debug, Clone)]
pub struct KernelRequest {
    /// Name of the IR node (e.g. `%5 @layer1.0.conv3 gemm1x1+bias`).
    pub name: String,
    pub spec: KernelSpec,
}

/// What to keep besides the code.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileOptions {
    /// Keep each kernel's CLIF text, annotated (for `netc ir --stage clif`).
    pub keep_clif: bool,
    /// Compile every kernel at this level instead of its family's (for measurements).
    pub opt_level: Option<OptLevel>,
    /// The instruction set to generate for.
    pub isa: IsaChoice,
    /// Threads that compile kernels (default: the machine's available parallelism).
    pub threads: Option<usize>,
    /// Prove every kernel's memory accesses in bounds before it is compiled (the static check of
    /// [`super::bounds`]; also on when the environment has `NETC_CHECK_BOUNDS=1`). It costs
    /// start-up time (hundreds of milliseconds for a ResNet-50), so it is off by default: `netc
    /// compile` proves a bundle's kernels when it makes it ([`check_program`]).
    pub check_bounds: bool,
}

/// The first request of each distinct spec, and for every request the first one with its spec.
fn distinct_specs(requests: &[KernelRequest]) -> (Vec<usize>, Vec<usize>) {
    let mut distinct: Vec<usize> = Vec::new();
    let same = (0..requests.len())
        .map(|i| match distinct.iter().copied().find(|&d| requests[d].spec == requests[i].spec) {
            Some(d) => d,
            None => {
                distinct.push(i);
                i
            }
        })
        .collect();
    (distinct, same)
}

/// Batch sizes every kernel's accesses are proved in bounds for (see [`super::bounds`]).
const CHECKED_BATCHES: [usize; 2] = [1, 2];

/// Proves `func`, the kernel for `spec` on `isa`, in bounds of `buffers` (each a batch size's).
fn check_bounds(name: &str, func: &Function, buffers: &[Buffers], tiles: &Tiles) -> Result<(), CodegenError> {
    for b in buffers {
        bounds::check(func, b, &|index| tiles.footprint(index))
            .map_err(|e| CodegenError::OutOfBounds(format!("{name} (batch {}): {e}", b.batch)))?;
    }
    Ok(())
}

/// Proves every distinct kernel of `requests` in bounds for `isa` (see [`super::bounds`]) without
/// compiling machine code, on up to `threads` threads; returns how many distinct kernels it proved.
pub fn check_program(requests: &[KernelRequest], isa: Isa, threads: usize) -> Result<usize, CodegenError> {
    let distinct: Vec<&KernelRequest> =
        distinct_specs(requests).0.into_iter().map(|i| &requests[i]).collect();
    let threads = threads.clamp(1, distinct.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(), CodegenError>> = std::thread::scope(|scope| {
        let work = || -> Result<(), CodegenError> {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(req) = distinct.get(i) else { return Ok(()) };
                let implementation = registry::select(&req.spec, isa)?;
                let buffers = CHECKED_BATCHES.map(|n| Buffers::of(&req.spec, implementation.isa, n));
                let name = format!("{} ({})", req.name, implementation.name);
                prove(&name, &req.spec, implementation.isa, &buffers)?;
            }
        };
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        std::iter::once(work())
            .chain(helpers.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(distinct.len())
}

/// Generates the kernel for `spec` on `isa` and runs the static bounds check against `buffers`
/// instead of the spec's own (for testing that the check catches a kernel generated from a wrong
/// spec); nothing is compiled to machine code.
pub fn check_against(spec: &KernelSpec, isa: Isa, buffers: &[Buffers]) -> Result<(), CodegenError> {
    prove("kernel", spec, isa, buffers)
}

/// Generates `spec`'s kernel on `isa` (no machine code) and checks it against `buffers`.
fn prove(name: &str, spec: &KernelSpec, isa: Isa, buffers: &[Buffers]) -> Result<(), CodegenError> {
    let (target, has_fma) = isa::build(isa, OptLevel::None)?;
    let call_conv = target.default_call_conv();
    let frontend = target.frontend_config();
    let mut module = JITModule::new(JITBuilder::with_isa(target, default_libcall_names()));
    let mut tiles = Tiles::new(&mut module, call_conv);
    let mut fctx = FunctionBuilderContext::new();
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), kernel_signature(call_conv));
    {
        let mut cx = KernelCx::new(&mut func, &mut fctx, frontend, has_fma);
        spec.emit(&mut cx, &mut tiles, isa)?;
        cx.finish();
    }
    check_bounds(name, &func, buffers, &tiles)
}

/// Arguments of one kernel call; see [`KernelFn`] for what each pointer must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct KernelArgs<'a> {
    pub inputs: &'a [*const f32],
    pub output: *mut f32,
    pub weights: &'a [*const f32],
    /// At least [`CompiledKernel::scratch_floats`] floats private to the calling thread.
    pub scratch: *mut f32,
    /// The batch size the pointers are laid out for.
    pub batch: usize,
    /// What this thread's scratch holds for the kernel (null: unknown, as at the start of every
    /// call). Kernels whose items share set-up work (a convolution's fill and Winograd input
    /// transform: see [`CompiledKernel::items_sharing_setup`]) remember there which set-up the
    /// scratch holds when a call returns and skip it when the next call of the same kernel on the
    /// same thread starts with the same one. So an executor that hands one thread several chunks
    /// of a kernel's items passes the same memo to each of those calls, set to -1 before the
    /// first, and never shares it between threads, kernels or runs (the scratch would not match).
    pub setup: *mut i64,
}

/// A compiled kernel: its entry point and what a caller needs to know to run it.
pub struct CompiledKernel {
    pub name: String,
    pub spec: KernelSpec,
    /// The registry entry it was generated with (`conv.rowpanel.avx512`).
    pub implementation: &'static str,
    /// The ISA of its tiles.
    pub isa: Isa,
    func: KernelFn,
    clif: Option<String>,
    code: Vec<u8>,
    tiles: Vec<AssembledTile>,
}

impl CompiledKernel {
    /// Work items of a batch of `n` samples: call with any partition of `0..work_items(n)`.
    pub fn work_items(&self, n: usize) -> u64 {
        self.spec.work_items(self.isa, n) as u64
    }

    /// Consecutive work items that share set-up work (see [`KernelSpec::items_sharing_setup`]).
    pub fn items_sharing_setup(&self) -> u64 {
        self.spec.items_sharing_setup(self.isa) as u64
    }

    /// Floats of per-thread scratch the kernel needs (0 for most).
    pub fn scratch_floats(&self) -> usize {
        self.spec.scratch_floats(self.isa)
    }

    /// The register tiles assembled for this kernel (none for Cranelift-only kernels; a tile shared
    /// with an earlier kernel of the same module is listed there).
    pub fn tiles(&self) -> &[AssembledTile] {
        &self.tiles
    }

    /// The annotated CLIF, if compiled with [`CompileOptions::keep_clif`].
    pub fn clif(&self) -> Option<&str> {
        self.clif.as_deref()
    }

    /// The machine code.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// The machine code as Intel-syntax assembly, one instruction a line, followed by each
    /// assembled tile's.
    pub fn disassembly(&self) -> String {
        let mut text = disassemble(&self.code);
        for tile in &self.tiles {
            let _ = writeln!(text, "; tile {}", tile.name);
            text += &disassemble(&tile.code);
        }
        text
    }

    /// Runs work items `begin..end`.
    ///
    /// # Safety
    /// The pointers in `args` must satisfy the contract of [`KernelFn`] for this kernel's spec and
    /// a batch that has at least `end` work items: every input and weight pointer valid for reads
    /// of the whole value or packed buffer, `output` valid for writes of the items' outputs and not
    /// written concurrently by anyone else for the same items, `scratch` private to this call.
    pub unsafe fn call(&self, args: &KernelArgs, begin: u64, end: u64) {
        debug_assert_eq!(args.inputs.len(), self.spec.input_count());
        // SAFETY: forwarded to the caller (see above); `self.func` is alive while `self` is.
        unsafe {
            (self.func)(
                args.inputs.as_ptr(),
                args.output,
                args.weights.as_ptr(),
                args.scratch,
                begin,
                end,
                args.batch as u64,
                args.setup,
            )
        }
    }

    /// The raw entry point, valid as long as the owning [`CompiledKernels`] lives.
    pub fn entry(&self) -> KernelFn {
        self.func
    }
}

/// The code memory of a compiled set of kernels, and the kernels.
pub struct CompiledKernels {
    pub kernels: Vec<CompiledKernel>,
    /// The ISA they were generated for (each kernel's tiles use it or a narrower one).
    pub isa: Isa,
    modules: Mutex<Vec<JITModule>>,
}

impl Drop for CompiledKernels {
    fn drop(&mut self) {
        let modules = std::mem::take(self.modules.get_mut().unwrap_or_else(|e| e.into_inner()));
        for module in modules {
            // SAFETY: the kernels (and their pointers) are owned by `self` and dropped with it; a
            // kernel can only be running while a `&CompiledKernel` borrow of `self` is alive.
            unsafe { module.free_memory() };
        }
    }
}

/// Compiles every request; kernel `i` of the result implements `requests[i]`.
///
/// Requests with equal specs (ResNet-152 has 157 kernels but far fewer distinct shapes) are
/// compiled once and share their code, unless CLIF is kept (each kernel's dump names its node).
/// The distinct kernels are compiled on up to [`CompileOptions::threads`] threads, each into
/// modules of its own.
pub fn compile(requests: &[KernelRequest], options: CompileOptions) -> Result<CompiledKernels, CodegenError> {
    let target_isa = options.isa.resolve()?;
    // `same[i]`: the request compiled for `requests[i]` (every one when CLIF is kept).
    let (distinct, same) = if options.keep_clif {
        ((0..requests.len()).collect(), (0..requests.len()).collect())
    } else {
        distinct_specs(requests)
    };
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, distinct.len().max(1));
    // The distinct kernels per optimisation level, each level a queue the threads take kernels
    // from one at a time: a kernel's compile time varies tenfold (a Winograd driver against a
    // pooling loop), so a fixed split leaves one thread idle while the other finishes.
    let mut by_level: BTreeMap<OptLevel, Vec<usize>> = BTreeMap::new();
    for &i in &distinct {
        by_level.entry(options.opt_level.unwrap_or(requests[i].spec.opt_level())).or_default().push(i);
    }
    let queues: Vec<LevelQueue> = by_level
        .into_iter()
        .map(|(level, kernels)| LevelQueue { level, kernels, next: AtomicUsize::new(0) })
        .collect();
    // The calling thread compiles too (its allocator is warm), helpers beside it.
    let results: Vec<Result<Group, CodegenError>> = std::thread::scope(|scope| {
        let queues = &queues;
        let helpers: Vec<_> = (1..threads)
            .map(|_| scope.spawn(move || compile_from_queues(requests, queues, options, target_isa)))
            .collect();
        let first = compile_from_queues(requests, queues, options, target_isa);
        std::iter::once(first)
            .chain(helpers.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))))
            .collect()
    });
    let mut modules = Vec::new();
    let mut built: HashMap<usize, Built> = HashMap::new();
    for result in results {
        let (group_modules, group_built) = result?;
        let base = modules.len();
        built.extend(group_built.into_iter().map(|(i, b)| (i, Built { module: base + b.module, ..b })));
        modules.extend(group_modules);
    }
    let mut kernels = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        let b = built.get(&same[i]).expect("every distinct request was compiled");
        let ptr = modules[b.module].get_finalized_function(b.id);
        // SAFETY: the function was declared with `kernel_signature`, which is `KernelFn`'s ABI
        // (seven 64-bit integer/pointer arguments, no result, the platform's default convention).
        let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        kernels.push(CompiledKernel {
            name: req.name.clone(),
            spec: req.spec.clone(),
            implementation: b.implementation.name,
            isa: b.implementation.isa,
            func,
            clif: b.clif.clone(),
            code: b.code.clone(),
            tiles: b.tiles.clone(),
        });
    }
    Ok(CompiledKernels { kernels, isa: target_isa, modules: Mutex::new(modules) })
}

/// The finalised modules of a group of kernels, and where each kernel is.
type Group = (Vec<JITModule>, HashMap<usize, Built>);

/// The distinct kernels compiled at one optimisation level, and the index of the next one to take.
struct LevelQueue {
    level: OptLevel,
    kernels: Vec<usize>,
    next: AtomicUsize,
}

/// Takes kernels from each level's queue in turn until it is empty, compiling them into a module of
/// this thread's per level, finalised; the map says where each kernel is. Every kernel is taken by
/// exactly one thread (`fetch_add` hands out each index once).
fn compile_from_queues(
    requests: &[KernelRequest],
    queues: &[LevelQueue],
    options: CompileOptions,
    target_isa: Isa,
) -> Result<Group, CodegenError> {
    let check = options.check_bounds || std::env::var("NETC_CHECK_BOUNDS").is_ok_and(|v| v == "1");
    let mut modules = Vec::new();
    let mut built: HashMap<usize, Built> = HashMap::new();
    let mut fctx = FunctionBuilderContext::new();
    for queue in queues {
        let level = queue.level;
        let mut taken =
            std::iter::from_fn(|| queue.kernels.get(queue.next.fetch_add(1, Ordering::Relaxed)).copied())
                .peekable();
        if taken.peek().is_none() {
            continue;
        }
        let (target, has_fma) = isa::build(target_isa, level)?;
        let call_conv = target.default_call_conv();
        let frontend = target.frontend_config();
        let mut builder = JITBuilder::with_isa(target, default_libcall_names());
        for (name, ptr) in super::helpers::symbols() {
            builder.symbol(name, ptr);
        }
        let mut module = JITModule::new(builder);
        let mut ctx = module.make_context();
        let mut tiles = Tiles::new(&mut module, call_conv);
        for i in taken {
            let req = &requests[i];
            let implementation = registry::select(&req.spec, target_isa)?;
            let sig = kernel_signature(call_conv);
            let id = tiles
                .module
                .declare_function(&format!("netc_kernel_{i}"), Linkage::Local, &sig)
                .map_err(|e| CodegenError::Cranelift(format!("{}: {e}", req.name)))?;
            ctx.clear();
            ctx.func = Function::with_name_signature(UserFuncName::user(0, i as u32), sig);
            let notes = {
                let mut cx = KernelCx::new(&mut ctx.func, &mut fctx, frontend, has_fma);
                req.spec
                    .emit(&mut cx, &mut tiles, implementation.isa)
                    .map_err(|e| CodegenError::Unsupported(format!("{}: {e}", req.name)))?;
                cx.finish()
            };
            if check {
                let buffers = CHECKED_BATCHES.map(|n| Buffers::of(&req.spec, implementation.isa, n));
                check_bounds(&req.name, &ctx.func, &buffers, &tiles)?;
            }
            let clif = options
                .keep_clif
                .then(|| annotated_clif(&req.name, implementation, &req.spec, &ctx.func, notes));
            tiles
                .module
                .define_function(id, &mut ctx)
                .map_err(|e| CodegenError::Cranelift(format!("{}: {e:?}", req.name)))?;
            let code = ctx.compiled_code().map(|c| c.code_buffer().to_vec()).unwrap_or_default();
            let assembled = tiles.take_assembled();
            built
                .insert(i, Built { module: modules.len(), id, clif, code, tiles: assembled, implementation });
        }
        drop(tiles);
        module.finalize_definitions().map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        modules.push(module);
    }
    Ok((modules, built))
}

/// A compiled kernel before its module is finalised.
struct Built {
    module: usize,
    id: cranelift_module::FuncId,
    clif: Option<String>,
    code: Vec<u8>,
    tiles: Vec<AssembledTile>,
    implementation: &'static registry::Implementation,
}

/// Writes CLIF with a header naming the IR node and a comment line before each annotated block.
struct NotedWriter {
    notes: HashMap<Block, Vec<String>>,
}

impl FuncWriter for NotedWriter {
    fn write_block_header(
        &mut self,
        w: &mut dyn std::fmt::Write,
        func: &Function,
        block: Block,
        indent: usize,
    ) -> std::fmt::Result {
        for note in self.notes.get(&block).into_iter().flatten() {
            writeln!(w, "    ; {note}")?;
        }
        PlainWriter.write_block_header(w, func, block, indent)
    }

    fn write_instruction(
        &mut self,
        w: &mut dyn std::fmt::Write,
        func: &Function,
        aliases: &cranelift_codegen::entity::SecondaryMap<
            cranelift_codegen::ir::Value,
            Vec<cranelift_codegen::ir::Value>,
        >,
        inst: cranelift_codegen::ir::Inst,
        indent: usize,
    ) -> std::fmt::Result {
        PlainWriter.write_instruction(w, func, aliases, inst, indent)
    }
}

fn annotated_clif(
    name: &str,
    implementation: &registry::Implementation,
    spec: &KernelSpec,
    func: &Function,
    notes: Vec<(Block, String)>,
) -> String {
    let mut by_block: HashMap<Block, Vec<String>> = HashMap::new();
    for (block, note) in notes {
        by_block.entry(block).or_default().push(note);
    }
    let mut text =
        format!("; kernel for {name}\n; {}: {}\n", implementation.name, spec.describe(implementation.isa));
    let mut writer = NotedWriter { notes: by_block };
    if cranelift_codegen::write::decorate_function(&mut writer, &mut text, func).is_err() {
        text += "; (CLIF could not be printed)\n";
    }
    text
}

/// Intel-syntax disassembly of x86-64 machine code.
pub fn disassemble(code: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut text = String::new();
    let mut line = String::new();
    for inst in &mut decoder {
        line.clear();
        formatter.format(&inst, &mut line);
        let _ = writeln!(text, "{:6x}  {line}", inst.ip());
    }
    text
}

/// A register-only FMA loop for measuring the host's peak FLOP rate with an ISA's vectors (see
/// [`super::tile::x86::peak_probe`]); benchmarks report kernels as a share of it.
pub struct PeakProbe {
    module: Option<JITModule>,
    func: unsafe extern "sysv64" fn(u64),
    /// FLOPs of one iteration of the loop.
    pub flops_per_iteration: f64,
}

impl PeakProbe {
    /// Assembles the probe for `isa` (which the host must support).
    pub fn new(isa: Isa) -> Result<PeakProbe, CodegenError> {
        let (target, _) = isa::build(isa, OptLevel::None)?;
        let call_conv = target.default_call_conv();
        let mut module = JITModule::new(JITBuilder::with_isa(target, default_libcall_names()));
        let chains = isa.registers() - 4;
        let code = super::tile::x86::peak_probe(isa, chains)?;
        let mut sig = cranelift_codegen::ir::Signature::new(call_conv);
        sig.params.push(cranelift_codegen::ir::AbiParam::new(cranelift_codegen::ir::types::I64));
        let id = module
            .declare_function("netc_peak_probe", Linkage::Local, &sig)
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        module
            .define_function_bytes(id, 64, &code, &[])
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        module.finalize_definitions().map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        let ptr = module.get_finalized_function(id);
        // SAFETY: the probe is `fn(iterations: u64)` in the SysV convention (see `peak_probe`).
        let func = unsafe { std::mem::transmute::<*const u8, unsafe extern "sysv64" fn(u64)>(ptr) };
        Ok(PeakProbe { module: Some(module), func, flops_per_iteration: (chains * 2 * isa.lanes()) as f64 })
    }

    /// Runs `iterations` iterations (at least 1).
    pub fn run(&self, iterations: u64) {
        // SAFETY: the probe reads and writes vector registers only and loops `iterations` times;
        // its code lives as long as `self`.
        unsafe { (self.func)(iterations.max(1)) }
    }
}

impl Drop for PeakProbe {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: `func` is only callable through `&self`, which cannot outlive this drop.
            unsafe { module.free_memory() };
        }
    }
}
