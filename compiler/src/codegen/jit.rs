//! The JIT module lifecycle: build the functions of a set of kernels, compile them, finalize the
//! code memory, and hand out callable kernels owned by [`CompiledKernels`].
//!
//! Kernels are compiled in one `JITModule` per optimisation level (the ISA, and so the opt level, is
//! per module; see [`super::isa::OptLevel`]). `CompiledKernels` owns the modules and frees their
//! code memory when dropped; the function pointers are only reachable through `&CompiledKernel`, so
//! they cannot outlive it.

use super::cx::{kernel_signature, KernelCx};
use super::isa::{self, OptLevel};
use super::{CodegenError, KernelFn, KernelSpec};
use cranelift_codegen::ir::{Block, Function, UserFuncName};
use cranelift_codegen::write::{FuncWriter, PlainWriter};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
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
}

/// Arguments of one kernel call; see [`KernelFn`] for what each pointer must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct KernelArgs<'a> {
    pub inputs: &'a [*const f32],
    pub output: *mut f32,
    pub weights: &'a [*const f32],
    /// At least [`CompiledKernel::scratch_floats`] floats private to the calling thread.
    pub scratch: *mut f32,
}

/// A compiled kernel: its entry point and what a caller needs to know to run it.
pub struct CompiledKernel {
    pub name: String,
    pub spec: KernelSpec,
    func: KernelFn,
    clif: Option<String>,
    code: Vec<u8>,
}

impl CompiledKernel {
    /// Work items of a batch of `n` samples: call with any partition of `0..work_items(n)`.
    pub fn work_items(&self, n: usize) -> u64 {
        (n * self.spec.items_per_sample()) as u64
    }

    /// Floats of per-thread scratch the kernel needs (0 for most).
    pub fn scratch_floats(&self) -> usize {
        self.spec.scratch_floats()
    }

    /// The annotated CLIF, if compiled with [`CompileOptions::keep_clif`].
    pub fn clif(&self) -> Option<&str> {
        self.clif.as_deref()
    }

    /// The machine code.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// The machine code as Intel-syntax assembly, one instruction a line.
    pub fn disassembly(&self) -> String {
        disassemble(&self.code)
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
            (self.func)(args.inputs.as_ptr(), args.output, args.weights.as_ptr(), args.scratch, begin, end)
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
pub fn compile(requests: &[KernelRequest], options: CompileOptions) -> Result<CompiledKernels, CodegenError> {
    let mut by_level: BTreeMap<OptLevel, Vec<usize>> = BTreeMap::new();
    for (i, r) in requests.iter().enumerate() {
        by_level.entry(options.opt_level.unwrap_or(r.spec.opt_level())).or_default().push(i);
    }
    let mut modules = Vec::new();
    let mut built: HashMap<usize, (usize, cranelift_module::FuncId, Option<String>, Vec<u8>)> =
        HashMap::new();
    let mut fctx = FunctionBuilderContext::new();
    for (level, indices) in by_level {
        let isa = isa::build(level)?;
        let call_conv = isa.default_call_conv();
        let frontend = isa.frontend_config();
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        for (name, ptr) in super::helpers::symbols() {
            builder.symbol(name, ptr);
        }
        let mut module = JITModule::new(builder);
        let mut ctx = module.make_context();
        for i in indices {
            let req = &requests[i];
            let sig = kernel_signature(call_conv);
            let id = module
                .declare_function(&format!("netc_kernel_{i}"), Linkage::Local, &sig)
                .map_err(|e| CodegenError::Cranelift(format!("{}: {e}", req.name)))?;
            ctx.clear();
            ctx.func = Function::with_name_signature(UserFuncName::user(0, i as u32), sig);
            let notes = {
                let mut cx = KernelCx::new(&mut ctx.func, &mut fctx, frontend);
                req.spec.emit(&mut cx, &mut module)?;
                cx.finish()
            };
            let clif = options.keep_clif.then(|| annotated_clif(&req.name, &req.spec, &ctx.func, notes));
            module
                .define_function(id, &mut ctx)
                .map_err(|e| CodegenError::Cranelift(format!("{}: {e:?}", req.name)))?;
            let code = ctx.compiled_code().map(|c| c.code_buffer().to_vec()).unwrap_or_default();
            built.insert(i, (modules.len(), id, clif, code));
        }
        module.finalize_definitions().map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        modules.push(module);
    }
    let mut kernels = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        let (m, id, clif, code) = built.remove(&i).expect("every request was compiled");
        let ptr = modules[m].get_finalized_function(id);
        // SAFETY: the function was declared with `kernel_signature`, which is `KernelFn`'s ABI
        // (six 64-bit integer/pointer arguments, no result, the platform's default convention).
        let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        kernels.push(CompiledKernel { name: req.name.clone(), spec: req.spec.clone(), func, clif, code });
    }
    Ok(CompiledKernels { kernels, modules: Mutex::new(modules) })
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

fn annotated_clif(name: &str, spec: &KernelSpec, func: &Function, notes: Vec<(Block, String)>) -> String {
    let mut by_block: HashMap<Block, Vec<String>> = HashMap::new();
    for (block, note) in notes {
        by_block.entry(block).or_default().push(note);
    }
    let mut text = format!("; kernel for {name}\n; {}\n", spec.describe());
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
