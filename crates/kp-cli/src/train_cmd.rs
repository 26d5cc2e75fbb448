//! `kp train` and `kp eval`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kp_train::config::{LrSchedule, Task, TrainConfig};
use kp_train::loss::Loss;
use kp_train::predict::{EvalSplit, Predictor};
use kp_train::trainer::{train as run_training, TrainOptions};

use crate::predict_cmd::MirrorArgs;

/// Where `kp train`'s defaults come from.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Recipe {
    /// The seed study's recipe for the task.
    Seed,
    /// kp's tuned recipe (`TrainConfig::tuned`).
    Tuned,
}

/// Arguments of `kp train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Which experiment: nose, face or ibug (its recipe, see `--recipe`, gives the defaults).
    #[arg(long)]
    task: String,
    /// Dataset (IMM folder, dlib XML, .pts folder) or a datasets folder holding the task's one.
    #[arg(long, env = "KP_DATA_DIR")]
    data: PathBuf,
    /// Run folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Defaults to start from: `seed` (the study's recipe for the task) or `tuned` (kp's: the
    /// heatmap ResNet18 at the task's input size, batch 8, lr 1e-3 cosine, test-time mirroring;
    /// nose/face: 100 epochs, milder, richer augmentation; ibug: 20 epochs, the Wing loss).
    #[arg(long, value_enum, default_value_t = Recipe::Seed)]
    recipe: Recipe,
    /// Decoupled weight decay (AdamW), e.g. 0.05; 0 (the default) is the seed's plain Adam.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// A seeded random split with this fraction of the faces for validation, in [0, 1), instead
    /// of the task's split (IMM: persons 33-40; 300-W: 0.2). 0 trains on every face (a model
    /// to ship) and validates on the training faces.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Learning-rate schedule: constant (the seed's) or cosine (annealed to zero per step).
    #[arg(long, value_parser = LrSchedule::parse)]
    lr_schedule: Option<LrSchedule>,
    /// Training loss on the coordinates: mse (the seed's, on normalised coordinates), l1 or wing
    /// (both in input pixels; Wing with w = 10, epsilon = 2).
    #[arg(long, value_parser = Loss::parse)]
    loss: Option<Loss>,
    /// Augmentation: a kp-augment preset name or a TOML/JSON file.
    #[arg(long)]
    augment: Option<String>,
    /// Model name from the registry (default: the task's).
    #[arg(long)]
    model: Option<String>,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue a stopped run from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Use only the first N faces.
    #[arg(long)]
    limit: Option<usize>,
    /// Leave out faces whose annotation or image is bad (and report them) instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Test-time mirroring: validation (and later `kp eval` / `kp predict`) averages each
    /// prediction with the mirrored image's, mirrored back.
    #[arg(long)]
    test_time_mirror: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `kp eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run folder written by `kp train`.
    #[arg(long)]
    run: PathBuf,
    /// Dataset to evaluate on (default: the run's own).
    #[arg(long)]
    data: Option<PathBuf>,
    /// train, val or all.
    #[arg(long, default_value = "val")]
    split: String,
    /// cpu or cuda (default: the run's device).
    #[arg(long)]
    device: Option<String>,
    /// Preprocessing instead of the run's own: a kp-augment preset or TOML/JSON file, e.g.
    /// `ibug-detector` to score 300-W faces with simulated face-detector boxes.
    #[arg(long)]
    augment: Option<String>,
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

/// Prints how many faces `--skip-bad` left out, and why, on stderr.
fn report_skipped(skipped: &[String]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("skipped {} bad faces:", skipped.len());
    for m in skipped {
        eprintln!("  {m}");
    }
}

pub fn train(a: TrainArgs) -> Result<()> {
    let task = Task::parse(&a.task)?;
    let mut cfg = match a.recipe {
        Recipe::Seed => TrainConfig::recipe(task, a.data),
        Recipe::Tuned => TrainConfig::tuned(task, a.data),
    };
    cfg.resolve_data();
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = a.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = a.lr {
        cfg.lr = v;
    }
    if let Some(v) = a.weight_decay {
        cfg.weight_decay = v;
    }
    if let Some(v) = a.val_fraction {
        cfg.split = kp_train::config::SplitKind::Random { val_fraction: v };
    }
    if let Some(v) = a.lr_schedule {
        cfg.lr_schedule = v;
    }
    if let Some(v) = a.loss {
        cfg.loss = v;
    }
    if let Some(v) = a.augment {
        cfg.augment = v;
    }
    if let Some(v) = a.model {
        cfg.model = v;
    }
    cfg.seed = a.seed;
    cfg.device = a.device;
    cfg.limit = a.limit;
    cfg.skip_bad = a.skip_bad;
    cfg.test_time_mirror |= a.test_time_mirror;
    let opts = TrainOptions {
        resume: a.resume,
        progress: !a.quiet,
        ..Default::default()
    };
    let out = a.out.clone();
    let summary = run_training(cfg, &a.out, &opts)
        .with_context(|| format!("training into {}", out.display()))?;
    report_skipped(&summary.skipped);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if let Some(m) = &summary.val {
        println!(
            "{}: {} epochs, val mean error {:.3} px (input) / {:.3} px (original), MAE {:.3} px{}",
            out.display(),
            summary.epochs,
            m.mean_px_error_input,
            m.mean_px_error,
            m.mae,
            m.nme
                .map(|n| format!(", NME {:.2}%", n * 100.0))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let mut predictor = Predictor::open(&a.run, a.device.as_deref())
        .with_context(|| format!("opening run {}", a.run.display()))?;
    if let Some(spec) = &a.augment {
        predictor = predictor
            .with_preprocessing(spec, a.seed)
            .with_context(|| format!("evaluation preprocessing `{spec}`"))?;
    }
    let mut predictor = a.mirror.apply(predictor)?;
    predictor.config.skip_bad |= a.skip_bad;
    let data = a.data.unwrap_or_else(|| predictor.config.data.clone());
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
    let ev = predictor.evaluate_prepared(&prepared, split)?;
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
    }
    Ok(())
}
