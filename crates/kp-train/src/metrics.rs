//! Landmark accuracy metrics: MSE, mean point error, per-coordinate MAE, NME, and the failure
//! rate and AUC at 8% (the common 300-W threshold) and at 10% (the other one papers report).

use kp_data::Point;
use serde::{Deserialize, Serialize};

/// NME threshold above which a face counts as a failure (8% of the inter-ocular distance).
pub const FAILURE_THRESHOLD: f64 = 0.08;

/// The second threshold papers report failure rates and AUC at (10%).
pub const FAILURE_THRESHOLD_10: f64 = 0.10;

/// Metrics over a set of faces. Pixel figures are in the original image's pixels unless the
/// name says `input` (pixels of the network's input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of faces scored.
    pub faces: usize,
    /// Mean squared error on normalised coordinates (x/W, y/H of the network input), the loss.
    pub mse: f64,
    /// Mean Euclidean point error in pixels of the network's input.
    pub mean_px_error_input: f64,
    /// Mean Euclidean point error in original image pixels.
    pub mean_px_error: f64,
    /// Mean absolute error per coordinate in original image pixels (the Kaggle metric).
    pub mae: f64,
    /// Mean normalised error (point error / outer-eye-corner distance), when the scheme has eyes.
    pub nme: Option<f64>,
    /// Fraction of faces with NME above [`FAILURE_THRESHOLD`].
    pub failure_rate: Option<f64>,
    /// Area under the CED curve up to [`FAILURE_THRESHOLD`], divided by the threshold.
    pub auc: Option<f64>,
    /// Fraction of faces with NME above [`FAILURE_THRESHOLD_10`] (absent in older files).
    #[serde(default)]
    pub failure_rate_10: Option<f64>,
    /// Area under the CED curve up to [`FAILURE_THRESHOLD_10`], divided by the threshold.
    #[serde(default)]
    pub auc_10: Option<f64>,
}

/// Per-face errors, kept so figures (CED curves, worst faces) can be drawn from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaceErrors {
    /// Mean point error of each face in original pixels.
    pub mean_px_error: Vec<f64>,
    /// NME of each face (empty when the scheme has no eye corners).
    pub nme: Vec<f64>,
}

/// Predictions and ground truth of one face, in both coordinate frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<'a> {
    /// Predicted points in original pixels.
    pub pred: &'a [Point],
    /// Ground-truth points in original pixels.
    pub truth: &'a [Point],
    /// Predicted points in network-input pixels.
    pub pred_input: &'a [Point],
    /// Ground-truth points in network-input pixels.
    pub truth_input: &'a [Point],
}

/// Computes [`Metrics`] and [`FaceErrors`] for faces whose network input is `width`x`height`.
///
/// `eye_corners` are the indices of the outer eye corners used for NME (`None` → no NME).
pub fn compute(
    faces: &[Scored<'_>],
    width: usize,
    height: usize,
    eye_corners: Option<(usize, usize)>,
) -> (Metrics, FaceErrors) {
    let (mut se, mut n_coord) = (0.0f64, 0usize);
    let (mut px_in, mut px, mut ae, mut n_pts) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    let mut errors = FaceErrors::default();
    for f in faces {
        let mut face_err = 0.0;
        for (p, t) in f.pred_input.iter().zip(f.truth_input) {
            let dx = (p.x - t.x) as f64 / width as f64;
            let dy = (p.y - t.y) as f64 / height as f64;
            se += dx * dx + dy * dy;
            n_coord += 2;
            px_in += p.distance(*t) as f64;
        }
        for (p, t) in f.pred.iter().zip(f.truth) {
            let d = p.distance(*t) as f64;
            px += d;
            face_err += d;
            ae += ((p.x - t.x).abs() + (p.y - t.y).abs()) as f64;
            n_pts += 1;
        }
        let k = f.pred.len().min(f.truth.len()).max(1) as f64;
        errors.mean_px_error.push(face_err / k);
        if let Some((a, b)) = eye_corners {
            if let (Some(ta), Some(tb)) = (f.truth.get(a), f.truth.get(b)) {
                let iod = ta.distance(*tb) as f64;
                if iod > 0.0 {
                    errors.nme.push(face_err / k / iod);
                }
            }
        }
    }
    let div = |a: f64, n: usize| if n == 0 { f64::NAN } else { a / n as f64 };
    let n = errors.nme.len() as f64;
    let scored = !errors.nme.is_empty();
    let nme = scored.then(|| errors.nme.iter().sum::<f64>() / n);
    let failures = |t: f64| scored.then(|| failure_rate(&errors.nme, t));
    let area = |t: f64| scored.then(|| auc(&errors.nme, t));
    let metrics = Metrics {
        faces: faces.len(),
        mse: div(se, n_coord),
        mean_px_error_input: div(px_in, n_pts),
        mean_px_error: div(px, n_pts),
        mae: div(ae, 2 * n_pts),
        nme,
        failure_rate: failures(FAILURE_THRESHOLD),
        auc: area(FAILURE_THRESHOLD),
        failure_rate_10: failures(FAILURE_THRESHOLD_10),
        auc_10: area(FAILURE_THRESHOLD_10),
    };
    (metrics, errors)
}

/// Area under the cumulative error distribution from 0 to `threshold`, normalised to [0, 1]
/// ([`kp_viz::auc`]); NaN where it has no value (no faces, a threshold that is not positive,
/// a negative error).
///
/// Exact for the step-function CED of the given errors.
pub fn auc(errors: &[f64], threshold: f64) -> f64 {
    kp_viz::auc(errors, threshold).unwrap_or(f64::NAN)
}

/// Fraction of faces whose error is above `threshold` ([`kp_viz::failure_rate`]): a face whose
/// error is not a number (a prediction that diverged) is a failure, not left out. NaN where it
/// has no value (no faces, a threshold that is not positive, a negative error).
pub fn failure_rate(errors: &[f64], threshold: f64) -> f64 {
    kp_viz::failure_rate(errors, threshold).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f32, f32)]) -> Vec<Point> {
        v.iter().map(|&(x, y)| Point::new(x, y)).collect()
    }

    #[test]
    fn errors_in_both_frames() {
        let truth = pts(&[(0.0, 0.0), (10.0, 0.0)]);
        let pred = pts(&[(3.0, 4.0), (10.0, 0.0)]);
        let truth_in = pts(&[(0.0, 0.0), (5.0, 0.0)]);
        let pred_in = pts(&[(1.0, 0.0), (5.0, 2.0)]);
        let s = Scored {
            pred: &pred,
            truth: &truth,
            pred_input: &pred_in,
            truth_input: &truth_in,
        };
        let (m, e) = compute(&[s], 10, 20, Some((0, 1)));
        assert_eq!(m.faces, 1);
        assert!((m.mean_px_error - 2.5).abs() < 1e-9); // (5 + 0) / 2
        assert!((m.mae - 7.0 / 4.0).abs() < 1e-9); // (3+4+0+0)/4
        assert!((m.mean_px_error_input - 1.5).abs() < 1e-9); // (1 + 2) / 2
                                                             // mse: ((1/10)^2 + (2/20)^2) / 4 coords
        assert!((m.mse - (0.01 + 0.01) / 4.0).abs() < 1e-12);
        // nme: 2.5 / 10
        assert!((m.nme.unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(m.failure_rate, Some(1.0));
        assert_eq!(e.mean_px_error, vec![2.5]);
    }

    #[test]
    fn auc_of_perfect_and_failed_faces() {
        assert!((auc(&[0.0, 0.0], 0.08) - 1.0).abs() < 1e-12);
        assert_eq!(auc(&[0.5, 0.09], 0.08), 0.0);
        assert!(
            auc(&[0.5, 0.09], 0.08).is_sign_positive(),
            "no -0 in reports"
        );
        // One face at half the threshold: area 0.5 of one of two faces.
        assert!((auc(&[0.04, 1.0], 0.08) - 0.25).abs() < 1e-12);
        assert!(auc(&[], 0.08).is_nan());
    }

    /// Scores two-point faces against the eye corners (0, 0) and (100, 0) of a 100x100 input
    /// (original and input frames the same), so each face's NME is its mean point error / 100.
    fn score_eye_pair(preds: &[&[Point]]) -> (Metrics, FaceErrors) {
        let truth = pts(&[(0.0, 0.0), (100.0, 0.0)]);
        let faces: Vec<Scored> = preds
            .iter()
            .map(|&pred| Scored {
                pred,
                truth: &truth,
                pred_input: pred,
                truth_input: &truth,
            })
            .collect();
        compute(&faces, 100, 100, Some((0, 1)))
    }

    #[test]
    fn a_face_whose_prediction_is_not_a_number_counts_as_a_failure() {
        let (m, e) = score_eye_pair(&[
            &pts(&[(f32::NAN, 0.0), (100.0, 0.0)]),
            &pts(&[(0.0, 2.0), (100.0, 2.0)]),
        ]);
        assert_eq!(e.nme.len(), 2);
        assert_eq!((m.failure_rate, m.failure_rate_10), (Some(0.5), Some(0.5)));
        assert_eq!(failure_rate(&[0.02, 0.09], 0.08), 0.5);
        assert!(failure_rate(&[], 0.08).is_nan());
    }

    #[test]
    fn a_face_between_8_and_10_percent_fails_only_the_8_percent_threshold() {
        let (m, _) = score_eye_pair(&[
            &pts(&[(0.0, 9.0), (100.0, 9.0)]),
            &pts(&[(0.0, 2.0), (100.0, 2.0)]),
        ]);
        assert!((m.nme.unwrap() - 0.055).abs() < 1e-9);
        assert_eq!((m.failure_rate, m.failure_rate_10), (Some(0.5), Some(0.0)));
        let (a8, a10) = (m.auc.unwrap(), m.auc_10.unwrap());
        assert!((a8 - auc(&[0.09, 0.02], 0.08)).abs() < 1e-12);
        assert!((a10 - auc(&[0.09, 0.02], 0.10)).abs() < 1e-12);
        assert!(a10 > a8, "{a10} {a8}");
    }

    #[test]
    fn no_nme_without_eye_corners() {
        let p = pts(&[(1.0, 1.0)]);
        let s = Scored {
            pred: &p,
            truth: &p,
            pred_input: &p,
            truth_input: &p,
        };
        let (m, _) = compute(&[s], 80, 60, None);
        assert_eq!((m.nme, m.failure_rate_10, m.auc_10), (None, None, None));
        assert_eq!(m.mean_px_error, 0.0);
    }
}
