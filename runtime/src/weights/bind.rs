//! Binding: matching a weight file against the tensors a graph expects, by scoped name.
//!
//! A node with weights owns `<scope>.<suffix>` for each of its [`WeightSpec`]s (`layer1.0.conv1.weight`,
//! `bn1.running_var`), exactly the keys of the equivalent PyTorch `state_dict`. Binding checks every
//! name, shape and dtype and reports all problems together; weights of training-only nodes
//! (GoogLeNet's auxiliary classifiers) may be absent, and int64 `num_batches_tracked` entries are
//! accepted and ignored.

use super::{Dtype, WeightError, WeightFile};
use crate::tensor::Dims;
use netc_compiler::ir::{Graph, Node, NodeId, WeightExpr, WeightKind, WeightSpec};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

/// A tensor the graph expects in a weight file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTensor {
    /// `<scope>.<suffix>`, the state_dict key.
    pub key: String,
    pub shape: Vec<usize>,
    pub kind: WeightKind,
    /// The node that owns it.
    pub node: NodeId,
    /// Owned by a training-only node: may be absent from the file.
    pub optional: bool,
}

/// Every weight-file tensor the graph reads, in node order: the keys `netc init` writes and `bind`
/// expects. In a parsed graph they are `<scope>.<suffix>` per weight slot; in an optimised graph a
/// slot may combine several (a conv weight with a BatchNorm folded in reads five), and a tensor read
/// by several nodes is listed once (optional only if every reader is training-only).
pub fn expected_tensors(graph: &Graph) -> Vec<ExpectedTensor> {
    let mut out: Vec<ExpectedTensor> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        for (WeightSpec { kind, .. }, expr) in node.op.weights().into_iter().zip(&node.weights) {
            let mut leaves = Vec::new();
            expr.params(&mut leaves);
            let direct = matches!(expr, WeightExpr::Param { .. });
            for (key, shape) in leaves {
                match index.get(&key) {
                    Some(&i) => out[i].optional &= node.training_only,
                    None => {
                        index.insert(key.clone(), out.len());
                        let kind = if direct { kind } else { WeightKind::Learnable };
                        out.push(ExpectedTensor { key, shape, kind, node: id, optional: node.training_only });
                    }
                }
            }
        }
    }
    out
}

/// One weight tensor bound to the graph, as f32.
#[derive(Clone)]
pub struct BoundTensor<'a> {
    pub shape: Vec<usize>,
    /// Borrowed from the file's mapping for F32 tensors; converted (owned) for F16/BF16.
    pub data: Cow<'a, [f32]>,
}

impl fmt::Debug for BoundTensor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.is_borrowed() { "borrowed" } else { "converted" };
        write!(f, "BoundTensor({}, {how})", Dims(&self.shape))
    }
}

impl BoundTensor<'_> {
    /// Whether the values are read in place from the weight file (no copy).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Cow::Borrowed(_))
    }
}

/// A graph's weights, checked against it: every tensor a non-training node needs is present with its
/// expected shape.
#[derive(Clone, Default)]
pub struct BoundWeights<'a> {
    tensors: HashMap<String, BoundTensor<'a>>,
}

impl fmt::Debug for BoundWeights<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.tensors.keys().collect();
        keys.sort();
        f.debug_map().entries(keys.into_iter().map(|k| (k, &self.tensors[k]))).finish()
    }
}

impl<'a> BoundWeights<'a> {
    /// A tensor by key.
    pub fn get(&self, key: &str) -> Option<&BoundTensor<'a>> {
        self.tensors.get(key)
    }

    /// The value of `node`'s weight slot `suffix` (`"weight"`, `"bias"`, `"running_mean"`, ...): a plain
    /// file tensor is borrowed as it is; a folded or merged slot is evaluated (in f64, rounded once) from
    /// the tensors it combines. `None` if the node has no such slot or a tensor it needs is not bound.
    pub fn slot(&self, node: &Node, suffix: &str) -> Option<Cow<'_, [f32]>> {
        let i = node.op.weights().iter().position(|s| s.suffix == suffix)?;
        match node.weights.get(i)? {
            WeightExpr::Param { key, .. } => self.tensors.get(key).map(|t| Cow::Borrowed(&*t.data)),
            expr => expr.eval(&|key| self.tensors.get(key).map(|t| &*t.data)).ok().map(Cow::Owned),
        }
    }

    /// Every bound tensor, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BoundTensor<'a>)> {
        self.tensors.iter().map(|(k, t)| (k.as_str(), t))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Everything wrong between a weight file and a graph, reported at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MismatchReport {
    pub path: PathBuf,
    pub model: String,
    /// Expected by the graph, absent from the file: key and expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// In the file, not expected by the graph: key, dtype and shape.
    pub unexpected: Vec<(String, Dtype, Vec<usize>)>,
    /// Present with another shape: key, expected shape, found shape.
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Present with a dtype netc cannot read as weights: key and dtype.
    pub wrong_dtype: Vec<(String, Dtype)>,
}

impl MismatchReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.misshaped.is_empty()
            && self.wrong_dtype.is_empty()
    }
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counts = Vec::new();
        for (n, what) in [
            (self.missing.len(), "missing"),
            (self.unexpected.len(), "unexpected"),
            (self.misshaped.len(), "mis-shaped"),
            (self.wrong_dtype.len(), "of the wrong dtype"),
        ] {
            if n > 0 {
                counts.push(format!("{n} {what}"));
            }
        }
        write!(
            f,
            "{}: the weights do not fit model `{}` ({})",
            self.path.display(),
            self.model,
            counts.join(", ")
        )?;
        for (key, shape) in &self.missing {
            write!(f, "\n  missing     {key}: expected {}", Dims(shape))?;
        }
        for (key, dtype, shape) in &self.unexpected {
            write!(f, "\n  unexpected  {key}: {dtype:?} {}", Dims(shape))?;
        }
        for (key, expected, found) in &self.misshaped {
            write!(f, "\n  mis-shaped  {key}: expected {}, found {}", Dims(expected), Dims(found))?;
        }
        for (key, dtype) in &self.wrong_dtype {
            write!(f, "\n  wrong dtype {key}: {dtype:?} (netc reads F32, F16 and BF16)")?;
        }
        Ok(())
    }
}

/// Whether a file tensor is PyTorch's BatchNorm step counter, which inference does not use.
fn is_batch_counter(name: &str, dtype: Dtype) -> bool {
    dtype == Dtype::I64 && (name == "num_batches_tracked" || name.ends_with(".num_batches_tracked"))
}

/// How strictly [`bind_with`] checks the values.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// Accept NaN and infinite weights (by default the first one is an error).
    pub allow_nonfinite: bool,
}

/// Binds `file` to `graph`: every tensor of every non-training node must be present with its exact
/// shape and a float dtype; tensors of training-only nodes are bound when present. F32 data is
/// borrowed from the file, F16/BF16 converted. Values are checked: no NaN or infinity, and no
/// negative BatchNorm variance (whose square root the folded weights take).
pub fn bind<'a>(graph: &Graph, file: &'a WeightFile) -> Result<BoundWeights<'a>, WeightError> {
    bind_with(graph, file, BindOptions::default())
}

/// [`bind`] with options.
pub fn bind_with<'a>(
    graph: &Graph,
    file: &'a WeightFile,
    options: BindOptions,
) -> Result<BoundWeights<'a>, WeightError> {
    let expected = expected_tensors(graph);
    let mut report =
        MismatchReport { path: file.path().to_path_buf(), model: graph.name.clone(), ..Default::default() };
    let mut keys = BTreeSet::new();
    let mut present = Vec::new();
    for e in &expected {
        keys.insert(e.key.as_str());
        match file.get(&e.key) {
            None if e.optional => {}
            None => report.missing.push((e.key.clone(), e.shape.clone())),
            Some(t) if t.shape != e.shape => {
                report.misshaped.push((e.key.clone(), e.shape.clone(), t.shape.clone()))
            }
            Some(t) if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) => {
                report.wrong_dtype.push((e.key.clone(), t.dtype))
            }
            Some(_) => present.push(e),
        }
    }
    for (name, t) in file.tensors() {
        if !keys.contains(name.as_str()) && !is_batch_counter(name, t.dtype) {
            report.unexpected.push((name.clone(), t.dtype, t.shape.clone()));
        }
    }
    if !report.is_empty() {
        return Err(WeightError::Mismatch(Box::new(report)));
    }
    let mut tensors = HashMap::with_capacity(present.len());
    for e in present {
        let data = file.f32_data(&e.key)?;
        check_values(file, &e.key, &data, options)?;
        tensors.insert(e.key.clone(), BoundTensor { shape: e.shape.clone(), data });
    }
    Ok(BoundWeights { tensors })
}

/// The value checks of [`bind_with`] on one tensor.
fn check_values(file: &WeightFile, key: &str, data: &[f32], options: BindOptions) -> Result<(), WeightError> {
    let error = |index: usize, nonfinite: bool| {
        let (path, tensor, value) = (file.path().to_path_buf(), key.to_string(), data[index]);
        if nonfinite {
            WeightError::NonFinite { path, tensor, index, value }
        } else {
            WeightError::NegativeVariance { path, tensor, index, value }
        }
    };
    if !options.allow_nonfinite {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(error(i, true));
        }
    }
    if key == "running_var" || key.ends_with(".running_var") {
        if let Some(i) = data.iter().position(|&v| v < 0.0) {
            return Err(error(i, false));
        }
    }
    Ok(())
}

impl WeightFile {
    /// [`bind`] this file to `graph`.
    pub fn bind(&self, graph: &Graph) -> Result<BoundWeights<'_>, WeightError> {
        bind(graph, self)
    }
}
