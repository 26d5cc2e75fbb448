//! Training on a handful of real faces: the loss falls, the run folder is complete, a saved model
//! loads and evaluates to the same numbers, same seed gives the same summary, resume is exact.

use kp_tests::{assert_same_files, data_dir, imm_dir, train_losses};
use kp_train::augment::AugmentPreset;
use kp_train::config::{LrSchedule, SplitKind, Task, TrainConfig};
use kp_train::figures;
use kp_train::loss::Loss;
use kp_train::predict::{EvalSplit, Predictor};
use kp_train::run::RunDir;
use kp_train::trainer::{train, TrainOptions};

fn nose_config(limit: usize, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::recipe(Task::Nose, data_dir());
    assert_eq!(cfg.dataset().unwrap(), imm_dir());
    cfg.limit = Some(limit);
    cfg.epochs = epochs;
    cfg.batch_size = 4;
    cfg.seed = 3;
    cfg
}

#[test]
fn nose_training_reduces_loss_and_saves_a_loadable_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nose");
    let summary = train(nose_config(24, 4), &out, &TrainOptions::default()).unwrap();
    let run = RunDir::open(&out).unwrap();
    let rows = run.read_metrics().unwrap();
    let train_rows: Vec<f64> = rows
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| r.loss)
        .collect();
    assert_eq!(train_rows.len(), 4 * 24usize.div_ceil(4));
    let first: f64 = train_rows[..6].iter().sum::<f64>() / 6.0;
    let last: f64 = train_rows[train_rows.len() - 6..].iter().sum::<f64>() / 6.0;
    assert!(last < first, "train loss did not fall: {first} -> {last}");
    assert_eq!(rows.iter().filter(|r| r.split == "val").count(), 4);
    for f in [
        "config.json",
        "metrics.csv",
        "summary.json",
        "timing.json",
        "model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let val = summary.val.clone().unwrap();
    assert!(val.mean_px_error_input.is_finite());
    // One time per epoch, adding up to the training time.
    let timing = run.read_timing().unwrap();
    assert_eq!(timing.epoch_seconds.len(), 4);
    let sum: f64 = timing.epoch_seconds.iter().sum();
    assert!((sum - timing.train_seconds).abs() < 1e-9 * sum.max(1.0));

    // The saved model evaluates to exactly the same validation numbers.
    let p = Predictor::open(&out, None).unwrap();
    let ev = p.evaluate_dataset(&data_dir(), EvalSplit::Val).unwrap();
    assert_eq!(ev.metrics, val);

    // The report's figures of this run: its curves hold every logged loss, the validation grid
    // shows 8 faces (4 x 2 tiles of 240x180 under a title), the filters are NoseTipNet's first
    // convolution's.
    let curve = figures::loss_curve(&run, "nose").unwrap();
    assert_eq!((curve.train.len(), curve.val.len()), (train_rows.len(), 4));
    assert_eq!(curve.val.last().unwrap().1, summary.final_val_loss.unwrap());
    let chart = figures::curves_image(&[curve], "nose").unwrap();
    assert!(chart.width() > 200 && chart.height() > 100);
    let (prepared, ev2) = figures::validation(&out, &data_dir()).unwrap();
    assert_eq!(ev2.metrics, val);
    let grid = figures::val_grid(&prepared, &ev2, "validation").unwrap();
    assert!(
        grid.width() >= 4 * 240 && grid.height() >= 2 * 180,
        "{:?}",
        grid.dimensions()
    );
    let mut short = ev2.clone();
    short.predictions.pop();
    assert!(figures::val_grid(&prepared, &short, "x").is_err());
    let filters = figures::filters_image(&run).unwrap();
    assert!(filters.width() > 0 && filters.height() > 0);
    let samples =
        figures::train_samples_grid(&prepared, &AugmentPreset::SeedShift.into(), (80, 60), 0)
            .unwrap();
    assert!(samples.width() >= 4 * 240);
}

#[test]
fn same_seed_same_summary_and_resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    let sa = train(nose_config(12, 3), &a, &TrainOptions::default()).unwrap();
    let sb = train(nose_config(12, 3), &b, &TrainOptions::default()).unwrap();
    assert_same_files(&a, &b, &["summary.json"]);
    assert_eq!(sa, sb);

    // Stop after one epoch, then resume: identical to the unbroken run.
    let stop = TrainOptions {
        stop_after_epochs: Some(1),
        ..Default::default()
    };
    assert!(train(nose_config(12, 3), &c, &stop).is_err());
    assert!(!c.join("summary.json").exists());
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let sc = train(nose_config(12, 3), &c, &resume).unwrap();
    assert_eq!(sa, sc);
    assert_same_files(&a, &c, &["model.safetensors", "metrics.csv"]);
}

/// Training in a pool of 1 thread and one of 3 gives the same weights and metrics bit for bit
/// (the convolution's weight gradient splits its sums by a constant, not by the thread count).
#[test]
fn the_number_of_threads_does_not_change_the_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let run_with = |threads: usize, name: &str| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = tmp.path().join(name);
        pool.install(|| train(nose_config(12, 2), &out, &TrainOptions::default()))
            .unwrap();
        out
    };
    let (one, three) = (run_with(1, "one"), run_with(3, "three"));
    assert_same_files(&one, &three, &["model.safetensors", "metrics.csv"]);
}

/// The cosine schedule changes training (it is not the constant rate) and, being a function of
/// the step count, continues exactly across a resume.
#[test]
fn cosine_schedule_trains_differently_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cosine = || {
        let mut c = nose_config(12, 3);
        c.lr_schedule = LrSchedule::Cosine;
        c
    };
    let constant = train(
        nose_config(12, 3),
        &tmp.path().join("k"),
        &TrainOptions::default(),
    );
    let unbroken = train(cosine(), &tmp.path().join("u"), &TrainOptions::default()).unwrap();
    assert_ne!(unbroken, constant.unwrap());

    let r = tmp.path().join("r");
    let stop = TrainOptions {
        stop_after_epochs: Some(2),
        ..Default::default()
    };
    assert!(train(cosine(), &r, &stop).is_err());
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    assert_eq!(train(cosine(), &r, &resume).unwrap(), unbroken);
    assert_same_files(&tmp.path().join("u"), &r, &["model.safetensors"]);
}

/// A pixel loss trains a different model, while the metrics still log the normalised MSE: the
/// first step (same initial weights, same batch) logs the same value under both losses, later
/// steps differ.
#[test]
fn wing_loss_trains_differently_and_logs_the_mse() {
    let tmp = tempfile::tempdir().unwrap();
    let wing = || {
        let mut c = nose_config(12, 2);
        c.loss = Loss::Wing;
        c
    };
    let sm = train(
        nose_config(12, 2),
        &tmp.path().join("m"),
        &TrainOptions::default(),
    )
    .unwrap();
    let sw = train(wing(), &tmp.path().join("w"), &TrainOptions::default()).unwrap();
    assert_ne!(sm, sw);
    let (m, w) = (
        train_losses(&tmp.path().join("m")),
        train_losses(&tmp.path().join("w")),
    );
    assert_eq!(m[0], w[0]);
    assert_ne!(m[1], w[1]);
    assert!(w.iter().all(|&l| l < 1.0), "not a normalised MSE: {w:?}");
    let cfg = TrainConfig::load(&tmp.path().join("w/config.json")).unwrap();
    assert_eq!(cfg.loss, Loss::Wing);
}

/// The split seed fixes the held-out faces whatever the training seed (the spread over seeds
/// on one validation set); without it the training seed draws the split, as it always did.
#[test]
fn a_split_seed_holds_out_the_same_faces_under_any_training_seed() {
    let val = |seed: u64, split_seed: Option<u64>| {
        let mut c = nose_config(40, 1);
        c.split = SplitKind::Random { val_fraction: 0.25 };
        (c.seed, c.split_seed) = (seed, split_seed);
        kp_train::trainer::prepare_data(&c).unwrap().val
    };
    let seed0 = val(0, None);
    assert_eq!(seed0.len(), 10);
    assert_ne!(
        val(1, None),
        seed0,
        "the training seed draws the split by default"
    );
    assert_eq!(val(1, Some(0)), seed0);
    assert_eq!(val(5, Some(0)), seed0);
}

/// The heatmap regulariser changes the training of a heatmap network while the metrics still
/// log the coordinates' MSE: the first step logs the same value with and without it.
#[test]
fn the_heatmap_regulariser_trains_differently_and_logs_the_mse() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = |reg: f64| {
        let mut c = TrainConfig::compact(Task::Ibug, data_dir());
        (c.limit, c.epochs, c.batch_size, c.seed, c.heatmap_reg) = (Some(12), 1, 4, 3, reg);
        c
    };
    let (plain, reg) = (tmp.path().join("plain"), tmp.path().join("reg"));
    let sp = train(cfg(0.0), &plain, &TrainOptions::default()).unwrap();
    let sr = train(cfg(5.0), &reg, &TrainOptions::default()).unwrap();
    assert_ne!(sp, sr);
    let (p, r) = (train_losses(&plain), train_losses(&reg));
    assert_eq!(p[0], r[0]);
    assert_ne!(p[1], r[1]);
    assert_eq!(
        TrainConfig::load(&reg.join("config.json"))
            .unwrap()
            .heatmap_reg,
        5.0
    );
}

#[test]
fn a_second_run_into_the_same_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    train(nose_config(6, 1), &out, &TrainOptions::default()).unwrap();
    let err = train(nose_config(6, 1), &out, &TrainOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

#[test]
fn a_run_folder_in_use_is_refused_and_resume_keeps_to_the_runs_own_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nose");
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    // Another process trains into the folder: refused in one line, nothing written.
    let held = RunDir::create(&out).unwrap().lock().unwrap();
    let err = train(nose_config(12, 2), &out, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another kp process"), "{err}");
    assert!(!out.join("config.json").exists());
    drop(held);
    // Nothing to resume yet.
    let err = train(nose_config(12, 2), &out, &resume)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to resume"), "{err}");
    // A stopped run resumes with its own configuration only, and says which values differ.
    let stop = TrainOptions {
        stop_after_epochs: Some(1),
        ..Default::default()
    };
    assert!(train(nose_config(12, 2), &out, &stop).is_err());
    let mut other = nose_config(12, 2);
    other.lr = 0.5;
    other.epochs = 3;
    let err = train(other, &out, &resume).unwrap_err().to_string();
    assert!(
        err.contains("epochs = 3 (the run has 2)") && err.contains("lr = 0.5 (the run has 0.001)"),
        "{err}"
    );
    train(nose_config(12, 2), &out, &resume).unwrap();
    // Hostile run files are refused, not followed: a checkpoint outside the run, a config
    // asking for a giant input.
    let state =
        r#"{"epochs_done": 1, "steps_done": 3, "checkpoint": "../../etc", "train_seconds": 1.0}"#;
    std::fs::write(out.join("state.json"), state).unwrap();
    let err = train(nose_config(12, 2), &out, &resume)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a folder inside the run"), "{err}");
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    let huge = config.replace("\"width\": 80", "\"width\": 1000000000");
    assert_ne!(huge, config);
    std::fs::write(out.join("config.json"), huge).unwrap();
    let err = TrainConfig::load(&out.join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("width = 1000000000"),
        "{err}"
    );
}

#[test]
fn the_own_photos_figure_draws_every_face_the_ready_model_finds() {
    let lm = kp_train::landmarker::Landmarker::pretrained(None).unwrap();
    let dir = data_dir().join("dlib_examples_faces");
    let photos = [dir.join("2008_002506.jpg"), dir.join("2009_004587.jpg")];
    let found: Vec<usize> = photos
        .iter()
        .map(|p| {
            let photo = kp_data::loading::load_rgb(p).unwrap();
            lm.landmarks(&photo).unwrap().len()
        })
        .collect();
    assert!(
        found[0] >= 3,
        "the group photo has several faces: {found:?}"
    );
    let grid = figures::photos_grid(&lm, &photos, "own photos").unwrap();
    // Two 400x300 tiles side by side (3 columns), with a title and captions.
    assert!(
        grid.width() >= 2 * 400 && grid.height() > 300,
        "{:?}",
        grid.dimensions()
    );
    let missing = [dir.join("no-such-photo.jpg")];
    let err = figures::photos_grid(&lm, &missing, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-photo.jpg"), "{err}");
}
