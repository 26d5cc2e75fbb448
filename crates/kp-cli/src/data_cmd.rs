//! `kp data ...`: dataset inspection.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Count images, faces, points per face, image sizes and split sizes of a dataset
    /// (IMM folder, dlib XML file or folder of .pts files; the format is detected).
    Summary {
        /// The dataset.
        path: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Leave out bad entries (and report them) instead of failing.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Decode every image of a dataset and check each face against its image (the image
    /// decodes and is not tiny, the points lie on it, the box covers it): one line per problem,
    /// naming the image; exits non-zero when there is any. Run it before an hour of training.
    Check {
        /// The dataset.
        path: PathBuf,
        /// Print one JSON object: {"images", "faces", "decoded", "problems": [LINE, ...]}.
        #[arg(long)]
        json: bool,
    },
    /// Fit the map from the face detector's boxes to a dataset's face boxes (the convention a
    /// model trained on it expects), on every face of the dataset that has a box; prints the
    /// calibration as JSON and writes it to --out.
    Calibrate {
        /// A dataset whose faces have boxes (e.g. a dlib XML).
        path: PathBuf,
        /// JSON file to write (e.g. models/yunet/box_calibration_ibug.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fit the map from the box around each face's labelled keypoints to its box instead
        /// (no detector; what `--refine` re-frames a face with after a first prediction, e.g.
        /// models/landmarks/box_from_points_ibug.json).
        #[arg(long)]
        from_points: bool,
        #[command(flatten)]
        detector: crate::detect_cmd::DetectorArgs,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Summary {
            path,
            json,
            skip_bad,
        } => {
            let (dataset, skipped) = kp_data::format::load_dataset_with(&path, skip_bad)
                .with_context(|| format!("loading {}", path.display()))?;
            let summary = kp_data::summary::Summary::compute(&dataset)?;
            let report = kp_data::SkipReport::new(&skipped);
            if json {
                let mut v = serde_json::to_value(&summary)?;
                if skip_bad {
                    v["skipped"] = serde_json::json!({
                        "total": report.total(),
                        "by_kind": report.by_kind,
                        "messages": report.messages,
                    });
                }
                println!("{v}");
            } else {
                println!("{summary}");
                if skip_bad {
                    println!("{report}");
                    for m in &report.messages {
                        println!("  {m}");
                    }
                }
            }
            Ok(())
        }
        DataCommand::Check { path, json } => {
            let dataset = kp_data::format::load_dataset(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            let report = kp_data::check::check_dataset(&dataset);
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for p in &report.problems {
                    println!("{p}");
                }
                println!(
                    "{}: {} faces on {} images, {} decoded, {} problems",
                    path.display(),
                    report.faces,
                    report.images,
                    report.decoded,
                    report.problems.len()
                );
            }
            if !report.is_clean() {
                anyhow::bail!(
                    "{}: {} problems (listed above)",
                    path.display(),
                    report.problems.len()
                );
            }
            Ok(())
        }
        DataCommand::Calibrate {
            path,
            out,
            from_points: true,
            ..
        } => calibrate_from_points(&path, out.as_deref()),
        DataCommand::Calibrate {
            path,
            out,
            detector,
            ..
        } => calibrate(&path, out.as_deref(), &detector),
    }
}

fn calibrate(
    path: &std::path::Path,
    out: Option<&std::path::Path>,
    detector: &crate::detect_cmd::DetectorArgs,
) -> Result<()> {
    use kp_train::detect::{best_match, BoxCalibration, FaceDetector};
    use rayon::prelude::*;
    let dataset = kp_data::format::load_dataset(path)
        .with_context(|| format!("loading {}", path.display()))?;
    let det = FaceDetector::bundled(&candle_core::Device::Cpu, detector.config())?;
    let boxed: Vec<_> = dataset.faces.iter().filter(|f| f.bbox.is_some()).collect();
    let bar = indicatif::ProgressBar::new(boxed.len() as u64);
    let pairs = boxed
        .par_iter()
        .map(|f| {
            let rgb = kp_data::loading::load_rgb(&f.image)?;
            let b = f.bbox.expect("filtered on boxes");
            let faces = det.detect(&rgb)?;
            bar.inc(1);
            Ok(best_match(&faces, &b).map(|d| (*d, b)))
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    let pairs: Vec<_> = pairs.into_iter().flatten().collect();
    let cal = BoxCalibration::fit(&pairs)?;
    eprintln!(
        "{}: {} of {} boxed faces detected",
        path.display(),
        pairs.len(),
        boxed.len()
    );
    write_calibration(&cal, out)
}

/// `kp data calibrate --from-points`: the keypoints-to-box map on every face with a box and
/// keypoints.
fn calibrate_from_points(path: &std::path::Path, out: Option<&std::path::Path>) -> Result<()> {
    let dataset = kp_data::format::load_dataset(path)
        .with_context(|| format!("loading {}", path.display()))?;
    let faces: Vec<&kp_data::Face> = dataset.faces.iter().collect();
    let cal = kp_train::detect::BoxCalibration::fit_points(&faces)
        .with_context(|| format!("{}: no face with a box and keypoints", path.display()))?;
    eprintln!(
        "{}: fitted on {} of {} faces",
        path.display(),
        cal.faces,
        faces.len()
    );
    write_calibration(&cal, out)
}

/// Prints a calibration as JSON and writes it to `out`.
fn write_calibration(
    cal: &kp_train::detect::BoxCalibration,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let json = serde_json::to_string_pretty(cal)?;
    println!("{json}");
    if let Some(out) = out {
        kp_fs::write_atomic(out, format!("{json}\n").as_bytes())?;
    }
    Ok(())
}
