//! `cargo xtask versus-dlib`: kp beside dlib's 68-point shape predictor on the same 300-W
//! faces, in one command (the accuracy issue's comparison and its CED curves).
//!
//! kp's model (a finished 300-W run, or a ready model) predicts the 80/20 split's 265
//! validation faces; `xtask/bench/dlib_landmarks.py` gives dlib's shape predictor
//! (`dlib-bin` + `face-recognition-models` from PyPI) the same faces and scores both systems
//! there with one formula (NME over the outer eye corners, failure rate and AUC at 8% and at
//! 10%). Three comparisons:
//!
//! - `dataset`: the dataset's boxes for both;
//! - `yunet`: the bundled YuNet's boxes, calibrated to the 300-W crop convention, for both;
//! - `own-detector`: kp with YuNet's boxes, dlib with its own HOG detector's (upsampled once,
//!   the convention its model was trained with); faces HOG misses are left out of both rows.
//!
//! dlib's model was trained on all of 300-W, very likely on these faces too; a run trained on
//! the 80/20 split (`kp train --task ibug ... --val-fraction 0.2`) never saw them, and neither
//! did the ready models (both trained on the split's 1,061 training faces). A model trained on
//! all faces (`cargo xtask pretrained --all-faces`) saw them: compare its held-out run instead.
//!
//! Writes into `--out`: `faces_dataset.jsonl` and `faces_yunet.jsonl` (kp's faces with each
//! kind of box, as `kp eval --faces` writes them); per comparison NAME `dlib_NAME.json` (the
//! script's table), `errors_NAME.csv` (`image,kp_nme,dlib_nme`, one row per face) and
//! `ced_NAME.png` (both CED curves); and
//! `versus_dlib.json`: `{"model", "comparisons": [{"name", "kp_boxes", "dlib_boxes",
//! "faces", "missed", "rows": [{"system", "nme", "fr_8", "auc_8", "fr_10", "auc_10", "mean_px"}]}]}`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use kp_train::detect::{BoxCalibration, DetectConfig, FaceDetector};
use kp_train::predict::{EvalSplit, FaceRecord, Predictor};
use kp_train::pretrained::ReadyModel;
use serde::{Deserialize, Serialize};

/// Arguments of `cargo xtask versus-dlib`.
#[derive(Debug, Args)]
pub struct VersusDlibArgs {
    /// A finished 300-W run folder (default: the ready model `--ready`).
    #[arg(long)]
    run: Option<PathBuf>,
    /// The ready model to compare when no `--run` is given.
    #[arg(long, value_enum, default_value_t)]
    ready: ReadyModel,
    /// The 300-W crops' XML or a datasets folder holding them (default: the run's data, or
    /// KP_DATA_DIR for a ready model).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A Python with dlib-bin and face-recognition-models.
    #[arg(long, env = "KP_DLIB_PYTHON")]
    dlib_python: PathBuf,
    /// The output folder.
    #[arg(long, default_value = "versus-dlib")]
    out: PathBuf,
}

/// One system's row, as `dlib_landmarks.py --json` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemRow {
    /// `kp` or `dlib`.
    pub system: String,
    /// Mean NME over the faces.
    pub nme: f64,
    /// Share of faces above 8% NME.
    pub fr_8: f64,
    /// Area under the CED up to 8%, normalised.
    pub auc_8: f64,
    /// Share of faces above 10% NME (absent from tables written before it was added).
    #[serde(default)]
    pub fr_10: Option<f64>,
    /// Area under the CED up to 10%, normalised.
    pub auc_10: f64,
    /// Mean point error in original pixels.
    pub mean_px: f64,
}

/// The script's table for one comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScriptTable {
    faces: usize,
    missed: usize,
    rows: Vec<SystemRow>,
}

/// One comparison of `versus_dlib.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// `dataset`, `yunet` or `own-detector`.
    pub name: &'static str,
    /// The boxes kp's model was given.
    pub kp_boxes: &'static str,
    /// The boxes dlib's model was given.
    pub dlib_boxes: &'static str,
    /// Faces scored (for both systems).
    pub faces: usize,
    /// Faces dlib's HOG detector did not find (left out of both rows).
    pub missed: usize,
    /// kp's row, then dlib's.
    pub rows: Vec<SystemRow>,
}

/// Runs `cargo xtask versus-dlib`.
pub fn run(args: VersusDlibArgs) -> Result<()> {
    let (mut predictor, label) = match &args.run {
        Some(run) => (
            Predictor::open(run, None).with_context(|| format!("opening {}", run.display()))?,
            run.display().to_string(),
        ),
        None => (
            args.ready.predictor(None)?,
            format!("ready:{}", args.ready.name()),
        ),
    };
    if predictor.config.task != kp_train::config::Task::Ibug {
        bail!("{label}: not a 300-W (--task ibug) model");
    }
    // The 80/20 split's 265 validation faces, whatever split the weights were trained with.
    predictor.config.split = kp_train::config::SplitKind::Random { val_fraction: 0.2 };
    let data = match (&args.data, &args.run) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) => predictor.config.data.clone(),
        (None, None) => kp_data::find_data_dir()
            .filter(|d| d.is_dir())
            .context("no datasets folder: pass --data or set KP_DATA_DIR")?,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let split = EvalSplit::Val;
    let mut prepared = predictor.prepare(&data)?;

    let ev = predictor.evaluate_prepared(&prepared, split)?;
    let dataset_faces = args.out.join("faces_dataset.jsonl");
    FaceRecord::write_jsonl(&dataset_faces, &FaceRecord::of(&prepared, split, &ev))?;
    let detector = FaceDetector::bundled(&predictor.model.device, DetectConfig::default())?;
    let (found, of) =
        predictor.use_detector_boxes(&mut prepared, split, &detector, &BoxCalibration::ibug())?;
    tracing::info!(found, of, "YuNet boxes (the others keep the dataset's)");
    let ev = predictor.evaluate_prepared(&prepared, split)?;
    let yunet_faces = args.out.join("faces_yunet.jsonl");
    FaceRecord::write_jsonl(&yunet_faces, &FaceRecord::of(&prepared, split, &ev))?;

    const YUNET: &str = "YuNet, calibrated";
    // (comparison, kp's faces, kp's boxes, the script's --dlib-boxes, dlib's boxes)
    let plan = [
        ("dataset", &dataset_faces, "dataset", "same", "dataset"),
        ("yunet", &yunet_faces, YUNET, "same", YUNET),
        (
            "own-detector",
            &yunet_faces,
            YUNET,
            "hog",
            "dlib's HOG detector (upsampled once)",
        ),
    ];
    let mut comparisons = Vec::new();
    for (name, faces, kp_boxes, dlib_flag, dlib_boxes) in plan {
        let c = compare(&args, name, faces, dlib_flag)?;
        comparisons.push(Comparison {
            name,
            kp_boxes,
            dlib_boxes,
            faces: c.faces,
            missed: c.missed,
            rows: c.rows,
        });
    }

    println!("{label}, the 80/20 split's validation faces ({of} faces, YuNet found {found})");
    println!(
        "| comparison | kp's boxes | dlib's boxes | faces | system | NME | FR@8% | AUC@8% | \
         FR@10% | AUC@10% |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for c in &comparisons {
        for r in &c.rows {
            println!(
                "| {} | {} | {} | {} | {} | {:.3}% | {:.2}% | {:.4} | {:.2}% | {:.4} |",
                c.name,
                c.kp_boxes,
                c.dlib_boxes,
                c.faces,
                r.system,
                r.nme * 100.0,
                r.fr_8 * 100.0,
                r.auc_8,
                r.fr_10.unwrap_or(f64::NAN) * 100.0,
                r.auc_10
            );
        }
    }
    let json = serde_json::json!({ "model": label, "comparisons": comparisons });
    kp_train::atomic::write_json(&args.out.join("versus_dlib.json"), &json)?;
    println!("wrote {}", args.out.join("versus_dlib.json").display());
    Ok(())
}

/// Runs the script on kp's faces in `faces_path` with `dlib_boxes` (`same` or `hog`), draws
/// the CED of both systems' per-face errors; returns the script's table.
fn compare(
    args: &VersusDlibArgs,
    name: &str,
    faces_path: &Path,
    dlib_boxes: &str,
) -> Result<ScriptTable> {
    let out = |f: String| args.out.join(f);
    let (table_path, errors_path) = (
        out(format!("dlib_{name}.json")),
        out(format!("errors_{name}.csv")),
    );
    let script = crate::fetch::workspace_root().join("xtask/bench/dlib_landmarks.py");
    let status = Command::new(&args.dlib_python)
        .arg(&script)
        .arg(faces_path)
        .arg("--json")
        .arg(&table_path)
        .arg("--errors")
        .arg(&errors_path)
        .args(["--dlib-boxes", dlib_boxes])
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| {
            format!(
                "running {} {} (a Python with `pip install dlib-bin face-recognition-models`)",
                args.dlib_python.display(),
                script.display()
            )
        })?;
    if !status.success() {
        bail!(
            "{} failed on {} ({status})",
            script.display(),
            faces_path.display()
        );
    }
    let table: ScriptTable = kp_train::atomic::read_json(&table_path)?;
    let (kp, dlib) = read_errors(&errors_path)?;
    let image = kp_train::figures::ced_image(&[("kp".into(), kp), ("dlib".into(), dlib)])?;
    let png = out(format!("ced_{name}.png"));
    kp_viz::save_png(&image, &png)?;
    Ok(table)
}

/// The `kp_nme` and `dlib_nme` columns of the script's `--errors` CSV.
fn read_errors(path: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut kp, mut dlib) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().skip(1) {
        // The image name may hold commas: the two numbers are the last two fields.
        let mut fields = line.rsplitn(3, ',');
        let parse = |f: Option<&str>| -> Result<f64> {
            f.and_then(|v| v.trim().parse().ok()).with_context(|| {
                format!(
                    "{}: line {}: not `image,kp_nme,dlib_nme`",
                    path.display(),
                    i + 1
                )
            })
        };
        let d = parse(fields.next())?;
        kp.push(parse(fields.next())?);
        dlib.push(d);
    }
    Ok((kp, dlib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_csv_reads_by_its_last_two_columns_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        std::fs::write(
            &path,
            "image,kp_nme,dlib_nme\na,b.jpg,0.04,0.03\nc.png,0.05,0.06\n",
        )
        .unwrap();
        assert_eq!(
            read_errors(&path).unwrap(),
            (vec![0.04, 0.05], vec![0.03, 0.06])
        );
        std::fs::write(&path, "image,kp_nme,dlib_nme\nc.png,0.05\n").unwrap();
        let e = format!("{:#}", read_errors(&path).unwrap_err());
        assert!(e.contains("e.csv: line 2"), "{e}");
    }
}
