//! Cumulative error distribution (CED): the fraction of faces whose error (usually the NME,
//! normalised mean error) is at most `x`, plus its summary numbers, the normalised area under
//! the curve up to a threshold (AUC@t) and the failure rate (fraction of faces above `t`).
//!
//! Conventions: a face counts at `x` when `error <= x`, and fails when `error > t`, so
//! `failure_rate(t) = 1 - CED(t)`. Non-finite errors (NaN, infinity: a prediction that
//! failed outright) are faces that never count and always fail. Negative errors are invalid.

use plotters::prelude::*;

use image::RgbImage;

use crate::chart::{self, legend_size, plot_err, LegendPosition};
use crate::error::{Error, Result};
use crate::style::{palette, to_plotters};

/// Summary of one model's per-face errors at a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CedStats {
    /// Number of faces (including non-finite errors).
    pub n: usize,
    /// Threshold `t` used for `auc` and `failure_rate`.
    pub threshold: f64,
    /// Area under the CED from 0 to `t`, divided by `t` (in `0..=1`, higher is better).
    pub auc: f64,
    /// Fraction of faces with error above `t` (in `0..=1`, lower is better).
    pub failure_rate: f64,
}

/// Checks the inputs shared by all functions and returns the errors as `f64`, with
/// non-finite values mapped to `+inf`.
fn prepare<T: Copy + Into<f64>>(errors: &[T], threshold: f64, what: &str) -> Result<Vec<f64>> {
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(Error::invalid(format!(
            "{what} must be finite and positive, got {threshold}"
        )));
    }
    if errors.is_empty() {
        return Err(Error::empty("no per-face errors"));
    }
    errors
        .iter()
        .map(|&e| {
            let e: f64 = e.into();
            if !e.is_finite() {
                Ok(f64::INFINITY)
            } else if e < 0.0 {
                Err(Error::invalid(format!("negative error {e}")))
            } else {
                Ok(e)
            }
        })
        .collect()
}

/// Fraction of `errors` that are `<= x` (errors already prepared).
fn fraction_at_most(errors: &[f64], x: f64) -> f64 {
    errors.iter().filter(|&&e| e <= x).count() as f64 / errors.len() as f64
}

/// The CED sampled at `n_points` evenly spaced errors from 0 to `max_error` inclusive:
/// `(x, fraction of faces with error <= x)`.
///
/// Fails on no errors, a negative error, `n_points < 2` or a non-positive `max_error`.
pub fn ced_curve<T: Copy + Into<f64>>(
    errors: &[T],
    max_error: f64,
    n_points: usize,
) -> Result<Vec<(f64, f64)>> {
    if n_points < 2 {
        return Err(Error::invalid(format!(
            "CED needs at least 2 points, got {n_points}"
        )));
    }
    let e = prepare(errors, max_error, "max_error")?;
    Ok((0..n_points)
        .map(|i| {
            let x = max_error * i as f64 / (n_points - 1) as f64;
            (x, fraction_at_most(&e, x))
        })
        .collect())
}

/// The exact CED from 0 to `max_error` as the vertices of its step function: it starts at
/// `(0, CED(0))`, jumps vertically at every distinct error (one vertex before and one after
/// the jump) and ends at `(max_error, CED(max_error))`. Joining the vertices with straight
/// lines draws the curve exactly.
pub fn ced_steps<T: Copy + Into<f64>>(errors: &[T], max_error: f64) -> Result<Vec<(f64, f64)>> {
    let mut e = prepare(errors, max_error, "max_error")?;
    e.sort_by(f64::total_cmp);
    let n = e.len() as f64;
    let mut below = e.iter().take_while(|&&v| v <= 0.0).count();
    let mut out = vec![(0.0, below as f64 / n)];
    while below < e.len() && e[below] <= max_error {
        let x = e[below];
        out.push((x, below as f64 / n));
        while below < e.len() && e[below] == x {
            below += 1;
        }
        out.push((x, below as f64 / n));
    }
    out.push((max_error, below as f64 / n));
    Ok(out)
}

/// Area under the CED from 0 to `threshold`, divided by `threshold` (so 1 means every face
/// has zero error). Computed exactly: the mean over faces of `max(0, 1 - error / threshold)`,
/// each face below the threshold adding `(threshold - error) / threshold`. kp's one AUC: the
/// training metrics (`kp_train::metrics`) use it too.
pub fn auc<T: Copy + Into<f64>>(errors: &[T], threshold: f64) -> Result<f64> {
    let e = prepare(errors, threshold, "threshold")?;
    Ok(e.iter()
        .filter(|&&v| v < threshold)
        .map(|&v| (threshold - v) / threshold)
        // `fold` from +0.0: an empty `sum` of floats is -0.0, printed as "-0".
        .fold(0.0, |a, b| a + b)
        / e.len() as f64)
}

/// Fraction of faces whose error is above `threshold` (non-finite errors count as failures).
pub fn failure_rate<T: Copy + Into<f64>>(errors: &[T], threshold: f64) -> Result<f64> {
    let e = prepare(errors, threshold, "threshold")?;
    Ok(1.0 - fraction_at_most(&e, threshold))
}

/// [`auc`] and [`failure_rate`] at `threshold`, with the number of faces.
pub fn ced_stats<T: Copy + Into<f64>>(errors: &[T], threshold: f64) -> Result<CedStats> {
    Ok(CedStats {
        n: errors.len(),
        threshold,
        auc: auc(errors, threshold)?,
        failure_rate: failure_rate(errors, threshold)?,
    })
}

/// One model's per-face errors for [`ced_chart`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CedSeries {
    /// Model name shown in the legend.
    pub label: String,
    /// One error (e.g. NME) per face.
    pub errors: Vec<f64>,
}

impl CedSeries {
    /// A series from any list of `f32` or `f64` errors.
    pub fn new<T: Into<f64>>(
        label: impl Into<String>,
        errors: impl IntoIterator<Item = T>,
    ) -> Self {
        Self {
            label: label.into(),
            errors: errors.into_iter().map(Into::into).collect(),
        }
    }
}

/// Options for [`ced_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct CedOptions {
    /// Image width in pixels (default 800).
    pub width: u32,
    /// Image height in pixels (default 560).
    pub height: u32,
    /// Right end of the x axis (default 0.08).
    pub max_error: f64,
    /// Threshold for the AUC and failure rate in the legend; `None` uses `max_error`.
    pub threshold: Option<f64>,
    /// Chart title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Legend placement (default: the corner that hides the least data).
    pub legend: LegendPosition,
}

impl Default for CedOptions {
    fn default() -> Self {
        Self {
            width: 800,
            height: 560,
            max_error: 0.08,
            threshold: None,
            title: "Cumulative error distribution".into(),
            x_label: "NME".into(),
            y_label: "fraction of faces with NME ≤ x".into(),
            legend: LegendPosition::Auto,
        }
    }
}

/// The legend text for one series: `label (AUC@t 0.512, FR 3.1%, n 48)`.
pub fn ced_legend(label: &str, stats: &CedStats) -> String {
    format!(
        "{label} (AUC@{} {:.3}, FR {:.1}%, n {})",
        chart::tick_label(&stats.threshold),
        stats.auc,
        stats.failure_rate * 100.0,
        stats.n
    )
}

/// Draws the CED of each series (x from 0 to `opts.max_error`, y from 0 to 1) with AUC and
/// failure rate in the legend. Series without errors stay in the legend as "no faces";
/// with no usable series at all the chart carries a "no data" note. Fails on a non-positive
/// `max_error`/`threshold` or a negative error.
pub fn ced_chart(series: &[CedSeries], opts: &CedOptions) -> Result<RgbImage> {
    let max_x = opts.max_error;
    let threshold = opts.threshold.unwrap_or(max_x);
    for (v, what) in [(max_x, "max_error"), (threshold, "threshold")] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::invalid(format!(
                "{what} must be finite and positive, got {v}"
            )));
        }
    }
    let mut curves = Vec::with_capacity(series.len());
    for s in series {
        if s.errors.is_empty() {
            curves.push((format!("{} (no faces)", s.label), None));
        } else {
            let stats = ced_stats(&s.errors, threshold)?;
            curves.push((
                ced_legend(&s.label, &stats),
                Some(ced_steps(&s.errors, max_x)?),
            ));
        }
    }
    let lines: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .map(|p| p.iter().map(|&(x, y)| (x / max_x, y)).collect())
        .collect();
    let size = legend_size(
        curves.iter().map(|(l, _)| l.as_str()),
        15.0,
        opts.width as f64 - 102.0,
        opts.height as f64 - 122.0,
    );
    let legend = opts.legend.resolve(&lines, size);
    let (title, title_px) = chart::fit_caption(&opts.title, opts.width)?;
    chart::render(opts.width, opts.height, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", title_px))
            .margin(chart::CHART_MARGIN)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_x, 0.0..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(&opts.x_label)
            .y_desc(&opts.y_label)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .x_label_formatter(&chart::tick_label)
            .y_label_formatter(&chart::tick_label)
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(plot_err)?;
        if threshold < max_x {
            let grey = RGBColor(150, 150, 150);
            chart
                .draw_series(DashedLineSeries::new(
                    [(threshold, 0.0), (threshold, 1.0)],
                    6,
                    4,
                    grey.into(),
                ))
                .map_err(plot_err)?;
        }
        for (i, (label, points)) in curves.iter().enumerate() {
            let style = ShapeStyle::from(to_plotters(palette(i))).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().flatten().copied(), style))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        if !curves.is_empty() {
            chart
                .configure_series_labels()
                .position(legend.to_plotters())
                .legend_area_size(40)
                .label_font(("sans-serif", 15))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(plot_err)?;
        }
        if curves.iter().all(|(_, p)| p.is_none()) {
            chart::draw_note(root, "no data")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const ERRS: [f64; 4] = [0.015, 0.025, 0.055, 0.2];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ced_curve_counts_errors_at_most_x() {
        let c = ced_curve(&ERRS, 0.1, 11).unwrap();
        assert_eq!(c.len(), 11);
        let ys: Vec<f64> = c.iter().map(|p| p.1).collect();
        assert_eq!(
            ys,
            vec![0.0, 0.0, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75]
        );
        assert!(close(c[10].0, 0.1));
        // f32 input works as well.
        let c32 = ced_curve(&[0.5f32, 1.5], 1.0, 2).unwrap();
        assert_eq!(c32, vec![(0.0, 0.0), (1.0, 0.5)]);
    }

    #[test]
    fn ced_steps_are_exact() {
        let s = ced_steps(&[0.0, 0.02, 0.02, 0.05, 0.2], 0.08).unwrap();
        assert_eq!(
            s,
            vec![
                (0.0, 0.2),
                (0.02, 0.2),
                (0.02, 0.6),
                (0.05, 0.6),
                (0.05, 0.8),
                (0.08, 0.8)
            ]
        );
    }

    #[test]
    fn auc_is_the_exact_normalised_area() {
        // Area up to t = 0.08: faces at 0.015, 0.025, 0.055 contribute 0.065, 0.055, 0.025.
        let a = auc(&ERRS, 0.08).unwrap();
        assert!(close(a, 0.453125), "{a}");
        assert!(close(auc(&[0.0, 0.0], 0.1).unwrap(), 1.0));
        assert!(close(auc(&[0.1, 0.5], 0.1).unwrap(), 0.0));
        // Agrees with a fine trapezoid integration of the sampled curve.
        let c = ced_curve(&ERRS, 0.08, 80_001).unwrap();
        let trap: f64 = c
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum();
        assert!((trap / 0.08 - a).abs() < 1e-4, "{trap} vs {a}");
    }

    #[test]
    fn failure_rate_counts_errors_above_threshold() {
        assert!(close(failure_rate(&ERRS, 0.08).unwrap(), 0.25));
        // A face exactly at the threshold does not fail.
        assert!(close(failure_rate(&ERRS, 0.055).unwrap(), 0.25));
        assert!(close(failure_rate(&ERRS, 0.054).unwrap(), 0.5));
        assert!(close(failure_rate(&ERRS, 1.0).unwrap(), 0.0));
    }

    #[test]
    fn nan_errors_are_failures_and_bad_input_is_rejected() {
        let e = [0.0, f64::NAN, f64::INFINITY, 0.04];
        assert!(close(failure_rate(&e, 0.08).unwrap(), 0.5));
        assert!(close(auc(&e, 0.08).unwrap(), (1.0 + 0.5) / 4.0));
        let st = ced_stats(&e, 0.08).unwrap();
        assert_eq!(st.n, 4);
        assert!(matches!(auc::<f64>(&[], 0.08), Err(Error::EmptyInput(_))));
        assert!(auc(&[-0.1], 0.08).is_err());
        assert!(auc(&[0.1], 0.0).is_err());
        assert!(failure_rate(&[0.1], f64::NAN).is_err());
        assert!(ced_curve(&[0.1], 0.1, 1).is_err());
        assert_eq!(
            ced_steps(&[f64::NAN], 0.1).unwrap(),
            vec![(0.0, 0.0), (0.1, 0.0)]
        );
    }

    #[test]
    fn legend_text() {
        let st = ced_stats(&ERRS, 0.08).unwrap();
        assert_eq!(ced_legend("m", &st), "m (AUC@0.08 0.453, FR 25.0%, n 4)");
    }

    #[test]
    fn chart_draws_each_model_in_its_colour() {
        let series = [
            CedSeries::new("a", ERRS),
            CedSeries::new("b", [0.03f32, 0.04, 0.06]),
        ];
        let img = ced_chart(&series, &CedOptions::default()).unwrap();
        assert_eq!(img.dimensions(), (800, 560));
        let has = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
        assert!(has(palette(0)) > 100, "{}", has(palette(0)));
        assert!(has(palette(1)) > 100, "{}", has(palette(1)));
    }

    #[test]
    fn chart_with_no_data_or_empty_series_does_not_panic() {
        let o = CedOptions::default();
        assert_eq!(ced_chart(&[], &o).unwrap().dimensions(), (800, 560));
        let img = ced_chart(&[CedSeries::new("empty", Vec::<f64>::new())], &o).unwrap();
        assert_eq!(img.dimensions(), (800, 560));
        let nan = ced_chart(&[CedSeries::new("nan", [f64::NAN])], &o).unwrap();
        assert_eq!(nan.dimensions(), (800, 560));
        let bad = CedOptions {
            max_error: 0.0,
            ..Default::default()
        };
        assert!(ced_chart(&[], &bad).is_err());
    }
}
