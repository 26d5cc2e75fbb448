//! The thin layer between run folders and kp-viz: reads a run, draws its figures.

use std::path::Path;

use anyhow::{Context, Result};
use image::{DynamicImage, RgbImage};
use kp_data::{gray_to_u8, Point};
use kp_train::augment::AugmentSpec;
use kp_train::eval::Evaluation;
use kp_train::predict::{EvalSplit, Predictor};
use kp_train::prep::{prepare, sample_seed};
use kp_train::run::RunDir;
use kp_train::trainer::PreparedData;
use kp_viz::curves::{learning_curves, CurvesOptions, LossCurve};
use kp_viz::grid::{image_grid, GridOptions};
use kp_viz::overlay::{overlay_keypoints, OverlayOptions};

/// The loss curves of a run folder.
pub fn loss_curve(run: &Path, label: &str) -> Result<LossCurve> {
    let rows = RunDir::open(run)?.read_metrics()?;
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

/// Learning curves of one or several runs on one chart.
pub fn curves_png(curves: &[LossCurve], title: &str, log_y: bool, path: &Path) -> Result<()> {
    let opts = CurvesOptions {
        title: title.into(),
        log_y,
        smooth: if curves.len() > 1 { 25 } else { 1 },
        ..Default::default()
    };
    let img = learning_curves(curves, &opts)?;
    kp_viz::io::save_png(&img, path)?;
    Ok(())
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
        &OverlayOptions::default(),
    )?)
}

/// Opens a run and evaluates it on its validation split of `data`.
pub fn validate(run: &Path, data: &Path) -> Result<(Predictor, PreparedData, Evaluation)> {
    let p = Predictor::open(run, None).with_context(|| format!("opening {}", run.display()))?;
    let prepared = p.prepare(data)?;
    let ev = p.evaluate_prepared(&prepared, EvalSplit::Val)?;
    Ok((p, prepared, ev))
}

/// A 2x4 grid of validation faces with GT (green) and predictions (red): the first six
/// validation faces and the two worst.
pub fn val_grid(data: &PreparedData, ev: &Evaluation, title: &str, path: &Path) -> Result<()> {
    let errs = &ev.errors.mean_px_error;
    let mut order: Vec<usize> = (0..errs.len()).collect();
    order.sort_by(|&a, &b| errs[b].total_cmp(&errs[a]));
    let worst: Vec<usize> = order.iter().take(2).copied().collect();
    let mut chosen: Vec<usize> = (0..errs.len())
        .filter(|j| !worst.contains(j))
        .take(6)
        .collect();
    chosen.extend(&worst);
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
        let tag = if n >= chosen.len() - worst.len().min(chosen.len()) {
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
    kp_viz::io::save_png(&image_grid(&tiles, &captions, &opts)?, path)?;
    Ok(())
}

/// A grid of training samples as the training loader produces them (augmented), GT only.
pub fn train_samples_grid(
    data: &PreparedData,
    augment: &AugmentSpec,
    (w, h): (usize, usize),
    seed: u64,
    path: &Path,
) -> Result<()> {
    let pipe = augment.pipeline(w, h)?;
    let mut tiles = Vec::new();
    for (n, &i) in data.train.iter().take(8).enumerate() {
        let s = prepare(&pipe, &data.cache[i], sample_seed(seed, 1, i))?;
        let img = DynamicImage::ImageLuma8(gray_to_u8(&s.image));
        tiles.push(overlay_keypoints(
            &img,
            &pts(&s.keypoints),
            &[],
            &OverlayOptions::default(),
        )?);
        let _ = n;
    }
    let opts = GridOptions {
        cols: 4,
        tile_size: Some((240, 180)),
        title: Some(format!("Training samples from the loader ({augment})")),
        ..Default::default()
    };
    kp_viz::io::save_png(&image_grid::<&str>(&tiles, &[], &opts)?, path)?;
    Ok(())
}

/// The first conv layer's filters of a run's model.
pub fn filters_png(run: &Path, path: &Path) -> Result<()> {
    let weights =
        candle_core::safetensors::load(RunDir::open(run)?.model_path(), &candle_core::Device::Cpu)?;
    let name = ["conv.0.weight", "conv1.weight"]
        .into_iter()
        .find(|n| weights.contains_key(*n))
        .context("no first conv layer (conv.0.weight / conv1.weight) in the model")?;
    let t = &weights[name];
    let dims = t.dims4()?;
    let flat = t.flatten_all()?.to_vec1::<f32>()?;
    let img = kp_viz::filters::filter_grid(
        &flat,
        [dims.0, dims.1, dims.2, dims.3],
        &kp_viz::filters::FilterGridOptions::default(),
    )?;
    kp_viz::io::save_png(&img, path)?;
    Ok(())
}

/// The CED curves (NME) of several evaluations.
pub fn ced_png(series: &[(String, Vec<f64>)], path: &Path) -> Result<()> {
    let s: Vec<kp_viz::ced::CedSeries> = series
        .iter()
        .map(|(l, e)| kp_viz::ced::CedSeries::new(l.clone(), e.iter().copied()))
        .collect();
    let img = kp_viz::ced::ced_chart(&s, &kp_viz::ced::CedOptions::default())?;
    kp_viz::io::save_png(&img, path)?;
    Ok(())
}
