//! `kp predict`: every face of a photo (or folder) with its landmarks, as text, JSON lines,
//! CSV or overlays.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use kp_data::BBox;
use kp_train::landmarker::Landmarker;
use serde::Serialize;

use crate::args::{parse_box, MirrorArgs, ModelArgs};
use crate::detect_cmd::DetectorArgs;

/// Arguments of `kp predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A photo, or a folder of photos (.jpg, .jpeg, .png).
    #[arg(value_name = "IMAGE", required_unless_present = "image")]
    photo: Option<PathBuf>,
    /// The same as IMAGE (kept for scripts written before IMAGE was positional).
    #[arg(long, hide = true, conflicts_with = "photo")]
    image: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Face box LEFT,TOP,WIDTH,HEIGHT in pixels (default: every face the detector finds, for
    /// models trained on face boxes; the whole photo for the IMM models).
    #[arg(long, value_parser = parse_box)]
    r#box: Option<BBox>,
    /// Overlay PNG to write (a folder when IMAGE is a folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// One JSON object per photo and line: {"image", "model", "scheme", "faces": [{"box",
    /// "score", "points5", "keypoints"}], "overlay"} ("scheme": what keypoint i is, e.g. ibug68).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// One CSV row per face: image,face,score,left,top,width,height,x0,y0,x1,y1,... (a header
    /// first; score and box empty where no detector ran).
    #[arg(long)]
    csv: bool,
    /// Second-stage passes for detected faces: each re-frames every face around its last
    /// keypoints (the box the 300-W labels give for the box around their points) and predicts
    /// again (0: the detector's calibrated box only). Measured: better on 300-W faces, worse on
    /// the small faces of dlib's example photos (models/landmarks/ibug68-compact/README.md).
    #[arg(long, default_value_t = Landmarker::DEFAULT_REFINE, value_name = "PASSES")]
    refine: usize,
    #[command(flatten)]
    mirror: MirrorArgs,
    #[command(flatten)]
    detector: DetectorArgs,
}

/// One face of `kp predict`'s JSON: the box the landmarks were predicted in, the detector's
/// score and 5 points (absent for a given or whole-photo box), and the keypoints, all in photo
/// pixels.
#[derive(Serialize)]
struct FaceOut {
    r#box: Option<[f32; 4]>,
    score: Option<f32>,
    points5: Option<[[f32; 2]; 5]>,
    keypoints: Vec<[f32; 2]>,
}

#[derive(Serialize)]
struct PhotoOut<'a> {
    image: &'a Path,
    /// The model: `ready:ibug68-compact`, `ready:ibug68-compact-x1.5`,
    /// `ready:ibug68-heatmap-resnet18` or the run folder.
    model: &'a str,
    /// The landmark scheme of `keypoints` (`ibug68`, `imm58`): what point `i` is.
    scheme: &'a str,
    faces: Vec<FaceOut>,
    overlay: Option<&'a Path>,
}

/// A face's landmarks as a person reads them: the centre of each of the scheme's parts (eyes,
/// nose, mouth, ...), in photo pixels.
fn parts_text(scheme: &kp_data::scheme::LandmarkScheme, points: &[[f32; 2]]) -> String {
    if points.len() != scheme.num_points {
        return String::new();
    }
    let parts: Vec<String> = scheme
        .groups
        .iter()
        .filter(|(name, _)| !name.contains("brow") && *name != "jaw")
        .map(|(name, range)| {
            let n = range.len() as f32;
            let (x, y) = points[range.clone()]
                .iter()
                .fold((0.0, 0.0), |(x, y), p| (x + p[0] / n, y + p[1] / n));
            format!("{} ({x:.0}, {y:.0})", name.replace('_', " "))
        })
        .collect();
    format!("; {}", parts.join(", "))
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let predictor = a.model.predictor()?;
    let predictor = a.mirror.apply(predictor)?;
    let model = a.model.label();
    let scheme = predictor.config.scheme();
    let landmarker =
        Landmarker::from_predictor(predictor, a.detector.config())?.with_refinement(a.refine);
    let input = a
        .photo
        .as_ref()
        .or(a.image.as_ref())
        .expect("clap requires one");
    let folder_mode = input.is_dir();
    let photos = crate::detect_cmd::photos(input)?;
    if folder_mode && a.r#box.is_some() {
        bail!("--box applies to one photo, not to a folder");
    }
    crate::detect_cmd::prepare_out(a.out.as_deref(), folder_mode)?;
    if a.csv {
        let k = landmarker.predictor().config.num_keypoints.unwrap_or(0);
        let mut header = String::from("image,face,score,left,top,width,height");
        for j in 0..k {
            header.push_str(&format!(",x{j},y{j}"));
        }
        if !crate::detect_cmd::print_line(&header)? {
            return Ok(());
        }
    }
    // One photo's output line from its faces.
    let render = |photo: &std::path::Path,
                  rgb: image::RgbImage,
                  faces: Vec<kp_train::landmarker::FaceLandmarks>|
     -> Result<Option<String>> {
        let overlay = crate::detect_cmd::overlay_path(a.out.as_deref(), photo, folder_mode, "kp");
        if let Some(path) = &overlay {
            kp_viz::io::save_png(&kp_train::figures::faces_image(rgb, &faces)?, path)?;
        }
        let faces: Vec<FaceOut> = faces
            .into_iter()
            .map(|f| FaceOut {
                r#box: f.bbox,
                score: f.score,
                points5: f.points5,
                keypoints: f.keypoints.iter().map(|p| [p.x, p.y]).collect(),
            })
            .collect();
        let line = if a.csv {
            let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
            let rows: Vec<String> = faces
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let b = f.r#box.map_or([None; 4], |b| b.map(Some));
                    let mut row = format!("{},{i},{}", csv_field(photo), opt(f.score));
                    for v in b {
                        row.push_str(&format!(",{}", opt(v)));
                    }
                    for [x, y] in &f.keypoints {
                        row.push_str(&format!(",{x},{y}"));
                    }
                    row
                })
                .collect();
            if rows.is_empty() {
                return Ok(None);
            }
            rows.join("\n")
        } else if a.json {
            serde_json::to_string(&PhotoOut {
                image: photo,
                model: &model,
                scheme: scheme.name,
                faces,
                overlay: overlay.as_deref(),
            })?
        } else {
            let mut s = format!("{}: {} faces", photo.display(), faces.len());
            for f in &faces {
                let bx = f
                    .r#box
                    .map(|[l, t, w, h]| format!("box {l:.1},{t:.1},{w:.1},{h:.1}"))
                    .unwrap_or_else(|| "whole photo".into());
                let score = f
                    .score
                    .map(|s| format!(" score {s:.3}"))
                    .unwrap_or_default();
                s.push_str(&format!(
                    "\n  {bx}{score}: {} {} points{}",
                    f.keypoints.len(),
                    scheme.name,
                    parts_text(scheme, &f.keypoints)
                ));
            }
            if let Some(o) = &overlay {
                s.push_str(&format!("\n  overlay -> {}", o.display()));
            }
            s
        };
        Ok(Some(line))
    };
    crate::detect_cmd::each_group_in_order(&photos, |group| {
        use rayon::prelude::*;
        // Decoded in parallel; the photos before the first that fails are predicted and
        // printed, then its error stops the command.
        let mut decoded: Vec<Result<image::RgbImage>> = group
            .par_iter()
            .map(|p| Ok(kp_data::loading::load_rgb(p)?))
            .collect();
        let ok = decoded.iter().take_while(|r| r.is_ok()).count();
        let failed = decoded.drain(ok..).next();
        let rgbs: Vec<image::RgbImage> = decoded.into_iter().map(|r| r.expect("ok")).collect();
        // --box: that face; otherwise every detected face (the IMM models: the whole photo),
        // the faces of the whole group through the network together.
        let faces = match a.r#box {
            Some(b) => rgbs
                .iter()
                .map(|rgb| landmarker.landmarks_in(rgb, Some(b)))
                .collect::<kp_train::Result<Vec<_>>>(),
            None => landmarker.landmarks_many(&rgbs.iter().collect::<Vec<_>>()),
        };
        let mut lines: Vec<Result<Option<String>>> = match faces {
            Ok(faces) => group
                .par_iter()
                .zip(rgbs)
                .zip(faces)
                .map(|((photo, rgb), faces)| render(photo, rgb, faces))
                .collect(),
            Err(e) => vec![Err(e.into())],
        };
        lines.extend(failed.map(|e| e.map(|_| None)));
        lines
    })
}

/// A path as one CSV field (quoted when it holds a comma, quote or line break).
pub(crate) fn csv_field(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
