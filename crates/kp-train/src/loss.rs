//! The training objective: how far predicted keypoint coordinates are from the targets.
//!
//! Predictions and targets are `(B, 2K)` normalised coordinates (`x0, y0, x1, y1, ...`, `u = x /
//! W`). [`Loss::Mse`], the seed's, averages squared normalised errors; [`Loss::L1`] and
//! [`Loss::Wing`] measure errors in input pixels, where a landmark error is comparable across
//! input sizes and the Wing loss's constants have their published meaning.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Width `w` of the Wing loss's logarithmic part, in input pixels (Feng et al., CVPR 2018).
pub const WING_WIDTH: f64 = 10.0;
/// Curvature `epsilon` of the Wing loss's logarithmic part, in input pixels (Feng et al.).
pub const WING_EPSILON: f64 = 2.0;

/// A training objective on keypoint coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Mean squared error of normalised coordinates (the seed's).
    #[default]
    Mse,
    /// Mean absolute error in input pixels.
    L1,
    /// Wing loss in input pixels: `w ln(1 + |x| / epsilon)` for `|x| < w`, `|x| - C` beyond
    /// (`C` makes it continuous), with `w` = [`WING_WIDTH`], `epsilon` = [`WING_EPSILON`]: it
    /// weighs small and medium errors more than L1 and L2 do.
    Wing,
}

impl Loss {
    /// Parses `mse`, `l1` or `wing`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mse" => Ok(Self::Mse),
            "l1" => Ok(Self::L1),
            "wing" => Ok(Self::Wing),
            _ => Err(Error::Config(format!(
                "unknown loss `{s}` (expected mse, l1 or wing)"
            ))),
        }
    }

    /// The loss's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mse => "mse",
            Self::L1 => "l1",
            Self::Wing => "wing",
        }
    }

    /// The mean loss over every coordinate of `pred` against `target`, both `(B, 2K)`
    /// normalised, for a `(width, height)`-pixel input. Differentiable.
    pub fn compute(self, pred: &Tensor, target: &Tensor, input: (usize, usize)) -> Result<Tensor> {
        let diff = (pred - target)?;
        Ok(match self {
            Self::Mse => diff.sqr()?.mean_all()?,
            Self::L1 => pixel_errors(&diff, input)?.abs()?.mean_all()?,
            Self::Wing => {
                let abs = pixel_errors(&diff, input)?.abs()?;
                let c = WING_WIDTH - WING_WIDTH * (1.0 + WING_WIDTH / WING_EPSILON).ln();
                let near = ((&abs / WING_EPSILON)? + 1.0)?
                    .log()?
                    .affine(WING_WIDTH, 0.0)?;
                let far = (&abs - c)?;
                abs.lt(WING_WIDTH)?.where_cond(&near, &far)?.mean_all()?
            }
        })
    }
}

/// The Gaussian's width, in heatmap cells, that the heatmap regulariser pulls each map towards
/// (DSNT's 1 cell: 4 input pixels for kp's heatmap networks).
pub const HEATMAP_REG_SIGMA: f64 = 1.0;

/// The training objective of one batch: `loss` on the coordinates `pred` against `target` (both
/// `(B, 2K)` normalised, for a `(width, height)`-pixel input), plus `heatmap_reg` times the
/// heatmap regulariser ([`kp_models::DecodedHeatmaps::gaussian_divergence`] with
/// [`HEATMAP_REG_SIGMA`]) when the weight is positive. A positive weight without heatmaps is
/// refused (configurations are checked before training: `TrainConfig::validate`).
pub fn objective(
    loss: Loss,
    heatmap_reg: f64,
    (pred, heatmaps): (&Tensor, Option<&kp_models::DecodedHeatmaps>),
    target: &Tensor,
    input: (usize, usize),
) -> Result<Tensor> {
    let coords = loss.compute(pred, target, input)?;
    if heatmap_reg == 0.0 {
        return Ok(coords);
    }
    let hm = heatmaps.ok_or_else(|| {
        Error::Config("the heatmap regulariser needs a network that decodes heatmaps".into())
    })?;
    let reg = hm.gaussian_divergence(target, HEATMAP_REG_SIGMA)?;
    Ok((coords + (reg * heatmap_reg)?)?)
}

/// `diff` (normalised, `(B, 2K)`) in input pixels: x columns times the width, y times the height.
fn pixel_errors(diff: &Tensor, (w, h): (usize, usize)) -> Result<Tensor> {
    let cols = diff.dim(1)?;
    let scale: Vec<f32> = (0..cols)
        .map(|c| if c % 2 == 0 { w as f32 } else { h as f32 })
        .collect();
    let scale = Tensor::from_vec(scale, (1, cols), diff.device())?.to_dtype(diff.dtype())?;
    Ok(diff.broadcast_mul(&scale)?)
}

/// The scalar value of a 0-d loss tensor as `f32`.
pub fn scalar(loss: &Tensor) -> Result<f32> {
    Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use kp_models::{check_gradients, GradCheckConfig};

    fn wing(x: f64) -> f64 {
        let c = WING_WIDTH - WING_WIDTH * (1.0 + WING_WIDTH / WING_EPSILON).ln();
        if x.abs() < WING_WIDTH {
            WING_WIDTH * (1.0 + x.abs() / WING_EPSILON).ln()
        } else {
            x.abs() - c
        }
    }

    fn pair(pred: &[f32]) -> (Tensor, Tensor) {
        let d = Device::Cpu;
        let p = Tensor::from_slice(pred, (1, pred.len()), &d).unwrap();
        let t = Tensor::zeros((1, pred.len()), DType::F32, &d).unwrap();
        (p, t)
    }

    #[test]
    fn losses_match_their_formulas_in_input_pixels() {
        // Errors of 1/100 of the width (2 px) and 3/50 of the height (6 px); then 0.25 of the
        // width (50 px) and -0.5 of the height (-50 px) on a 200x100 input.
        let (p, t) = pair(&[0.01, 0.06, 0.25, -0.5]);
        let px = [2.0, 6.0, 50.0, -50.0];
        let mse = scalar(&Loss::Mse.compute(&p, &t, (200, 100)).unwrap()).unwrap();
        let want = (0.01f64.powi(2) + 0.06f64.powi(2) + 0.25f64.powi(2) + 0.25) / 4.0;
        assert!((mse as f64 - want).abs() < 1e-6, "{mse} vs {want}");
        let l1 = scalar(&Loss::L1.compute(&p, &t, (200, 100)).unwrap()).unwrap();
        assert!((l1 as f64 - 27.0).abs() < 1e-4, "{l1}");
        let w = scalar(&Loss::Wing.compute(&p, &t, (200, 100)).unwrap()).unwrap();
        let want: f64 = px.iter().map(|&x| wing(x)).sum::<f64>() / 4.0;
        assert!((w as f64 - want).abs() < 1e-4, "{w} vs {want}");
    }

    #[test]
    fn wing_is_continuous_and_steeper_than_l1_for_small_errors() {
        let below = wing(WING_WIDTH - 1e-9);
        let above = wing(WING_WIDTH + 1e-9);
        assert!((below - above).abs() < 1e-6);
        // Slope at 1 px: w / (epsilon + 1) = 3.33 > 1 (L1's).
        assert!((wing(1.001) - wing(1.0)) / 0.001 > 3.0);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let d = Device::Cpu;
        let values = [0.003f64, -0.02, 0.2, -0.07, 0.0011, 0.4];
        let t = Tensor::zeros((2, 3), DType::F64, &d).unwrap();
        let config = GradCheckConfig {
            eps: 1e-7,
            max_entries: values.len(),
            ..Default::default()
        };
        for loss in [Loss::Mse, Loss::L1, Loss::Wing] {
            let v = Var::from_vec(values.to_vec(), (2, 3), &d).unwrap();
            let objective = || Ok(loss.compute(v.as_tensor(), &t, (64, 32)).unwrap());
            let report = check_gradients(&[("pred", &v)], objective, &config).unwrap();
            assert!(report.passed(), "{loss:?}: {}", report.describe());
            assert_eq!(report.checked, values.len());
        }
    }

    #[test]
    fn the_objective_adds_the_weighted_heatmap_regulariser_only_when_asked() {
        let d = Device::Cpu;
        let grid = kp_models::HeatmapGrid::new((8, 8), (32, 32));
        let target = Tensor::new(&[[0.4f32, 0.6]], &d).unwrap();
        let pred = Tensor::new(&[[0.45f32, 0.5]], &d).unwrap();
        let hm = kp_models::DecodedHeatmaps {
            logits: Tensor::zeros((1, 1, 8, 8), DType::F32, &d).unwrap(),
            beta: 1.0,
            grid,
        };
        let value = |w: f64, hm: Option<&kp_models::DecodedHeatmaps>| {
            objective(Loss::Wing, w, (&pred, hm), &target, (32, 32)).map(|t| scalar(&t).unwrap())
        };
        let wing = scalar(&Loss::Wing.compute(&pred, &target, (32, 32)).unwrap()).unwrap();
        let reg = scalar(&hm.gaussian_divergence(&target, HEATMAP_REG_SIGMA).unwrap()).unwrap();
        assert!(reg > 0.5, "a flat map is far from a 1-cell Gaussian: {reg}");
        assert_eq!(value(0.0, Some(&hm)).unwrap(), wing);
        assert_eq!(value(0.0, None).unwrap(), wing);
        assert!((value(2.0, Some(&hm)).unwrap() - (wing + 2.0 * reg)).abs() < 1e-4);
        let e = value(2.0, None).unwrap_err().to_string();
        assert!(e.contains("heatmap regulariser"), "{e}");
    }

    #[test]
    fn names_round_trip_and_unknown_names_fail() {
        for loss in [Loss::Mse, Loss::L1, Loss::Wing] {
            assert_eq!(Loss::parse(loss.name()).unwrap(), loss);
        }
        assert!(Loss::parse("huber")
            .unwrap_err()
            .to_string()
            .contains("huber"));
    }
}
