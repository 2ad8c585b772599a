//! Images as network inputs: JPEG/PNG decoding (the `image` crate) and torchvision's ImageNet
//! preprocessing preset, step for step:
//!
//! 1. `Resize(256)`: the shorter side becomes 256, the longer `int(256 * long / short)`; antialiased
//!    bilinear filter as Pillow computes it (see `resize.rs`);
//! 2. `CenterCrop(H, W)` to the model's input size: offsets `round((size - crop) / 2)` with Python's
//!    round-half-to-even; zero padding if the image is smaller than the crop;
//! 3. `ToTensor`: `[C, H, W]`, `v / 255` in f32;
//! 4. `Normalize(mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225])`: `(x - mean) / std` in f32.

use super::resize::resize_rgb_region;
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// The shorter side after resizing, before the centre crop.
pub const RESIZE: usize = 256;
/// ImageNet channel means (RGB).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The most bytes an image file may have.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// The largest width and height an image may declare.
pub const MAX_SIDE: u32 = 16_384;
/// The most bytes decoding may allocate: a 64-megapixel RGB image (about 8000 x 8000), decoded
/// from a file that may claim more than it holds.
pub const MAX_DECODED_BYTES: u64 = 3 * 64 * 1024 * 1024;

/// Why an image cannot be used as an input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The OS error is part of the message, not a `source()`: printed once by chain printers.
    #[error("cannot read {}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: not a JPEG or PNG image (inputs are .npy files or images)", .path.display())]
    UnknownFormat { path: PathBuf },
    #[error("{}: cannot decode the image: {detail}", .path.display())]
    Decode { path: PathBuf, detail: String },
    #[error("{}: the JPEG data ends before its end-of-image marker (a truncated file?)", .path.display())]
    Truncated { path: PathBuf },
}

/// An 8-bit RGB image, rows top to bottom, pixels `[r, g, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG or PNG file (recognised by its content) to RGB; grey images are replicated over the
/// channels and alpha is dropped, like Pillow's `convert("RGB")`.
///
/// Bounded: files of at most [`MAX_FILE_BYTES`], sides of at most [`MAX_SIDE`], decoding within
/// [`MAX_DECODED_BYTES`]; a JPEG without its end-of-image marker (a truncated file, which the decoder
/// would otherwise fill with grey) is refused, as is a PNG whose data ends early.
pub fn decode(path: &Path) -> Result<Rgb, ImageError> {
    let bytes = netc_compiler::files::read_capped(path, MAX_FILE_BYTES)
        .map_err(|error| ImageError::Io { path: path.to_path_buf(), error })?;
    decode_bytes(path, &bytes)
}

/// [`decode`] for a file's bytes already in memory (`path` labels the errors).
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<Rgb, ImageError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| ImageError::Io { path: path.to_path_buf(), error })?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(ImageError::Truncated { path: path.to_path_buf() })
        }
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png) => {}
        _ => return Err(ImageError::UnknownFormat { path: path.to_path_buf() }),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageError::Decode { path: path.to_path_buf(), detail: e.to_string() })?;
    let rgb = img.to_rgb8();
    Ok(Rgb { width: rgb.width() as usize, height: rgb.height() as usize, pixels: rgb.into_raw() })
}

/// Whether a JPEG's last scan is followed by the end-of-image marker `FF D9`. Entropy-coded data
/// never contains `FF D9` (a data `FF` is followed by `00` or a restart marker), so a file cut
/// anywhere after its last start-of-scan `FF DA` lacks it.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_marker = |code: u8| bytes.windows(2).rposition(|w| w == [0xFF, code]);
    match (last_marker(0xDA), last_marker(0xD9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
}

/// torchvision's `Resize(256)` output size `(width, height)` for an image of `width x height`.
pub fn resized_size(width: usize, height: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    // Python: int(256 * long / short), a true division truncated.
    let new_long = ((RESIZE * long) as f64 / short as f64) as usize;
    if width <= height {
        (RESIZE, new_long)
    } else {
        (new_long, RESIZE)
    }
}

/// The offset of a centre crop of `crop` out of `size` (negative: zero padding before the image).
fn crop_offset(size: usize, crop: usize) -> i64 {
    if crop > size {
        return -(((crop - size) / 2) as i64);
    }
    let d = size - crop;
    // round(d / 2) with round-half-to-even, as Python's round does.
    let half = d / 2;
    (if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half }) as i64
}

/// The ImageNet preset applied to a decoded image: a `[1, 3, height, width]` tensor.
pub fn preprocess(img: &Rgb, height: usize, width: usize) -> Tensor {
    let (rw, rh) = resized_size(img.width, img.height);
    let (top, left) = (crop_offset(rh, height), crop_offset(rw, width));
    // The part of the crop that lies inside the resized image (the rest is zero padding).
    let inside = |offset: i64, crop: usize, size: usize| {
        let start = offset.max(0) as usize;
        start..((offset + crop as i64).min(size as i64) as usize).max(start)
    };
    let (ys, xs) = (inside(top, height, rh), inside(left, width, rw));
    let region = resize_rgb_region(&img.pixels, (img.width, img.height), (rw, rh), xs.clone(), ys.clone());
    // A position of the resized image, if the region holds it.
    let at = |r: i64, range: &std::ops::Range<usize>| usize::try_from(r).ok().filter(|r| range.contains(r));
    let mut t = Tensor::zeros(vec![1, 3, height, width]);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                let v = match (at(y as i64 + top, &ys), at(x as i64 + left, &xs)) {
                    (Some(ry), Some(rx)) => region[((ry - ys.start) * xs.len() + (rx - xs.start)) * 3 + c],
                    _ => 0,
                };
                t.data[(c * height + y) * width + x] = (f32::from(v) / 255.0 - MEAN[c]) / STD[c];
            }
        }
    }
    t
}

/// Reads an image file and preprocesses it for a model whose input is `[3, height, width]`.
pub fn load(path: &Path, height: usize, width: usize) -> Result<Tensor, ImageError> {
    Ok(preprocess(&decode(path)?, height, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_the_aspect_ratio_like_torchvision() {
        assert_eq!(resized_size(451, 300), (384, 256));
        assert_eq!(resized_size(300, 451), (256, 384));
        assert_eq!(resized_size(100, 100), (256, 256));
    }

    #[test]
    fn crop_offsets_round_half_to_even_and_pad_small_images() {
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(385, 224), 80); // 80.5 -> 80
        assert_eq!(crop_offset(387, 224), 82); // 81.5 -> 82
        assert_eq!(crop_offset(200, 224), -12);
        assert_eq!(crop_offset(201, 224), -11);
    }

    #[test]
    fn an_extreme_aspect_ratio_only_resizes_the_crop() {
        // 1 x 20000 would resize to 256 x 5_120_000 pixels (3.9 GB); only the crop is computed.
        let img = Rgb { width: 1, height: 20_000, pixels: vec![90; 20_000 * 3] };
        let t = preprocess(&img, 224, 224);
        assert_eq!(t.data[0], (90.0f32 / 255.0 - MEAN[0]) / STD[0]);
    }

    #[test]
    fn a_grey_image_normalises_per_channel() {
        let img = Rgb { width: 300, height: 300, pixels: vec![128; 300 * 300 * 3] };
        let t = preprocess(&img, 224, 224);
        assert_eq!(t.shape, vec![1, 3, 224, 224]);
        for c in 0..3 {
            let expected = (128.0f32 / 255.0 - MEAN[c]) / STD[c];
            assert_eq!(t.data[c * 224 * 224 + 1000], expected);
        }
    }
}
