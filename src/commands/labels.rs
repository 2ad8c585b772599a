//! Class names for `netc run`'s top-k: ImageNet's built in, or a file given with `--labels`.

use anyhow::{bail, Context as _};
use netc_compiler::ir::Graph;
use netc_runtime::classes;
use std::path::{Path, PathBuf};

/// The most bytes a labels file may have (ImageNet-21k's names are about 400 KiB).
const MAX_LABELS_BYTES: u64 = 16 << 20;

/// The names of a classifier's classes, index = class id.
pub enum Labels {
    /// From a file, one name per line.
    File { path: PathBuf, names: Vec<String> },
    /// ImageNet's names when the model has 1000 classes; no names otherwise.
    Builtin,
}

impl Labels {
    /// Reads `path`: one label per line (UTF-8; `\r\n` line ends and a final newline are fine).
    pub fn read(path: &Path) -> anyhow::Result<Labels> {
        let bytes = netc_compiler::files::read_capped(path, MAX_LABELS_BYTES)
            .with_context(|| format!("cannot read labels file {}", path.display()))?;
        let Ok(text) = String::from_utf8(bytes) else {
            bail!("{}: a labels file must be UTF-8 text, one label per line", path.display());
        };
        let names = text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
        Ok(Labels::File { path: path.to_path_buf(), names })
    }

    /// Checks that there is exactly one label per class of a model with `classes` outputs.
    pub fn check(&self, classes: usize, model: &str) -> anyhow::Result<()> {
        let Labels::File { path, names } = self else {
            return Ok(());
        };
        let lines = names.len();
        let mismatch = if lines < classes {
            format!("has only {lines} lines, but model `{model}` has {classes} classes")
        } else if lines > classes {
            format!("has {lines} lines, but model `{model}` has only {classes} classes")
        } else {
            return Ok(());
        };
        bail!("{}: the labels file {mismatch}: give one label per line, in class order", path.display())
    }

    /// [`Labels::check`] against the first output of `graph`, when it is a `[classes]` vector
    /// per sample (other outputs are refused by `--top` itself).
    pub fn check_graph(&self, graph: &Graph) -> anyhow::Result<()> {
        match graph.inference_outputs().next().map(|v| graph.shape(v).dims()) {
            Some(&[classes]) => self.check(classes, &graph.name),
            _ => Ok(()),
        }
    }

    /// The name of class `index` of `classes`, if known.
    pub fn name(&self, index: usize, classes: usize) -> Option<&str> {
        match self {
            Labels::File { names, .. } => names.get(index).map(String::as_str),
            Labels::Builtin if classes == classes::imagenet().len() => {
                classes::imagenet().get(index).copied()
            }
            Labels::Builtin => None,
        }
    }
}
