//! Embedded fonts (DejaVu Sans) and small text helpers for raster drawing.
//!
//! Nothing here needs system fonts: the font files are compiled into the binary by the
//! `dejavu` crate.

use std::sync::OnceLock;

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

/// DejaVu Sans regular, parsed from the embedded bytes.
pub(crate) fn sans() -> Result<FontRef<'static>> {
    FontRef::try_from_slice(dejavu::sans::regular())
        .map_err(|e| Error::Font(format!("DejaVu Sans: {e}")))
}

/// DejaVu Sans bold, parsed from the embedded bytes.
pub(crate) fn sans_bold() -> Result<FontRef<'static>> {
    FontRef::try_from_slice(dejavu::sans::bold())
        .map_err(|e| Error::Font(format!("DejaVu Sans Bold: {e}")))
}

/// Registers the embedded DejaVu Sans fonts with plotters under the family name
/// `"sans-serif"` (normal and bold), once per process.
///
/// plotters (built with its `ab_glyph` feature) draws no text at all unless a font is
/// registered; every chart function of this crate calls this first. The registry is global to
/// the process, so other plotters users in the same program see the same fonts.
pub fn register_plotters_fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        use plotters::style::{register_font, FontStyle};
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "DejaVu Sans (plotters)".to_string())?;
        register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
            .map_err(|_| "DejaVu Sans Bold (plotters)".to_string())?;
        Ok(())
    })
    .clone()
    .map_err(Error::Font)
}

/// Width and height in pixels of `text` drawn at `size` px.
pub(crate) fn text_size(font: &FontRef<'_>, size: f32, text: &str) -> (u32, u32) {
    imageproc::drawing::text_size(PxScale::from(size), font, text)
}

/// Draws `text` with its top-left corner at `(x, y)`.
pub(crate) fn draw_text(
    img: &mut RgbImage,
    font: &FontRef<'_>,
    size: f32,
    (x, y): (i32, i32),
    color: Rgb<u8>,
    text: &str,
) {
    imageproc::drawing::draw_text_mut(img, color, x, y, PxScale::from(size), font, text);
}

/// Shrinks the font size (down to `min_size`) and then truncates `text` with an ellipsis until
/// it fits into `max_width` pixels. Returns the size and the text to draw.
pub(crate) fn fit_text(
    font: &FontRef<'_>,
    size: f32,
    min_size: f32,
    text: &str,
    max_width: u32,
) -> (f32, String) {
    let mut s = size;
    while s > min_size && text_size(font, s, text).0 > max_width {
        s = (s - 1.0).max(min_size);
    }
    if text_size(font, s, text).0 <= max_width {
        return (s, text.to_string());
    }
    // Binary search for the longest prefix that fits with the ellipsis (width grows with
    // the prefix length).
    let chars: Vec<char> = text.chars().collect();
    let with_ellipsis =
        |keep: usize| -> String { chars[..keep].iter().chain(std::iter::once(&'…')).collect() };
    let fits = |keep: usize| text_size(font, s, &with_ellipsis(keep)).0 <= max_width;
    if !fits(0) {
        return (s, String::new());
    }
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (s, with_ellipsis(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fonts_load_and_register() {
        sans().unwrap();
        sans_bold().unwrap();
        register_plotters_fonts().unwrap();
        register_plotters_fonts().unwrap();
    }

    #[test]
    fn fit_text_shrinks_then_truncates() {
        let font = sans().unwrap();
        let (s, t) = fit_text(&font, 20.0, 10.0, "short", 500);
        assert_eq!((s, t.as_str()), (20.0, "short"));
        let long = "a rather long caption that cannot possibly fit";
        let (s, t) = fit_text(&font, 20.0, 10.0, long, 80);
        assert_eq!(s, 10.0);
        assert!(t.ends_with('…'), "{t}");
        assert!(text_size(&font, s, &t).0 <= 80);
    }

    #[test]
    fn draw_text_marks_pixels() {
        let font = sans().unwrap();
        let mut img = RgbImage::from_pixel(60, 30, Rgb([255, 255, 255]));
        draw_text(&mut img, &font, 16.0, (2, 2), Rgb([0, 0, 0]), "Ag");
        assert!(img.pixels().any(|p| p[0] < 100));
    }
}
