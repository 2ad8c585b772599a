//! Weight files: safetensors read through a memory mapping, bound to the IR by scoped name, and every
//! way a file can be wrong reported as a clear error that names the file and the tensor.
//!
//! The malformed files are written by hand: an 8-byte little-endian header length, the JSON header,
//! then the data section.

use crate::common::compile_text;
use netc_compiler::ir::Graph;
use netc_runtime::weights::{to_bytes, write_file, Dtype, OwnedTensor, WeightError};
use netc_runtime::WeightFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A conv + BatchNorm + linear model with a training-only auxiliary head.
fn tiny() -> Graph {
    compile_text(
        "network tiny(x: [3, 4, 4]) {
           y = x |> conv(2, 3, pad = 1, bias = false) @conv |> batchnorm @bn |> relu
           train { aux = y |> flatten |> linear(3) @aux }
           logits = y |> flatten |> linear(5) @fc
           (logits, aux)
         }",
    )
    .unwrap_or_else(|d| panic!("{d}"))
}

/// Every tensor `tiny()` expects, except the optional aux head, with constant values.
fn tiny_tensors() -> BTreeMap<String, OwnedTensor> {
    let f32s = |shape: Vec<usize>, v: f32| {
        let n = shape.iter().product();
        OwnedTensor::F32 { shape, data: vec![v; n] }
    };
    BTreeMap::from([
        ("conv.weight".to_string(), f32s(vec![2, 3, 3, 3], 0.1)),
        ("bn.weight".to_string(), f32s(vec![2], 1.0)),
        ("bn.bias".to_string(), f32s(vec![2], 0.0)),
        ("bn.running_mean".to_string(), f32s(vec![2], 0.0)),
        ("bn.running_var".to_string(), f32s(vec![2], 1.0)),
        ("bn.num_batches_tracked".to_string(), OwnedTensor::I64 { shape: vec![], data: vec![3] }),
        ("fc.weight".to_string(), f32s(vec![5, 32], 0.01)),
        ("fc.bias".to_string(), f32s(vec![5], 0.5)),
    ])
}

/// A safetensors file from a header (JSON text, padded with spaces to `pad_to` bytes) and data.
fn safetensors(header: &str, pad_to: usize, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().next_multiple_of(pad_to), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Writes `bytes` to `<tmp>/<name>` and opens it.
fn open(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, Result<WeightFile, WeightError>) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let result = WeightFile::open(&path);
    (path, result)
}

fn message(result: Result<WeightFile, WeightError>) -> String {
    result.expect_err("the file must be refused").to_string()
}

#[test]
fn f32_weights_are_read_in_place_from_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    write_file(&path, &tiny_tensors()).unwrap();
    let file = WeightFile::open(&path).unwrap();
    let weights = file.bind(&tiny()).unwrap();
    assert_eq!(weights.len(), 7, "num_batches_tracked is not bound");
    let fc = weights.get("fc.weight").unwrap();
    assert!(fc.is_borrowed());
    // The slice points into the file's bytes, at the tensor's offset.
    let entry = file.get("fc.weight").unwrap();
    assert_eq!(fc.data.as_ptr().cast::<u8>(), file.raw(entry).as_ptr());
    assert_eq!(fc.data.len(), 160);
    assert!(weights.iter().all(|(_, t)| t.is_borrowed()));
}

#[test]
fn f16_and_bf16_weights_are_converted_on_load() {
    let graph = compile_text("network n(x: [2]) { x |> linear(2) @fc }").unwrap();
    // fc.weight as F16 [1, -2, 0.5, 65504] (bits 3c00 c000 3800 7bff), fc.bias as BF16 [3, -0.25]
    // (bits 4040 be80), little-endian.
    let f16: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x7bff].iter().flat_map(|b| b.to_le_bytes()).collect();
    let bf16: Vec<u8> = [0x4040u16, 0xbe80].iter().flat_map(|b| b.to_le_bytes()).collect();
    let header = r#"{"fc.weight":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"fc.bias":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}}"#;
    let file =
        WeightFile::from_bytes("half.safetensors", safetensors(header, 8, &[f16, bf16].concat())).unwrap();
    let weights = file.bind(&graph).unwrap();
    assert_eq!(&*weights.get("fc.weight").unwrap().data, &[1.0, -2.0, 0.5, 65504.0]);
    assert_eq!(&*weights.get("fc.bias").unwrap().data, &[3.0, -0.25]);
    assert!(!weights.get("fc.bias").unwrap().is_borrowed());
}

#[test]
fn training_only_weights_are_optional_but_used_when_present() {
    let graph = tiny();
    let file = WeightFile::from_bytes("no-aux", to_bytes(&tiny_tensors()).unwrap()).unwrap();
    assert!(file.bind(&graph).unwrap().get("aux.weight").is_none());
    let mut with_aux = tiny_tensors();
    with_aux.insert("aux.weight".into(), OwnedTensor::F32 { shape: vec![3, 32], data: vec![0.0; 96] });
    with_aux.insert("aux.bias".into(), OwnedTensor::F32 { shape: vec![3], data: vec![0.0; 3] });
    let file = WeightFile::from_bytes("aux", to_bytes(&with_aux).unwrap()).unwrap();
    assert!(file.bind(&graph).unwrap().get("aux.weight").is_some());
}

#[test]
fn every_missing_unexpected_and_misshaped_tensor_is_reported_at_once() {
    let mut tensors = tiny_tensors();
    tensors.remove("fc.bias");
    tensors.remove("bn.running_var");
    tensors.insert("fc.weight".into(), OwnedTensor::F32 { shape: vec![5, 31], data: vec![0.0; 155] });
    tensors.insert("conv.bias".into(), OwnedTensor::F32 { shape: vec![2], data: vec![0.0; 2] });
    tensors.insert("head.weight".into(), OwnedTensor::F32 { shape: vec![1], data: vec![0.0] });
    // A misshaped aux tensor is reported even though the aux head is optional.
    tensors.insert("aux.bias".into(), OwnedTensor::F32 { shape: vec![4], data: vec![0.0; 4] });
    let file = WeightFile::from_bytes("model.safetensors", to_bytes(&tensors).unwrap()).unwrap();
    let err = file.bind(&tiny()).unwrap_err();
    let WeightError::Mismatch(report) = &err else { panic!("expected a mismatch report, got {err}") };
    assert_eq!(report.missing, [("bn.running_var".to_string(), vec![2]), ("fc.bias".to_string(), vec![5])]);
    let misshaped: Vec<&str> = report.misshaped.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(misshaped, ["aux.bias", "fc.weight"]);
    let unexpected: Vec<&str> = report.unexpected.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(unexpected, ["conv.bias", "head.weight"]);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "model.safetensors: the weights do not fit model `tiny` (2 missing, 2 unexpected, 2 mis-shaped)"
        ),
        "{text}"
    );
    for line in [
        "missing     bn.running_var: expected [2]",
        "missing     fc.bias: expected [5]",
        "mis-shaped  fc.weight: expected [5, 32], found [5, 31]",
        "mis-shaped  aux.bias: expected [3], found [4]",
        "unexpected  conv.bias: F32 [2]",
        "unexpected  head.weight: F32 [1]",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn a_weight_of_the_wrong_dtype_is_refused() {
    let mut tensors = tiny_tensors();
    tensors.insert("fc.bias".into(), OwnedTensor::I64 { shape: vec![5], data: vec![0; 5] });
    let file = WeightFile::from_bytes("ints.safetensors", to_bytes(&tensors).unwrap()).unwrap();
    let text = file.bind(&tiny()).unwrap_err().to_string();
    assert!(text.contains("wrong dtype fc.bias: I64 (netc reads F32, F16 and BF16)"), "{text}");

    // An int32 weight written by hand.
    let graph = compile_text("network n(x: [2]) { x |> linear(1, bias = false) @fc }").unwrap();
    let header = r#"{"fc.weight":{"dtype":"I32","shape":[1,2],"data_offsets":[0,8]}}"#;
    let file = WeightFile::from_bytes("int32.safetensors", safetensors(header, 8, &[0; 8])).unwrap();
    let text = file.bind(&graph).unwrap_err().to_string();
    assert!(text.contains("int32.safetensors") && text.contains("wrong dtype fc.weight: I32"), "{text}");
}

#[test]
fn num_batches_tracked_must_be_int64_to_be_ignored() {
    let mut tensors = tiny_tensors();
    tensors.insert("bn.num_batches_tracked".into(), OwnedTensor::F32 { shape: vec![], data: vec![0.0] });
    let file = WeightFile::from_bytes("w", to_bytes(&tensors).unwrap()).unwrap();
    let text = file.bind(&tiny()).unwrap_err().to_string();
    assert!(text.contains("unexpected  bn.num_batches_tracked: F32 []"), "{text}");
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let whole = to_bytes(&tiny_tensors()).unwrap();

    let text = message(open(dir.path(), "empty.safetensors", b"").1);
    assert!(
        text.contains("empty.safetensors: truncated safetensors file: the file is 0 bytes long"),
        "{text}"
    );

    let text = message(open(dir.path(), "head.safetensors", &whole[..40]).1);
    assert!(
        text.contains("head.safetensors: truncated safetensors file: the header is said to be"),
        "{text}"
    );

    // Cut inside the data: the last tensors' offsets now lie past the end.
    let (_, result) = open(dir.path(), "cut.safetensors", &whole[..whole.len() - 10]);
    let text = message(result);
    assert!(text.contains("cut.safetensors: tensor `"), "{text}");
    assert!(text.contains("lie past the end of the data section") && text.contains("truncated"), "{text}");
}

#[test]
fn a_corrupt_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = message(
        open(dir.path(), "json.safetensors", &safetensors(r#"{"fc.weight": {"dtype": "F32","#, 8, &[])).1,
    );
    assert!(
        text.contains("json.safetensors: corrupt safetensors header: the header is not valid JSON"),
        "{text}"
    );

    let mut not_utf8 = 2u64.to_le_bytes().to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe]);
    let text = message(open(dir.path(), "utf8.safetensors", &not_utf8).1);
    assert!(text.contains("utf8.safetensors: corrupt safetensors header: the header is not UTF-8"), "{text}");

    let header = r#"{"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#;
    let text = message(open(dir.path(), "dtype.safetensors", &safetensors(header, 8, &[0; 4])).1);
    assert!(text.contains("dtype.safetensors: corrupt safetensors header: tensor `w`"), "{text}");

    let header = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let text = message(open(dir.path(), "size.safetensors", &safetensors(header, 8, &[0; 8])).1);
    assert_eq!(
        text,
        format!(
            "{}: tensor `w`: F32 of shape [3] needs 12 bytes, but its data offsets span 8",
            dir.path().join("size.safetensors").display()
        )
    );
}

#[test]
fn header_offsets_that_lie_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Past the end: `b` claims bytes [8, 16) of an 8-byte data section.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    let text = message(open(dir.path(), "past.safetensors", &safetensors(header, 8, &[0; 8])).1);
    assert!(text.contains("past.safetensors: tensor `b`: data offsets [8, 16) lie past the end of the data section (8 bytes)"), "{text}");

    // Overlapping: `b` starts inside `a`.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let text = message(open(dir.path(), "overlap.safetensors", &safetensors(header, 8, &[0; 12])).1);
    assert!(
        text.contains("overlap.safetensors: tensors `a` (bytes [0, 8)) and `b` (bytes [4, 12)) overlap"),
        "{text}"
    );

    // Misaligned: a 2-byte F16 tensor first, so the F32 tensor after it starts at an odd multiple of 2.
    let header = r#"{"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"w":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#;
    let text = message(open(dir.path(), "misaligned.safetensors", &safetensors(header, 8, &[0; 6])).1);
    assert!(text.contains("misaligned.safetensors: tensor `w`: its F32 data starts at byte"), "{text}");
    assert!(text.contains("not a multiple of 4"), "{text}");

    // Misaligned by the header length itself (not padded to a multiple of 4).
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} "#;
    let bytes = safetensors(header, 1, &[0; 4]);
    assert_ne!((bytes.len() - 4) % 4, 0);
    let text = message(open(dir.path(), "odd.safetensors", &bytes).1);
    assert!(text.contains("odd.safetensors: tensor `w`: its F32 data starts at byte"), "{text}");
}

#[test]
fn a_missing_file_names_the_path() {
    let text = WeightFile::open("/nonexistent/w.safetensors").unwrap_err().to_string();
    assert!(text.starts_with("cannot read weight file /nonexistent/w.safetensors:"), "{text}");
}

#[test]
fn he_init_writes_exactly_the_keys_binding_expects() {
    for name in ["googlenet", "alexnet_paper", "preact_resnet50"] {
        let graph = crate::common::compile(&crate::common::model(name));
        let tensors = netc_runtime::init::he_init(&graph, 3).unwrap();
        let file = WeightFile::from_bytes(name, to_bytes(&tensors).unwrap()).unwrap();
        let weights = file.bind(&graph).unwrap_or_else(|e| panic!("{e}"));
        let floats = tensors.values().filter(|t| matches!(t, OwnedTensor::F32 { .. })).count();
        assert_eq!(weights.len(), floats, "{name}: every f32 tensor is bound, aux heads included");
        assert!(file.tensors().values().all(|t| matches!(t.dtype, Dtype::F32 | Dtype::I64)));
    }
}
