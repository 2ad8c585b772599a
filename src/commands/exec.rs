//! What `run`, `bench` and `compile` share: opening a model for execution, either a `.net` file with
//! a weight file or a compiled bundle, and building the JIT executable from it.

use anyhow::{bail, Context as _};
use netc_compiler::codegen::CompileOptions;
use netc_compiler::ir::serial::SerialGraph;
use netc_compiler::ir::Graph;
use netc_runtime::bundle::{self, Bundle};
use netc_runtime::jit::{self, Executable, WeightBuf};
use netc_runtime::{BoundWeights, WeightFile};
use std::path::Path;

/// A model ready to be executed.
pub enum Source {
    /// A compiled bundle: the optimised graph and packed weights, read in place.
    Bundle(Bundle),
    /// A `.net` model as written, and its weight file.
    Net { parsed: Graph, file: WeightFile },
}

/// Whether `path` starts with the bundle magic bytes.
pub fn is_bundle(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == bundle::MAGIC
}

impl Source {
    pub fn open(model: &Path, weights: Option<&Path>) -> anyhow::Result<Source> {
        if is_bundle(model) {
            if weights.is_some() {
                bail!("{} is a compiled bundle, which carries its weights: drop --weights", model.display());
            }
            return Ok(Source::Bundle(Bundle::open(model)?));
        }
        let Some(weights) = weights else {
            bail!(
                "{}: a .net model needs --weights W.safetensors (or compile a bundle with `netc compile`)",
                model.display()
            );
        };
        let parsed = super::load_model(model, None)?;
        let file = WeightFile::open(weights)?;
        Ok(Source::Net { parsed, file })
    }

    /// The weights bound to the model as written (a `.net` source only).
    pub fn bound(&self) -> anyhow::Result<(&Graph, BoundWeights<'_>)> {
        match self {
            Source::Net { parsed, file } => Ok((parsed, file.bind(parsed)?)),
            Source::Bundle(b) => bail!(
                "{} holds weights packed for the JIT only; the reference backend needs the .net file and --weights",
                b.path().display()
            ),
        }
    }

    /// The graph that executes: the bundle's, or the `.net` model optimised as `opt` says.
    pub fn graph(&self, opt: &super::OptArgs) -> anyhow::Result<Graph> {
        match self {
            Source::Bundle(b) => bundle_graph(b),
            Source::Net { parsed, .. } => {
                let mut graph = parsed.clone();
                super::optimize(&mut graph, opt, None)?;
                Ok(graph)
            }
        }
    }

    /// Builds the JIT executable: kernels compiled, weights packed (or mapped from the bundle).
    pub fn executable(&self, opt: &super::OptArgs) -> anyhow::Result<Executable<'_>> {
        let graph = self.graph(opt)?;
        let weights = match self {
            Source::Bundle(b) => bundle_weights(b)?,
            Source::Net { .. } => {
                let (_, bound) = self.bound()?;
                jit::pack::pack(&graph, &bound)?
                    .into_iter()
                    .map(|bufs| bufs.into_iter().map(WeightBuf::Owned).collect())
                    .collect()
            }
        };
        Ok(Executable::new(graph, weights, CompileOptions::default())?)
    }
}

/// The optimised graph stored in a bundle.
fn bundle_graph(b: &Bundle) -> anyhow::Result<Graph> {
    let serial: SerialGraph = serde_json::from_value(b.manifest()["graph"].clone())
        .with_context(|| format!("{}: the bundle's graph cannot be read", b.path().display()))?;
    serial
        .to_graph()
        .map_err(|e| anyhow::anyhow!("{}: the bundle's graph is invalid: {e}", b.path().display()))
}

/// The name of the `j`-th weight buffer of the `k`-th kernel in a bundle.
pub fn blob_name(k: usize, j: usize) -> String {
    format!("k{k}.{j}")
}

fn bundle_weights(b: &Bundle) -> anyhow::Result<Vec<Vec<WeightBuf<'_>>>> {
    let counts: Vec<usize> = serde_json::from_value(b.manifest()["kernel_weights"].clone())
        .with_context(|| format!("{}: the bundle's kernel table cannot be read", b.path().display()))?;
    counts
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            (0..n)
                .map(|j| {
                    b.blob(&blob_name(k, j)).map(WeightBuf::Borrowed).with_context(|| {
                        format!("{}: weight blob {} is missing", b.path().display(), blob_name(k, j))
                    })
                })
                .collect()
        })
        .collect()
}
