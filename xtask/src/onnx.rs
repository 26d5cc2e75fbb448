//! `cargo xtask onnx`: every registered model and both ready models exported to ONNX
//! (`kp_train::export`), each file checked by `onnx.checker` and run by onnxruntime and by
//! OpenCV's `dnn` module on the same face crops as kp, with kp's outputs as the reference.
//!
//! The registered models that kp does not ship are exported with seeded untrained weights (the
//! batch norms' running statistics set away from 0 and 1, so that they count), each at its
//! recipe's input size: `nosetipnet` and `facekeypointnet` (the seed's), `resnet18` (the
//! seed's 300-W model), `heatmap-resnet18` at 160x120 (padded inside the graph, mirrored
//! points reordered by the IMM scheme), `compact` at the face recipe's size. The inputs are
//! real crops of the case's dataset made by kp's evaluation preprocessing (noise when no
//! dataset is found).
//!
//! Writes `DIR/CASE.onnx`, `DIR/onnx.json` (everything, with the runtimes' versions),
//! `DIR/onnx.csv` (columns below) and `DIR/onnx.md` (the same as a table); fails when a file
//! does not pass the checker or a runtime's output is farther from kp's than both `--tolerance`
//! pixels and `--ulps` float32 spacings of the case's largest coordinate (the ResNet18s' 200-340
//! px outputs differ by 8-13 ulps, 1.2e-4 to 4e-4 px: f32 sums in another order).
//!
//! `onnx.csv` columns: `case`, `model`, `keypoints`, `input` (`WxH`), `mirror` (test-time
//! mirroring in the graph), `batch`, `inputs` (which crops), `file_kb`, `checker` (`ok` or the
//! checker's message), `ort_max_diff_px` / `opencv_max_diff_px` (largest absolute difference
//! from kp's keypoints, input pixels; empty with an error in onnx.json), `max_abs_px` (largest
//! coordinate), `kp_candle_max_diff_px` (kp against kp with candle's `conv2d` in place of its own
//! CPU convolution: the rounding floor of two correct f32 implementations), `ort_ulps` /
//! `opencv_ulps` (the differences in f32 ulps of the largest coordinate), `kp_ms`, `ort_ms`,
//! `opencv_ms` (median ms of one batch on `--threads` threads; empty with `--rounds 0`),
//! `ort_vs_kp` (`ort_ms / kp_ms`), `pass`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kp_data::GrayF32;
use kp_train::config::{Recipe, SplitKind, Task, TrainConfig};
use kp_train::eval::predict_samples;
use kp_train::predict::{EvalSplit, Predictor};
use kp_train::prep::Sample;
use kp_train::pretrained::ReadyModel;
use serde::Serialize;

/// Arguments of `cargo xtask onnx`.
#[derive(Debug, Clone, clap::Args)]
pub struct OnnxArgs {
    /// Folder for the ONNX files, their inputs and the results.
    #[arg(long, default_value = "target/onnx")]
    pub out: PathBuf,
    /// Python with onnx, onnxruntime and cv2 (default: a venv under ~/.cache/kp-onnx-venv,
    /// made on demand from PyPI).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Face crops per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed runs of each batch per runtime, after a warm-up (0: no timing).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Threads of kp, onnxruntime and OpenCV.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Largest difference from kp's keypoints allowed, in input pixels...
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    /// ...or in float32 spacings (ulps) of the case's largest coordinate: two f32 networks
    /// that sum in different orders differ by a few ulps of their outputs, whatever the unit.
    #[arg(long, default_value_t = 16.0)]
    pub ulps: f64,
}

/// The spacing of f32 values (one ulp) at `v`.
fn f32_ulp(v: f64) -> f64 {
    let v = v.abs().max(f64::from(f32::MIN_POSITIVE));
    2f64.powi(v.log2().floor() as i32 - 23)
}

/// One model to export and check.
struct Case {
    name: String,
    source: String,
    predictor: Predictor,
}

/// The registered models with seeded weights at their recipes' sizes, then the ready models.
fn cases() -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (recipe, task) in [
        (Recipe::Seed, Task::Nose),
        (Recipe::Seed, Task::Face),
        (Recipe::Seed, Task::Ibug),
        (Recipe::Tuned, Task::Face),
        (Recipe::Compact, Task::Face),
    ] {
        let cfg = TrainConfig::from_recipe(recipe, task, "");
        let k = cfg
            .keypoints
            .as_ref()
            .map_or(cfg.scheme().num_points, Vec::len);
        let name = format!("{}-{}", cfg.model, cfg.scheme().name);
        let source = format!("untrained, {task:?} {recipe:?} recipe, seed {}", cfg.seed);
        let mut predictor = Predictor::untrained(cfg, k)?;
        perturb_batch_norm_statistics(&predictor)?;
        predictor.model.freeze()?;
        cases.push(Case {
            name,
            source,
            predictor,
        });
    }
    for ready in ReadyModel::ALL {
        cases.push(Case {
            name: format!("ready-{}", ready.name()),
            source: format!("ready:{}", ready.name()),
            predictor: ready.predictor(None)?,
        });
    }
    Ok(cases)
}

/// Deterministic draws in [0, 1) (xorshift64) for the values this check makes up.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u32 << 24) as f32
    }
}

/// Sets every batch norm's running mean to values in [-0.2, 0.2] and running variance to
/// values in [0.5, 2] (deterministically), so the exported `BatchNormalization` nodes (or the
/// folded convolutions) are checked with statistics that change the result.
fn perturb_batch_norm_statistics(p: &Predictor) -> Result<()> {
    let mut draws = Draws(0x2545_f491_4f6c_dd1d);
    for (name, var) in p.model.named_vars() {
        let range = if name.ends_with("running_mean") {
            (-0.2, 0.4)
        } else if name.ends_with("running_var") {
            (0.5, 1.5)
        } else {
            continue;
        };
        let t = var.as_tensor();
        let values: Vec<f32> = (0..t.elem_count())
            .map(|_| range.0 + range.1 * draws.next())
            .collect();
        let new = candle_core::Tensor::from_vec(values, t.shape(), t.device())?;
        var.set(&new.to_dtype(t.dtype())?)?;
    }
    Ok(())
}

/// `batch` crops of the case's dataset after the model's evaluation preprocessing, or noise
/// in [-0.5, 0.5] when there is no dataset; with what they are.
fn inputs(p: &mut Predictor, batch: usize) -> Result<(Vec<Sample>, String)> {
    if let Some(data) = kp_data::find_data_dir() {
        // The first faces only, half of them "validation" (the split does not matter here; a
        // split without validation faces would warn).
        p.config.limit = Some(batch);
        p.config.split = SplitKind::Random { val_fraction: 0.5 };
        let prepared = p.prepare(&data)?;
        let indices: Vec<usize> = EvalSplit::All.indices(&prepared);
        if indices.len() == batch {
            let samples = p.samples(&prepared, &indices)?;
            let what = format!("{} crops", prepared.dataset.name);
            return Ok((samples, what));
        }
    }
    let (w, h) = (p.model.width, p.model.height);
    let mut draws = Draws(12345);
    let samples = (0..batch)
        .map(|_| {
            let pixels = (0..w * h).map(|_| draws.next() - 0.5).collect();
            Sample {
                image: GrayF32::from_raw(w as u32, h as u32, pixels).expect("w * h pixels"),
                keypoints: Vec::new(),
                to_input: kp_augment::Affine::IDENTITY,
            }
        })
        .collect();
    Ok((samples, "noise".into()))
}

/// Little-endian f32 bytes.
fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// The manifest entry of one case (see `xtask/bench/onnx_check.py`).
#[derive(Serialize)]
struct ManifestCase {
    name: String,
    onnx: PathBuf,
    input: PathBuf,
    input_shape: [usize; 4],
    expected: PathBuf,
    expected_shape: [usize; 3],
}

/// One row of `onnx.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Case name.
    pub case: String,
    /// Registry name.
    pub model: String,
    /// Keypoints.
    pub keypoints: usize,
    /// Input `WxH`.
    pub input: String,
    /// Test-time mirroring in the graph.
    pub mirror: bool,
    /// Crops per batch.
    pub batch: usize,
    /// Which crops.
    pub inputs: String,
    /// Size of the ONNX file.
    pub file_kb: f64,
    /// `ok` or the checker's message.
    pub checker: String,
    /// Largest absolute coordinate kp predicted (input pixels).
    pub max_abs_px: f64,
    /// Largest difference of onnxruntime's keypoints from kp's (input pixels).
    pub ort_max_diff_px: Option<f64>,
    /// The same for OpenCV.
    pub opencv_max_diff_px: Option<f64>,
    /// Largest difference between kp's keypoints and kp's with candle's `conv2d` in place of
    /// kp's CPU convolution (input pixels).
    pub kp_candle_max_diff_px: f64,
    /// `ort_max_diff_px` in f32 ulps of `max_abs_px`.
    pub ort_ulps: Option<f64>,
    /// `opencv_max_diff_px` in f32 ulps of `max_abs_px`.
    pub opencv_ulps: Option<f64>,
    /// kp's median ms per batch.
    pub kp_ms: Option<f64>,
    /// onnxruntime's.
    pub ort_ms: Option<f64>,
    /// OpenCV's.
    pub opencv_ms: Option<f64>,
    /// `ort_ms / kp_ms`.
    pub ort_vs_kp: Option<f64>,
    /// Checker ok and both runtimes within the tolerance.
    pub pass: bool,
}

/// Runs `cargo xtask onnx`; the rows, once every file passed.
pub fn run(args: OnnxArgs) -> Result<Vec<Row>> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    kp_train::allocator::commit_lazily();
    let python = crate::venv::python_with(
        args.python.as_deref(),
        "kp-onnx-venv",
        &["onnx", "onnxruntime", "cv2", "numpy"],
        &["onnx", "onnxruntime", "opencv-python-headless", "numpy"],
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("building the thread pool")?;
    let mut manifest = Vec::new();
    let mut rows = Vec::new();
    for mut case in cases()? {
        let (samples, what) = inputs(&mut case.predictor, args.batch)?;
        let p = &case.predictor;
        let (w, h, k) = (p.model.width, p.model.height, p.model.model.num_keypoints());
        let file = args.out.join(format!("{}.onnx", case.name));
        let bytes = kp_train::export::write_onnx(p, &case.source, &file)
            .with_context(|| format!("exporting {}", case.name))?;
        let expected = pool.install(|| predict_samples(&p.model, &samples))?;
        // The same network through candle's own CPU convolution instead of kp's: how far two
        // correct f32 implementations inside kp already are apart (the rounding floor).
        kp_models::nn::conv::use_candle_conv_on_cpu(true);
        let candle = pool.install(|| predict_samples(&p.model, &samples));
        kp_models::nn::conv::use_candle_conv_on_cpu(false);
        let kp_candle_max_diff_px = expected
            .iter()
            .flatten()
            .zip(candle?.iter().flatten())
            .map(|(a, b)| f64::from((a.x - b.x).abs().max((a.y - b.y).abs())))
            .fold(0.0, f64::max);
        let kp_ms = (args.rounds > 0).then(|| {
            let times: Vec<f64> = (0..=args.rounds)
                .map(|_| {
                    let t0 = Instant::now();
                    pool.install(|| predict_samples(&p.model, &samples))
                        .map(|_| ())?;
                    Ok(t0.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<Result<_>>()?;
            Ok::<_, anyhow::Error>(kp_train::bench::median(&times[1..]))
        });
        let kp_ms = kp_ms.transpose()?;
        let input = args.out.join(format!("{}.input.f32", case.name));
        let out = args.out.join(format!("{}.kp.f32", case.name));
        let pixels = samples
            .iter()
            .flat_map(|s| s.image.as_raw().iter().copied());
        kp_fs::write_atomic(&input, &f32_bytes(pixels))?;
        let max_abs_px = expected
            .iter()
            .flatten()
            .map(|p| f64::from(p.x.abs().max(p.y.abs())))
            .fold(0.0, f64::max);
        let points = expected.iter().flatten().flat_map(|p| [p.x, p.y]);
        kp_fs::write_atomic(&out, &f32_bytes(points))?;
        manifest.push(ManifestCase {
            name: case.name.clone(),
            onnx: file,
            input,
            input_shape: [args.batch, 1, h, w],
            expected: out,
            expected_shape: [args.batch, k, 2],
        });
        rows.push(Row {
            case: case.name.clone(),
            model: p.config.model.to_string(),
            keypoints: k,
            input: format!("{w}x{h}"),
            mirror: p.model.mirror.is_some(),
            batch: args.batch,
            inputs: what,
            file_kb: bytes as f64 / 1e3,
            checker: String::new(),
            max_abs_px,
            kp_candle_max_diff_px,
            ort_max_diff_px: None,
            opencv_max_diff_px: None,
            ort_ulps: None,
            opencv_ulps: None,
            kp_ms,
            ort_ms: None,
            opencv_ms: None,
            ort_vs_kp: None,
            pass: false,
        });
        tracing::info!(case = %case.name, kb = bytes / 1000, "exported");
    }
    let manifest_path = args.out.join("manifest.json");
    let manifest_json = serde_json::json!({
        "threads": args.threads,
        "rounds": args.rounds,
        "cases": manifest,
    });
    kp_fs::write_atomic(&manifest_path, manifest_json.to_string().as_bytes())?;
    let script = crate::fetch::workspace_root().join("xtask/bench/onnx_check.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&manifest_path)
        .env("OMP_NUM_THREADS", args.threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the JSON {} printed", script.display()))?;
    let checked = report["cases"]
        .as_array()
        .context("no cases in the report")?;
    for (row, c) in rows.iter_mut().zip(checked) {
        row.checker = c["checker"].as_str().unwrap_or("missing").to_string();
        row.ort_max_diff_px = c["ort_max_diff"].as_f64();
        row.opencv_max_diff_px = c["opencv_max_diff"].as_f64();
        row.ort_ms = c["ort_ms"].as_f64();
        row.opencv_ms = c["opencv_ms"].as_f64();
        row.ort_vs_kp = row.ort_ms.zip(row.kp_ms).map(|(o, k)| o / k);
        let ulp = f32_ulp(row.max_abs_px);
        row.ort_ulps = row.ort_max_diff_px.map(|d| d / ulp);
        row.opencv_ulps = row.opencv_max_diff_px.map(|d| d / ulp);
        let within =
            |d: Option<f64>| d.is_some_and(|d| d <= args.tolerance || d <= args.ulps * ulp);
        row.pass =
            row.checker == "ok" && within(row.ort_max_diff_px) && within(row.opencv_max_diff_px);
    }
    write_results(&args.out, &rows, &report)?;
    let failed: Vec<String> = rows
        .iter()
        .zip(checked)
        .filter(|(r, _)| !r.pass)
        .map(|(r, c)| {
            let err = |key: &str| c[key].as_str().map(|e| format!(", {key}: {e}"));
            format!(
                "{} (checker: {}, onnxruntime {:?} px, OpenCV {:?} px{}{})",
                r.case,
                r.checker,
                r.ort_max_diff_px,
                r.opencv_max_diff_px,
                err("ort_error").unwrap_or_default(),
                err("opencv_error").unwrap_or_default()
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} exported models differ from kp by more than {} px and {} ulps, or fail the \
             checker: {}",
            failed.len(),
            rows.len(),
            args.tolerance,
            args.ulps,
            failed.join("; ")
        );
    }
    Ok(rows)
}

/// `onnx.json`, `onnx.csv` and `onnx.md` in `out`.
fn write_results(out: &Path, rows: &[Row], report: &serde_json::Value) -> Result<()> {
    let json = serde_json::json!({"rows": rows, "runtimes": report});
    kp_fs::write_atomic(
        out.join("onnx.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let opt = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    let sci = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1e}"));
    let mut csv = kp_viz::Table::new([
        "case",
        "model",
        "keypoints",
        "input",
        "mirror",
        "batch",
        "inputs",
        "file_kb",
        "checker",
        "max_abs_px",
        "kp_candle_max_diff_px",
        "ort_max_diff_px",
        "opencv_max_diff_px",
        "ort_ulps",
        "opencv_ulps",
        "kp_ms",
        "ort_ms",
        "opencv_ms",
        "ort_vs_kp",
        "pass",
    ]);
    let mut md = String::from(
        "| case | input | mirror | file | checker | onnxruntime max diff, px (ulps) | OpenCV max \
         diff, px (ulps) | kp vs kp with candle's conv, px | kp ms | onnxruntime ms | OpenCV ms \
         | onnxruntime / kp |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        csv.push_row([
            r.case.clone(),
            r.model.clone(),
            r.keypoints.to_string(),
            r.input.clone(),
            r.mirror.to_string(),
            r.batch.to_string(),
            r.inputs.clone(),
            format!("{:.1}", r.file_kb),
            r.checker.clone(),
            format!("{:.2}", r.max_abs_px),
            format!("{:.1e}", r.kp_candle_max_diff_px),
            sci(r.ort_max_diff_px),
            sci(r.opencv_max_diff_px),
            opt(r.ort_ulps, 1),
            opt(r.opencv_ulps, 1),
            opt(r.kp_ms, 2),
            opt(r.ort_ms, 2),
            opt(r.opencv_ms, 2),
            opt(r.ort_vs_kp, 2),
            r.pass.to_string(),
        ]);
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} KB | {} | {} ({}) | {} ({}) | {:.1e} | {} | {} | {} | {} |\n",
            r.case,
            r.input,
            if r.mirror { "yes" } else { "no" },
            r.file_kb,
            r.checker,
            sci(r.ort_max_diff_px),
            opt(r.ort_ulps, 1),
            sci(r.opencv_max_diff_px),
            opt(r.opencv_ulps, 1),
            r.kp_candle_max_diff_px,
            opt(r.kp_ms, 1),
            opt(r.ort_ms, 1),
            opt(r.opencv_ms, 1),
            opt(r.ort_vs_kp, 2),
        ));
    }
    kp_fs::write_atomic(out.join("onnx.csv"), csv.to_csv().as_bytes())?;
    kp_fs::write_atomic(out.join("onnx.md"), md.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exports every registered model and every ready model and runs them in onnxruntime and
    /// OpenCV (a venv under ~/.cache/kp-onnx-venv, made from PyPI on the first run).
    #[test]
    fn every_exported_model_matches_kp_in_onnxruntime_and_opencv() {
        let dir = tempfile::tempdir().unwrap();
        let args = OnnxArgs {
            out: dir.path().to_path_buf(),
            python: None,
            batch: 2,
            rounds: 0,
            threads: 2,
            tolerance: 1e-4,
            ulps: 16.0,
        };
        let rows = run(args).unwrap();
        assert_eq!(
            rows.len(),
            kp_models::ModelKind::ALL.len() + ReadyModel::ALL.len()
        );
        for kind in kp_models::ModelKind::ALL {
            assert!(
                rows.iter().any(|r| r.model == kind.name()),
                "{kind} not exported"
            );
        }
        assert!(rows.iter().all(|r| r.pass && r.checker == "ok"));
        let csv = std::fs::read_to_string(dir.path().join("onnx.csv")).unwrap();
        assert_eq!(csv.lines().count(), rows.len() + 1);
    }
}
