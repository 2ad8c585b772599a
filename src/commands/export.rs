//! `netc export FILE.net --weights W.safetensors --onnx M.onnx`: the model as an ONNX file.

use std::path::PathBuf;

/// Export a model and its weights to ONNX (opset 17), for ONNX Runtime, Netron or any ONNX tool.
///
/// By default the model as written: one ONNX node per layer (Conv, BatchNormalization, Relu,
/// MaxPool, AveragePool, GlobalAveragePool, LRN, Gemm, Flatten, Add, Concat, Softmax, Dropout),
/// the weights as initializers under their torchvision names, training-only parts (auxiliary
/// classifiers) left out, the batch dimension symbolic. With --optimized, the graph netc runs
/// (BatchNorm folded into the convolutions, fused epilogues spelled out as Mul/Add/Relu nodes,
/// folded weights evaluated). Node and value names are netc's, as `netc ir` prints them.
///
/// Examples:
///   netc export models/resnet50.net --weights resnet50.safetensors --onnx resnet50.onnx
///   netc export models/resnet50.net --weights resnet50.safetensors --onnx r50-opt.onnx --optimized
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model file (.net; a compiled bundle holds packed weights only and cannot be exported).
    pub file: PathBuf,
    /// The weights (.safetensors).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    /// The ONNX file to write.
    #[arg(long, value_name = "M.onnx")]
    pub onnx: PathBuf,
    /// Export the optimised graph instead of the model as written.
    #[arg(long)]
    pub optimized: bool,
    /// Accept NaN and infinite weights (by default the first one is an error naming the tensor).
    #[arg(long)]
    pub allow_nonfinite: bool,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if netc::is_bundle(&args.file) {
        anyhow::bail!(
            "{} is a compiled bundle, whose weights are packed for the kernels: export the .net file with its --weights",
            args.file.display()
        );
    }
    let source = super::exec::Source::open(&args.file, Some(&args.weights), args.allow_nonfinite)?;
    let (parsed, bound) = source.bound()?;
    let bytes = if args.optimized {
        netc::onnx::export(&source.graph(&args.opt)?, &bound)
    } else {
        netc::onnx::export(parsed, &bound)
    }
    .map_err(|e| anyhow::anyhow!("{}: cannot export to ONNX: {e}", args.file.display()))?;
    super::write_output(Some(&args.onnx), &bytes)?;
    eprintln!(
        "{}: {:.1} MiB, ONNX opset {}",
        args.onnx.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        netc::onnx::OPSET
    );
    Ok(())
}
