//! Atomic file output: PNG figures and text files (HTML reports).
//!
//! Files go through [`kp_fs::write_atomic`] (a temporary file in the target directory, renamed
//! over the destination), so a reader never sees a half-written figure.

use std::fs;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::error::{Error, Result};

/// Encodes `image` as PNG bytes.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes).write_image(
        image.as_raw(),
        image.width(),
        image.height(),
        ExtendedColorType::Rgb8,
    )?;
    Ok(bytes)
}

/// Writes `image` as a PNG file at `path`, atomically (temporary file + rename).
///
/// Missing parent directories are created.
pub fn save_png(image: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path, &encode_png(image)?)
}

/// Writes `bytes` to `path` atomically ([`kp_fs::write_atomic`]: a temporary file beside
/// `path`, synced and renamed over it). Missing parent directories are created.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if path.file_name().is_none() {
        return Err(Error::invalid(format!(
            "{} has no file name",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    kp_fs::write_atomic(path, bytes).map_err(|e| Error::io(e.path, e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn save_png_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("fig.png");
        let mut img = RgbImage::from_pixel(7, 5, Rgb([1, 2, 3]));
        img.put_pixel(6, 4, Rgb([200, 100, 50]));
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("fig.png")]);
    }

    #[test]
    fn write_atomic_replaces_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
    }

    #[test]
    fn write_atomic_rejects_path_without_file_name() {
        assert!(matches!(
            write_atomic("/", b"x"),
            Err(Error::InvalidInput(_))
        ));
    }
}
