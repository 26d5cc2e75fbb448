//! The grayscale float image type every kp crate passes around.
//!
//! Pixels are `f32` in `[-0.5, 0.5]` (black = -0.5, white = 0.5), the seed study's input range.

use image::{GrayImage, ImageBuffer, Luma};

/// A grayscale image with `f32` pixels in `[-0.5, 0.5]`.
pub type GrayF32 = ImageBuffer<Luma<f32>, Vec<f32>>;

/// Converts an 8-bit grayscale image to [`GrayF32`] (`v / 255 - 0.5`).
pub fn gray_from_u8(img: &GrayImage) -> GrayF32 {
    let data = img
        .as_raw()
        .iter()
        .map(|&v| v as f32 / 255.0 - 0.5)
        .collect();
    ImageBuffer::from_raw(img.width(), img.height(), data).expect("same size buffer")
}

/// Converts a [`GrayF32`] back to 8-bit, clamping to the valid range.
pub fn gray_to_u8(img: &GrayF32) -> GrayImage {
    let data = img
        .as_raw()
        .iter()
        .map(|&v| ((v + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    ImageBuffer::from_raw(img.width(), img.height(), data).expect("same size buffer")
}
