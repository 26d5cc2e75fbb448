//! `kp eval`: score a trained run (or the ready model) on a dataset's faces.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kp_train::predict::EvalSplit;

use crate::args::{MirrorArgs, ModelArgs};
use crate::train_cmd::report_skipped;

/// Arguments of `kp eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Dataset to evaluate on (default: the run's own; for the ready model, the 300-W crops
    /// under KP_DATA_DIR or the datasets folder found beside the checkout).
    #[arg(long)]
    data: Option<PathBuf>,
    /// train, val or all.
    #[arg(long, default_value = "val")]
    split: String,
    /// Preprocessing instead of the run's own: a kp-augment preset or TOML/JSON file, e.g.
    /// `ibug-detector` to score 300-W faces with simulated face-detector boxes.
    #[arg(long)]
    augment: Option<kp_train::augment::AugmentSpec>,
    /// Seed of the random steps of `--augment` (drawn per face).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Face boxes: `dataset` (the labels' own) or `detector` (the bundled YuNet's, mapped to
    /// the 300-W crop convention by the bundled calibration; faces it misses keep their box).
    #[arg(long, value_enum, default_value_t = BoxSource::Dataset)]
    boxes: BoxSource,
    /// Leave out faces whose annotation or image is bad (and report them) instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write every evaluated face as one JSON line: {"image", "box" (the face's box in
    /// original pixels: the dataset's, or the detector's with `--boxes detector`; `--augment`
    /// moves it before the model sees it), "truth", "pred" ([[x, y], ...] original pixels), "nme"}
    /// (for comparisons with other tools on the same faces and boxes).
    #[arg(long, value_name = "FILE")]
    faces: Option<PathBuf>,
    /// Second-stage passes: each re-frames every face around the last prediction (the box
    /// the training faces' labels give for the box around their keypoints, fitted on the
    /// training split) and predicts again with the run's own preprocessing (no `--augment`
    /// box noise: the box now comes from the face).
    #[arg(long, default_value_t = 0, value_name = "PASSES")]
    refine: usize,
    #[command(flatten)]
    mirror: MirrorArgs,
}

/// Where `kp eval` takes face boxes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BoxSource {
    /// The dataset's labelled boxes.
    Dataset,
    /// The bundled face detector's boxes, calibrated.
    Detector,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let mut predictor = a.model.predictor()?;
    let own_preprocessing = predictor.config.eval_augment.clone();
    if let Some(spec) = a.augment.clone() {
        predictor = predictor
            .with_preprocessing(spec.clone(), a.seed)
            .with_context(|| format!("evaluation preprocessing `{spec}`"))?;
    }
    let mut predictor = a.mirror.apply(predictor)?;
    predictor.config.skip_bad |= a.skip_bad;
    let data = match (a.data, &a.model.run) {
        (Some(d), _) => d,
        (None, Some(_)) => predictor.config.data.clone(),
        // The ready model names its dataset relative to a datasets folder.
        (None, None) => {
            kp_data::find_data_dir().context("no dataset: pass --data or set KP_DATA_DIR")?
        }
    };
    let split = EvalSplit::parse(&a.split)?;
    let mut prepared = predictor.prepare(&data)?;
    report_skipped(&prepared.skipped.messages);
    if a.boxes == BoxSource::Detector {
        let detector = kp_train::detect::FaceDetector::bundled(
            &predictor.model.device,
            kp_train::detect::DetectConfig::default(),
        )?;
        let cal = kp_train::detect::BoxCalibration::ibug();
        let (found, of) = predictor.use_detector_boxes(&mut prepared, split, &detector, &cal)?;
        eprintln!("face detector: {found} of {of} faces found (the others keep the dataset's box)");
    }
    let mut ev = predictor.evaluate_prepared(&prepared, split)?;
    if a.refine > 0 {
        let train: Vec<&kp_data::Face> = prepared
            .train
            .iter()
            .map(|&i| &prepared.dataset.faces[i])
            .collect();
        let map = kp_train::detect::BoxCalibration::fit_points(&train)
            .context("fitting the keypoints-to-box map on the training split")?;
        // The second stage: the same model with the run's own preprocessing.
        let predictor = predictor.with_preprocessing(own_preprocessing, 0)?;
        for _ in 0..a.refine {
            predictor.refine_boxes(&mut prepared, split, &ev.predictions, &map)?;
            ev = predictor.evaluate_prepared(&prepared, split)?;
        }
    }
    if let Some(path) = &a.faces {
        let records = kp_train::predict::FaceRecord::of(&prepared, split, &ev);
        kp_train::predict::FaceRecord::write_jsonl(path, &records)?;
    }
    let m = &ev.metrics;
    if a.json {
        println!("{}", serde_json::to_string_pretty(m)?);
    } else {
        println!("faces              {}", m.faces);
        println!("mse (normalised)   {:.6}", m.mse);
        println!("mean error (input) {:.3} px", m.mean_px_error_input);
        println!("mean error         {:.3} px", m.mean_px_error);
        println!("MAE per coordinate {:.3} px", m.mae);
        if let (Some(n), Some(fr), Some(auc)) = (m.nme, m.failure_rate, m.auc) {
            println!("NME (inter-ocular) {:.3}%", n * 100.0);
            println!("failure rate @8%   {:.2}%", fr * 100.0);
            println!("AUC @8%            {:.4}", auc);
        }
        if let (Some(fr), Some(auc)) = (m.failure_rate_10, m.auc_10) {
            println!("failure rate @10%  {:.2}%", fr * 100.0);
            println!("AUC @10%           {:.4}", auc);
        }
    }
    Ok(())
}
