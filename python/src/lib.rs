//! `netc._netc`: the Python extension module behind the `netc` package (`python/netc/`).
//!
//! A thin layer over the `netc` crate: [`netc::Model`] as the Python class `netc.Model`, numpy
//! arrays in and out. Inputs are read in place (a [`netc::TensorView`] borrowing the array's
//! buffer) and outputs are written in place into freshly allocated arrays; the GIL is released
//! while a model is built or runs, so several Python threads can share one model. Every error
//! becomes a Python exception (`netc.NetcError`, a `ValueError`, carrying the library's full
//! message, a `.net` diagnostic rendered with its source line and caret), never a panic.

use numpy::{IxDyn, PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use std::path::PathBuf;
use std::sync::Arc;

pyo3::create_exception!(
    netc,
    NetcError,
    PyValueError,
    "A model could not be checked, compiled, loaded or run; the message is netc's full report (a \
     `.net` diagnostic with its file, line, column, source line and caret)."
);

/// The library's error as a `netc.NetcError` with its `Display` text.
fn error(e: netc::Error) -> PyErr {
    NetcError::new_err(e.to_string().trim_end().to_string())
}

/// Options from the keyword arguments shared by `load` and `compile`.
fn options(threads: Option<usize>, isa: Option<&str>) -> PyResult<netc::Options> {
    if threads == Some(0) {
        return Err(PyValueError::new_err("threads must be at least 1 (or None for every core)"));
    }
    let isa = match isa {
        None => netc::IsaChoice::Auto,
        Some(text) => netc::IsaChoice::parse(text).map_err(PyValueError::new_err)?,
    };
    Ok(netc::Options { threads, isa, ..Default::default() })
}

/// A compiled model: call it on float32 arrays `[N, ...]` (the batch first). Thread-safe: one
/// model may be called from several Python threads at once.
#[pyclass(frozen, module = "netc", name = "Model")]
struct Model {
    inner: Arc<netc::Model>,
}

impl Model {
    /// `[N, C, H, W]`-style text for the expected shape of input `i`.
    fn expected(&self, i: usize) -> String {
        let shapes = self.inner.input_shapes();
        let dims = shapes.get(i).map(|(_, d)| d.as_slice()).unwrap_or(&[]);
        let mut text = String::from("[N");
        for d in dims {
            text += &format!(", {d}");
        }
        text + "]"
    }

    /// Input `i` as a float32, C-contiguous array of the model's shape, or an exception naming
    /// what was expected.
    fn input<'py>(&self, i: usize, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let shapes = self.inner.input_shapes();
        let (name, dims) = &shapes[i];
        let expected = self.expected(i);
        let array = match value.cast::<PyArrayDyn<f32>>() {
            Ok(a) => a.clone(),
            Err(_) => {
                let found = match value.cast::<PyUntypedArray>() {
                    Ok(a) => format!("a numpy array of dtype {}", a.dtype()),
                    Err(_) => format!("a {}", value.get_type().name()?),
                };
                return Err(PyTypeError::new_err(format!(
                    "input `{name}`: expected a float32 numpy array of shape {expected}, got {found} \
                     (convert with np.asarray(x, dtype=np.float32))"
                )));
            }
        };
        let shape = array.shape();
        if shape.len() != dims.len() + 1 || shape[1..] != dims[..] || shape[0] == 0 {
            return Err(NetcError::new_err(format!(
                "input `{name}`: expected shape {expected} with N >= 1, got {shape:?}"
            )));
        }
        if !array.is_c_contiguous() {
            return Err(NetcError::new_err(format!(
                "input `{name}`: the array is not C-contiguous (a transposed or strided view); \
                 pass np.ascontiguousarray(x)"
            )));
        }
        Ok(array)
    }

    /// Runs the model on `inputs` (one array per model input), returning one new array per
    /// output, the GIL released during the run.
    fn run_arrays<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyTuple>,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let wanted = self.inner.input_shapes().len();
        if inputs.len() != wanted {
            return Err(PyTypeError::new_err(format!(
                "the model takes {wanted} input array(s), got {}",
                inputs.len()
            )));
        }
        let arrays = inputs
            .iter()
            .enumerate()
            .map(|(i, value)| self.input(i, &value))
            .collect::<PyResult<Vec<_>>>()?;
        let Some(batch) = arrays.first().map(|a| a.shape()[0]) else {
            return Err(NetcError::new_err("the model has no inputs"));
        };
        if let Some(other) = arrays.iter().find(|a| a.shape()[0] != batch) {
            return Err(NetcError::new_err(format!(
                "every input needs the same batch size: {batch} and {}",
                other.shape()[0]
            )));
        }
        // Borrow flags for the inputs (no Rust code may write them meanwhile) and the outputs.
        let readers = arrays.iter().map(|a| a.try_readonly()).collect::<Result<Vec<_>, _>>();
        let readers =
            readers.map_err(|e| NetcError::new_err(format!("an input array is borrowed mutably: {e}")))?;
        let shapes: Vec<Vec<usize>> = arrays.iter().map(|a| a.shape().to_vec()).collect();
        let outputs: Vec<Bound<'py, PyArrayDyn<f32>>> = self
            .inner
            .output_shapes(batch)
            .into_iter()
            .map(|shape| PyArrayDyn::<f32>::zeros(py, IxDyn(&shape), false))
            .collect();
        let mut writers = outputs.iter().map(|a| a.readwrite()).collect::<Vec<_>>();
        let mut views = Vec::with_capacity(readers.len());
        for (reader, shape) in readers.iter().zip(&shapes) {
            let data = reader.as_slice().map_err(|e| NetcError::new_err(e.to_string()))?;
            views.push(netc::TensorView::new(shape, data).map_err(|e| error(e.into()))?);
        }
        let mut slices = Vec::with_capacity(writers.len());
        for writer in &mut writers {
            slices.push(writer.as_slice_mut().map_err(|e| NetcError::new_err(e.to_string()))?);
        }
        let model = &*self.inner;
        // The arrays stay alive and borrowed (`readers`, `writers`) until after the run. Python
        // code in another thread can still write an input array while the run reads it, as with
        // any extension that releases the GIL; the result is then unspecified, not unsafe for netc.
        py.detach(move || model.run_into(&views, &mut slices)).map_err(error)?;
        drop(writers);
        drop(readers);
        Ok(outputs)
    }
}

#[pymethods]
impl Model {
    /// `model(x)`: the model on one float32 array per input (`[N, C, H, W]` for an image
    /// model), returning the output array (a tuple of arrays for several outputs). The input is
    /// read in place; the GIL is released during the run.
    #[pyo3(signature = (*inputs))]
    fn __call__<'py>(&self, py: Python<'py>, inputs: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let mut outputs = self.run_arrays(py, inputs)?;
        if outputs.len() == 1 {
            Ok(outputs.remove(0).into_any())
        } else {
            Ok(PyTuple::new(py, outputs)?.into_any())
        }
    }

    /// `model.run(x)`: the same as `model(x)`.
    #[pyo3(signature = (*inputs))]
    fn run<'py>(&self, py: Python<'py>, inputs: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.__call__(py, inputs)
    }

    /// The per-sample shape of each input, by name: `{"image": (3, 224, 224)}`.
    #[getter]
    fn input_shapes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, dims) in self.inner.input_shapes() {
            dict.set_item(name, PyTuple::new(py, dims)?)?;
        }
        Ok(dict)
    }

    /// The shape of each output for a batch of `n`, batch first: `[(n, 1000)]`.
    fn output_shapes<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyList>> {
        let shapes = self
            .inner
            .output_shapes(n)
            .into_iter()
            .map(|s| PyTuple::new(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, shapes)
    }

    /// Threads of each run, the caller's included.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    fn __repr__(&self) -> String {
        let graph = self.inner.graph();
        let inputs: Vec<String> = (0..self.inner.input_shapes().len()).map(|i| self.expected(i)).collect();
        format!("<netc.Model {} inputs {} threads {}>", graph.name, inputs.join(", "), self.inner.threads())
    }
}

/// `netc.load(path, threads=None, isa=None)`: a compiled bundle (`netc compile`), its packed
/// weights memory-mapped.
#[pyfunction]
#[pyo3(signature = (path, *, threads = None, isa = None))]
fn load(py: Python<'_>, path: PathBuf, threads: Option<usize>, isa: Option<&str>) -> PyResult<Model> {
    let options = options(threads, isa)?;
    let model = py.detach(|| netc::Model::load_with(&path, &options)).map_err(error)?;
    Ok(Model { inner: Arc::new(model) })
}

/// `netc.compile(net, weights, output=None, ...)`: a `.net` model compiled with its weights
/// (safetensors); with `output`, also written there as a bundle (and the model returned is
/// that bundle, loaded).
#[pyfunction]
#[pyo3(signature = (net, weights, output = None, *, threads = None, isa = None, optimize = true, allow_nonfinite = false))]
#[allow(clippy::too_many_arguments)] // one per keyword argument
fn compile(
    py: Python<'_>,
    net: PathBuf,
    weights: PathBuf,
    output: Option<PathBuf>,
    threads: Option<usize>,
    isa: Option<&str>,
    optimize: bool,
    allow_nonfinite: bool,
) -> PyResult<Model> {
    let options = netc::Options { optimize, allow_nonfinite, ..options(threads, isa)? };
    let model = py
        .detach(|| match &output {
            None => netc::Model::from_net(&net, &weights, &options),
            Some(out) => {
                netc::compile_bundle(&net, &weights, out, &options)?;
                netc::Model::load_with(out, &options)
            }
        })
        .map_err(error)?;
    Ok(Model { inner: Arc::new(model) })
}

/// `netc.check(text_or_path)`: checks a `.net` model (syntax, names, types, every shape);
/// returns None, or raises `NetcError` carrying the rendered diagnostic. A `str` holding a
/// newline or `{` is the source text; any other `str` or an `os.PathLike` is a file path.
#[pyfunction]
fn check(py: Python<'_>, source: &Bound<'_, PyAny>) -> PyResult<()> {
    let text = match source.cast::<PyString>() {
        Ok(s) => {
            let s: String = s.extract()?;
            (s.contains('\n') || s.contains('{')).then_some(s)
        }
        Err(_) => None,
    };
    let result = match text {
        Some(text) => py.detach(|| netc::check_source("<string>", &text).map(drop)),
        None => {
            let path: PathBuf = source.extract()?;
            py.detach(|| netc::check_file(&path).map(drop))
        }
    };
    result.map_err(error)
}

/// `netc.summary(path, train=False)`: one dict per layer, `name`, `op`, `output_shape` (per
/// sample), `params` and `macs` (per sample), as `netc summary` prints them.
#[pyfunction]
#[pyo3(signature = (path, *, train = false))]
fn summary<'py>(py: Python<'py>, path: PathBuf, train: bool) -> PyResult<Bound<'py, PyList>> {
    let summary = py.detach(|| netc::summary(&path, train)).map_err(error)?;
    let rows = PyList::empty(py);
    for layer in &summary.layers {
        let row = PyDict::new(py);
        row.set_item("name", &layer.name)?;
        row.set_item("op", &layer.op)?;
        row.set_item("output_shape", PyTuple::new(py, layer.output_shape.dims())?)?;
        row.set_item("params", layer.params)?;
        row.set_item("macs", layer.macs)?;
        rows.append(row)?;
    }
    Ok(rows)
}

/// `netc.write_random_weights(net, output, seed=0)`: deterministic He-initialised weights for a
/// `.net` model, as safetensors with its scoped names (what `netc init` writes).
#[pyfunction]
#[pyo3(signature = (net, output, seed = 0))]
fn write_random_weights(py: Python<'_>, net: PathBuf, output: PathBuf, seed: u64) -> PyResult<()> {
    py.detach(|| netc::write_random_weights(&net, &output, seed)).map_err(error)
}

/// The largest height or width `load_image` accepts: a `[3, 8192, 8192]` float32 array is 768 MiB.
const MAX_IMAGE_SIDE: usize = 8192;

/// The `(height, width)` a model input image is preprocessed to, checked.
fn image_size(size: (usize, usize)) -> PyResult<(usize, usize)> {
    let (h, w) = size;
    if h == 0 || w == 0 || h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
        return Err(PyValueError::new_err(format!(
            "size must be (height, width) with each side in 1..={MAX_IMAGE_SIDE}, got ({h}, {w})"
        )));
    }
    Ok((h, w))
}

/// `netc.load_image(path, size=(224, 224))`: a JPEG or PNG file as a float32 array `[3, H, W]`,
/// preprocessed exactly as `netc run` does (torchvision's ImageNet preset: the shorter side
/// resized to 256 with antialiased bilinear filtering, a centre crop to `size`, `[0, 1]`, then
/// the ImageNet mean and standard deviation). Raises `NetcError` naming the file if it cannot
/// be read or decoded.
#[pyfunction]
#[pyo3(signature = (path, size = (224, 224)), text_signature = "(path, size=(224, 224))")]
fn load_image<'py>(
    py: Python<'py>,
    path: PathBuf,
    size: (usize, usize),
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let (h, w) = image_size(size)?;
    let tensor = py
        .detach(|| netc_runtime::io::image::load(&path, h, w))
        .map_err(|e| NetcError::new_err(e.to_string()))?;
    // The tensor's buffer becomes the array's, uncopied.
    PyArray1::from_vec(py, tensor.data).reshape(IxDyn(&[3, h, w]))
}

/// `netc.load_images(paths, size=(224, 224))`: several images as one batch `[N, 3, H, W]`, each
/// as `load_image` makes it, the GIL released while they are decoded. The first file that
/// cannot be used raises `NetcError` naming it.
#[pyfunction]
#[pyo3(signature = (paths, size = (224, 224)), text_signature = "(paths, size=(224, 224))")]
fn load_images<'py>(
    py: Python<'py>,
    paths: &Bound<'py, PyAny>,
    size: (usize, usize),
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let (h, w) = image_size(size)?;
    if paths.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("paths must be a sequence of paths, not one str (see load_image)"));
    }
    let paths: Vec<PathBuf> =
        paths.try_iter()?.map(|p| p.and_then(|p| p.extract::<PathBuf>())).collect::<PyResult<_>>()?;
    let per_image = 3 * h * w;
    let cannot_allocate =
        || NetcError::new_err(format!("cannot allocate {} images of [3, {h}, {w}] float32", paths.len()));
    let total = paths.len().checked_mul(per_image).ok_or_else(cannot_allocate)?;
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(total).map_err(|_| cannot_allocate())?;
    py.detach(|| {
        for path in &paths {
            data.extend_from_slice(&netc_runtime::io::image::load(path, h, w)?.data);
        }
        Ok::<_, netc_runtime::io::image::ImageError>(())
    })
    .map_err(|e| NetcError::new_err(e.to_string()))?;
    // The batch's buffer becomes the array's, uncopied.
    PyArray1::from_vec(py, data).reshape(IxDyn(&[paths.len(), 3, h, w]))
}

/// `netc.imagenet_labels()`: the 1000 ImageNet class names in torchvision's order, the names
/// `netc run` prints for a model with 1000 classes.
#[pyfunction]
fn imagenet_labels() -> Vec<&'static str> {
    netc_runtime::classes::imagenet().to_vec()
}

/// The extension module `netc._netc`, re-exported by `netc/__init__.py`.
#[pymodule]
fn _netc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NetcError", m.py().get_type::<NetcError>())?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(summary, m)?)?;
    m.add_function(wrap_pyfunction!(write_random_weights, m)?)?;
    m.add_function(wrap_pyfunction!(load_image, m)?)?;
    m.add_function(wrap_pyfunction!(load_images, m)?)?;
    m.add_function(wrap_pyfunction!(imagenet_labels, m)?)?;
    Ok(())
}
