//! Shared plumbing for plotters charts: rendering into an `RgbImage`, size checks, error
//! conversion, axis ranges and "no data" notes.

use plotters::coord::Shift;
use plotters::prelude::*;

use image::RgbImage;

use crate::error::{Error, Result};
use crate::overlay::MAX_SIDE;
use crate::text::register_plotters_fonts;

/// The drawing area every chart draws on.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Smallest chart side this crate draws; below it the margins and labels do not fit.
pub const MIN_CHART_SIDE: u32 = 120;

/// Where a chart's legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegendPosition {
    /// The corner (upper right, lower right, upper left, lower left, in that preference)
    /// that hides the least data.
    #[default]
    Auto,
    /// Upper right corner of the plot area.
    UpperRight,
    /// Lower right corner of the plot area.
    LowerRight,
    /// Upper left corner of the plot area.
    UpperLeft,
    /// Lower left corner of the plot area.
    LowerLeft,
}

impl LegendPosition {
    const CORNERS: [LegendPosition; 4] = [
        LegendPosition::UpperRight,
        LegendPosition::LowerRight,
        LegendPosition::UpperLeft,
        LegendPosition::LowerLeft,
    ];

    /// Resolves `Auto` for data given as polylines in plot coordinates normalised to
    /// `[0, 1]` (x to the right, y up), for a legend covering `size` (normalised width,
    /// height) of the plot area.
    pub(crate) fn resolve(self, polylines: &[Vec<(f64, f64)>], size: (f64, f64)) -> Self {
        if self != LegendPosition::Auto {
            return self;
        }
        let hits = Self::CORNERS.map(|c| c.hits(polylines, size));
        let best = (0..4).min_by_key(|&k| (hits[k], k)).unwrap_or(0);
        Self::CORNERS[best]
    }

    /// Whether a legend of `size` in this corner would hide any of `polylines` (same
    /// coordinates as [`Self::resolve`]); `Auto` counts as upper right.
    pub(crate) fn covers(self, polylines: &[Vec<(f64, f64)>], size: (f64, f64)) -> bool {
        let corner = if self == LegendPosition::Auto {
            LegendPosition::UpperRight
        } else {
            self
        };
        corner.hits(polylines, size) > 0
    }

    /// How many points, sampled every 0.01 along `polylines` (a lone point counts once), a
    /// legend of `size` in this corner would cover.
    fn hits(self, polylines: &[Vec<(f64, f64)>], size: (f64, f64)) -> usize {
        let (w, h) = (size.0.clamp(0.0, 1.0), size.1.clamp(0.0, 1.0));
        let inside = |(x, y): (f64, f64)| {
            let in_x = match self {
                LegendPosition::UpperRight | LegendPosition::LowerRight => x >= 1.0 - w,
                _ => x <= w,
            };
            let in_y = match self {
                LegendPosition::UpperRight | LegendPosition::UpperLeft => y >= 1.0 - h,
                _ => y <= h,
            };
            in_x && in_y
        };
        let mut hits = 0;
        for line in polylines {
            let lone = (line.len() == 1).then(|| (line[0], line[0]));
            for ((x0, y0), (x1, y1)) in line.windows(2).map(|p| (p[0], p[1])).chain(lone) {
                let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
                let steps = ((len / 0.01).ceil() as usize).clamp(1, 200);
                for s in 0..=steps {
                    let t = s as f64 / steps as f64;
                    hits += usize::from(inside((x0 + t * (x1 - x0), y0 + t * (y1 - y0))));
                }
            }
        }
        hits
    }

    /// The plotters position (`Auto` maps to upper right; resolve it first).
    pub(crate) fn to_plotters(self) -> SeriesLabelPosition {
        match self {
            LegendPosition::Auto | LegendPosition::UpperRight => SeriesLabelPosition::UpperRight,
            LegendPosition::LowerRight => SeriesLabelPosition::LowerRight,
            LegendPosition::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendPosition::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }
}

/// Approximate legend size as a fraction of a `plot_w x plot_h` plot area, for `labels`
/// drawn at `font_px`.
pub(crate) fn legend_size<'a>(
    labels: impl Iterator<Item = &'a str>,
    font_px: f64,
    plot_w: f64,
    plot_h: f64,
) -> (f64, f64) {
    let (n, chars) = labels.fold((0usize, 0usize), |(n, c), l| {
        (n + 1, c.max(l.chars().count()))
    });
    let w = chars as f64 * font_px * 0.6 + 60.0;
    let h = n as f64 * (font_px + 7.0) + 12.0;
    (w / plot_w.max(1.0), h / plot_h.max(1.0))
}

/// Font size of chart titles (before [`fit_caption`] shrinks a long one).
const CAPTION_PX: f32 = 24.0;
/// Margin around a chart, each side, in pixels.
pub(crate) const CHART_MARGIN: u32 = 16;

/// A chart title that fits a chart `width` pixels wide: [`crate::text::fit_text`]'s smaller
/// font (down to 14 px), then an ellipsis. Returns the text and its size for plotters'
/// `caption`; plotters itself draws a long title past both edges.
pub(crate) fn fit_caption(title: &str, width: u32) -> Result<(String, f64)> {
    let font = crate::text::sans()?;
    let room = width.saturating_sub(2 * CHART_MARGIN + 8);
    let (size, text) = crate::text::fit_text(&font, CAPTION_PX, 14.0, title, room);
    Ok((text, f64::from(size)))
}

/// Converts any plotters error into [`Error::Plot`].
pub(crate) fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// Renders a white `width x height` chart with `draw` and returns it as an image.
pub(crate) fn render(
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<RgbImage> {
    if width < MIN_CHART_SIDE || height < MIN_CHART_SIDE || width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::invalid(format!(
            "chart size {width}x{height} (each side must be {MIN_CHART_SIDE}..={MAX_SIDE})"
        )));
    }
    register_plotters_fonts()?;
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| Error::Plot("buffer size".into()))
}

/// Writes `note` centred in `area` (used for charts without any finite data).
pub(crate) fn draw_note(area: &Area<'_>, note: &str) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from(("sans-serif", 20).into_font())
        .color(&RGBColor(90, 90, 90))
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        ));
    area.draw_text(note, &style, (w as i32 / 2, h as i32 / 2))
        .map_err(plot_err)
}

/// A range around the finite values in `values`, padded by 5 % (linear) or a factor of 1.25
/// (log, positive values only). `None` when there is no usable value.
pub(crate) fn value_range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(a, b)| (a.min(v), b.max(v))))
        })?;
    Some(if log {
        if hi / lo < 1.5 {
            (lo / 1.5, hi * 1.5)
        } else {
            (lo / 1.25, hi * 1.25)
        }
    } else if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3))
    } else {
        let pad = 0.05 * (hi - lo);
        let lo2 = if lo >= 0.0 {
            (lo - pad).max(0.0)
        } else {
            lo - pad
        };
        (lo2, hi + pad)
    })
}

/// Tick values for a logarithmic axis over `lo..hi` (both positive): `1, 2, 5 x 10^k`,
/// thinned to powers of ten over many decades and refined to `1, 2, 3, 5` or `1..9 x 10^k`
/// while fewer than four ticks fall in the range.
/// Each value appears once (plotters' own log ticks repeat the decade values and skip the
/// part below the first power of ten).
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi > lo) {
        return vec![];
    }
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        (k0..=k1)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let t = ticks(&[1.0, 2.0, 5.0]);
    if t.len() > 12 {
        return ticks(&[1.0]);
    }
    if t.len() >= 4 {
        return t;
    }
    let t = ticks(&[1.0, 2.0, 3.0, 5.0]);
    if t.len() >= 4 {
        return t;
    }
    ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
}

/// Formats an axis tick value compactly (`0.001`, `2.5e-5`, `1200`).
pub(crate) fn tick_label(v: &f64) -> String {
    let a = v.abs();
    if *v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legend_covers_the_data_that_runs_through_its_corner_only() {
        // A rising diagonal crosses the lower-left and upper-right corners.
        let diagonal = vec![vec![(0.0, 0.0), (1.0, 1.0)]];
        let size = (0.3, 0.3);
        assert!(LegendPosition::UpperRight.covers(&diagonal, size));
        assert!(LegendPosition::LowerLeft.covers(&diagonal, size));
        assert!(!LegendPosition::UpperLeft.covers(&diagonal, size));
        assert!(!LegendPosition::LowerRight.covers(&diagonal, size));
        // Auto picks a free corner; a box of lines through every corner leaves none free.
        let auto = LegendPosition::Auto.resolve(&diagonal, size);
        assert!(!auto.covers(&diagonal, size), "{auto:?}");
        let frame = vec![vec![
            (0.0, 0.0),
            (1.0, 0.0),
            (1.0, 1.0),
            (0.0, 1.0),
            (0.0, 0.0),
        ]];
        let auto = LegendPosition::Auto.resolve(&frame, size);
        assert!(auto.covers(&frame, size));
    }

    #[test]
    fn a_title_longer_than_the_chart_is_shrunk_then_cut_to_fit() {
        let (short, px) = fit_caption("Learning curve", 900).unwrap();
        assert_eq!((short.as_str(), px), ("Learning curve", 24.0));
        let long = "kp tuned: heatmap-resnet18, 100 epochs, cosine lr, nose-tuned augmentation, \
                    weight decay 0.05, test-time mirroring: training and validation loss";
        let (text, px) = fit_caption(long, 900).unwrap();
        assert!(px < 24.0 && text.ends_with('…'), "{px} {text}");
        let font = crate::text::sans().unwrap();
        let w = crate::text::text_size(&font, px as f32, &text).0;
        assert!(w <= 900 - 2 * CHART_MARGIN, "{w} px");
    }

    #[test]
    fn value_range_linear_and_log() {
        assert_eq!(value_range([1.0, 3.0].into_iter(), false), Some((0.9, 3.1)));
        assert_eq!(
            value_range([0.0, 10.0].into_iter(), false),
            Some((0.0, 10.5))
        );
        let (lo, hi) = value_range([2.0, 2.0].into_iter(), false).unwrap();
        assert!(lo < 2.0 && hi > 2.0);
        let (lo, hi) = value_range([0.0, -1.0, 0.01, 100.0, f64::NAN].into_iter(), true).unwrap();
        assert!((lo - 0.008).abs() < 1e-12 && (hi - 125.0).abs() < 1e-9);
        assert_eq!(
            value_range([f64::NAN, f64::INFINITY].into_iter(), false),
            None
        );
        assert_eq!(value_range([-1.0, 0.0].into_iter(), true), None);
    }

    #[test]
    fn legend_goes_to_the_emptiest_corner() {
        let small = (0.3, 0.3);
        // A falling curve fills the upper left and lower right: upper right stays free.
        let falling = vec![vec![(0.0, 1.0), (0.1, 0.2), (1.0, 0.0)]];
        assert_eq!(
            LegendPosition::Auto.resolve(&falling, small),
            LegendPosition::UpperRight
        );
        // A CED-like rising curve through the upper right: lower right is free.
        let rising = vec![vec![(0.0, 0.0), (0.2, 1.0), (1.0, 1.0)]];
        assert_eq!(
            LegendPosition::Auto.resolve(&rising, small),
            LegendPosition::LowerRight
        );
        // Data on the whole right side: a left corner.
        let right = vec![vec![(0.9, 0.0), (0.9, 1.0)], vec![(0.0, 1.0), (0.2, 1.0)]];
        assert_eq!(
            LegendPosition::Auto.resolve(&right, small),
            LegendPosition::LowerLeft
        );
        assert_eq!(
            LegendPosition::UpperLeft.resolve(&falling, small),
            LegendPosition::UpperLeft
        );
        assert_eq!(
            LegendPosition::Auto.resolve(&[], small),
            LegendPosition::UpperRight
        );
        let (w, h) = legend_size(["abc", "abcdef"].into_iter(), 10.0, 100.0, 100.0);
        assert!(
            (w - 0.96).abs() < 1e-9 && (h - 0.46).abs() < 1e-9,
            "{w} {h}"
        );
    }

    #[test]
    fn log_ticks_cover_the_range_once() {
        let t = log_ticks(0.0045, 0.11);
        let labels: Vec<String> = t.iter().map(tick_label).collect();
        assert_eq!(labels, ["0.005", "0.01", "0.02", "0.05", "0.1"]);
        assert_eq!(log_ticks(1e-6, 1e6).len(), 13);
        assert_eq!(log_ticks(2.5, 4.5).len(), 2);
        assert_eq!(log_ticks(0.9, 4.5).len(), 5); // 0.9, 1, 2, 3, 4
        assert_eq!(log_ticks(0.006, 0.08).len(), 4); // 0.01, 0.02, 0.03, 0.05
        assert!(log_ticks(0.0, 1.0).is_empty());
        assert!(log_ticks(1.0, f64::NAN).is_empty());
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(&0.0), "0");
        assert_eq!(tick_label(&0.25), "0.25");
        assert_eq!(tick_label(&1200.0), "1200");
        assert_eq!(tick_label(&0.00002), "2.0e-5");
    }

    #[test]
    fn render_checks_size_and_returns_requested_dimensions() {
        let img = render(200, 150, |_| Ok(())).unwrap();
        assert_eq!(img.dimensions(), (200, 150));
        assert!(img.pixels().all(|p| p.0 == [255, 255, 255]));
        assert!(render(10, 150, |_| Ok(())).is_err());
        assert!(render(200, 100_000, |_| Ok(())).is_err());
    }

    #[test]
    fn note_draws_dark_text() {
        let img = render(200, 150, |a| draw_note(a, "no data")).unwrap();
        assert!(img.pixels().any(|p| p[0] < 150));
    }
}
