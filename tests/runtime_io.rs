//! Input files: images preprocessed like torchvision's ImageNet preset, and `.npy` tensors.

use crate::common::{golden_pytorch, root};
use netc_runtime::io::{image, npy};
use netc_runtime::Tensor;

/// torchvision's preset (`cat.preprocessed.npy`: PIL decode, `Resize(256)` antialiased bilinear,
/// `CenterCrop(224)`, `ToTensor`, `Normalize`).
fn torchvision_cat() -> Tensor {
    npy::read(&golden_pytorch("cat.preprocessed.npy")).unwrap()
}

/// Starting from the pixels Pillow decodes, netc's resize, crop and normalisation reproduce
/// torchvision's to the last bit.
#[test]
fn preprocessing_matches_torchvision_bit_for_bit_on_the_same_pixels() {
    let got = image::load(&root().join("tests/golden/runtime/cat.pil-decoded.png"), 224, 224).unwrap();
    assert!(got == torchvision_cat(), "preprocessing of the PIL-decoded cat differs from torchvision");
}

/// From the JPEG itself, only the decoder differs: zune-jpeg and libjpeg-turbo round the inverse DCT
/// differently, by up to 3 levels on about 1% of this image's values; after the antialiased resize
/// that is at most 2 levels (measured: max |diff| 0.0349 = 2 / 255 / 0.225, on 1631 of 150528
/// values). Tolerance: 4 levels in the worst-scaled channel (4 / 255 / 0.224 = 0.070), on under 5%
/// of the values, with a mean below 1e-3.
#[test]
fn the_sample_jpeg_is_preprocessed_like_torchvision_up_to_jpeg_decoding() {
    let got = image::load(&root().join("models/sample/cat.jpg"), 224, 224).unwrap();
    let expected = torchvision_cat();
    assert_eq!(got.shape, expected.shape);
    let diffs: Vec<f32> = got.data.iter().zip(&expected.data).map(|(a, b)| (a - b).abs()).collect();
    let max = diffs.iter().fold(0f32, |m, &d| m.max(d));
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    let differing = diffs.iter().filter(|&&d| d > 0.0).count();
    println!(
        "cat.jpg vs torchvision: max |diff| {max:e}, mean {mean:e}, {differing} of {} values differ",
        diffs.len()
    );
    assert!(max <= 4.0 / 255.0 / 0.224, "max |diff| {max}");
    assert!(differing * 20 < diffs.len(), "{differing} values differ");
    assert!(mean < 1e-3, "mean |diff| {mean}");
}

#[test]
fn other_input_sizes_crop_and_pad_like_torchvision() {
    // alexnet_paper takes 227x227: crop 227 out of the 384x256 resize.
    let t = image::load(&root().join("tests/golden/runtime/cat.pil-decoded.png"), 227, 227).unwrap();
    assert_eq!(t.shape, vec![1, 3, 227, 227]);
    // A crop larger than the resized image is padded with zeros (black, normalised).
    let t = image::load(&root().join("tests/golden/runtime/cat.pil-decoded.png"), 300, 400).unwrap();
    let black = (0.0 - image::MEAN[0]) / image::STD[0];
    assert_eq!(t.data[0], black, "top rows are padding");
    assert_ne!(t.data[100 * 400 + 200], black);
}

#[test]
fn npy_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let t = Tensor::new(vec![2, 3, 1, 2], (0..12).map(|i| i as f32 * 0.5 - 3.0).collect()).unwrap();
    npy::write(&path, &t).unwrap();
    assert_eq!(npy::read(&path).unwrap(), t);
    let err = npy::read(&dir.path().join("missing.npy")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot read {}", dir.path().join("missing.npy").display())), "{err}");
}
