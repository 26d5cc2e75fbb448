//! `cargo xtask reproduce`: train the study's whole experiment matrix and write the report.

mod baseline;
mod matrix;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kp_train::run::{RunDir, RunStatus, Summary, Timing};
use kp_train::trainer::{train, TrainOptions};
use serde::Serialize;

pub use matrix::RunSpec;

/// Arguments of `cargo xtask reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Datasets folder (default: KP_DATA_DIR, ../shared/datasets, or data/ — fetched when missing).
    #[arg(long, env = "KP_DATA_DIR")]
    pub data: Option<PathBuf>,
    /// Output folder: runs/ and report/ go there.
    #[arg(long, default_value = "reproduce")]
    pub out: PathBuf,
    /// The same matrix on a few faces and epochs (a few minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// Only these experiments (nose, face, ibug) or runs (e.g. nose-bs4-lr1e-3).
    #[arg(long)]
    pub only: Vec<String>,
    /// Skip kp's tuned runs (train the seed study's own runs only).
    #[arg(long)]
    pub no_tuned: bool,
    /// Retrain runs that already finished.
    #[arg(long)]
    pub force: bool,
    /// cpu or cuda (cuda needs xtask built with the `cuda` or `cudnn` feature:
    /// `cargo run --release -p xtask --features cudnn -- reproduce --device cuda`).
    #[arg(long, default_value = "cpu", value_parser = kp_train::config::DeviceKind::parse)]
    pub device: kp_train::config::DeviceKind,
    /// Runs trained at once, each on its share of the CPU threads (default: 2 on a CPU with 2
    /// or more cores, 1 otherwise and on cuda). The numbers do not depend on it: kp trains to
    /// the same weights on any number of threads.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// A results.json to compare with (a regression gate for CI): fails, naming every metric
    /// of every run that got worse than the baseline's by more than its tolerance (2%, or as
    /// the TOML file beside it says, e.g. `quick-results.toml` beside `quick-results.json`).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
}

impl ReproduceArgs {
    /// Runs trained at once.
    fn jobs(&self) -> usize {
        match self.jobs {
            Some(j) => j.max(1),
            None if self.device == kp_train::config::DeviceKind::Cpu => {
                rayon::current_num_threads().clamp(1, 2)
            }
            None => 1,
        }
    }
}

/// One row of `results.csv` / `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    /// Experiment (`nose`, `face`, `ibug`).
    pub experiment: String,
    /// Run name.
    pub run: String,
    /// Human label.
    pub label: String,
    /// Model name.
    pub model: String,
    /// Epochs run.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate schedule (`constant` or `cosine`).
    pub lr_schedule: String,
    /// Augmentation preset.
    pub augment: String,
    /// `finished`, `diverged` or `failed`.
    pub status: String,
    /// Validation faces.
    pub val_faces: usize,
    /// Validation mean point error in network-input pixels.
    pub val_px_input: Option<f64>,
    /// Validation mean point error in original pixels.
    pub val_px: Option<f64>,
    /// Validation per-coordinate MAE in original pixels.
    pub val_mae: Option<f64>,
    /// Validation NME (68 points).
    pub val_nme: Option<f64>,
    /// Failure rate at NME 8%.
    pub val_failure_rate: Option<f64>,
    /// AUC at NME 8%.
    pub val_auc: Option<f64>,
    /// Final validation loss (MSE on normalised coordinates).
    pub val_loss: Option<f64>,
    /// Training wall time in seconds.
    pub train_seconds: Option<f64>,
    /// Training images per second.
    pub images_per_second: Option<f64>,
    /// Error message of a failed run.
    pub error: Option<String>,
}

/// Finds the datasets folder, fetching from the internet when nothing is there.
fn data_dir(args: &ReproduceArgs) -> Result<PathBuf> {
    if let Some(d) = &args.data {
        if !d.is_dir() {
            bail!("--data {}: not a folder", d.display());
        }
        return Ok(d.clone());
    }
    if let Some(d) = kp_data::find_data_dir().filter(|d| d.is_dir()) {
        return Ok(d);
    }
    eprintln!("no datasets found: running `cargo xtask fetch` first");
    crate::fetch::fetch_all_default().context("fetching the datasets")?;
    Ok(crate::fetch::workspace_root().join("data"))
}

/// True when `dir` holds a finished (or diverged) run of exactly `spec`'s configuration.
fn is_done(dir: &Path, spec: &RunSpec) -> bool {
    let Ok(run) = RunDir::open(dir) else {
        return false;
    };
    let Ok(saved) = kp_train::config::TrainConfig::load(&run.config_path()) else {
        return false;
    };
    // The comparison `--resume` makes: the spec may name the datasets folder the run's
    // dataset is in, and the run filled in its point count.
    saved.conflicts(&spec.config).is_empty() && run.read_summary().is_ok()
}

/// Runs the matrix and writes the report.
pub fn run(args: ReproduceArgs) -> Result<()> {
    let data = data_dir(&args)?;
    // A bad baseline fails before an hour of training, not after.
    let baseline = args.baseline.as_deref().map(baseline::load).transpose()?;
    let started = Instant::now();
    let mut all = matrix::study(&data, args.quick);
    for s in all.iter_mut() {
        s.config.device = args.device;
    }
    let specs = matrix::select(all.clone(), &args.only, args.no_tuned);
    if specs.is_empty() {
        bail!("--only {:?} matches no experiment or run", args.only);
    }
    let runs_dir = args.out.join("runs");
    std::fs::create_dir_all(&runs_dir)
        .with_context(|| format!("creating {}", runs_dir.display()))?;
    let n = specs.len();
    let jobs = args.jobs().min(n);
    let threads = (rayon::current_num_threads() / jobs).max(1);
    if jobs > 1 {
        eprintln!("training {jobs} runs at once, {threads} thread(s) each");
    }
    let rows = train_runs(&specs, &runs_dir, args.force, (jobs, threads))?;
    // The report covers the whole matrix: runs outside `--only` that finished earlier count too.
    let mut report_specs = Vec::with_capacity(all.len());
    let mut report_rows = Vec::with_capacity(all.len());
    for spec in all {
        if let Some(i) = specs.iter().position(|s| s.name == spec.name) {
            report_rows.push(rows[i].clone());
            report_specs.push(spec);
        } else if is_done(&runs_dir.join(&spec.name), &spec) {
            report_rows.push(result_row(&spec, &runs_dir.join(&spec.name), None));
            report_specs.push(spec);
        }
    }
    let report_dir = args.out.join("report");
    report::write(
        &report_dir,
        &data,
        &report_specs,
        &report_rows,
        &runs_dir,
        args.quick,
        (jobs, threads),
    )?;
    print_table(&report_rows);
    eprintln!(
        "report: {} ({:.1} min)",
        report_dir.join("index.html").display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let failed = rows.iter().filter(|r| r.status == "failed").count();
    if failed > 0 {
        bail!("{failed} of {n} runs failed (see the report)");
    }
    if let (Some((base, tol)), Some(path)) = (&baseline, &args.baseline) {
        let worse = baseline::regressions(base, tol, &report_rows);
        for line in &worse {
            eprintln!("regression: {line}");
        }
        if !worse.is_empty() {
            bail!(
                "{} regressions against {} (listed above)",
                worse.len(),
                path.display()
            );
        }
        eprintln!(
            "no regressions against {} ({} runs compared)",
            path.display(),
            base.len()
        );
    }
    Ok(())
}

/// Trains `specs` into `runs_dir`, `jobs` at a time, each in a pool of `threads` threads, in
/// the order given (a worker takes the next run when its last one ends); rows in `specs` order.
fn train_runs(
    specs: &[RunSpec],
    runs_dir: &Path,
    force: bool,
    (jobs, threads): (usize, usize),
) -> Result<Vec<ResultRow>> {
    let n = specs.len();
    let group = indicatif::MultiProgress::new();
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<ResultRow>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .context("building a thread pool")?;
                let (next, slots, group) = (&next, &slots, &group);
                Ok(scope.spawn(move || -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(spec) = specs.get(i) else {
                            return Ok(());
                        };
                        let dir = runs_dir.join(&spec.name);
                        let row = pool.install(|| run_one(spec, &dir, force, (i, n), group))?;
                        *slots[i].lock().expect("no panic while holding the lock") = Some(row);
                    }
                }))
            })
            .collect::<Result<_>>()?;
        for w in workers {
            w.join().expect("a training worker panicked")?;
        }
        Ok(())
    })?;
    Ok(slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .expect("no poisoned lock")
                .expect("every run trained")
        })
        .collect())
}

/// Trains run `i` of `n` into `dir` (unless it finished before and `force` is off) and reads
/// its result row; its progress bar joins `group`. A diverged run counts as finished (the
/// report shows it), any other training error is recorded in the row.
fn run_one(
    spec: &RunSpec,
    dir: &Path,
    force: bool,
    (i, n): (usize, usize),
    group: &indicatif::MultiProgress,
) -> Result<ResultRow> {
    let say = |line: String| group.suspend(|| eprintln!("{line}"));
    let t0 = Instant::now();
    let skipped = !force && is_done(dir, spec);
    if !skipped && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    say(format!(
        "[{}/{n}] {} ({}){}",
        i + 1,
        spec.name,
        spec.label,
        if skipped {
            ": done before, skipped"
        } else {
            ""
        }
    ));
    let error = if skipped {
        None
    } else {
        let opts = TrainOptions {
            progress: true,
            progress_group: Some(group.clone()),
            ..Default::default()
        };
        let span = tracing::info_span!("run", name = %spec.name);
        match span.in_scope(|| train(spec.config.clone(), dir, &opts)) {
            Ok(_) => None,
            Err(e @ kp_train::Error::Diverged { .. }) => {
                say(format!("      {}: {e}", spec.name));
                None
            }
            Err(e) => {
                say(format!("      {} failed: {e}", spec.name));
                Some(e.to_string())
            }
        }
    };
    let row = result_row(spec, dir, error);
    say(format!(
        "      {} {} in {:.1}s: val error {} px (input), {} px (original)",
        spec.name,
        row.status,
        t0.elapsed().as_secs_f64(),
        fmt_opt(row.val_px_input, 3),
        fmt_opt(row.val_px, 3)
    ));
    Ok(row)
}

fn result_row(spec: &RunSpec, dir: &Path, error: Option<String>) -> ResultRow {
    let c = &spec.config;
    let summary: Option<Summary> = RunDir::open(dir).ok().and_then(|r| r.read_summary().ok());
    let timing: Option<Timing> = RunDir::open(dir).ok().and_then(|r| r.read_timing().ok());
    let m = summary.as_ref().and_then(|s| s.val.clone());
    let status = match (&error, summary.as_ref().map(|s| s.status)) {
        (Some(_), _) | (None, None) => "failed",
        (None, Some(RunStatus::Finished)) => "finished",
        (None, Some(RunStatus::Diverged)) => "diverged",
    };
    ResultRow {
        experiment: spec.experiment.into(),
        run: spec.name.clone(),
        label: spec.label.clone(),
        model: c.model.to_string(),
        epochs: summary.as_ref().map(|s| s.epochs).unwrap_or(0),
        batch_size: c.batch_size,
        lr: c.lr,
        lr_schedule: c.lr_schedule.name().into(),
        augment: c.augment.to_string(),
        status: status.into(),
        val_faces: summary.as_ref().map(|s| s.val_faces).unwrap_or(0),
        val_px_input: m.as_ref().map(|m| m.mean_px_error_input),
        val_px: m.as_ref().map(|m| m.mean_px_error),
        val_mae: m.as_ref().map(|m| m.mae),
        val_nme: m.as_ref().and_then(|m| m.nme),
        val_failure_rate: m.as_ref().and_then(|m| m.failure_rate),
        val_auc: m.as_ref().and_then(|m| m.auc),
        val_loss: summary.as_ref().and_then(|s| s.final_val_loss),
        train_seconds: timing.as_ref().map(|t| t.train_seconds),
        images_per_second: timing.as_ref().map(|t| t.images_per_second),
        error: error
            .or_else(|| (status == "failed").then(|| "no summary.json was written".to_string())),
    }
}

/// Formats an optional number with `digits` decimals, `-` when absent or not finite.
pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

fn print_table(rows: &[ResultRow]) {
    println!(
        "{:<26} {:>9} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "run", "status", "px(input)", "px(orig)", "NME%", "time s", "img/s"
    );
    for r in rows {
        println!(
            "{:<26} {:>9} {:>10} {:>10} {:>8} {:>8} {:>9}",
            r.run,
            r.status,
            fmt_opt(r.val_px_input, 3),
            fmt_opt(r.val_px, 3),
            fmt_opt(r.val_nme.map(|v| v * 100.0), 2),
            fmt_opt(r.train_seconds, 1),
            fmt_opt(r.images_per_second, 1)
        );
    }
}
