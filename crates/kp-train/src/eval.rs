//! Evaluation: predict a set of cached faces in batches and score them in input and original pixels.

use kp_augment::Pipeline;
use kp_data::Point;
use rayon::prelude::*;

use crate::error::Result;
use crate::metrics::{compute, FaceErrors, Metrics, Scored};
use crate::model::LoadedModel;
use crate::prep::{prepare, sample_seed, to_original, CachedFace, Sample};
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

/// Predicts prepared samples in batches; returns points in input pixels.
pub fn predict_samples(model: &LoadedModel, samples: &[Sample]) -> Result<Vec<Vec<Point>>> {
    let (w, h) = (model.width, model.height);
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(EVAL_BATCH) {
        let mut images = Vec::with_capacity(chunk.len() * w * h);
        for s in chunk {
            images.extend_from_slice(s.image.as_raw());
        }
        let y = model.predict(&images, chunk.len())?;
        let k2 = y.len() / chunk.len();
        for row in y.chunks(k2) {
            out.push(
                row.chunks(2)
                    .map(|c| Point::new(c[0] * w as f32, c[1] * h as f32))
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Evaluates `model` on `cache[indices]` after `pipeline`. Random steps of the pipeline (such
/// as a simulated detector box) draw from `sample_seed(seed, 0, face index)`, so a face gets
/// the same draw whatever the split; deterministic pipelines ignore the seed.
pub fn evaluate(
    model: &LoadedModel,
    cache: &[CachedFace],
    indices: &[usize],
    pipeline: &Pipeline,
    eye_corners: Option<(usize, usize)>,
    seed: u64,
) -> Result<Evaluation> {
    let samples: Vec<Sample> = indices
        .par_iter()
        .map(|&i| prepare(pipeline, &cache[i], sample_seed(seed, 0, i)))
        .collect::<Result<_>>()?;
    let pred_input = predict_samples(model, &samples)?;
    let pred: Vec<Vec<Point>> = samples
        .iter()
        .zip(&pred_input)
        .map(|(s, p)| to_original(&s.to_input, p))
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
