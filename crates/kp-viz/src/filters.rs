//! Convolution filters as an image grid (e.g. the seed's sixteen 5x5 first-layer filters).
//!
//! Each filter is normalised to its own minimum (black) and maximum (white), enlarged with
//! nearest-neighbour sampling and separated from its neighbours by a border. Filters are laid
//! out left to right, top to bottom, in output-channel order.

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::overlay::MAX_SIDE;

/// How the input channels of each filter are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterChannels {
    /// One input channel: grey; three: colour (R, G, B); otherwise the mean over channels.
    #[default]
    Auto,
    /// Mean over input channels, in grey.
    Mean,
    /// One grey tile per (output, input) channel pair; each row of the grid is one output
    /// filter unless `cols` says otherwise.
    Separate,
}

/// Options for [`filter_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct FilterGridOptions {
    /// Tiles per row; `None` gives a near-square grid (4 for 16 filters), or one row per
    /// output filter with [`FilterChannels::Separate`].
    pub cols: Option<usize>,
    /// Output pixels per filter weight (default 16: a 5x5 filter becomes 80x80).
    pub cell: u32,
    /// Border width in pixels around and between tiles (default 3).
    pub border: u32,
    /// Border colour (default steel blue, which no grey filter pixel can be confused with).
    pub border_color: Rgb<u8>,
    /// Colour of non-finite weights (default magenta).
    pub nan_color: Rgb<u8>,
    /// How input channels are shown.
    pub channels: FilterChannels,
}

impl Default for FilterGridOptions {
    fn default() -> Self {
        Self {
            cols: None,
            cell: 16,
            border: 3,
            border_color: Rgb([70, 110, 170]),
            nan_color: Rgb([255, 0, 255]),
            channels: FilterChannels::Auto,
        }
    }
}

/// One tile: `planes` is 1 (grey) or 3 (RGB) planes of `kh * kw` values.
struct Tile {
    planes: Vec<Vec<f32>>,
}

/// Draws conv weights of shape `(out, in, kh, kw)` (row-major, as PyTorch and candle store
/// them) as a grid of tiles, each normalised to its own min/max.
///
/// Fails when a dimension is zero, when `weights.len()` does not match the shape, when
/// `cell` is zero, or when the grid would exceed 16384 px per side. Non-finite weights are
/// drawn in `opts.nan_color` and ignored for the normalisation; a constant filter is mid-grey.
pub fn filter_grid(
    weights: &[f32],
    shape: [usize; 4],
    opts: &FilterGridOptions,
) -> Result<RgbImage> {
    let [n_out, n_in, kh, kw] = shape;
    if shape.contains(&0) {
        return Err(Error::invalid(format!(
            "filter shape {shape:?} has a zero dimension"
        )));
    }
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::invalid(format!("filter shape {shape:?} overflows")))?;
    if weights.len() != expected {
        return Err(Error::invalid(format!(
            "{} weights do not match shape {shape:?} ({expected} values)",
            weights.len()
        )));
    }
    if opts.cell == 0 {
        return Err(Error::invalid("cell size 0"));
    }
    let k = kh * kw;
    let plane = |o: usize, i: usize| weights[(o * n_in + i) * k..(o * n_in + i + 1) * k].to_vec();
    let mean = |o: usize| -> Vec<f32> {
        (0..k)
            .map(|j| {
                (0..n_in)
                    .map(|i| weights[(o * n_in + i) * k + j])
                    .sum::<f32>()
                    / n_in as f32
            })
            .collect()
    };
    let mode = match opts.channels {
        FilterChannels::Auto if n_in == 1 => FilterChannels::Separate,
        m => m,
    };
    let tiles: Vec<Tile> = match mode {
        FilterChannels::Auto if n_in == 3 => (0..n_out)
            .map(|o| Tile {
                planes: (0..3).map(|i| plane(o, i)).collect(),
            })
            .collect(),
        FilterChannels::Auto | FilterChannels::Mean => (0..n_out)
            .map(|o| Tile {
                planes: vec![mean(o)],
            })
            .collect(),
        FilterChannels::Separate => (0..n_out)
            .flat_map(|o| (0..n_in).map(move |i| (o, i)))
            .map(|(o, i)| Tile {
                planes: vec![plane(o, i)],
            })
            .collect(),
    };

    let cols = match opts.cols {
        Some(0) => return Err(Error::invalid("filter grid with 0 columns")),
        Some(c) => c,
        None if mode == FilterChannels::Separate && n_in > 1 => n_in,
        None => (tiles.len() as f64).sqrt().ceil() as usize,
    }
    .min(tiles.len());
    let rows = tiles.len().div_ceil(cols);
    let (tw, th) = (kw as u64 * opts.cell as u64, kh as u64 * opts.cell as u64);
    let b = opts.border as u64;
    let width = cols as u64 * (tw + b) + b;
    let height = rows as u64 * (th + b) + b;
    if width > MAX_SIDE as u64 || height > MAX_SIDE as u64 {
        return Err(Error::invalid(format!(
            "filter grid of {width}x{height} exceeds {MAX_SIDE} px per side"
        )));
    }
    let mut out = RgbImage::from_pixel(width as u32, height as u32, opts.border_color);
    let cell = opts.cell;
    for (t, tile) in tiles.iter().enumerate() {
        let x0 = (b + (t % cols) as u64 * (tw + b)) as u32;
        let y0 = (b + (t / cols) as u64 * (th + b)) as u32;
        let (lo, hi) = finite_min_max(tile.planes.iter().flatten().copied());
        let to_u8 = |v: f32| -> Option<u8> {
            if !v.is_finite() {
                None
            } else if hi > lo {
                Some((((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8)
            } else {
                Some(128)
            }
        };
        for j in 0..k {
            let values: Vec<Option<u8>> = tile.planes.iter().map(|p| to_u8(p[j])).collect();
            let color = if values.iter().any(Option::is_none) {
                opts.nan_color
            } else if let [Some(r), Some(g), Some(bl)] = values[..] {
                Rgb([r, g, bl])
            } else {
                let v = values[0].unwrap_or(0);
                Rgb([v, v, v])
            };
            let (fx, fy) = ((j % kw) as u32, (j / kw) as u32);
            for dy in 0..cell {
                for dx in 0..cell {
                    out.put_pixel(x0 + fx * cell + dx, y0 + fy * cell + dy, color);
                }
            }
        }
    }
    Ok(out)
}

/// Minimum and maximum of the finite values (`(0, 0)` when there is none).
fn finite_min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f32, f32)>, v| {
            Some(acc.map_or((v, v), |(a, b)| (a.min(v), b.max(v))))
        })
        .unwrap_or((0.0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 filters 1x5x5: filter `o` has weight `o * 100 + j` at position `j`.
    fn seed_like() -> Vec<f32> {
        (0..16)
            .flat_map(|o| (0..25).map(move |j| (o * 100 + j) as f32))
            .collect()
    }

    #[test]
    fn sixteen_5x5_filters_make_a_4x4_grid_normalised_per_filter() {
        let opts = FilterGridOptions::default();
        let img = filter_grid(&seed_like(), [16, 1, 5, 5], &opts).unwrap();
        let side = 4 * (5 * 16 + 3) + 3;
        assert_eq!(img.dimensions(), (side, side));
        // Every filter: first weight black, last white, although their raw values differ.
        for t in 0..16u32 {
            let (x0, y0) = (3 + (t % 4) * 83, 3 + (t / 4) * 83);
            assert_eq!(*img.get_pixel(x0 + 1, y0 + 1), Rgb([0, 0, 0]), "tile {t}");
            assert_eq!(
                *img.get_pixel(x0 + 79, y0 + 79),
                Rgb([255, 255, 255]),
                "tile {t}"
            );
            // Nearest-neighbour: the 16x16 block of weight 0 is uniform.
            assert_eq!(img.get_pixel(x0 + 15, y0 + 15), img.get_pixel(x0, y0));
        }
        // Borders.
        assert_eq!(*img.get_pixel(0, 0), opts.border_color);
        assert_eq!(*img.get_pixel(84, 40), opts.border_color);
    }

    #[test]
    fn rgb_and_separate_modes() {
        let w: Vec<f32> = (0..2 * 3 * 2 * 2).map(|v| v as f32).collect();
        let img = filter_grid(&w, [2, 3, 2, 2], &FilterGridOptions::default()).unwrap();
        assert_eq!(img.dimensions(), (2 * 35 + 3, 35 + 3));
        // Filter 0: channel R holds the smallest values, B the largest.
        let p = img.get_pixel(3, 3);
        assert!(p[0] < p[1] && p[1] < p[2], "{p:?}");
        let opts = FilterGridOptions {
            channels: FilterChannels::Separate,
            cell: 1,
            border: 0,
            ..Default::default()
        };
        let img = filter_grid(&w, [2, 3, 2, 2], &opts).unwrap();
        assert_eq!(img.dimensions(), (3 * 2, 2 * 2));
        let opts = FilterGridOptions {
            channels: FilterChannels::Mean,
            ..opts
        };
        assert_eq!(
            filter_grid(&w, [2, 3, 2, 2], &opts).unwrap().dimensions(),
            (4, 2)
        );
    }

    #[test]
    fn nan_and_constant_filters_do_not_panic() {
        let opts = FilterGridOptions {
            cell: 1,
            border: 0,
            cols: Some(2),
            ..Default::default()
        };
        let w = [f32::NAN, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0];
        let img = filter_grid(&w, [2, 1, 2, 2], &opts).unwrap();
        assert_eq!(*img.get_pixel(0, 0), opts.nan_color);
        assert_eq!(*img.get_pixel(1, 0), Rgb([0, 0, 0]));
        assert_eq!(*img.get_pixel(1, 1), Rgb([255, 255, 255]));
        assert_eq!(*img.get_pixel(2, 0), Rgb([128, 128, 128]));
        let all_nan = [f32::NAN; 4];
        filter_grid(&all_nan, [1, 1, 2, 2], &opts).unwrap();
    }

    #[test]
    fn bad_shapes_are_errors() {
        let o = FilterGridOptions::default();
        assert!(filter_grid(&[], [0, 1, 5, 5], &o).is_err());
        assert!(filter_grid(&[0.0; 24], [1, 1, 5, 5], &o).is_err());
        assert!(filter_grid(&[0.0; 4], [usize::MAX, 2, 2, 2], &o).is_err());
        let big = FilterGridOptions {
            cell: 10_000,
            ..Default::default()
        };
        assert!(filter_grid(&[0.0; 4], [1, 1, 2, 2], &big).is_err());
    }
}
