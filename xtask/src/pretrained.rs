//! `cargo xtask pretrained [--ready compact-wide|resnet18]`: re-creates a ready model kp ships
//! (`models/landmarks/ibug68-compact/`, `ibug68-compact-x1.5/` or `ibug68/`; see
//! `kp_train::pretrained`) and measures it.
//!
//! It trains the model's 300-W recipe with seed 0 (`kp train --task ibug --recipe compact
//! --seed 0`, or `--recipe tuned`; the 80/20 split, so the validation faces stay held out and the model
//! card's numbers are honest), or takes `--run` when that run was already trained with exactly
//! that recipe; writes
//! the run's config and its weights in f16 into the folder; and evaluates the f32 run and the
//! f16 folder on the validation faces with the dataset's boxes, simulated detector boxes
//! (`ibug-detector`) and the bundled YuNet's boxes. `results.json` in the folder holds every
//! number the card quotes (schema below); the run stays in `runs/pretrained-NAME`.
//!
//! With `--all-faces` the weights shipped are the same recipe trained on all 1,326 faces
//! (`--val-fraction 0`, into `RUN_DIR-all` or `--all-run`): the held-out numbers are the 80/20
//! run's, and the shipped weights are scored on the same 265 faces, which they saw in training.
//!
//! `results.json`: `{"model", "recipe", "trained_on", "seed", "weights_sha256",
//! "weights_bytes", "rows": [{"trained_on": "80/20 split"|"all faces", "held_out",
//! "weights": "f32"|"f16", "boxes": "dataset"|"ibug-detector"|"yunet", "faces", "detected",
//! "nme", "failure_rate_8", "auc_8", "mean_px_error"}]}` (the 80/20 split's 265 validation
//! faces in every row; NME and failure rate as fractions, inter-ocular: outer eye corners).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::Args;
use kp_train::augment::AugmentPreset;
use kp_train::config::{Recipe, Task, TrainConfig};
use kp_train::detect::{BoxCalibration, DetectConfig, FaceDetector};
use kp_train::predict::{EvalSplit, Predictor};
use kp_train::pretrained::ReadyModel;
use kp_train::run::RunDir;
use kp_train::trainer::PreparedData;
use kp_train::trainer::{train, TrainOptions};
use serde::{Deserialize, Serialize};

/// Arguments of `cargo xtask pretrained`.
#[derive(Debug, Args)]
pub struct PretrainedArgs {
    /// Datasets folder (default: KP_DATA_DIR or ../shared/datasets).
    #[arg(long, env = "KP_DATA_DIR")]
    data: Option<PathBuf>,
    /// A run trained with the recipe already (skips training; its config is checked).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Which ready model: compact (`--recipe compact`), compact-wide (the same with
    /// `--channel-multiplier 1.5`) or resnet18 (`--recipe tuned`).
    #[arg(long, value_enum, default_value_t)]
    ready: ReadyModel,
    /// Where the run is trained, resumed when stopped (default: runs/pretrained-NAME).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The ready-model folder to write (default: the model's folder under models/landmarks).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Training seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Ship the recipe trained on all 1,326 faces (`--val-fraction 0`) instead of the 80/20
    /// split's training faces: the held-out numbers are then the 80/20 run's (`--run` or
    /// trained), and the shipped weights are scored on the same 265 faces, which they saw.
    #[arg(long)]
    all_faces: bool,
    /// With --all-faces: a run of the recipe on all faces already trained (its config is
    /// checked; default: train it into RUN_DIR-all).
    #[arg(long, requires = "all_faces")]
    all_run: Option<PathBuf>,
}

/// One evaluation of `results.json`, as written and as the report reads it back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Row {
    /// The faces the scored weights were trained on: `80/20 split` or `all faces` (older
    /// files, which hold only the 80/20 run's rows, have no such field).
    #[serde(default = "held_out_name")]
    pub(crate) trained_on: Cow<'static, str>,
    /// Whether the scored faces were held out from that training.
    #[serde(default = "yes")]
    pub(crate) held_out: bool,
    pub(crate) weights: Cow<'static, str>,
    pub(crate) boxes: Cow<'static, str>,
    pub(crate) faces: usize,
    pub(crate) detected: Option<usize>,
    pub(crate) nme: Option<f64>,
    pub(crate) failure_rate_8: Option<f64>,
    pub(crate) auc_8: Option<f64>,
    pub(crate) mean_px_error: f64,
}

fn held_out_name() -> Cow<'static, str> {
    HELD_OUT.into()
}

fn yes() -> bool {
    true
}

/// The rows of `model`'s `results.json` in the repository, or `None` when the file is missing
/// or is not that schema.
pub(crate) fn saved_rows(model: ReadyModel) -> Option<Vec<Row>> {
    #[derive(Deserialize)]
    struct Saved {
        rows: Vec<Row>,
    }
    let path = crate::fetch::workspace_root()
        .join(model.folder())
        .join("results.json");
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<Saved>(&text).ok().map(|s| s.rows)
}

#[derive(Debug, Serialize)]
struct Results {
    model: &'static str,
    recipe: String,
    /// The faces the shipped weights were trained on (`80/20 split` or `all faces`).
    trained_on: &'static str,
    seed: u64,
    weights_sha256: String,
    weights_bytes: u64,
    rows: Vec<Row>,
}

/// The recipe a ready model is trained with.
fn recipe_of(model: ReadyModel) -> Recipe {
    match model {
        ReadyModel::Resnet18 => Recipe::Tuned,
        ReadyModel::Compact | ReadyModel::CompactWide => Recipe::Compact,
    }
}

/// The compact model's width multiplier of `model` (1 for the others).
fn channel_multiplier_of(model: ReadyModel) -> f64 {
    match model {
        ReadyModel::CompactWide => 1.5,
        ReadyModel::Compact | ReadyModel::Resnet18 => 1.0,
    }
}

/// `model`'s `kp train` arguments after `--task ibug`: `--recipe NAME`, and the channel
/// multiplier where it is not 1.
fn recipe_args(model: ReadyModel) -> String {
    let name = format!("{:?}", recipe_of(model)).to_lowercase();
    match channel_multiplier_of(model) {
        1.0 => format!("--recipe {name}"),
        m => format!("--recipe {name} --channel-multiplier {m}"),
    }
}

/// The training configuration of `model`, reading `data`.
fn recipe(model: ReadyModel, data: &Path, seed: u64) -> TrainConfig {
    let mut cfg = TrainConfig::from_recipe(recipe_of(model), Task::Ibug, data);
    cfg.seed = seed;
    cfg.channel_multiplier = channel_multiplier_of(model);
    cfg
}

/// Evaluates the model `open` gives on the validation faces with each kind of box: the
/// dataset's, simulated detector boxes (a preprocessing of their own), and YuNet's, which
/// replace the dataset's boxes in the same prepared faces.
fn evaluate(
    open: impl Fn() -> Result<Predictor>,
    data: &Path,
    (weights, trained_on): (&'static str, &'static str),
    rows: &mut Vec<Row>,
) -> Result<()> {
    // The 80/20 split's 265 validation faces, whatever split the weights were trained with.
    let open = || -> Result<Predictor> {
        let mut p = open()?;
        p.config.split = kp_train::config::SplitKind::Random { val_fraction: 0.2 };
        Ok(p)
    };
    let predictor = open()?;
    let mut prepared = predictor.prepare(data)?;
    let tag = (weights, trained_on);
    rows.push(score(&predictor, &prepared, tag, "dataset", None)?);

    let jittered = open()?.with_preprocessing(AugmentPreset::IbugDetector.into(), 0)?;
    let jittered_faces = jittered.prepare(data)?;
    rows.push(score(
        &jittered,
        &jittered_faces,
        tag,
        "ibug-detector",
        None,
    )?);

    let detector = FaceDetector::bundled(&predictor.model.device, DetectConfig::default())?;
    let (found, _) = predictor.use_detector_boxes(
        &mut prepared,
        EvalSplit::Val,
        &detector,
        &BoxCalibration::ibug(),
    )?;
    rows.push(score(&predictor, &prepared, tag, "yunet", Some(found))?);
    Ok(())
}

/// One row of `results.json`: `predictor` on the validation faces of `prepared`.
fn score(
    predictor: &Predictor,
    prepared: &PreparedData,
    (weights, trained_on): (&'static str, &'static str),
    boxes: &'static str,
    detected: Option<usize>,
) -> Result<Row> {
    let m = predictor
        .evaluate_prepared(prepared, EvalSplit::Val)?
        .metrics;
    tracing::info!(
        weights,
        boxes,
        faces = m.faces,
        nme = m.nme.map(|n| format!("{:.3}%", n * 100.0)),
        "evaluated"
    );
    Ok(Row {
        trained_on: trained_on.into(),
        held_out: trained_on == HELD_OUT,
        weights: weights.into(),
        boxes: boxes.into(),
        faces: m.faces,
        detected,
        nme: m.nme,
        failure_rate_8: m.failure_rate,
        auc_8: m.auc,
        mean_px_error: m.mean_px_error,
    })
}

/// What the 80/20 run was trained on (its validation faces are held out).
const HELD_OUT: &str = "80/20 split";
/// What an `--all-faces` run was trained on.
const ALL_FACES: &str = "all faces";

/// Whether `saved` (a run's or a ready model's configuration) is `want`, the data path and the
/// keypoint count training filled in aside.
fn is_recipe(mut saved: TrainConfig, want: &TrainConfig) -> bool {
    saved.num_keypoints = None;
    saved.data = want.data.clone();
    saved == *want
}

/// Checks that `run` finished training exactly `want` (the data path aside).
fn check_recipe(run: &Path, want: &TrainConfig, recipe_args: &str, seed: u64) -> Result<()> {
    let dir = RunDir::open(run)?;
    if !is_recipe(TrainConfig::load(&dir.config_path())?, want) {
        bail!(
            "{}: not trained with the ready model's recipe (kp train --task ibug {recipe_args} \
             --seed {seed}{})",
            run.display(),
            match want.split {
                kp_train::config::SplitKind::Random { val_fraction: 0.0 } => {
                    " --val-fraction 0"
                }
                _ => "",
            }
        );
    }
    dir.read_summary()
        .with_context(|| format!("{}: the run has not finished", run.display()))?;
    Ok(())
}

/// Runs `cargo xtask pretrained`.
pub fn run(args: PretrainedArgs) -> Result<()> {
    let data = match &args.data {
        Some(d) => d.clone(),
        None => kp_data::find_data_dir()
            .filter(|d| d.is_dir())
            .context("no datasets folder: pass --data or set KP_DATA_DIR")?,
    };
    let model = args.ready;
    let recipe_args = recipe_args(model);
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/pretrained-{}", model.name())));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::fetch::workspace_root().join(model.folder()));
    let want = recipe(model, &data, args.seed);
    let run = match &args.run {
        Some(run) => {
            check_recipe(run, &want, &recipe_args, args.seed)?;
            run.clone()
        }
        None => {
            let resume = RunDir::open(&run_dir).is_ok();
            let opts = TrainOptions {
                resume,
                progress: true,
                ..Default::default()
            };
            train(want.clone(), &run_dir, &opts)?;
            run_dir.clone()
        }
    };
    let mut rows = Vec::new();
    let open = |dir: &Path| Ok(Predictor::open(dir, None)?);
    evaluate(|| open(&run), &data, ("f32", HELD_OUT), &mut rows)?;
    // The weights shipped: the 80/20 run's, or the same recipe's on every face.
    let (shipped, trained_on) = if args.all_faces {
        let mut want_all = want.clone();
        want_all.split = kp_train::config::SplitKind::Random { val_fraction: 0.0 };
        let all = match &args.all_run {
            Some(r) => {
                check_recipe(r, &want_all, &recipe_args, args.seed)?;
                r.clone()
            }
            None => {
                let dir = PathBuf::from(format!("{}-all", run_dir.display()));
                let opts = TrainOptions {
                    resume: RunDir::open(&dir).is_ok(),
                    progress: true,
                    ..Default::default()
                };
                train(want_all, &dir, &opts)?;
                dir
            }
        };
        evaluate(|| open(&all), &data, ("f32", ALL_FACES), &mut rows)?;
        (all, ALL_FACES)
    } else {
        (run.clone(), HELD_OUT)
    };
    kp_train::pretrained::write_bundle(&shipped, &out, DType::F16)?;
    if args.all_faces {
        // `kp eval` with the ready model scores the 80/20 split's 265 validation faces, the
        // faces of the held-out numbers (results.json says the weights saw them).
        let path = out.join("config.json");
        let mut cfg = TrainConfig::load(&path)?;
        cfg.split = want.split;
        kp_train::atomic::write_json(&path, &cfg)?;
    }
    let weights = std::fs::read(out.join("model.safetensors"))?;
    evaluate(|| open(&out), &data, ("f16", trained_on), &mut rows)?;
    let results = Results {
        model: model.name(),
        recipe: format!(
            "kp train --task ibug {recipe_args}{}",
            if args.all_faces {
                " --val-fraction 0"
            } else {
                ""
            }
        ),
        trained_on,
        seed: args.seed,
        weights_sha256: kp_models::io::sha256_hex(&weights),
        weights_bytes: weights.len() as u64,
        rows,
    };
    let path = out.join("results.json");
    let mut text = serde_json::to_string_pretty(&results)?;
    text.push('\n');
    kp_fs::write_atomic(&path, text.as_bytes())?;
    println!("| weights | boxes | faces | NME | FR@8% | AUC@8% |");
    println!("|---|---|---|---|---|---|");
    for r in &results.rows {
        let pct = |v: Option<f64>| v.map(|v| format!("{:.2}%", v * 100.0)).unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.weights,
            r.boxes,
            r.faces,
            pct(r.nme),
            pct(r.failure_rate_8),
            r.auc_8.map(|v| format!("{v:.4}")).unwrap_or_default()
        );
    }
    println!(
        "wrote {} ({} bytes of weights)",
        path.display(),
        results.weights_bytes
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped `config.json` of each ready model is what `cargo xtask pretrained --ready
    /// MODEL` trains (recipe, channel multiplier, seed 0, the 80/20 split), so re-creating it
    /// cannot silently train something else.
    #[test]
    fn every_ready_models_shipped_configuration_is_the_recipe_this_task_trains() {
        for model in ReadyModel::ALL {
            let shipped = model.config().unwrap();
            let want = recipe(model, &shipped.data, 0);
            assert!(
                is_recipe(shipped.clone(), &want),
                "{}: shipped {shipped:?}, recipe {want:?}",
                model.name()
            );
        }
    }
}
