//! `kp detect`: faces (box, score, 5 points) on photos with the bundled YuNet detector.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kp_models::yunet::{Detection, YuNetConfig};
use kp_train::detect::{DetectConfig, FaceDetector};
use serde::Serialize;

/// Detector settings shared by `kp detect` and `kp predict`.
#[derive(Debug, Clone, Args)]
pub struct DetectorArgs {
    /// Smallest face score kept, in [0, 1].
    #[arg(long, default_value_t = DetectConfig::default().yunet.score_threshold, value_parser = unit_interval)]
    pub score: f32,
    /// A face overlapping a better one by more than this IoU is dropped.
    #[arg(long, default_value_t = DetectConfig::default().yunet.nms_threshold, value_parser = unit_interval)]
    pub nms: f32,
    /// Photos whose longer side is above this are downscaled to it for detection (0: never).
    #[arg(long, default_value_t = DetectConfig::default().max_side)]
    pub max_side: usize,
    /// Faces narrower than this many pixels are dropped.
    #[arg(long, default_value_t = DetectConfig::default().min_face)]
    pub min_face: f32,
}

fn unit_interval(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: expected a number from 0 to 1")),
    }
}

impl DetectorArgs {
    /// The detection settings these flags give.
    pub fn config(&self) -> DetectConfig {
        DetectConfig {
            yunet: YuNetConfig {
                score_threshold: self.score,
                nms_threshold: self.nms,
                ..YuNetConfig::default()
            },
            max_side: self.max_side,
            min_face: self.min_face,
        }
    }
}

/// Arguments of `kp detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// A photo, or a folder of photos (.jpg, .jpeg, .png).
    pub image: PathBuf,
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// One JSON object per photo and line: {"image", "width", "height", "faces": [{"box", "score", "points5"}]}.
    #[arg(long)]
    pub json: bool,
    /// Overlay PNG to write with the boxes and 5 points (a folder when IMAGE is a folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t)]
    pub device: kp_train::config::DeviceKind,
}

/// One face as printed: box `[left, top, width, height]`, score and the 5 points, in photo pixels.
#[derive(Debug, Serialize)]
pub struct FaceJson {
    pub r#box: [f32; 4],
    pub score: f32,
    pub points5: [[f32; 2]; 5],
}

impl From<&Detection> for FaceJson {
    fn from(d: &Detection) -> Self {
        Self {
            r#box: d.bbox,
            score: d.score,
            points5: d.points5,
        }
    }
}

#[derive(Serialize)]
struct PhotoJson<'a> {
    image: &'a Path,
    width: u32,
    height: u32,
    faces: Vec<FaceJson>,
}

/// Photos named by `path`: the file itself, or a folder's .jpg/.jpeg/.png files sorted by name.
pub fn photos(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_photo(p))
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("{}: no .jpg/.jpeg/.png photos", path.display());
    }
    Ok(v)
}

/// Whether `p` has a photo extension kp reads.
pub fn is_photo(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()),
        Some(e) if e == "jpg" || e == "jpeg" || e == "png"
    )
}

/// Writes one line to stdout; a closed pipe (`kp detect ... | head`) ends quietly.
pub fn print_line(line: &str) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

pub fn detect(a: DetectArgs) -> Result<()> {
    let device = kp_train::model::device(a.device)?;
    let detector = FaceDetector::bundled(&device, a.detector.config())?;
    let folder_mode = a.image.is_dir();
    prepare_out(a.out.as_deref(), folder_mode)?;
    each_photo_in_order(&photos(&a.image)?, |photo| {
        let rgb = kp_data::loading::load_rgb(photo)?;
        let faces = detector
            .detect(&rgb)
            .with_context(|| format!("detecting faces in {}", photo.display()))?;
        if let Some(path) = overlay_path(a.out.as_deref(), photo, folder_mode, "faces") {
            let pts: Vec<(f32, f32)> = faces
                .iter()
                .flat_map(|f| f.points5.iter().map(|p| (p[0], p[1])))
                .collect();
            let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
            save_overlay(rgb.clone(), &pts, &boxes, &path)?;
        }
        let line = if a.json {
            serde_json::to_string(&PhotoJson {
                image: photo,
                width: rgb.width(),
                height: rgb.height(),
                faces: faces.iter().map(FaceJson::from).collect(),
            })?
        } else {
            let mut s = format!("{}: {} faces", photo.display(), faces.len());
            for f in &faces {
                let [l, t, w, h] = f.bbox;
                s.push_str(&format!(
                    "\n  box {l:.1},{t:.1},{w:.1},{h:.1} score {:.3}",
                    f.score
                ));
            }
            s
        };
        Ok(Some(line))
    })
}

/// Creates the `--out` folder of a folder of photos (one overlay each).
pub fn prepare_out(out: Option<&Path>, folder_mode: bool) -> Result<()> {
    if let (true, Some(out)) = (folder_mode, out) {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    Ok(())
}

/// Where a photo's overlay goes: `out` itself for one photo, `out/<stem>_<suffix>.png` for a
/// folder's photos; `None` without `--out`.
pub fn overlay_path(
    out: Option<&Path>,
    photo: &Path,
    folder_mode: bool,
    suffix: &str,
) -> Option<PathBuf> {
    out.map(|out| {
        if folder_mode {
            let stem = photo.file_stem().unwrap_or_default().to_string_lossy();
            out.join(format!("{stem}_{suffix}.png"))
        } else {
            out.to_path_buf()
        }
    })
}

/// Writes `photo` with `points` (red dots sized to the smallest box, about 1/60 of its width)
/// and `boxes` (green outlines) to `path` as PNG.
pub fn save_overlay(
    photo: image::RgbImage,
    points: &[(f32, f32)],
    boxes: &[[f32; 4]],
    path: &Path,
) -> Result<()> {
    let mut opts = kp_viz::overlay::OverlayOptions::default();
    let factor = kp_viz::overlay::upscale_factor(photo.width(), photo.height(), opts.upscale);
    if let Some(w) = boxes.iter().map(|b| b[2]).reduce(f32::min) {
        opts.radius = Some(((w * factor as f32 / 60.0).round() as u32).max(1));
    }
    let mut img = kp_viz::overlay::overlay_keypoints(
        &image::DynamicImage::ImageRgb8(photo),
        &[],
        points,
        &opts,
    )?;
    kp_viz::overlay::draw_boxes(&mut img, boxes, factor, kp_viz::style::GT_GREEN);
    kp_viz::io::save_png(&img, path)?;
    Ok(())
}

/// Runs `work` on every photo, a few at a time in parallel (at most two per thread decoded at
/// once, so memory stays bounded on a folder of any size), and prints each photo's output in
/// the photos' order as soon as it and those before it are done; a progress bar on stderr for
/// folders. The first error stops the command; a closed stdout ends it quietly.
pub fn each_photo_in_order<F>(photos: &[PathBuf], work: F) -> Result<()>
where
    F: Fn(&Path) -> Result<Option<String>> + Sync,
{
    use rayon::prelude::*;
    let bar = if photos.len() > 1 {
        indicatif::ProgressBar::new(photos.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    for chunk in photos.chunks(2 * rayon::current_num_threads()) {
        let lines = chunk
            .par_iter()
            .map(|p| {
                let r = work(p);
                bar.inc(1);
                r
            })
            .collect::<Vec<_>>();
        for line in lines {
            if let Some(line) = line? {
                if !bar.suspend(|| print_line(&line))? {
                    return Ok(());
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}
