//! Grids of images with a caption under each tile (e.g. the seed's 2x4 validation grid).

use image::imageops::FilterType;
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::overlay::MAX_SIDE;
use crate::style::{BLACK, WHITE};
use crate::text;

/// Options for [`image_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridOptions {
    /// Number of columns (default 4); the number of rows follows from the number of tiles.
    pub cols: usize,
    /// Resize every tile to this `(width, height)`; `None` keeps tiles as they are and centres
    /// each in a cell as large as the largest tile.
    pub tile_size: Option<(u32, u32)>,
    /// Resampling filter used when `tile_size` is set (default: triangle / bilinear).
    pub filter: FilterType,
    /// Gap between tiles and around the border, in pixels (default 8).
    pub padding: u32,
    /// Caption font size in pixels (default 16). Long captions are shrunk, then cut with "…".
    pub caption_size: f32,
    /// Optional title above the grid.
    pub title: Option<String>,
    /// Title font size in pixels (default 22).
    pub title_size: f32,
    /// Background colour (default white).
    pub background: Rgb<u8>,
    /// Text colour (default black).
    pub text_color: Rgb<u8>,
}

impl Default for GridOptions {
    fn default() -> Self {
        Self {
            cols: 4,
            tile_size: None,
            filter: FilterType::Triangle,
            padding: 8,
            caption_size: 16.0,
            title: None,
            title_size: 22.0,
            background: WHITE,
            text_color: BLACK,
        }
    }
}

/// Lays `tiles` out row by row in `opts.cols` columns, with `captions[i]` (may contain `\n`
/// for several lines) centred under tile `i`.
///
/// `captions` may be shorter than `tiles` (missing captions are blank) or empty. Fails on no
/// tiles, on a tile or option of zero size, or when the grid would exceed 16384 px per side.
pub fn image_grid<S: AsRef<str>>(
    tiles: &[RgbImage],
    captions: &[S],
    opts: &GridOptions,
) -> Result<RgbImage> {
    if tiles.is_empty() {
        return Err(Error::empty("image grid without tiles"));
    }
    if opts.cols == 0 {
        return Err(Error::invalid("grid with 0 columns"));
    }
    let valid_size = |s: f32| s.is_finite() && s >= 1.0;
    if !valid_size(opts.caption_size) || !valid_size(opts.title_size) {
        return Err(Error::invalid("font sizes must be at least 1 px"));
    }
    if let Some(i) = tiles.iter().position(|t| t.width() == 0 || t.height() == 0) {
        return Err(Error::invalid(format!("tile {i} has zero size")));
    }
    let (cell_w, cell_h) = match opts.tile_size {
        Some((w, h)) if w == 0 || h == 0 => {
            return Err(Error::invalid(format!("tile size {w}x{h}")))
        }
        Some(size) => size,
        None => (
            tiles.iter().map(RgbImage::width).max().unwrap_or(1),
            tiles.iter().map(RgbImage::height).max().unwrap_or(1),
        ),
    };
    let cols = opts.cols.min(tiles.len());
    let rows = tiles.len().div_ceil(cols);
    let pad = opts.padding;

    let font = text::sans()?;
    let line_h = (opts.caption_size * 1.25).ceil() as u32;
    let caption_lines = (0..tiles.len())
        .map(|i| captions.get(i).map_or(0, |c| c.as_ref().lines().count()))
        .max()
        .unwrap_or(0) as u32;
    let caption_h = if caption_lines == 0 {
        0
    } else {
        caption_lines * line_h + pad / 2
    };
    let title_font = text::sans_bold()?;
    let title_h = match &opts.title {
        Some(t) if !t.is_empty() => (opts.title_size * 1.3).ceil() as u32 + pad,
        _ => 0,
    };

    let total_w = cols as u64 * (cell_w + pad) as u64 + pad as u64;
    let total_h = title_h as u64 + rows as u64 * (cell_h + caption_h + pad) as u64 + pad as u64;
    if total_w > MAX_SIDE as u64 || total_h > MAX_SIDE as u64 {
        return Err(Error::invalid(format!(
            "grid of {total_w}x{total_h} exceeds {MAX_SIDE} px per side"
        )));
    }
    let mut out = RgbImage::from_pixel(total_w as u32, total_h as u32, opts.background);

    if let Some(title) = opts.title.as_deref().filter(|t| !t.is_empty()) {
        let (size, t) = text::fit_text(&title_font, opts.title_size, 9.0, title, total_w as u32);
        let w = text::text_size(&title_font, size, &t).0;
        let x = (total_w as u32).saturating_sub(w) / 2;
        text::draw_text(
            &mut out,
            &title_font,
            size,
            (x as i32, pad as i32),
            opts.text_color,
            &t,
        );
    }

    for (i, tile) in tiles.iter().enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        let x0 = pad + c * (cell_w + pad);
        let y0 = title_h + pad + r * (cell_h + caption_h + pad);
        let resized;
        let tile = match opts.tile_size {
            Some((w, h)) if tile.dimensions() != (w, h) => {
                resized = image::imageops::resize(tile, w, h, opts.filter);
                &resized
            }
            _ => tile,
        };
        let dx = (cell_w - tile.width()) / 2;
        let dy = (cell_h - tile.height()) / 2;
        image::imageops::replace(&mut out, tile, (x0 + dx) as i64, (y0 + dy) as i64);

        let caption = captions.get(i).map_or("", |c| c.as_ref());
        for (l, line) in caption.lines().enumerate() {
            let (size, t) = text::fit_text(&font, opts.caption_size, 9.0, line, cell_w);
            let w = text::text_size(&font, size, &t).0;
            let x = x0 + cell_w.saturating_sub(w) / 2;
            let y = y0 + cell_h + pad / 4 + l as u32 * line_h;
            text::draw_text(
                &mut out,
                &font,
                size,
                (x as i32, y as i32),
                opts.text_color,
                &t,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles(n: usize) -> Vec<RgbImage> {
        (0..n)
            .map(|i| RgbImage::from_pixel(40, 30, Rgb([0, (i * 20) as u8, 200])))
            .collect()
    }

    #[test]
    fn two_by_four_grid_has_expected_size_tiles_and_captions() {
        let captions: Vec<String> = (0..8).map(|i| format!("face {i}")).collect();
        let opts = GridOptions::default();
        let out = image_grid(&tiles(8), &captions, &opts).unwrap();
        let line_h = (16.0f32 * 1.25).ceil() as u32;
        let caption_h = line_h + 4;
        assert_eq!(out.width(), 4 * (40 + 8) + 8);
        assert_eq!(out.height(), 2 * (30 + caption_h + 8) + 8);
        // Tile 5 (row 1, col 1) is placed where expected.
        let (x, y) = (8 + 48 + 20, 8 + (30 + caption_h + 8) + 15);
        assert_eq!(*out.get_pixel(x, y), Rgb([0, 100, 200]));
        // Caption text below tile 0 is dark on the white background.
        let dark = (8..48)
            .flat_map(|x| (38..38 + caption_h).map(move |y| (x, y)))
            .filter(|&(x, y)| out.get_pixel(x, y)[0] < 128)
            .count();
        assert!(dark > 10, "{dark} dark caption pixels");
    }

    #[test]
    fn fewer_tiles_than_columns_and_missing_captions() {
        let out = image_grid::<&str>(&tiles(3), &[], &GridOptions::default()).unwrap();
        assert_eq!(out.dimensions(), (3 * 48 + 8, 30 + 16));
    }

    #[test]
    fn tile_size_resizes_and_title_adds_height() {
        let opts = GridOptions {
            cols: 2,
            tile_size: Some((20, 10)),
            title: Some("Validation".into()),
            ..Default::default()
        };
        let out = image_grid(&tiles(4), &["a", "b\nsecond line"], &opts).unwrap();
        let title_h = (22.0f32 * 1.3).ceil() as u32 + 8;
        let caption_h = 2 * 20 + 4;
        assert_eq!(
            out.dimensions(),
            (2 * 28 + 8, title_h + 2 * (10 + caption_h + 8) + 8)
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let none: [&str; 0] = [];
        assert!(image_grid(&[], &none, &GridOptions::default()).is_err());
        let opts = GridOptions {
            cols: 0,
            ..Default::default()
        };
        assert!(image_grid(&tiles(2), &none, &opts).is_err());
        assert!(image_grid(&[RgbImage::new(0, 5)], &none, &GridOptions::default()).is_err());
    }
}
