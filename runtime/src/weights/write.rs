//! Writing safetensors: a map of owned tensors to a file (atomically) or to a buffer in memory.

use super::{Dtype, WeightError};
use crate::io::atomic;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::View;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A tensor to write: f32 weights, or the int64 counters PyTorch keeps beside BatchNorm statistics.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedTensor {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl OwnedTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            OwnedTensor::F32 { shape, .. } | OwnedTensor::I64 { shape, .. } => shape,
        }
    }
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        match self {
            OwnedTensor::F32 { .. } => Dtype::F32,
            OwnedTensor::I64 { .. } => Dtype::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        OwnedTensor::shape(self)
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            OwnedTensor::F32 { data, .. } if cfg!(target_endian = "little") => {
                Cow::Borrowed(bytemuck::cast_slice(data))
            }
            OwnedTensor::I64 { data, .. } if cfg!(target_endian = "little") => {
                Cow::Borrowed(bytemuck::cast_slice(data))
            }
            OwnedTensor::F32 { data, .. } => Cow::Owned(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            OwnedTensor::I64 { data, .. } => Cow::Owned(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            OwnedTensor::F32 { data, .. } => data.len() * 4,
            OwnedTensor::I64 { data, .. } => data.len() * 8,
        }
    }
}

/// The safetensors layout of `tensors`: the 8-byte header length, the JSON header (padded with spaces
/// to a multiple of 8 bytes, so every tensor is aligned) and the tensors in the order the header
/// lists them. The header comes from the `safetensors` crate's own `Metadata`, ordered as its
/// `serialize` orders tensors (by dtype alignment, then name), so the bytes are the same.
/// `metadata` becomes the header's `__metadata__` (left out when empty).
fn header<'t>(
    tensors: &'t BTreeMap<String, OwnedTensor>,
    metadata: &TextMetadata,
) -> Result<(Vec<u8>, Vec<&'t OwnedTensor>), String> {
    let mut order: Vec<(&String, &OwnedTensor)> = tensors.iter().collect();
    order.sort_by(|(a, ta), (b, tb)| tb.dtype().cmp(&ta.dtype()).then(a.cmp(b)));
    let mut infos = Vec::with_capacity(order.len());
    let mut offset = 0;
    for (name, t) in &order {
        let len = t.data_len();
        infos.push((
            (*name).clone(),
            TensorInfo { dtype: t.dtype(), shape: t.shape().to_vec(), data_offsets: (offset, offset + len) },
        ));
        offset += len;
    }
    let tensors_json = serde_json::to_vec(&Metadata::new(None, infos).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    // `__metadata__` first, as the crate writes it, but in key order: the crate keeps it in a
    // HashMap, whose order changes from run to run, and a seed must give the same bytes.
    let mut json = Vec::new();
    if metadata.is_empty() {
        json = tensors_json;
    } else {
        json.extend_from_slice(b"{\"__metadata__\":");
        json.extend_from_slice(&serde_json::to_vec(metadata).map_err(|e| e.to_string())?);
        if tensors_json.len() > 2 {
            json.push(b',');
        }
        json.extend_from_slice(&tensors_json[1..]);
    }
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    Ok((out, order.into_iter().map(|(_, t)| t).collect()))
}

/// Writes `tensors` in the safetensors format to `w`, with `metadata` in the header.
fn write_to(
    w: &mut dyn Write,
    tensors: &BTreeMap<String, OwnedTensor>,
    metadata: &TextMetadata,
) -> std::io::Result<()> {
    let (header, order) = header(tensors, metadata).map_err(std::io::Error::other)?;
    w.write_all(&header)?;
    for t in order {
        w.write_all(&t.data())?;
    }
    Ok(())
}

/// Serialises `tensors` into a safetensors buffer.
pub fn to_bytes(tensors: &BTreeMap<String, OwnedTensor>) -> Result<Vec<u8>, WeightError> {
    let mut out = Vec::new();
    write_to(&mut out, tensors, &TextMetadata::new())
        .map_err(|e| WeightError::Write { path: PathBuf::from("<memory>"), detail: e.to_string() })?;
    Ok(out)
}

/// Writes `tensors` as a safetensors file. The file appears only when complete: the data goes to a
/// temporary file in the same directory, which is then renamed over `path`.
pub fn write_file(path: &Path, tensors: &BTreeMap<String, OwnedTensor>) -> Result<(), WeightError> {
    write_file_with_metadata(path, tensors, &TextMetadata::new())
}

/// [`write_file`] with free-form text metadata in the header's `__metadata__` (what wrote the
/// file, e.g. `netc init`'s [`crate::init::metadata`]); [`WeightFile::metadata`] reads it back.
///
/// [`WeightFile::metadata`]: super::WeightFile::metadata
pub fn write_file_with_metadata(
    path: &Path,
    tensors: &BTreeMap<String, OwnedTensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightError> {
    atomic::write_with(path, |w| write_to(w, tensors, metadata))
        .map_err(|e| WeightError::Write { path: path.to_path_buf(), detail: e.detail })
}

/// A file's text metadata, by key.
type TextMetadata = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_same_bytes_as_the_safetensors_crate() {
        let mut tensors = BTreeMap::new();
        tensors.insert("b.weight".to_string(), OwnedTensor::F32 { shape: vec![2, 3], data: vec![1.5; 6] });
        tensors.insert("a.bias".to_string(), OwnedTensor::F32 { shape: vec![3], data: vec![-1.0, 0.0, 2.0] });
        tensors
            .insert("bn.num_batches_tracked".to_string(), OwnedTensor::I64 { shape: vec![], data: vec![7] });
        let ours = to_bytes(&tensors).unwrap();
        let theirs = safetensors::serialize(tensors.iter(), None).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn metadata_is_written_as_the_safetensors_crate_writes_it_and_read_back() {
        let mut tensors = BTreeMap::new();
        tensors.insert("w".to_string(), OwnedTensor::F32 { shape: vec![2], data: vec![1.0, 2.0] });
        let metadata = BTreeMap::from([("netc.init".to_string(), "random".to_string())]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_file_with_metadata(&path, &tensors, &metadata).unwrap();
        let theirs = safetensors::serialize(
            tensors.iter(),
            Some(metadata.clone().into_iter().collect::<std::collections::HashMap<_, _>>()),
        )
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), theirs);
        assert_eq!(super::super::WeightFile::open(&path).unwrap().metadata(), &metadata);
    }

    #[test]
    fn metadata_is_written_in_key_order_so_the_bytes_are_reproducible() {
        let mut tensors = BTreeMap::new();
        tensors.insert("w".to_string(), OwnedTensor::F32 { shape: vec![1], data: vec![1.0] });
        let metadata: BTreeMap<String, String> =
            (0..16).map(|i| (format!("key{i:02}"), i.to_string())).collect();
        let mut out = Vec::new();
        write_to(&mut out, &tensors, &metadata).unwrap();
        let len = u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&out[8..8 + len]).unwrap();
        let keys: Vec<usize> = (0..16).map(|i| header.find(&format!("\"key{i:02}\"")).unwrap()).collect();
        assert!(header.starts_with("{\"__metadata__\":{\"key00\""), "{header}");
        assert!(keys.windows(2).all(|k| k[0] < k[1]), "{header}");
        let read = super::super::WeightFile::from_bytes("m", out).unwrap();
        assert_eq!(read.metadata(), &metadata);
        assert_eq!(read.tensors().len(), 1);
    }
}
