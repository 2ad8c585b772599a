//! Tensor I/O: `.npy` files, images preprocessed like torchvision's ImageNet preset, and writing
//! files atomically.

pub mod atomic;
pub mod image;
pub mod npy;
mod resize;
