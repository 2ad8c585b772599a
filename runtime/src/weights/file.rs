//! [`WeightFile`]: a safetensors file memory-mapped (or a buffer in memory), validated once on open.
//!
//! The `safetensors` crate parses and validates the header. When it refuses a file, the header is
//! re-read leniently to say precisely what is wrong (which tensor's offsets lie past the end, which
//! two tensors overlap, ...), because "invalid offset" alone does not help anyone fix a file.

use super::{Dtype, WeightError};
use memmap2::Mmap;
use safetensors::SafeTensors;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The bytes of a weight file: a read-only mapping, or an owned buffer whose start is 8-byte aligned
/// (so that alignment inside the buffer is alignment inside the file, as with a mapping).
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
    Realigned { words: Vec<u64>, len: usize },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
            Storage::Realigned { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }
}

/// One tensor listed in a file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the whole file.
    pub range: Range<usize>,
}

/// A validated safetensors file. Tensors are listed by name; their data is read on demand
/// ([`WeightFile::f32_data`]), in place for F32.
pub struct WeightFile {
    path: PathBuf,
    storage: Storage,
    tensors: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

impl WeightFile {
    /// Opens and memory-maps a safetensors file and validates its header.
    ///
    /// # Safety
    ///
    /// This function is safe to call, but it rests on the contract of memory-mapped files: the tensors
    /// borrowed from the mapping are valid only while no other process truncates or rewrites the file
    /// in place. netc itself never does (it writes weight files to a temporary file and renames it);
    /// a file shrunk by another program while mapped can end the process with SIGBUS.
    #[allow(unsafe_code)]
    pub fn open(path: impl AsRef<Path>) -> Result<WeightFile, WeightError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| WeightError::Io { path: path.clone(), error };
        netc_compiler::files::regular_file_len(&path).map_err(io)?;
        let file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 8 {
            // Too short to map usefully (and an empty file cannot be mapped at all).
            let bytes = std::fs::read(&path).map_err(io)?;
            return Err(diagnose(&path, &bytes, None));
        }
        // SAFETY: the mapping is read-only and private to this process. Its contents are only
        // well-defined while no other process truncates or rewrites the file; netc never writes a
        // weight file in place (`netc init` writes a new file and renames it over the old one, which
        // leaves existing mappings intact). A concurrent truncation by another program could raise
        // SIGBUS, which is the documented limit of memory-mapped I/O.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        WeightFile::validate(path, Storage::Mapped(map))
    }

    /// Wraps a safetensors buffer already in memory (a test fixture, a download); `label` stands in
    /// for the file name in error messages.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<WeightFile, WeightError> {
        let storage = if bytes.as_ptr().align_offset(8) == 0 {
            Storage::Owned(bytes)
        } else {
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
            Storage::Realigned { words, len: bytes.len() }
        };
        WeightFile::validate(label.into(), storage)
    }

    fn validate(path: PathBuf, storage: Storage) -> Result<WeightFile, WeightError> {
        let bytes = storage.bytes();
        let (header_len, metadata) = match SafeTensors::read_metadata(bytes) {
            Ok(m) => m,
            Err(e) => return Err(diagnose(&path, bytes, Some(&e))),
        };
        let data_start = 8 + header_len;
        let mut tensors = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            let range = data_start + info.data_offsets.0..data_start + info.data_offsets.1;
            if info.dtype == Dtype::F32 && range.start % 4 != 0 {
                return Err(WeightError::Misaligned { path, tensor: name, offset: range.start });
            }
            tensors.insert(name, TensorEntry { dtype: info.dtype, shape: info.shape.clone(), range });
        }
        let metadata = metadata.metadata().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(WeightFile { path, storage, tensors, metadata })
    }

    /// The file name (or in-memory label).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorEntry> {
        &self.tensors
    }

    /// The header's free-form text metadata (`__metadata__`; `netc init` records that its
    /// weights are random there, see [`crate::init::metadata`]), by key.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// The size of the whole file in bytes.
    pub fn byte_len(&self) -> usize {
        self.storage.bytes().len()
    }

    /// The raw little-endian bytes of a tensor.
    pub fn raw(&self, entry: &TensorEntry) -> &[u8] {
        &self.storage.bytes()[entry.range.clone()]
    }

    /// A tensor's values as f32: F32 borrowed from the file in place (on little-endian hosts), F16
    /// and BF16 converted. Any other dtype is an error.
    pub fn f32_data(&self, name: &str) -> Result<Cow<'_, [f32]>, WeightError> {
        let entry = self.tensors.get(name).ok_or_else(|| WeightError::CorruptHeader {
            path: self.path.clone(),
            detail: format!("no tensor named `{name}`"),
        })?;
        let raw = self.raw(entry);
        match entry.dtype {
            Dtype::F32 if cfg!(target_endian = "little") => {
                bytemuck::try_cast_slice(raw).map(Cow::Borrowed).map_err(|_| WeightError::Misaligned {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                    offset: entry.range.start,
                })
            }
            Dtype::F32 => Ok(Cow::Owned(
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            )),
            Dtype::F16 => Ok(Cow::Owned(
                raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            )),
            Dtype::BF16 => Ok(Cow::Owned(
                raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            )),
            dtype => Err(WeightError::Dtype { path: self.path.clone(), tensor: name.to_string(), dtype }),
        }
    }
}

/// Why `bytes` is not a valid safetensors file, as precisely as a lenient re-read of the header can
/// tell; falls back to the `safetensors` crate's own message.
fn diagnose(path: &Path, bytes: &[u8], crate_error: Option<&safetensors::SafeTensorError>) -> WeightError {
    let path = path.to_path_buf();
    let corrupt = |detail: String| WeightError::CorruptHeader { path: path.clone(), detail };
    let Some(prefix) = bytes.get(..8) else {
        return WeightError::Truncated {
            path: path.clone(),
            detail: format!("the file is {} bytes long, shorter than the 8-byte header length", bytes.len()),
        };
    };
    let header_len = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
    let available = bytes.len() - 8;
    if header_len > available as u64 {
        return WeightError::Truncated {
            path: path.clone(),
            detail: format!(
                "the header is said to be {header_len} bytes long, but only {available} bytes follow"
            ),
        };
    }
    let header_len = header_len as usize;
    let header = match std::str::from_utf8(&bytes[8..8 + header_len]) {
        Ok(h) => h,
        Err(e) => return corrupt(format!("the header is not UTF-8 ({e})")),
    };
    let json: serde_json::Value = match serde_json::from_str(header) {
        Ok(v) => v,
        Err(e) => return corrupt(format!("the header is not valid JSON ({e})")),
    };
    let Some(object) = json.as_object() else {
        return corrupt("the header is not a JSON object".to_string());
    };
    let data_len = available - header_len;
    let mut spans: Vec<(usize, usize, &str)> = Vec::new();
    for (name, value) in object {
        if name == "__metadata__" {
            continue;
        }
        let info: safetensors::tensor::TensorInfo = match serde_json::from_value(value.clone()) {
            Ok(i) => i,
            Err(e) => return corrupt(format!("tensor `{name}`: {e}")),
        };
        let (start, end) = info.data_offsets;
        if end < start {
            return corrupt(format!("tensor `{name}`: data offsets [{start}, {end}) end before they start"));
        }
        if end > data_len {
            return WeightError::OffsetsPastEnd { path, tensor: name.clone(), start, end, data_len };
        }
        let expected = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize(), |n, &d| n.checked_mul(d))
            .map(|bits| bits.div_ceil(8));
        match expected {
            Some(expected) if expected == end - start => {}
            Some(expected) => {
                return WeightError::SizeMismatch {
                    path,
                    tensor: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape,
                    expected,
                    found: end - start,
                }
            }
            None => return corrupt(format!("tensor `{name}`: shape {:?} overflows", info.shape)),
        }
        spans.push((start, end, name));
    }
    spans.sort_unstable();
    let mut covered = 0;
    for pair in spans.windows(2) {
        let ((s0, e0, a), (s1, e1, b)) = (pair[0], pair[1]);
        if s1 < e0 {
            return WeightError::Overlap {
                path,
                first: a.to_string(),
                first_range: (s0, e0),
                second: b.to_string(),
                second_range: (s1, e1),
            };
        }
    }
    for &(start, end, name) in &spans {
        if start > covered {
            return corrupt(format!(
                "bytes [{covered}, {start}) of the data section belong to no tensor (before `{name}`)"
            ));
        }
        covered = end;
    }
    if covered != data_len {
        return corrupt(format!(
            "the data section has {data_len} bytes but the tensors cover only the first {covered}"
        ));
    }
    match crate_error {
        Some(e) => corrupt(e.to_string()),
        None => corrupt("unreadable header".to_string()),
    }
}
