//! The report: `index.html` with every table and figure, `results.csv`, `results.json`.
//!
//! The report is data: [`SECTIONS`] says, for each experiment, its heading and text, its
//! table's columns and which figures each run gets; [`write`] is one loop over it. Drawing is
//! kp-train's (`kp_train::figures`: run folder → curves, evaluation → overlay grid), so that it
//! is tested on real runs; this file only places the images.

use std::path::Path;

use anyhow::{Context, Result};
use image::RgbImage;
use kp_train::figures;
use kp_train::run::RunDir;
use kp_viz::{HtmlReport, Table};

use super::{fmt_opt, ResultRow, RunSpec};

/// A table column: its title and a run's cell.
struct Column {
    title: &'static str,
    cell: fn(&RunSpec, &ResultRow) -> String,
}

const fn col(title: &'static str, cell: fn(&RunSpec, &ResultRow) -> String) -> Column {
    Column { title, cell }
}

/// The figures a run can get, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunFigure {
    /// Training loss per step and validation loss per epoch.
    Curve,
    /// Six validation faces and the two worst, with truth and prediction.
    ValGrid,
    /// Eight training samples from the loader (augmented).
    TrainSamples,
    /// The first convolution's filters.
    Filters,
}

/// Which runs of a section get figures, and which.
enum RunFigures {
    /// Every run that did not fail, under a subheading of its own.
    EachWithHeading(&'static [RunFigure]),
    /// Every run that did not fail.
    Each(&'static [RunFigure]),
    /// The runs named, in this order, when they did not fail.
    Named(&'static [(&'static str, &'static [RunFigure])]),
}

/// One experiment's part of the report.
struct Section {
    experiment: &'static str,
    heading: &'static str,
    intro: &'static str,
    caption: Option<&'static str>,
    columns: &'static [Column],
    /// The run whose training samples (ground truth as the loader gives it) follow the table.
    samples: Option<&'static str>,
    /// The learning curves of all the section's runs on one chart, before the runs' figures.
    sweep_curves: Option<&'static str>,
    figures: RunFigures,
    /// The CED chart of the runs' validation NME, after the runs' figures.
    ced: bool,
    /// The Kaggle test set's line (300-W).
    kaggle_note: bool,
}

const MODEL: Column = col("model", |_, r| r.model.clone());
const STATUS: Column = col("status", |_, r| r.status.clone());
const EPOCHS: Column = col("epochs", |_, r| r.epochs.to_string());
const SCHEDULE: Column = col("schedule", |_, r| r.lr_schedule.clone());
const VAL_PX_ORIGINAL: Column = col("val px (640x480)", |_, r| fmt_opt(r.val_px, 2));
const VAL_LOSS: Column = col("val loss", |_, r| fmt_opt(r.val_loss, 6));
const TRAIN_S: Column = col("train s", |_, r| fmt_opt(r.train_seconds, 1));
const IMG_S: Column = col("img/s", |_, r| fmt_opt(r.images_per_second, 1));

/// The study's three experiments, in report order.
const SECTIONS: [Section; 3] = [
    Section {
        experiment: "nose",
        heading: "1. Nose tip detection (IMM, 80x60)",
        intro: "Table 1: the batch-size / learning-rate sweep of NoseTipNet (the seed's recipe: 25 \
                epochs, constant lr, no augmentation), then kp's tuned recipe (the heatmap ResNet18 \
                at the same 80x60 input; batch 8, cosine lr schedule, 100 epochs, mild augmentation \
                with mirroring, weight decay, test-time mirroring). Validation = persons 33-40 (48 \
                faces). Error = mean distance between predicted and true nose tip.",
        caption: None,
        columns: &[
            col("run", |s, _| s.label.clone()),
            MODEL,
            col("batch", |_, r| r.batch_size.to_string()),
            col("lr", |_, r| format!("{:e}", r.lr)),
            SCHEDULE,
            EPOCHS,
            STATUS,
            col("val px (80x60)", |_, r| fmt_opt(r.val_px_input, 3)),
            VAL_PX_ORIGINAL,
            VAL_LOSS,
            TRAIN_S,
            IMG_S,
        ],
        samples: Some("nose-bs1-lr1e-3"),
        sweep_curves: Some("Nose tip: training loss (smoothed) and validation loss"),
        figures: RunFigures::EachWithHeading(&[RunFigure::Curve, RunFigure::ValGrid]),
        ced: false,
        kaggle_note: false,
    },
    Section {
        experiment: "face",
        heading: "2. All 58 points (IMM, 160x120)",
        intro: "Seed recipe: FaceKeypointNet, 30 epochs, batch 2, lr 3e-4, random shift of ±10 px. \
                The augmentation ablation trains the same network with each augmentation; the last \
                row is kp's tuned recipe (the heatmap ResNet18 at the same 160x120 input; batch 8, \
                lr 1e-3, cosine lr schedule, 100 epochs, mild augmentation with mirroring, \
                test-time mirroring).",
        caption: Some("Augmentation ablation"),
        columns: &[
            col("augmentation", |s, _| s.label.clone()),
            MODEL,
            EPOCHS,
            SCHEDULE,
            STATUS,
            col("val px (160x120)", |_, r| fmt_opt(r.val_px_input, 3)),
            VAL_PX_ORIGINAL,
            col("val MAE px", |_, r| fmt_opt(r.val_mae, 2)),
            VAL_LOSS,
            TRAIN_S,
            IMG_S,
        ],
        samples: Some("face-seed-shift"),
        sweep_curves: None,
        figures: RunFigures::Named(&[
            (
                "face-seed-shift",
                &[
                    RunFigure::Curve,
                    RunFigure::ValGrid,
                    RunFigure::Filters,
                ],
            ),
            ("face-tuned", &[RunFigure::ValGrid]),
        ]),
        ced: false,
        kaggle_note: false,
    },
    Section {
        experiment: "ibug",
        heading: "3. Larger dataset (iBUG 300-W, ResNet18, 224x224)",
        intro: "1326 real 300-W training faces, 80/20 split by a seeded shuffle. The seed's \
                ResNet18 regressing coordinates (10 epochs, batch 16, lr 3e-4), then kp's tuned \
                recipe (the heatmap ResNet18 of the ready model models/landmarks/ibug68: 20 \
                epochs, batch 8, lr 1e-3 cosine, the Wing loss, test-time mirroring). MAE is per \
                coordinate in original image pixels (the Kaggle metric); val px is the mean \
                point-to-point distance in original pixels; NME is normalised by the \
                outer-eye-corner distance; FR and AUC at NME 8%.",
        caption: None,
        columns: &[
            col("model", |s, _| s.label.clone()),
            STATUS,
            col("val MAE px", |_, r| fmt_opt(r.val_mae, 2)),
            col("val px", |_, r| fmt_opt(r.val_px, 2)),
            col("NME %", |_, r| fmt_opt(r.val_nme.map(|v| v * 100.0), 2)),
            col("FR @8% %", |_, r| {
                fmt_opt(r.val_failure_rate.map(|v| v * 100.0), 1)
            }),
            col("AUC @8%", |_, r| fmt_opt(r.val_auc, 3)),
            TRAIN_S,
            col("img/s", |_, r| fmt_opt(r.images_per_second, 2)),
        ],
        samples: Some("ibug-resnet18"),
        sweep_curves: None,
        figures: RunFigures::Each(&[RunFigure::Curve, RunFigure::ValGrid]),
        ced: true,
        kaggle_note: true,
    },
];

/// `results.csv`'s columns, one per [`ResultRow`] field, in its order.
const RESULT_COLUMNS: &[Column] = &[
    col("experiment", |_, r| r.experiment.clone()),
    col("run", |_, r| r.run.clone()),
    col("label", |_, r| r.label.clone()),
    col("model", |_, r| r.model.clone()),
    col("epochs", |_, r| r.epochs.to_string()),
    col("batch_size", |_, r| r.batch_size.to_string()),
    col("lr", |_, r| r.lr.to_string()),
    col("lr_schedule", |_, r| r.lr_schedule.clone()),
    col("augment", |_, r| r.augment.clone()),
    col("status", |_, r| r.status.clone()),
    col("val_faces", |_, r| r.val_faces.to_string()),
    col("val_px_input", |_, r| num(r.val_px_input)),
    col("val_px", |_, r| num(r.val_px)),
    col("val_mae", |_, r| num(r.val_mae)),
    col("val_nme", |_, r| num(r.val_nme)),
    col("val_failure_rate", |_, r| num(r.val_failure_rate)),
    col("val_auc", |_, r| num(r.val_auc)),
    col("val_loss", |_, r| num(r.val_loss)),
    col("train_seconds", |_, r| num(r.train_seconds)),
    col("images_per_second", |_, r| num(r.images_per_second)),
    col("error", |_, r| r.error.clone().unwrap_or_default()),
];

/// The last table, over every run.
const ALL_RUNS: &[Column] = &[
    col("run", |_, r| r.run.clone()),
    STATUS,
    EPOCHS,
    col("val px (input)", |_, r| fmt_opt(r.val_px_input, 3)),
    col("val px (original)", |_, r| fmt_opt(r.val_px, 2)),
    TRAIN_S,
    IMG_S,
    col("error", |_, r| r.error.clone().unwrap_or_default()),
];

/// A number in full precision for the CSV; empty when absent.
fn num(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The table of `columns` over `runs`.
fn table<'a>(
    columns: &[Column],
    runs: impl IntoIterator<Item = (&'a RunSpec, &'a ResultRow)>,
) -> Table {
    let mut t = Table::new(columns.iter().map(|c| c.title));
    for (s, r) in runs {
        t.push_row(columns.iter().map(|c| (c.cell)(s, r)));
    }
    t
}

fn rel(name: &str) -> String {
    format!("figures/{name}")
}

/// Where a section's figures go, and the report they are added to.
struct Figures<'a> {
    report: &'a mut HtmlReport,
    dir: &'a Path,
    data: &'a Path,
    runs_dir: &'a Path,
}

impl Figures<'_> {
    /// Saves a drawn figure as `file` and adds it with `caption`; a failure becomes a paragraph
    /// in the report instead of an abort.
    fn add(&mut self, what: &str, file: &str, caption: &str, drawn: kp_train::Result<RgbImage>) {
        let saved = drawn
            .map_err(anyhow::Error::from)
            .and_then(|img| Ok(kp_viz::io::save_png(&img, self.dir.join(file))?));
        match saved {
            Ok(()) => {
                self.report.figure(rel(file), caption);
            }
            Err(e) => {
                eprintln!("      figure `{what}` failed: {e:#}");
                self.report
                    .paragraph(format!("({what} could not be drawn: {e:#})"));
            }
        }
    }

    /// The figure `fig` of run `s`.
    fn run_figure(&mut self, fig: RunFigure, s: &RunSpec) {
        let run_path = self.runs_dir.join(&s.name);
        let run = || RunDir::open(&run_path);
        let truth_pred = "validation faces (green = truth, red = prediction)";
        match fig {
            RunFigure::Curve => self.add(
                "learning curve",
                &format!("{}_curve.png", s.name),
                "Training loss per gradient step and validation loss per epoch.",
                run()
                    .and_then(|r| figures::loss_curve(&r, ""))
                    .and_then(|c| {
                        figures::curves_image(
                            &[c],
                            &format!(
                                "{}: training (blue) and validation (orange) loss",
                                s.short_label()
                            ),
                        )
                    }),
            ),
            RunFigure::ValGrid => self.add(
                "validation grid",
                &format!("{}_val.png", s.name),
                "Six validation faces and the two worst (last two).",
                figures::validation(&run_path, self.data).and_then(|(d, ev)| {
                    figures::val_grid(&d, &ev, &format!("{}: {truth_pred}", s.short_label()))
                }),
            ),
            RunFigure::TrainSamples => self.add(
                "training samples",
                &format!("{}_train_samples.png", s.name),
                "Ground truth on samples from the training loader (augmented).",
                kp_train::trainer::prepare_data(&s.config).and_then(|d| {
                    figures::train_samples_grid(
                        &d,
                        &s.config.augment,
                        (s.config.width, s.config.height),
                        s.config.seed,
                    )
                }),
            ),
            RunFigure::Filters => self.add(
                "conv1 filters",
                &format!("{}_filters.png", s.name),
                "The first convolutional layer's filters, left to right, top to bottom.",
                run().and_then(|r| figures::filters_image(&r)),
            ),
        }
    }
}

/// Writes the whole report into `dir`.
pub fn write(
    dir: &Path,
    data: &Path,
    specs: &[RunSpec],
    rows: &[ResultRow],
    runs_dir: &Path,
    quick: bool,
    sharing: (usize, usize),
) -> Result<()> {
    let figs = dir.join("figures");
    std::fs::create_dir_all(&figs).with_context(|| format!("creating {}", figs.display()))?;
    let all: Vec<(&RunSpec, &ResultRow)> = specs.iter().zip(rows).collect();
    kp_fs::write_atomic(
        dir.join("results.csv"),
        table(RESULT_COLUMNS, all.iter().copied())
            .to_csv()
            .as_bytes(),
    )?;
    kp_train::atomic::write_json(&dir.join("results.json"), &rows)?;

    let mut report = HtmlReport::new("kp — Facial Keypoint Detection, reproduced");
    report.paragraph(format!(
        "Generated by `cargo xtask reproduce{}` from the datasets in {}. Every number below comes \
         from the runs in {}; results.csv and results.json hold them in machine-readable form.",
        if quick { " --quick" } else { "" },
        data.display(),
        runs_dir.display()
    ));
    if quick {
        let what: Vec<String> = ["nose", "face", "ibug"]
            .into_iter()
            .filter_map(|exp| specs.iter().find(|s| s.experiment == exp))
            .map(|s| {
                let faces = s
                    .config
                    .limit
                    .map_or("every face".to_string(), |l| format!("{l} faces"));
                format!("{}: {} epochs on {faces}", s.experiment, s.config.epochs)
            })
            .collect();
        // The full run's epochs per experiment, the seed's runs and kp's tuned ones.
        let full = super::matrix::study(data, false);
        let epochs = |tuned: bool| -> Vec<String> {
            ["nose", "face", "ibug"]
                .into_iter()
                .filter_map(|exp| {
                    full.iter()
                        .find(|s| s.experiment == exp && s.tuned == tuned)
                })
                .map(|s| s.config.epochs.to_string())
                .collect()
        };
        report.paragraph(format!(
            "Quick mode: a small but real run of every experiment ({}), where the full \
             run trains the seed's {} epochs and kp's tuned recipes {}, on every face. Expect \
             errors several times the full run's: they show that each recipe learns and let CI \
             catch regressions, not the study's accuracy. The ready models' table below is what \
             kp reaches.",
            what.join("; "),
            epochs(false).join(", "),
            epochs(true).join(", ")
        ));
    }
    if let Some(t) = ready_models_table() {
        report.heading("The ready models");
        report.paragraph(
            "What `kp predict` uses without training: the models shipped in models/landmarks/, \
             measured by `cargo xtask pretrained` (their results.json). Rows are the shipped \
             recipe trained on the 80/20 split's training faces and scored on its 265 held-out \
             300-W faces, with the dataset's boxes, simulated detector boxes and the bundled \
             detector's boxes; NME is normalised by the outer eye corners.",
        );
        report.table(t);
    }
    let (jobs, threads) = sharing;
    if jobs > 1 {
        report.paragraph(format!(
            "This invocation trained {jobs} runs at once, {threads} thread(s) each: the training \
             times and img/s below are wall-clock times under that sharing. The numbers do not \
             depend on it (kp trains to the same weights on any number of threads)."
        ));
    }

    for section in &SECTIONS {
        let runs: Vec<(&RunSpec, &ResultRow)> = all
            .iter()
            .copied()
            .filter(|(s, _)| s.experiment == section.experiment)
            .collect();
        if runs.is_empty() {
            continue;
        }
        report.heading(section.heading);
        report.paragraph(section.intro);
        let t = table(section.columns, runs.iter().copied());
        report.table(match section.caption {
            Some(c) => t.with_caption(c),
            None => t,
        });
        let mut f = Figures {
            report: &mut report,
            dir: &figs,
            data,
            runs_dir,
        };
        let drawn: Vec<(&RunSpec, &ResultRow)> = runs
            .iter()
            .copied()
            .filter(|(_, r)| r.status != "failed")
            .collect();
        if let Some((s, _)) = section
            .samples
            .and_then(|name| drawn.iter().find(|(s, _)| s.name == name))
        {
            f.run_figure(RunFigure::TrainSamples, s);
        }
        if let Some(title) = section.sweep_curves {
            let curves: Vec<_> = drawn
                .iter()
                .filter_map(|(s, _)| {
                    let run = RunDir::open(runs_dir.join(&s.name)).ok()?;
                    figures::loss_curve(&run, &s.short_label()).ok()
                })
                .collect();
            if !curves.is_empty() {
                f.add(
                    "sweep curves",
                    &format!("{}_sweep_curves.png", section.experiment),
                    "Every run: training loss per step (smoothed) and validation loss per \
                     epoch, log scale.",
                    figures::curves_image(&curves, title),
                );
            }
        }
        match section.figures {
            RunFigures::EachWithHeading(list) | RunFigures::Each(list) => {
                let heading = matches!(section.figures, RunFigures::EachWithHeading(_));
                for (s, r) in &drawn {
                    if heading {
                        f.report.subheading(format!("{} ({})", s.label, r.status));
                    }
                    for &fig in list {
                        f.run_figure(fig, s);
                    }
                }
            }
            RunFigures::Named(named) => {
                for (name, list) in named {
                    if let Some((s, _)) = drawn.iter().find(|(s, _)| s.name == *name) {
                        for &fig in *list {
                            f.run_figure(fig, s);
                        }
                    }
                }
            }
        }
        if section.ced {
            let ced: Vec<(String, Vec<f64>)> = drawn
                .iter()
                .filter_map(|(s, _)| {
                    let summary = RunDir::open(runs_dir.join(&s.name))
                        .and_then(|d| d.read_summary())
                        .ok()?;
                    Some((s.short_label(), summary.val_errors?.nme))
                })
                .collect();
            if !ced.is_empty() {
                f.add(
                    "CED",
                    &format!("{}_ced.png", section.experiment),
                    "Cumulative error distribution of NME on the validation faces (the x axis widens past \
                     8% only when a run has more than half of its faces beyond it; AUC and FR \
                     stay at 8%).",
                    figures::ced_image(&ced),
                );
            }
        }
        if section.kaggle_note {
            report.paragraph(kaggle_note(data));
        }
    }

    own_photos(&mut report, &figs, data, runs_dir, specs);
    architectures(&mut report, specs);
    report.heading("All runs");
    report.table(table(ALL_RUNS, all.iter().copied()));
    report.write(dir.join("index.html"))?;
    Ok(())
}

/// The seed's last figure, its 300-W model on photos of its own collection: here dlib's sample
/// photos, every face the bundled detector finds, with this run's ResNet18 (when it trained)
/// and with the ready model `kp predict` uses.
fn own_photos(
    report: &mut HtmlReport,
    figs: &Path,
    data: &Path,
    runs_dir: &Path,
    specs: &[RunSpec],
) {
    let dir = data.join("dlib_examples_faces");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut photos: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .collect();
    photos.sort();
    if photos.is_empty() {
        return;
    }
    report.heading("4. Photos of our own collection");
    report.paragraph(format!(
        "The seed ends by running its 300-W model on photos of its own. Here: the {} photos of \
         dlib's examples ({}), every face found by the bundled YuNet detector, its box mapped to \
         the 300-W crop convention, then 68 points, as `kp predict PHOTO --out` draws them.",
        photos.len(),
        dir.display()
    ));
    let mut f = Figures {
        report,
        dir: figs,
        data,
        runs_dir,
    };
    let mut models: Vec<(
        String,
        String,
        kp_train::Result<kp_train::landmarker::Landmarker>,
    )> = Vec::new();
    for s in specs.iter().filter(|s| s.experiment == "ibug") {
        let run = runs_dir.join(&s.name);
        if RunDir::open(&run).is_ok_and(|r| r.read_summary().is_ok()) {
            let lm = kp_train::landmarker::Landmarker::from_run(&run, None);
            models.push((
                s.name.clone(),
                format!("this study's {}", s.short_label()),
                lm,
            ));
        }
    }
    models.push((
        "ready".into(),
        "the ready model (`kp predict` without --run)".into(),
        kp_train::landmarker::Landmarker::pretrained(None),
    ));
    for (name, what, lm) in models {
        // The chart's title is drawn text: no Markdown backticks there.
        let title = format!("dlib's sample photos with {}", what.replace('`', ""));
        f.add(
            "own photos",
            &format!("own_photos_{name}.png"),
            &format!("Every face found, with {what}."),
            lm.and_then(|lm| figures::photos_grid(&lm, &photos, &title)),
        );
    }
}

/// The networks of the runs as PyTorch prints them (the seed prints its models so), with
/// their parameter counts: built from each run's configuration, so what is printed is what
/// trained.
fn architectures(report: &mut HtmlReport, specs: &[RunSpec]) {
    use kp_train::model::LoadedModel;
    report.heading("The networks");
    report.paragraph(
        "Each network of the runs above, printed as PyTorch prints the same module \
         (`print(model)`; kp's variable names load in PyTorch), with its trainable parameters.",
    );
    let mut seen: Vec<(String, usize, usize, usize)> = Vec::new();
    for s in specs {
        let c = &s.config;
        let k = c
            .keypoints
            .as_ref()
            .map_or(c.scheme().num_points, |subset| subset.len());
        let key = (c.model.name().to_string(), c.width, c.height, k);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        match LoadedModel::build(c, k, &candle_core::Device::Cpu) {
            Ok(m) => {
                let tree = m.model.describe();
                report.subheading(format!(
                    "{} ({k} point{} at {}x{}): {} parameters",
                    c.model,
                    if k == 1 { "" } else { "s" },
                    c.width,
                    c.height,
                    kp_models::summary::group_thousands(tree.total_params())
                ));
                report.preformatted(tree.torch_repr());
            }
            Err(e) => {
                report.paragraph(format!("({} could not be built: {e})", c.model));
            }
        }
    }
}

/// The held-out rows of the ready models' `results.json`, when the files are there.
fn ready_models_table() -> Option<Table> {
    use kp_train::pretrained::ReadyModel;
    let mut t = Table::new([
        "model",
        "boxes",
        "faces",
        "NME %",
        "FR at 8% %",
        "AUC at 8%",
        "mean px",
    ]);
    for model in ReadyModel::ALL {
        let pct = |x: Option<f64>| fmt_opt(x.map(|x| 100.0 * x), 2);
        let rows = crate::pretrained::saved_rows(model).unwrap_or_default();
        for row in rows.iter().filter(|r| r.held_out && r.weights == "f32") {
            t.push_row([
                model.name().to_string(),
                row.boxes.to_string(),
                row.faces.to_string(),
                pct(row.nme),
                pct(row.failure_rate_8),
                fmt_opt(row.auc_8, 3),
                fmt_opt(Some(row.mean_px_error), 2),
            ]);
        }
    }
    (!t.rows.is_empty()).then_some(t)
}

/// What the Kaggle test XML holds here and how to make a submission from it.
fn kaggle_note(data: &Path) -> String {
    let kaggle =
        data.join("ibug_300W_large_face_landmark_dataset/labels_ibug_300W_test_parsed.xml");
    match kp_data::dlib_xml::load_dlib_xml(&kaggle) {
        Ok(ds) => {
            let present = ds.faces.iter().filter(|f| f.image.is_file()).count();
            format!(
                "Kaggle test set: {} faces in {}, {} with their image present. {}",
                ds.faces.len(),
                kaggle.display(),
                present,
                if present == 0 {
                    "No test images are available here, so no submission.csv was written (use \
                     `kp submit` where they are)."
                } else {
                    "Use `kp submit --run RUN --xml XML --out submission.csv` for the Kaggle CSV."
                }
            )
        }
        Err(e) => format!("Kaggle test XML not read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_models_table_has_held_out_rows_of_every_ready_model() {
        use kp_train::pretrained::ReadyModel;
        let t = ready_models_table().expect("the ready models' results.json are in the repository");
        print!("{}", t.to_csv());
        for model in ReadyModel::ALL {
            let rows: Vec<_> = t.rows.iter().filter(|r| r[0] == model.name()).collect();
            assert!(!rows.is_empty(), "no row for {}", model.name());
            assert!(
                rows.iter().all(|r| r.len() == t.n_cols() && r[3] != "-"),
                "{} has a row without NME: {rows:?}",
                model.name()
            );
        }
    }

    #[test]
    fn every_section_names_an_experiment_of_the_matrix_and_its_named_runs_exist() {
        let runs = super::super::matrix::study(Path::new("/nonexistent"), false);
        for s in &SECTIONS {
            assert!(
                runs.iter().any(|r| r.experiment == s.experiment),
                "{}",
                s.experiment
            );
            if let RunFigures::Named(named) = s.figures {
                for (name, _) in named {
                    assert!(runs.iter().any(|r| r.name == *name), "{name}");
                }
            }
            if let Some(name) = s.samples {
                assert!(runs.iter().any(|r| r.name == name), "{name}");
            }
        }
    }

    #[test]
    fn results_csv_has_one_column_per_result_field_in_its_order() {
        let runs = super::super::matrix::study(Path::new("/nonexistent"), true);
        let spec = &runs[0];
        let row = ResultRow {
            experiment: "nose".into(),
            run: spec.name.clone(),
            label: "bs 1, lr 1e-3".into(),
            model: "nosetipnet".into(),
            epochs: 2,
            batch_size: 1,
            lr: 1e-3,
            lr_schedule: "constant".into(),
            augment: "none".into(),
            status: "finished".into(),
            val_faces: 48,
            val_px_input: Some(0.25),
            val_px: None,
            val_mae: None,
            val_nme: None,
            val_failure_rate: None,
            val_auc: None,
            val_loss: Some(1e-3),
            train_seconds: None,
            images_per_second: None,
            error: None,
        };
        let json = serde_json::to_value(&row).unwrap();
        let fields: Vec<&str> = RESULT_COLUMNS.iter().map(|c| c.title).collect();
        assert_eq!(fields.len(), json.as_object().unwrap().len());
        for f in &fields {
            assert!(
                json.get(*f).is_some(),
                "results.csv column {f} is not a ResultRow field"
            );
        }
        let csv = table(RESULT_COLUMNS, [(spec, &row)]).to_csv();
        let line = csv.lines().nth(1).unwrap();
        assert_eq!(
            line,
            format!(
                "nose,{},\"bs 1, lr 1e-3\",nosetipnet,2,1,0.001,constant,none,finished,48,0.25,,,,,,0.001,,,",
                spec.name
            )
        );
    }
}
