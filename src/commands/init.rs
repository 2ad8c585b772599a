//! `netc init FILE.net -o W.safetensors [--seed N]`: deterministic He-initialised weights.

use std::path::PathBuf;

/// Write He-initialised weights for a model, with the tensor names `netc run` expects.
///
/// Conv and linear weights are drawn from normal(0, sqrt(2 / fan_in)) (He et al. 2015, the seed
/// architectures' practice), biases are 0 and BatchNorm starts at identity statistics (weight 1,
/// bias 0, running mean 0, running variance 1). The same seed gives the same file, byte for byte.
/// The names are the PyTorch state_dict keys (`layer1.0.conv1.weight`, ...), so the file also loads
/// into the equivalent torchvision model. The file appears only when complete.
///
/// The file's metadata (safetensors `__metadata__`: `netc.init = random`, the seed) says the weights
/// are random; it is carried into bundles compiled from them, and `netc run` notes on standard
/// error that their predictions are meaningless.
///
/// Example:
///   netc init models/resnet18.net -o resnet18.safetensors --seed 1
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model file.
    pub file: PathBuf,
    /// Where to write the weights.
    #[arg(short, long, value_name = "W.safetensors")]
    pub output: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = super::load_model(&args.file, None)?;
    netc_runtime::io::atomic::check_writable(&args.output)?;
    let tensors = netc_runtime::init::he_init(&graph, args.seed)?;
    let metadata = netc_runtime::init::metadata(&graph.name, args.seed);
    netc_runtime::weights::write_file_with_metadata(&args.output, &tensors, &metadata)?;
    let values: usize = tensors.values().map(|t| t.shape().iter().product::<usize>()).sum();
    let text = format!(
        "{}: wrote {} tensors ({} values, seed {}) to {}\n",
        graph.name,
        tensors.len(),
        super::summary::thousands(values as u64),
        args.seed,
        args.output.display()
    );
    super::output::stdout(text.as_bytes())
}
