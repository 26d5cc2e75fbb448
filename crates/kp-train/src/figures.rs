//! From runs to figures: the adapters between run folders and evaluations on one side and
//! kp-viz's charts on the other, here rather than in the report so that they can be tested on a
//! real run (`tests/train_real.rs`). Each returns an image; the caller decides where it goes.

use std::path::Path;

use image::{DynamicImage, RgbImage};
use kp_data::{gray_to_u8, Point};
use kp_viz::curves::{learning_curves, CurvesOptions, LossCurve};
use kp_viz::grid::{image_grid, GridOptions};
use kp_viz::overlay::{overlay_keypoints, OverlayOptions};

use crate::augment::AugmentSpec;
use crate::error::{Error, Result};
use crate::eval::Evaluation;
use crate::predict::{EvalSplit, Predictor};
use crate::prep::{prepare, sample_seed};
use crate::run::RunDir;
use crate::trainer::PreparedData;

/// The loss curves of a run folder (`metrics.csv`): training loss per step, validation loss
/// per epoch (at the epoch's last step); non-finite losses are left out.
pub fn loss_curve(run: &RunDir, label: &str) -> Result<LossCurve> {
    let rows = run.read_metrics()?;
    let pick = |split: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.split == split && r.loss.is_finite())
            .map(|r| (r.step as f64, r.loss))
            .collect()
    };
    Ok(LossCurve {
        label: label.into(),
        train: pick("train"),
        val: pick("val"),
    })
}

/// Learning curves of one or several runs on one chart, log scale; several runs' training
/// losses are smoothed (25 steps) so that the curves can be told apart.
pub fn curves_image(curves: &[LossCurve], title: &str) -> Result<RgbImage> {
    let opts = CurvesOptions {
        title: title.into(),
        log_y: true,
        smooth: if curves.len() > 1 { 25 } else { 1 },
        ..Default::default()
    };
    Ok(learning_curves(curves, &opts)?)
}

fn pts(v: &[Point]) -> Vec<(f32, f32)> {
    v.iter().map(|p| (p.x, p.y)).collect()
}

/// A face's cached image with ground truth (green) and prediction (red) in cache pixels.
fn overlay_cached(data: &PreparedData, i: usize, pred_original: &[Point]) -> Result<RgbImage> {
    let c = &data.cache[i];
    let img = DynamicImage::ImageLuma8(gray_to_u8(&c.image));
    let pred = c.to_cache.apply_all(pred_original);
    Ok(overlay_keypoints(
        &img,
        &pts(&c.keypoints),
        &pts(&pred),
        &OverlayOptions {
            contours: kp_viz::overlay::contours_for(c.keypoints.len()),
            ..Default::default()
        },
    )?)
}

/// Opens a run and evaluates it on its validation split of `data`.
pub fn validation(run: &Path, data: &Path) -> Result<(PreparedData, Evaluation)> {
    let p = Predictor::open(run, None)?;
    let prepared = p.prepare(data)?;
    let ev = p.evaluate_prepared(&prepared, EvalSplit::Val)?;
    Ok((prepared, ev))
}

/// The validation faces a grid shows: the first six that are not among the two worst, then the
/// two worst (largest mean point error), as indices into the evaluation.
pub fn grid_faces(errors: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..errors.len()).collect();
    order.sort_by(|&a, &b| errors[b].total_cmp(&errors[a]));
    let worst: Vec<usize> = order.into_iter().take(2).collect();
    let mut chosen: Vec<usize> = (0..errors.len())
        .filter(|j| !worst.contains(j))
        .take(6)
        .collect();
    chosen.extend(&worst);
    chosen
}

/// A 4-column grid of validation faces with ground truth (green) and predictions (red), each
/// captioned with its file name and error: [`grid_faces`]' faces of `ev`, an evaluation of
/// `data`'s validation split.
pub fn val_grid(data: &PreparedData, ev: &Evaluation, title: &str) -> Result<RgbImage> {
    let errs = &ev.errors.mean_px_error;
    if errs.len() != data.val.len() || ev.predictions.len() != data.val.len() {
        return Err(Error::Config(format!(
            "the evaluation has {} faces, the validation split {}",
            errs.len(),
            data.val.len()
        )));
    }
    let chosen = grid_faces(errs);
    let n_worst = 2.min(chosen.len());
    let mut tiles = Vec::new();
    let mut captions = Vec::new();
    for (n, &j) in chosen.iter().enumerate() {
        let i = data.val[j];
        tiles.push(overlay_cached(data, i, &ev.predictions[j])?);
        let name = data.dataset.faces[i]
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tag = if n >= chosen.len() - n_worst {
            " (worst)"
        } else {
            ""
        };
        captions.push(format!("{name}: {:.1} px{tag}", errs[j]));
    }
    let opts = GridOptions {
        cols: 4,
        tile_size: Some((240, 180)),
        title: Some(title.into()),
        ..Default::default()
    };
    Ok(image_grid(&tiles, &captions, &opts)?)
}

/// Eight training faces as the training loader produces them (augmented with `augment` at the
/// input size, epoch 1's draws of `seed`), ground truth only.
pub fn train_samples_grid(
    data: &PreparedData,
    augment: &AugmentSpec,
    (w, h): (usize, usize),
    seed: u64,
) -> Result<RgbImage> {
    let pipe = augment.pipeline(w, h)?;
    let mut tiles = Vec::new();
    for &i in data.train.iter().take(8) {
        let s = prepare(&pipe, &data.cache[i], sample_seed(seed, 1, i))?;
        let img = DynamicImage::ImageLuma8(gray_to_u8(&s.image));
        tiles.push(overlay_keypoints(
            &img,
            &pts(&s.keypoints),
            &[],
            &OverlayOptions {
                contours: kp_viz::overlay::contours_for(s.keypoints.len()),
                ..Default::default()
            },
        )?);
    }
    let opts = GridOptions {
        cols: 4,
        tile_size: Some((240, 180)),
        title: Some(format!("Training samples from the loader ({augment})")),
        ..Default::default()
    };
    Ok(image_grid::<&str>(&tiles, &[], &opts)?)
}

/// The first convolution's filters of a run's model (`conv.0.weight` of the conv + MLP
/// networks, `conv1.weight` of the ResNets).
pub fn filters_image(run: &RunDir) -> Result<RgbImage> {
    let path = run.model_path();
    let weights = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)?;
    let name = ["conv.0.weight", "conv1.weight"]
        .into_iter()
        .find(|n| weights.contains_key(*n))
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: no first convolution (conv.0.weight / conv1.weight)",
                path.display()
            ))
        })?;
    let t = weights[name].to_dtype(candle_core::DType::F32)?;
    let dims = t.dims4()?;
    let flat = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(kp_viz::filters::filter_grid(
        &flat,
        [dims.0, dims.1, dims.2, dims.3],
        &kp_viz::filters::FilterGridOptions::default(),
    )?)
}

/// The cumulative error distribution (NME) of labelled series of per-face errors.
pub fn ced_image(series: &[(String, Vec<f64>)]) -> Result<RgbImage> {
    let s: Vec<kp_viz::ced::CedSeries> = series
        .iter()
        .map(|(l, e)| kp_viz::ced::CedSeries::new(l.clone(), e.iter().copied()))
        .collect();
    Ok(kp_viz::ced::ced_chart(
        &s,
        &kp_viz::ced::CedOptions {
            max_error: ced_axis(series),
            threshold: Some(CED_THRESHOLD),
            ..Default::default()
        },
    )?)
}

/// NME threshold of the CED's AUC and failure rate (the 300-W convention).
const CED_THRESHOLD: f64 = crate::metrics::FAILURE_THRESHOLD;

/// The CED's x axis: 8% NME (the convention), or wider (16%, 32%, 64%) until it holds the
/// better half of every series' faces, so that a weak run (a short quick-mode run) shows a
/// curve instead of an empty chart. AUC and failure rate stay at 8%.
fn ced_axis(series: &[(String, Vec<f64>)]) -> f64 {
    let median = |e: &[f64]| {
        let mut v: Vec<f64> = e.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let worst = series.iter().map(|(_, e)| median(e)).fold(0.0, f64::max);
    [CED_THRESHOLD, 0.16, 0.32, 0.64]
        .into_iter()
        .find(|&m| worst <= m)
        .unwrap_or(0.64)
}

/// `photo` with `faces` drawn on it, as `kp predict --out` writes it: each face's box and its
/// points ([`kp_viz::overlay::faces_on_photo`]).
pub fn faces_image(
    photo: RgbImage,
    faces: &[crate::landmarker::FaceLandmarks],
) -> Result<RgbImage> {
    let points: Vec<(f32, f32)> = faces
        .iter()
        .flat_map(|f| f.keypoints.iter().map(|p| (p.x, p.y)))
        .collect();
    let boxes: Vec<[f32; 4]> = faces.iter().filter_map(|f| f.bbox).collect();
    let per_face = faces.first().map_or(0, |f| f.keypoints.len());
    Ok(kp_viz::overlay::faces_on_photo(
        photo, &points, &boxes, per_face,
    )?)
}

/// Photos as `kp predict --out` draws them with `lm` (every face found, its box, its points):
/// the seed's "own collection" figure, on any photos. A caption per photo says how many
/// faces were found; a photo that does not decode is an error naming it.
pub fn photos_grid(
    lm: &crate::landmarker::Landmarker,
    photos: &[std::path::PathBuf],
    title: &str,
) -> Result<RgbImage> {
    let mut tiles = Vec::with_capacity(photos.len());
    let mut captions = Vec::with_capacity(photos.len());
    for path in photos {
        let photo = kp_data::loading::load_rgb(path)?;
        let faces = lm.landmarks(&photo)?;
        tiles.push(faces_image(photo, &faces)?);
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = faces.len();
        captions.push(format!("{name}: {n} face{}", if n == 1 { "" } else { "s" }));
    }
    let opts = GridOptions {
        cols: 3,
        tile_size: Some((400, 300)),
        title: Some(title.into()),
        ..Default::default()
    };
    Ok(image_grid(&tiles, &captions, &opts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ced_axis_widens_only_until_half_of_each_runs_faces_show() {
        let run = |nme: &[f64]| ("run".to_string(), nme.to_vec());
        assert_eq!(ced_axis(&[run(&[0.03, 0.04, 0.2])]), 0.08);
        assert_eq!(ced_axis(&[run(&[0.03]), run(&[0.25, 0.3, 0.31])]), 0.32);
        assert_eq!(ced_axis(&[run(&[2.0, f64::NAN, 3.0])]), 0.64);
        assert_eq!(ced_axis(&[]), 0.08);
    }

    #[test]
    fn the_grid_shows_six_faces_then_the_two_worst() {
        let errs = [1.0, 9.0, 2.0, 3.0, 8.0, 4.0, 5.0, 6.0, 7.0, 0.5];
        assert_eq!(grid_faces(&errs), [0, 2, 3, 5, 6, 7, 1, 4]);
        assert_eq!(grid_faces(&[2.0, 1.0, 3.0]), [1, 2, 0]);
        assert!(grid_faces(&[]).is_empty());
    }
}
