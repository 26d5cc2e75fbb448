//! Evaluation: predict a set of cached faces in batches and score them in input and original pixels.

use kp_augment::Pipeline;
use kp_data::Point;
use rayon::prelude::*;

use crate::error::Result;
use crate::metrics::{compute, FaceErrors, Metrics, Scored};
use crate::model::LoadedModel;
use crate::prep::{prepare, sample_seed, CachedFace, Sample};
use crate::trainer::EVAL_BATCH;

/// The outcome of evaluating a model on some faces.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Aggregate metrics.
    pub metrics: Metrics,
    /// Per-face errors.
    pub errors: FaceErrors,
    /// Predictions in original image pixels, one list per face, in the order given.
    pub predictions: Vec<Vec<Point>>,
    /// Predictions in network-input pixels.
    pub predictions_input: Vec<Vec<Point>>,
}

/// Predicts prepared samples in batches; returns points in input pixels. With the model's
/// test-time mirroring ([`LoadedModel::mirror`]) each batch also holds the mirrored images,
/// whose points are mirrored back, reordered and averaged with the plain prediction.
pub fn predict_samples(model: &LoadedModel, samples: &[Sample]) -> Result<Vec<Vec<Point>>> {
    let (w, h) = (model.width, model.height);
    let mut out = Vec::with_capacity(samples.len());
    let views = if model.mirror.is_some() { 2 } else { 1 };
    // At most EVAL_BATCH images (faces times views) go through the network at once: a batch's
    // activations dominate peak memory.
    for chunk in samples.chunks((EVAL_BATCH / views).max(1)) {
        let mut images = Vec::with_capacity(views * chunk.len() * w * h);
        for s in chunk {
            images.extend_from_slice(s.image.as_raw());
        }
        if model.mirror.is_some() {
            for s in chunk {
                for row in s.image.as_raw().chunks(w) {
                    images.extend(row.iter().rev());
                }
            }
        }
        let y = model.predict(&images, views * chunk.len())?;
        let points: Vec<Vec<Point>> = y
            .chunks(y.len() / (views * chunk.len()))
            .map(|row| {
                row.chunks(2)
                    .map(|c| Point::new(c[0] * w as f32, c[1] * h as f32))
                    .collect()
            })
            .collect();
        let (plain, mirrored) = points.split_at(chunk.len());
        match &model.mirror {
            None => out.extend_from_slice(plain),
            Some(perm) => {
                for (a, b) in plain.iter().zip(mirrored) {
                    out.push(average_with_mirror(a, b, perm, w));
                }
            }
        }
    }
    Ok(out)
}

/// The mean of `plain` (points on an image) and `mirrored` (points on its mirror image, `width`
/// pixels wide): mirrored point `perm[i]` is the mirror of plain point `i`.
///
/// Mirrored back, point `j` is `(right - m.x, m.y)` as in [`kp_data::scheme::mirror_points`];
/// the sum keeps its order `p.x + right - m.x`, since mirroring first rounds differently and
/// the test-time-mirrored evaluations (the tuned runs) must stay the same bit for bit.
fn average_with_mirror(
    plain: &[Point],
    mirrored: &[Point],
    perm: &[usize],
    width: usize,
) -> Vec<Point> {
    let right = width as f32 - 1.0;
    plain
        .iter()
        .zip(perm)
        .map(|(p, &j)| {
            let m = mirrored[j];
            Point::new((p.x + right - m.x) / 2.0, (p.y + m.y) / 2.0)
        })
        .collect()
}

/// The network inputs of `cache[indices]` after `pipeline`, as evaluation makes them: random
/// steps of the pipeline (such as a simulated detector box) draw from `sample_seed(seed, 0,
/// face index)`, so a face gets the same draw whatever the split; deterministic pipelines
/// ignore the seed.
pub fn eval_samples(
    cache: &[CachedFace],
    indices: &[usize],
    pipeline: &Pipeline,
    seed: u64,
) -> Result<Vec<Sample>> {
    indices
        .par_iter()
        .map(|&i| prepare(pipeline, &cache[i], sample_seed(seed, 0, i)))
        .collect()
}

/// Evaluates `model` on `cache[indices]` after `pipeline` (inputs made by [`eval_samples`]).
pub fn evaluate(
    model: &LoadedModel,
    cache: &[CachedFace],
    indices: &[usize],
    pipeline: &Pipeline,
    eye_corners: Option<(usize, usize)>,
    seed: u64,
) -> Result<Evaluation> {
    let samples = eval_samples(cache, indices, pipeline, seed)?;
    let pred_input = predict_samples(model, &samples)?;
    let pred: Vec<Vec<Point>> = samples
        .iter()
        .zip(&pred_input)
        .map(|(s, p)| Ok(kp_augment::points_to_original(&s.to_input, None, p)?))
        .collect::<Result<_>>()?;
    let scored: Vec<Scored<'_>> = indices
        .iter()
        .enumerate()
        .map(|(j, &i)| Scored {
            pred: &pred[j],
            truth: &cache[i].original,
            pred_input: &pred_input[j],
            truth_input: &samples[j].keypoints,
        })
        .collect();
    let (metrics, errors) = compute(&scored, model.width, model.height, eye_corners);
    Ok(Evaluation {
        metrics,
        errors,
        predictions: pred,
        predictions_input: pred_input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Task, TrainConfig};
    use candle_core::Device;
    use kp_augment::Affine;
    use kp_data::scheme::IMM58;
    use kp_data::GrayF32;

    fn sample(width: u32, height: u32, pixel: impl Fn(u32, u32) -> f32) -> Sample {
        Sample {
            image: GrayF32::from_fn(width, height, |x, y| image::Luma([pixel(x, y)])),
            keypoints: Vec::new(),
            to_input: Affine::IDENTITY,
        }
    }

    #[test]
    fn averaging_with_an_exact_mirror_changes_nothing() {
        let plain: Vec<Point> = (0..58)
            .map(|i| Point::new(i as f32 * 2.5, 100.0 - i as f32))
            .collect();
        let mirrored = IMM58.mirror(&plain, 160.0).unwrap();
        let avg = average_with_mirror(&plain, &mirrored, IMM58.flip, 160);
        for (a, p) in avg.iter().zip(&plain) {
            assert!(
                (a.x - p.x).abs() < 1e-4 && (a.y - p.y).abs() < 1e-4,
                "{a:?} vs {p:?}"
            );
        }
    }

    /// With test-time mirroring any network, even an untrained one, becomes mirror-equivariant:
    /// the prediction on a mirrored image is the mirrored prediction.
    #[test]
    fn test_time_mirror_makes_predictions_mirror_equivariant() {
        let mut cfg = TrainConfig::recipe(Task::Face, "unused");
        cfg.test_time_mirror = true;
        let model = LoadedModel::build(&cfg, 58, &Device::Cpu).unwrap();
        assert_eq!(model.mirror.as_deref(), Some(IMM58.flip));
        let (w, h) = (cfg.width as u32, cfg.height as u32);
        let pattern =
            |x: u32, y: u32| ((x * 7 + y * 3) % 11) as f32 / 11.0 - 0.5 + (x as f32 / 400.0);
        let img = sample(w, h, pattern);
        let flipped = sample(w, h, |x, y| pattern(w - 1 - x, y));
        let p = predict_samples(&model, &[img, flipped]).unwrap();
        let mirrored_back = IMM58.mirror(&p[1], w as f32).unwrap();
        for (a, b) in p[0].iter().zip(&mirrored_back) {
            assert!(
                (a.x - b.x).abs() < 1e-3 && (a.y - b.y).abs() < 1e-3,
                "{a:?} vs {b:?}"
            );
        }
        let mut plain = model;
        plain.mirror = None;
        let q = predict_samples(&plain, &[sample(w, h, pattern)]).unwrap();
        assert_ne!(
            q[0], p[0],
            "mirroring changes an asymmetric network's prediction"
        );
    }

    #[test]
    fn mirror_permutation_of_subsets() {
        let nose = TrainConfig::recipe(Task::Nose, "unused");
        assert_eq!(nose.mirror_permutation(1).unwrap(), vec![0]);
        let mut eye = TrainConfig::recipe(Task::Ibug, "unused");
        eye.keypoints = Some(vec![36]);
        let err = eye.mirror_permutation(1).unwrap_err().to_string();
        assert!(err.contains("ibug68") && err.contains("[36]"), "{err}");
    }
}
