//! `cargo xtask bench`: training-step and inference timings of the study's models, data loading
//! and augmentation throughput, optionally side by side with PyTorch in the same invocation.
//!
//! A training step is forward + MSE loss + backward + Adam update on a fixed random batch (the
//! same definition as `xtask/bench/torch_bench.py`); inference is one forward pass in eval mode.
//! Each case reports the median over its iterations after warm-up. With `--rounds R` each case
//! is timed R times, kp then PyTorch in every round, and the table gives the medians over the
//! rounds; its ratio is the median of the rounds' `kp_ms / torch_ms` (the two sides of a ratio
//! always ran back to back, which matters on a machine whose speed drifts by tens of percent).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use kp_train::bench::{median, StepBench, StepKind};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Also time the same cases in PyTorch (CPU wheel from PyPI, installed into a venv on demand).
    #[arg(long)]
    against_torch: bool,
    /// Write DIR/bench.csv (case,kp_ms,torch_ms,ratio,opencv_ms,dlib_ms; ratio = kp over the
    /// case's peer: PyTorch, OpenCV for yunet, dlib for predict and, per face, dlib's shape
    /// predictor alone for the compact model's batch-1 cases) and DIR/bench.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only cases whose name contains one of these (comma separated), e.g. `nosetipnet_train_b1`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Fewer iterations per case (a smoke run, as in CI).
    #[arg(long)]
    quick: bool,
    /// Threads for both kp (rayon) and PyTorch.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Python with torch installed (default: a venv under ~/.cache/kp-torch-venv, made on demand).
    #[arg(long, env = "KP_TORCH_PYTHON")]
    python: Option<PathBuf>,
    /// Also time the detector case in OpenCV (`cv2.FaceDetectorYN` on the same ONNX file and
    /// photo; opencv-python-headless from PyPI, installed into a venv on demand).
    #[arg(long)]
    against_opencv: bool,
    /// Python with cv2 installed (default: a venv under ~/.cache/kp-opencv-venv, made on demand).
    #[arg(long, env = "KP_OPENCV_PYTHON")]
    opencv_python: Option<PathBuf>,
    /// Also time the predict case in dlib (HOG detector + 68-point shape predictor on the same
    /// photo, `xtask/bench/dlib_predict_bench.py`; needs a Python with dlib-bin and
    /// face-recognition-models, `--dlib-python`).
    #[arg(long)]
    against_dlib: bool,
    /// Python with dlib and face_recognition_models installed.
    #[arg(long, env = "KP_DLIB_PYTHON")]
    dlib_python: Option<PathBuf>,
    /// Also time the model cases with candle's own convolution (kp's path before its unfold +
    /// GEMM ops), as extra rows named `<case>_candle_conv`.
    #[arg(long)]
    baseline: bool,
    /// Datasets folder for the data-loading cases (default: KP_DATA_DIR or ../shared/datasets).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Rounds per case. With `--against-torch` every round times the case in kp and then in
    /// PyTorch, so both see the machine in the same state; the table gives the medians over
    /// rounds and the median of the per-round ratios (robust on a machine whose speed drifts).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// What a case times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Forward + loss + backward + Adam.
    Train,
    /// Forward pass in eval mode.
    Infer,
    /// Decode + resize + augment one image of a dataset with a kp-augment preset.
    Load,
    /// Face detection (the bundled YuNet, with its photo-level steps) on a 640x480 photo with
    /// one face (IMM's 01-1m.jpg), decoded once.
    Detect,
    /// All of `kp predict` on that photo after decoding: detection, the calibrated box and the
    /// ready 68-point model with test-time mirroring (`Landmarker::landmarks`): the ResNet
    /// (`predict`) or the compact one (`predict_compact`; `realtime_compact`: detection on a
    /// 320 px copy and no mirroring, a video frame's settings).
    Predict,
}

/// One benchmark case.
#[derive(Debug, Clone)]
struct Case {
    model: &'static str,
    batch: usize,
    kind: Kind,
    iters: usize,
    /// Threads of the case's own pool (`None`: `--threads`); named in the case.
    threads: Option<usize>,
    /// The compact model's width multiplier (1 for every other model); named in the case.
    channel_multiplier: f64,
}

impl Case {
    fn name(&self) -> String {
        match self.kind {
            Kind::Train | Kind::Infer => self.step_bench().name(),
            Kind::Load => format!("load_augment_{}", self.model),
            Kind::Detect | Kind::Predict => format!("{}_640x480", self.model),
        }
    }

    /// The kp-train timing of a model case.
    fn step_bench(&self) -> StepBench {
        StepBench {
            model: self
                .model
                .parse()
                .expect("train and infer cases name registry models"),
            channel_multiplier: self.channel_multiplier,
            batch: self.batch,
            kind: match self.kind {
                Kind::Train => StepKind::Train,
                _ => StepKind::Infer,
            },
            warmup: WARMUP,
            iters: self.iters,
            threads: self.threads,
            input_size: None,
        }
    }

    /// Whether dlib's shape predictor alone (per face, on the predict case's face) is this
    /// case's peer: the compact model's batch-1 inference.
    fn dlib_shape_peer(&self) -> bool {
        self.model == "compact" && self.kind == Kind::Infer && self.batch == 1
    }

    /// The PyTorch script's case spec, for model cases (`model:batch:mode:iters[:threads]`;
    /// `torch_bench.py` has the same architectures).
    fn torch_spec(&self) -> Option<String> {
        let mode = match self.kind {
            Kind::Train => "train",
            Kind::Infer => "infer",
            Kind::Load | Kind::Detect | Kind::Predict => return None,
        };
        let threads = self.threads.map_or(String::new(), |n| format!(":{n}"));
        // The model as kp's case names it (`compact-x1.5`): torch_bench.py knows both.
        let model = self.step_bench().name();
        let model = model.split('_').next().unwrap_or(self.model);
        Some(format!(
            "{model}:{}:{mode}:{}{threads}",
            self.batch, self.iters
        ))
    }
}

/// The study's models at its batch sizes, inference, and data loading.
fn cases(quick: bool) -> Vec<Case> {
    let it = |full: usize| if quick { 2 } else { full };
    let c = |model, batch, kind, iters| Case {
        model,
        batch,
        kind,
        iters: it(iters),
        threads: None,
        channel_multiplier: 1.0,
    };
    let compact = |batch, threads, iters| Case {
        threads: Some(threads),
        ..c("compact", batch, Kind::Infer, iters)
    };
    // The ready model `compact-wide` (models/landmarks/ibug68-compact-x1.5).
    let wide = |batch, threads, iters| Case {
        channel_multiplier: 1.5,
        ..compact(batch, threads, iters)
    };
    vec![
        c("nosetipnet", 1, Kind::Train, 50),
        c("nosetipnet", 4, Kind::Train, 30),
        c("nosetipnet", 32, Kind::Train, 15),
        c("facekeypointnet", 2, Kind::Train, 15),
        c("resnet18", 16, Kind::Train, 4),
        c("nosetipnet", 1, Kind::Infer, 50),
        c("facekeypointnet", 2, Kind::Infer, 20),
        c("resnet18", 16, Kind::Infer, 5),
        compact(1, 1, 200),
        compact(1, 2, 200),
        compact(64, 1, 5),
        compact(64, 2, 5),
        wide(1, 1, 200),
        wide(1, 2, 200),
        wide(64, 1, 5),
        wide(64, 2, 5),
        c("face", 1, Kind::Load, 24),
        c("ibug", 1, Kind::Load, 48),
        c("yunet", 1, Kind::Detect, 50),
        c("predict", 1, Kind::Predict, 30),
        c("predict_compact", 1, Kind::Predict, 30),
        c("realtime_compact", 1, Kind::Predict, 30),
    ]
}

/// One result row.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    case: String,
    kp_ms: Option<f64>,
    torch_ms: Option<f64>,
    ratio: Option<f64>,
    opencv_ms: Option<f64>,
    dlib_ms: Option<f64>,
    images_per_s: Option<f64>,
    note: Option<String>,
}

/// Untimed steps before each case's timed ones, in kp and (passed as `--warmup`) in PyTorch
/// alike, so both are timed from the same step on (ResNet18's kp cases used to warm up once
/// against PyTorch's three). kp's first step pays for its buffers' first touch (about 1,330 page
/// faults, the same count after 1 or 9 steps: perf stat); the later steps reuse them.
const WARMUP: usize = 3;

/// Median milliseconds of one model case in kp (candle, CPU).
fn time_model(case: &Case) -> Result<f64> {
    if !matches!(case.kind, Kind::Train | Kind::Infer) {
        bail!("{} is not a model case", case.name())
    }
    Ok(case.step_bench().run(&Device::Cpu)?.median_ms())
}

/// Median milliseconds per image to decode, resize and augment faces of a real dataset.
fn time_load(case: &Case, data: &Path) -> Result<f64> {
    use kp_train::augment::AugmentPreset;
    let (dataset, preset) = match case.model {
        "face" => (
            kp_data::load_imm(&data.join("imm_face_db"))?,
            AugmentPreset::ShiftRotateJitter,
        ),
        "ibug" => (
            kp_data::load_dlib_xml(
                &data.join("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml"),
            )?,
            AugmentPreset::Ibug,
        ),
        other => bail!("no data-loading case {other}"),
    };
    // The study's presets, kp-augment's own and the TOML recipes in kp-train alike.
    let pipeline = kp_augment::Pipeline::new(preset.config()?)?;
    let mut times = Vec::new();
    for (i, face) in dataset.faces.iter().take(case.iters).enumerate() {
        let t0 = Instant::now();
        let img = kp_data::load_gray(&face.image)?;
        let out = pipeline.apply(&img, &face.keypoints, face.bbox, i as u64)?;
        std::hint::black_box(out.keypoints.len());
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    if times.is_empty() {
        bail!("{}: no faces", dataset.name);
    }
    Ok(median(&times))
}

/// The detector case's photo: 640x480, one face.
fn detect_photo(data: &Path) -> PathBuf {
    data.join("imm_face_db/01-1m.jpg")
}

/// Median milliseconds of [`Kind::Detect`]: `FaceDetector::detect` on the decoded photo.
fn time_detect(case: &Case, data: &Path) -> Result<f64> {
    let photo = kp_data::loading::load_rgb(&detect_photo(data))?;
    let det = kp_train::detect::FaceDetector::bundled(
        &Device::Cpu,
        kp_train::detect::DetectConfig::default(),
    )?;
    let mut times = Vec::new();
    for i in 0..WARMUP + case.iters {
        let t0 = Instant::now();
        let faces = det.detect(&photo)?;
        std::hint::black_box(faces.len());
        if i >= WARMUP {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(&times))
}

/// Median milliseconds of [`Kind::Predict`]: `Landmarker::landmarks` with the ready model on
/// the decoded photo, which must give one face.
fn time_predict(case: &Case, data: &Path) -> Result<f64> {
    let path = detect_photo(data);
    let photo = kp_data::loading::load_rgb(&path)?;
    use kp_train::pretrained::ReadyModel;
    let lm = match case.model {
        "predict_compact" => kp_train::landmarker::Landmarker::ready(ReadyModel::Compact, None)?,
        // A video frame's settings: detection on a 320 px copy, no test-time mirroring.
        "realtime_compact" => kp_train::landmarker::Landmarker::from_predictor(
            ReadyModel::Compact
                .predictor(None)?
                .with_test_time_mirror(false)?,
            kp_train::detect::DetectConfig {
                max_side: 320,
                ..Default::default()
            },
        )?,
        _ => kp_train::landmarker::Landmarker::ready(ReadyModel::Resnet18, None)?,
    };
    let mut times = Vec::new();
    for i in 0..WARMUP + case.iters {
        let t0 = Instant::now();
        let faces = lm.landmarks(&photo)?;
        if faces.len() != 1 {
            bail!(
                "{}: {} faces found, the case needs one",
                path.display(),
                faces.len()
            );
        }
        std::hint::black_box(faces[0].keypoints.len());
        if i >= WARMUP {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(&times))
}

/// A Python with cv2: `--opencv-python`, or a venv under the cache folder made on demand.
fn opencv_python(args: &BenchArgs) -> Result<PathBuf> {
    crate::venv::python_with(
        args.opencv_python.as_deref(),
        "kp-opencv-venv",
        &["cv2"],
        &["opencv-python-headless"],
    )
}

/// Runs a peer's timing script `xtask/bench/SCRIPT` with `python` and `args`, and reads the
/// `ms` of the one JSON object it prints (`opencv_bench.py`, `dlib_predict_bench.py`).
fn peer_ms(python: &Path, script: &str, args: &[&std::ffi::OsStr]) -> Result<f64> {
    peer_field(python, script, args, "ms")
}

/// [`peer_ms`] reading the number `field` instead.
fn peer_field(python: &Path, script: &str, args: &[&std::ffi::OsStr], field: &str) -> Result<f64> {
    let path = crate::fetch::workspace_root()
        .join("xtask/bench")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), path.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", path.display(), out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("{script} printed a non-JSON line: {line}"))?;
    v[field]
        .as_f64()
        .with_context(|| format!("{script} printed no {field}: {line}"))
}

/// OpenCV's median ms on the detector case (`xtask/bench/opencv_bench.py`).
fn opencv_time(args: &BenchArgs, case: &Case, data: &Path) -> Result<f64> {
    let model = crate::fetch::workspace_root().join("models/yunet/yunet_n_dynamic.onnx");
    let (name, threads, iters) = (
        case.name(),
        args.threads.to_string(),
        case.iters.to_string(),
    );
    let photo = detect_photo(data);
    peer_ms(
        &opencv_python(args)?,
        "opencv_bench.py",
        &[
            "--case".as_ref(),
            name.as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--iters".as_ref(),
            iters.as_ref(),
            "--image".as_ref(),
            photo.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
        ],
    )
}

/// dlib's median ms on the predict case (`xtask/bench/dlib_predict_bench.py`): the whole
/// photo (`ms`), or with `shape_only` its shape predictor per face (`shape_ms`).
fn dlib_time(args: &BenchArgs, case: &Case, data: &Path, shape_only: bool) -> Result<f64> {
    let python = args.dlib_python.clone().context(
        "--against-dlib needs --dlib-python (or KP_DLIB_PYTHON): a Python with \
         `pip install dlib-bin face-recognition-models`",
    )?;
    let (name, iters) = (case.name(), case.iters.to_string());
    let photo = detect_photo(data);
    peer_field(
        &python,
        "dlib_predict_bench.py",
        &[
            "--case".as_ref(),
            name.as_ref(),
            "--iters".as_ref(),
            iters.as_ref(),
            "--image".as_ref(),
            photo.as_os_str(),
        ],
        if shape_only { "shape_ms" } else { "ms" },
    )
}

/// A Python with torch: `--python`, or the venv under the cache folder, created on demand.
fn torch_python(args: &BenchArgs) -> Result<PathBuf> {
    if let Some(p) = &args.python {
        return Ok(p.clone());
    }
    let (venv, python) = crate::venv::cached("kp-torch-venv")?;
    let has_torch = |p: &Path| crate::venv::imports(p, &["torch"]);
    if has_torch(&python) {
        return Ok(python);
    }
    tracing::info!(
        "installing torch (CPU wheel) into {}; this downloads ~200 MB once",
        venv.display()
    );
    crate::venv::make(&venv)?;
    // PyTorch's CPU-only index first (~200 MB); where only PyPI is reachable, PyPI's default
    // wheel (the CUDA build with its nvidia-* dependencies, a few GB, runs fine on a CPU).
    let indexes: [&[&str]; 2] = [
        &["--index-url", "https://download.pytorch.org/whl/cpu"],
        &[],
    ];
    for index in indexes {
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "torch"])
            .args(index)
            .status()
            .context("running pip install torch")?;
        if status.success() && has_torch(&python) {
            return Ok(python);
        }
        tracing::warn!("pip install torch {} failed", index.join(" "));
    }
    bail!("could not install torch into {}", venv.display())
}

/// Runs the PyTorch script on `cases`; case name → median ms.
fn torch_times(args: &BenchArgs, cases: &[Case]) -> Result<Vec<(String, f64)>> {
    let specs: Vec<String> = cases.iter().filter_map(Case::torch_spec).collect();
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let python = torch_python(args)?;
    let script = crate::fetch::workspace_root().join("xtask/bench/torch_bench.py");
    let out = Command::new(&python)
        .args(["-W", "ignore"])
        .arg(&script)
        .args(["--threads", &args.threads.to_string()])
        .args(["--warmup", &WARMUP.to_string(), "--cases"])
        .arg(specs.join(","))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let mut times = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("torch_bench.py printed a non-JSON line: {line}"))?;
        let (Some(case), Some(ms)) = (v["case"].as_str(), v["ms"].as_f64()) else {
            bail!("torch_bench.py printed an unexpected object: {line}");
        };
        times.push((case.to_string(), ms));
    }
    Ok(times)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn write_outputs(dir: &Path, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::from("case,kp_ms,torch_ms,ratio,opencv_ms,dlib_ms\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.4}"));
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.case,
            opt(r.kp_ms),
            opt(r.torch_ms),
            opt(r.ratio),
            opt(r.opencv_ms),
            opt(r.dlib_ms)
        ));
    }
    kp_fs::write_atomic(dir.join("bench.csv"), csv.as_bytes())?;
    let json = serde_json::to_vec_pretty(rows)?;
    kp_fs::write_atomic(dir.join("bench.json"), &json)?;
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<()> {
    // Both sides get the same number of threads.
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .ok();
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let selected: Vec<Case> = cases(args.quick)
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.name().contains(o)))
        .collect();
    if selected.is_empty() {
        bail!("--only {:?} selects no case", args.only);
    }
    if selected
        .iter()
        .all(|c| !matches!(c.kind, Kind::Train | Kind::Load))
    {
        // Prediction cases only: mimalloc's setting for kp's predicting commands.
        kp_train::allocator::commit_lazily();
    }
    let data = args
        .data
        .clone()
        .or_else(kp_data::find_data_dir)
        .filter(|d| d.is_dir());
    let mut rows = Vec::new();
    for case in &selected {
        let name = match case.kind {
            Kind::Detect | Kind::Predict => format!("{}_{}thread", case.name(), args.threads),
            _ => case.name(),
        };
        let images = match case.kind {
            Kind::Load | Kind::Detect | Kind::Predict => 1,
            _ => case.batch,
        };
        let mut kp = Vec::new();
        let mut torch = Vec::new();
        let mut opencv = Vec::new();
        let mut dlib = Vec::new();
        let mut note = None;
        for round in 0..args.rounds {
            let ms = match case.kind {
                Kind::Load => match &data {
                    Some(d) => Some(time_load(case, d)?),
                    None => {
                        note = Some("no datasets folder".to_string());
                        None
                    }
                },
                Kind::Detect => match &data {
                    Some(d) => Some(time_detect(case, d)?),
                    None => {
                        note = Some("no datasets folder".to_string());
                        None
                    }
                },
                Kind::Predict => match &data {
                    Some(d) => Some(time_predict(case, d)?),
                    None => {
                        note = Some("no datasets folder".to_string());
                        None
                    }
                },
                _ => Some(time_model(case)?),
            };
            if let (true, Kind::Detect, Some(d)) = (args.against_opencv, case.kind, &data) {
                let cv = opencv_time(&args, case, d)?;
                tracing::info!("{name} (round {}): OpenCV {cv:.2} ms", round + 1);
                opencv.push((cv, ms));
            }
            let dlib_peer = case.kind == Kind::Predict || case.dlib_shape_peer();
            if let (true, true, Some(d)) = (args.against_dlib, dlib_peer, &data) {
                let dl = dlib_time(&args, case, d, case.kind != Kind::Predict)?;
                tracing::info!("{name} (round {}): dlib {dl:.2} ms", round + 1);
                dlib.push((dl, ms));
            }
            let torch_ms = if args.against_torch
                && !matches!(case.kind, Kind::Load | Kind::Detect | Kind::Predict)
            {
                torch_times(&args, std::slice::from_ref(case))?
                    .into_iter()
                    .find(|(c, _)| *c == name)
                    .map(|(_, ms)| ms)
            } else {
                None
            };
            tracing::info!(
                "{name} (round {}/{}): kp {} ms, torch {} ms",
                round + 1,
                args.rounds,
                fmt(ms, 2),
                fmt(torch_ms, 2)
            );
            kp.extend(ms);
            torch.extend(torch_ms.map(|t| (t, ms)));
        }
        let kp_ms = (!kp.is_empty()).then(|| median(&kp));
        // The ratio is against the case's peer: PyTorch for the models, OpenCV for detection.
        let peer = match case.kind {
            Kind::Detect => &opencv,
            Kind::Predict => &dlib,
            _ if case.dlib_shape_peer() => &dlib,
            _ => &torch,
        };
        let ratios: Vec<f64> = peer.iter().filter_map(|&(t, k)| k.map(|k| k / t)).collect();
        rows.push(Row {
            case: name,
            kp_ms,
            torch_ms: (!torch.is_empty())
                .then(|| median(&torch.iter().map(|t| t.0).collect::<Vec<_>>())),
            ratio: (!ratios.is_empty()).then(|| median(&ratios)),
            opencv_ms: (!opencv.is_empty())
                .then(|| median(&opencv.iter().map(|t| t.0).collect::<Vec<_>>())),
            dlib_ms: (!dlib.is_empty())
                .then(|| median(&dlib.iter().map(|t| t.0).collect::<Vec<_>>())),
            images_per_s: kp_ms.map(|ms| images as f64 * 1e3 / ms),
            note,
        });
    }
    if args.baseline {
        kp_models::nn::conv::use_candle_conv_on_cpu(true);
        for case in selected
            .iter()
            .filter(|c| !matches!(c.kind, Kind::Load | Kind::Detect | Kind::Predict))
        {
            let name = format!("{}_candle_conv", case.name());
            let ms = time_model(case)?;
            tracing::info!("{name}: {ms:.2} ms");
            rows.push(Row {
                case: name,
                kp_ms: Some(ms),
                torch_ms: None,
                ratio: None,
                opencv_ms: None,
                dlib_ms: None,
                images_per_s: Some(case.batch as f64 * 1e3 / ms),
                note: Some("candle's conv2d (before)".into()),
            });
        }
        kp_models::nn::conv::use_candle_conv_on_cpu(false);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "case", "kp ms", "torch ms", "opencv ms", "dlib ms", "ratio", "kp img/s"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<36} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
            r.case,
            fmt(r.kp_ms, 2),
            fmt(r.torch_ms, 2),
            fmt(r.opencv_ms, 2),
            fmt(r.dlib_ms, 2),
            fmt(r.ratio, 2),
            fmt(r.images_per_s, 1)
        )?;
    }
    if let Some(dir) = &args.out {
        write_outputs(dir, &rows)?;
        writeln!(out, "wrote {}", dir.join("bench.csv").display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_match_the_torch_script() {
        let c = &cases(true)[0];
        assert_eq!(c.name(), "nosetipnet_train_b1");
        assert_eq!(c.torch_spec().unwrap(), "nosetipnet:1:train:2");
        assert!(cases(false).iter().any(|c| c.name() == "load_augment_ibug"));
        assert!(cases(false).iter().any(|c| c.name() == "yunet_640x480"));
        assert!(cases(false).iter().any(|c| c.name() == "predict_640x480"));
        let wide = cases(false)
            .into_iter()
            .find(|c| c.name() == "compact-x1.5_infer_b64_2threads")
            .expect("the wide ready model's batch-64 case");
        assert_eq!(wide.torch_spec().unwrap(), "compact-x1.5:64:infer:5:2");
        // Every model a case hands to torch_bench.py is one of its MODELS.
        let script = std::fs::read_to_string(
            crate::fetch::workspace_root().join("xtask/bench/torch_bench.py"),
        )
        .unwrap();
        for case in cases(false) {
            if let Some(spec) = case.torch_spec() {
                let model = spec.split(':').next().unwrap();
                assert!(script.contains(&format!("\"{model}\": (")), "{model}");
            }
        }
    }

    #[test]
    fn every_data_loading_case_times_real_faces() {
        // The ibug case named a preset that had moved to kp-train's recipes and failed at run
        // time, ending the whole benchmark; each load case runs here on a few faces.
        let data = kp_data::test_data_dir();
        for case in cases(true).iter().filter(|c| matches!(c.kind, Kind::Load)) {
            let ms = time_load(case, &data).unwrap_or_else(|e| panic!("{}: {e:#}", case.name()));
            assert!(ms.is_finite() && ms >= 0.0, "{}: {ms}", case.name());
        }
    }
}
