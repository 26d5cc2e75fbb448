//! Conversion of raw float buffers (e.g. a model's normalised input tensor) into images.

use image::{GrayImage, Luma};

use crate::error::{Error, Result};

/// How float values are mapped to the 0..=255 grey range.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ValueRange {
    /// Stretch the finite minimum to black and the finite maximum to white.
    /// A constant buffer becomes mid-grey.
    #[default]
    Auto,
    /// Map `min` to black and `max` to white, clamping values outside the range
    /// (e.g. `-0.5..0.5` for inputs normalised as `pixel / 255 - 0.5`).
    Fixed {
        /// Value drawn black.
        min: f32,
        /// Value drawn white.
        max: f32,
    },
}

/// Builds a greyscale image from a row-major `width x height` float buffer.
///
/// Non-finite values are drawn black. Fails when the buffer length is not
/// `width * height`, when a side is zero, or when a fixed range is empty or not finite.
pub fn gray_from_f32(
    data: &[f32],
    width: u32,
    height: u32,
    range: ValueRange,
) -> Result<GrayImage> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!("image size {width}x{height}")));
    }
    let expected = width as usize * height as usize;
    if data.len() != expected {
        return Err(Error::invalid(format!(
            "buffer has {} values, {width}x{height} needs {expected}",
            data.len()
        )));
    }
    let (lo, hi) = match range {
        ValueRange::Fixed { min, max } => {
            if !(min.is_finite() && max.is_finite() && max > min) {
                return Err(Error::invalid(format!("value range {min}..{max}")));
            }
            (min, max)
        }
        ValueRange::Auto => {
            let mut it = data.iter().copied().filter(|v| v.is_finite());
            match it.next() {
                None => (0.0, 1.0),
                Some(first) => it.fold((first, first), |(a, b), v| (a.min(v), b.max(v))),
            }
        }
    };
    let pixels = data
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                0
            } else if hi <= lo {
                128
            } else {
                (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
            }
        })
        .collect();
    GrayImage::from_raw(width, height, pixels)
        .ok_or_else(|| Error::invalid("buffer does not match image size"))
}

/// Convenience: a greyscale image as `f32` values in `0..=1`, row-major (the inverse mapping,
/// useful in tests and for feeding images to a model).
pub fn gray_to_f32(image: &GrayImage) -> Vec<f32> {
    image.pixels().map(|Luma([v])| *v as f32 / 255.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_range_stretches_min_to_black_and_max_to_white() {
        let img = gray_from_f32(&[-0.5, 0.0, 0.5, f32::NAN], 2, 2, ValueRange::Auto).unwrap();
        assert_eq!(img.as_raw(), &vec![0, 128, 255, 0]);
    }

    #[test]
    fn fixed_range_clamps() {
        let r = ValueRange::Fixed { min: 0.0, max: 1.0 };
        let img = gray_from_f32(&[-1.0, 0.5, 2.0], 3, 1, r).unwrap();
        assert_eq!(img.as_raw(), &vec![0, 128, 255]);
    }

    #[test]
    fn constant_and_all_nan_buffers_do_not_panic() {
        let img = gray_from_f32(&[3.0; 4], 2, 2, ValueRange::Auto).unwrap();
        assert!(img.pixels().all(|p| p[0] == 128));
        let img = gray_from_f32(&[f32::NAN; 4], 2, 2, ValueRange::Auto).unwrap();
        assert!(img.pixels().all(|p| p[0] == 0));
    }

    #[test]
    fn bad_sizes_and_ranges_are_errors() {
        assert!(gray_from_f32(&[0.0; 3], 2, 2, ValueRange::Auto).is_err());
        assert!(gray_from_f32(&[], 0, 0, ValueRange::Auto).is_err());
        let r = ValueRange::Fixed { min: 1.0, max: 1.0 };
        assert!(gray_from_f32(&[0.0], 1, 1, r).is_err());
    }

    #[test]
    fn round_trip_through_f32() {
        let img = GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
        assert_eq!(gray_to_f32(&img), vec![0.0, 1.0]);
    }
}
