//! Learning curves: training loss per gradient step (thin line) and validation loss per epoch
//! (points joined by a line, placed at the step where the epoch ended), for one or several
//! runs on one chart.

use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use image::RgbImage;

use crate::chart::{self, legend_size, plot_err, Area, LegendPosition};
use crate::error::Result;
use crate::style::{palette, to_plotters, TRAIN_BLUE, VAL_ORANGE};

/// The losses of one training run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossCurve {
    /// Run name shown in the legend (e.g. `"bs 1, lr 1e-3"`); may be empty for a single run.
    pub label: String,
    /// `(gradient step, training loss)` pairs.
    pub train: Vec<(f64, f64)>,
    /// `(step at which the epoch ended, validation loss)` pairs.
    pub val: Vec<(f64, f64)>,
}

impl LossCurve {
    /// A run from one training loss per gradient step (step `i + 1` for `train_per_step[i]`)
    /// and one validation loss per epoch, epoch `e` ending at step
    /// `(e + 1) * steps_per_epoch`.
    pub fn from_epochs(
        label: impl Into<String>,
        train_per_step: &[f32],
        val_per_epoch: &[f32],
        steps_per_epoch: usize,
    ) -> Self {
        Self {
            label: label.into(),
            train: train_per_step
                .iter()
                .enumerate()
                .map(|(i, &l)| ((i + 1) as f64, l as f64))
                .collect(),
            val: val_per_epoch
                .iter()
                .enumerate()
                .map(|(e, &l)| (((e + 1) * steps_per_epoch) as f64, l as f64))
                .collect(),
        }
    }
}

/// Options for [`learning_curves`].
#[derive(Debug, Clone, PartialEq)]
pub struct CurvesOptions {
    /// Image width in pixels (default 900).
    pub width: u32,
    /// Image height in pixels (default 540).
    pub height: u32,
    /// Chart title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic y axis (non-positive losses are then skipped).
    pub log_y: bool,
    /// Trailing moving-average window for the training loss; 0 or 1 draws the raw values.
    pub smooth: usize,
    /// Legend placement (default: the corner that hides the least data).
    pub legend: LegendPosition,
}

impl Default for CurvesOptions {
    fn default() -> Self {
        Self {
            width: 900,
            height: 540,
            title: "Learning curve".into(),
            x_label: "gradient step".into(),
            y_label: "loss (MSE)".into(),
            log_y: false,
            smooth: 0,
            legend: LegendPosition::Auto,
        }
    }
}

/// Splits `points` into runs of finite (and, for a log axis, positive-loss) points, so that
/// lines break at gaps instead of joining across them.
fn finite_segments(points: &[(f64, f64)], log: bool) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![];
    let mut cur = vec![];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() && (!log || y > 0.0) {
            cur.push((x, y));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Trailing moving average with window `k` (`k <= 1` returns the input).
fn moving_average(points: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    if k <= 1 {
        return points.to_vec();
    }
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= k {
                sum -= points[i - k].1;
            }
            (x, sum / (i + 1).min(k) as f64)
        })
        .collect()
}

/// Legend entries explaining the two line styles when several runs share a chart.
const STYLE_NOTES: [&str; 2] = [
    "thin: train loss per step",
    "dots: validation loss per epoch",
];

struct Prepared {
    /// Legend entry for the training line (single run only).
    train_label: Option<String>,
    /// Legend entry for the validation line (empty: none).
    val_label: String,
    train: Vec<Vec<(f64, f64)>>,
    val: Vec<Vec<(f64, f64)>>,
    train_color: RGBAColor,
    val_color: RGBColor,
}

/// Draws the training and validation losses of `runs` on one chart.
///
/// With one run the training loss is a thin blue line and the validation loss orange points
/// (the seed's colours); with several runs each run gets a palette colour, training as a thin
/// translucent line and validation as points on a line, and the legend names the runs.
/// Non-finite values are skipped (lines break there). Without any finite value the chart
/// shows empty axes and a "no data" note. The image is `opts.width x opts.height`.
pub fn learning_curves(runs: &[LossCurve], opts: &CurvesOptions) -> Result<RgbImage> {
    let log = opts.log_y;
    let single = runs.len() == 1;
    let prepared: Vec<Prepared> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let train: Vec<_> = finite_segments(&r.train, log)
                .iter()
                .map(|s| moving_average(s, opts.smooth))
                .collect();
            let (train_color, val_color) = if single {
                (to_plotters(TRAIN_BLUE).to_rgba(), to_plotters(VAL_ORANGE))
            } else {
                let c = to_plotters(palette(i));
                (c.mix(0.45), c)
            };
            let smooth = if opts.smooth > 1 {
                format!(" (moving avg {})", opts.smooth)
            } else {
                String::new()
            };
            let (train_label, val_label) = if single {
                let prefix = if r.label.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", r.label)
                };
                (
                    Some(format!("{prefix}train loss per step{smooth}")),
                    format!("{prefix}validation loss per epoch"),
                )
            } else {
                (None, r.label.clone())
            };
            Prepared {
                train_label,
                val_label,
                train,
                val: finite_segments(&r.val, log),
                train_color,
                val_color,
            }
        })
        .collect();
    let all = || {
        prepared
            .iter()
            .flat_map(|p| p.train.iter().chain(&p.val))
            .flatten()
            .copied()
    };
    let x_max = all().map(|p| p.0).fold(f64::NAN, f64::max);
    let x_min = all().map(|p| p.0).fold(f64::NAN, f64::min);
    let y_range = chart::value_range(all().map(|p| p.1), log);

    chart::render(opts.width, opts.height, |root| {
        let x_range = if x_max.is_finite() {
            let lo = x_min.min(0.0);
            let hi = if x_max > lo { x_max } else { lo + 1.0 };
            lo..hi + 0.02 * (hi - lo)
        } else {
            0.0..1.0
        };
        let (y0, mut y1) = y_range.unwrap_or(if log { (0.1, 10.0) } else { (0.0, 1.0) });
        let (mut legend, size, covered) = legend_position(&prepared, opts, &x_range, (y0, y1));
        if covered && opts.legend == LegendPosition::Auto {
            // Every corner hides data: raise the top of the y axis so that the data stays
            // below a legend in the upper right.
            legend = LegendPosition::UpperRight;
            let free = 1.0 - size.1.clamp(0.0, 0.6) - 0.03;
            y1 = if log {
                (y0.ln() + (y1.ln() - y0.ln()) / free).exp()
            } else {
                y0 + (y1 - y0) / free
            };
        }
        if log {
            let ticks = chart::log_ticks(y0, y1);
            let y_spec = (y0..y1).log_scale().with_key_points(ticks);
            draw_chart(root, x_range, y_spec, &prepared, opts, legend)?;
        } else {
            draw_chart(root, x_range, y0..y1, &prepared, opts, legend)?;
        }
        if y_range.is_none() {
            chart::draw_note(root, "no data")?;
        }
        Ok(())
    })
}

/// Resolves `opts.legend` against the data in normalised plot coordinates; with the
/// legend's size (fraction of the plot) and whether it hides data there.
fn legend_position(
    runs: &[Prepared],
    opts: &CurvesOptions,
    x: &Range<f64>,
    (y0, y1): (f64, f64),
) -> (LegendPosition, (f64, f64), bool) {
    let ny = |y: f64| {
        if opts.log_y {
            (y.ln() - y0.ln()) / (y1.ln() - y0.ln())
        } else {
            (y - y0) / (y1 - y0)
        }
    };
    let norm = |p: &(f64, f64)| ((p.0 - x.start) / (x.end - x.start), ny(p.1));
    let lines: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .flat_map(|r| r.train.iter().chain(&r.val))
        .map(|seg| seg.iter().map(norm).collect())
        .collect();
    let mut labels: Vec<&str> = runs
        .iter()
        .flat_map(|r| {
            r.train_label
                .as_deref()
                .into_iter()
                .chain([r.val_label.as_str()])
        })
        .filter(|l| !l.is_empty())
        .collect();
    if runs.len() > 1 {
        labels.extend(STYLE_NOTES);
    }
    let plot_w = opts.width as f64 - 112.0;
    let plot_h = opts.height as f64 - 122.0;
    let size = legend_size(labels.into_iter(), 15.0, plot_w, plot_h);
    let at = opts.legend.resolve(&lines, size);
    (at, size, at.covers(&lines, size))
}

fn draw_chart<Y>(
    root: &Area<'_>,
    x_range: Range<f64>,
    y_spec: Y,
    runs: &[Prepared],
    opts: &CurvesOptions,
    legend: LegendPosition,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (title, title_px) = chart::fit_caption(&opts.title, opts.width)?;
    let mut chart = ChartBuilder::on(root)
        .caption(&title, ("sans-serif", title_px))
        .margin(chart::CHART_MARGIN)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_spec)
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

    let single = runs.len() == 1;
    let mut any_legend = false;
    for run in runs {
        let train_style = ShapeStyle::from(run.train_color).stroke_width(1);
        let val_style = ShapeStyle::from(run.val_color).stroke_width(2);
        for seg in &run.train {
            chart
                .draw_series(LineSeries::new(seg.iter().copied(), train_style))
                .map_err(plot_err)?;
        }
        for seg in &run.val {
            chart
                .draw_series(LineSeries::new(seg.iter().copied(), val_style))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    seg.iter()
                        .map(|&p| Circle::new(p, 4, ShapeStyle::from(run.val_color).filled())),
                )
                .map_err(plot_err)?;
        }
        // Legend entries are attached to empty series so that broken lines do not repeat them.
        if let Some(label) = run.train_label.clone() {
            chart
                .draw_series(LineSeries::new(std::iter::empty(), train_style))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], train_style));
        }
        if !run.val_label.is_empty() {
            any_legend = true;
            chart
                .draw_series(LineSeries::new(std::iter::empty(), val_style))
                .map_err(plot_err)?
                .label(run.val_label.clone())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], val_style)
                        + Circle::new((12, 0), 4, val_style.filled())
                });
        }
        any_legend |= single;
    }
    if !single && runs.len() > 1 {
        // Explain the two line styles once, in grey.
        let grey = RGBColor(110, 110, 110);
        let thin = ShapeStyle::from(grey.mix(0.6)).stroke_width(1);
        let thick = ShapeStyle::from(grey).stroke_width(2);
        chart
            .draw_series(LineSeries::new(std::iter::empty(), thin))
            .map_err(plot_err)?
            .label(STYLE_NOTES[0])
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], thin));
        chart
            .draw_series(LineSeries::new(std::iter::empty(), thick))
            .map_err(plot_err)?
            .label(STYLE_NOTES[1])
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (24, 0)], thick)
                    + Circle::new((12, 0), 4, thick.filled())
            });
    }
    if any_legend {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn count(img: &RgbImage, pred: impl Fn(&Rgb<u8>) -> bool) -> usize {
        img.pixels().filter(|p| pred(p)).count()
    }
    fn blueish(p: &Rgb<u8>) -> bool {
        p[2] > 120 && p[0] < 120 && p[2] > p[1]
    }
    fn orangeish(p: &Rgb<u8>) -> bool {
        p[0] > 200 && (90..170).contains(&p[1]) && p[2] < 80
    }

    fn fake_run(label: &str, scale: f32) -> LossCurve {
        let train: Vec<f32> = (0..200)
            .map(|i| scale * (1.0 / (1.0 + i as f32 * 0.05) + 0.02 * ((i * 7919) % 13) as f32))
            .collect();
        let val: Vec<f32> = (0..10).map(|e| scale * 1.0 / (1.0 + e as f32)).collect();
        LossCurve::from_epochs(label, &train, &val, 20)
    }

    #[test]
    fn from_epochs_places_validation_at_epoch_ends() {
        let c = LossCurve::from_epochs("a", &[3.0, 2.0, 1.0, 0.5], &[2.5, 0.75], 2);
        assert_eq!(c.train[0], (1.0, 3.0));
        assert_eq!(c.train[3], (4.0, 0.5));
        assert_eq!(c.val, vec![(2.0, 2.5), (4.0, 0.75)]);
    }

    #[test]
    fn moving_average_and_segments() {
        let p = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0)];
        assert_eq!(
            moving_average(&p, 2),
            vec![(1.0, 1.0), (2.0, 2.0), (3.0, 4.0)]
        );
        assert_eq!(moving_average(&p, 0), p.to_vec());
        let q = [
            (1.0, 1.0),
            (2.0, f64::NAN),
            (3.0, 2.0),
            (4.0, -1.0),
            (5.0, 3.0),
        ];
        assert_eq!(finite_segments(&q, false).len(), 2);
        assert_eq!(
            finite_segments(&q, true),
            vec![vec![(1.0, 1.0)], vec![(3.0, 2.0)], vec![(5.0, 3.0)]]
        );
    }

    #[test]
    fn single_run_has_blue_train_and_orange_validation() {
        let img = learning_curves(&[fake_run("", 1.0)], &CurvesOptions::default()).unwrap();
        assert_eq!(img.dimensions(), (900, 540));
        assert!(count(&img, blueish) > 200, "blue {}", count(&img, blueish));
        assert!(
            count(&img, orangeish) > 100,
            "orange {}",
            count(&img, orangeish)
        );
    }

    #[test]
    fn several_runs_log_scale_and_custom_size() {
        let runs = [
            fake_run("bs 1", 1.0),
            fake_run("bs 4", 0.5),
            fake_run("bs 32", 2.0),
        ];
        let opts = CurvesOptions {
            width: 640,
            height: 400,
            log_y: true,
            smooth: 5,
            ..Default::default()
        };
        let img = learning_curves(&runs, &opts).unwrap();
        assert_eq!(img.dimensions(), (640, 400));
        // Third run is palette green.
        assert!(count(&img, |p| p[1] > 130 && p[0] < 80 && p[2] < 80) > 50);
    }

    #[test]
    fn empty_and_nan_input_gives_chart_with_note() {
        let nan = LossCurve {
            label: "nan".into(),
            train: vec![(1.0, f64::NAN), (f64::INFINITY, 1.0)],
            val: vec![],
        };
        for runs in [vec![], vec![LossCurve::default()], vec![nan]] {
            for log_y in [false, true] {
                let opts = CurvesOptions {
                    log_y,
                    ..Default::default()
                };
                let img = learning_curves(&runs, &opts).unwrap();
                assert_eq!(img.dimensions(), (900, 540));
                // At most the legend's short sample line is blue: no data was drawn.
                assert!(count(&img, blueish) < 100, "{}", count(&img, blueish));
                // The grey "no data" note sits in the middle.
                let note = (400..500)
                    .flat_map(|x| (250..290).map(move |y| (x, y)))
                    .filter(|&(x, y)| img.get_pixel(x, y)[0] < 160)
                    .count();
                assert!(note > 20, "{note}");
            }
        }
    }

    #[test]
    fn too_small_chart_is_an_error() {
        let opts = CurvesOptions {
            width: 20,
            ..Default::default()
        };
        assert!(learning_curves(&[], &opts).is_err());
    }
}
