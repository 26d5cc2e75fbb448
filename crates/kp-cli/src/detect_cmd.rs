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

/// Writes `photo` with the detector's 5 `points` per face and its `boxes`
/// ([`kp_viz::overlay::faces_on_photo`]) to `path` as PNG.
pub fn save_overlay(
    photo: image::RgbImage,
    points: &[(f32, f32)],
    boxes: &[[f32; 4]],
    path: &Path,
) -> Result<()> {
    let img = kp_viz::overlay::faces_on_photo(photo, points, boxes, 0)?;
    kp_viz::io::save_png(&img, path)?;
    Ok(())
}

/// Runs `work` on every photo, a few at a time in parallel (at most two per thread, and
/// photos of at most `kp --max-pixels` pixels together by their headers, so memory stays
/// bounded on a folder of any size and any number of cores), and prints each photo's output in
/// the photos' order as soon as it and those before it are done; a progress bar on stderr for
/// folders. The first error stops the command; a closed stdout ends it quietly.
pub fn each_photo_in_order<F>(photos: &[PathBuf], work: F) -> Result<()>
where
    F: Fn(&Path) -> Result<Option<String>> + Sync,
{
    use rayon::prelude::*;
    each_group_in_order(photos, |group| group.par_iter().map(|p| work(p)).collect())
}

/// [`each_photo_in_order`] with `work` given each group of photos at once (so that it can
/// batch across them); it returns one output per photo of the group, in order.
pub fn each_group_in_order<F>(photos: &[PathBuf], work: F) -> Result<()>
where
    F: Fn(&[PathBuf]) -> Vec<Result<Option<String>>> + Sync,
{
    let bar = if photos.len() > 1 {
        indicatif::ProgressBar::new(photos.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let cap = kp_data::loading::max_pixels();
    for group in photo_chunks(photos, 2 * rayon::current_num_threads(), cap) {
        let lines = work(group);
        bar.inc(group.len() as u64);
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

/// Consecutive runs of `photos` of at most `count` photos whose headers claim at most `cap`
/// pixels together (a photo larger than that alone); a photo whose header cannot be read
/// counts as none (its decode reports why).
fn photo_chunks(photos: &[PathBuf], count: usize, cap: u64) -> Vec<&[PathBuf]> {
    let mut chunks = Vec::new();
    let (mut start, mut pixels) = (0, 0u64);
    for (i, p) in photos.iter().enumerate() {
        let px = kp_data::loading::image_dimensions(p)
            .map(|(w, h)| u64::from(w) * u64::from(h))
            .unwrap_or(0);
        if i > start && (i - start == count || pixels + px > cap) {
            chunks.push(&photos[start..i]);
            (start, pixels) = (i, 0);
        }
        pixels += px;
    }
    if start < photos.len() {
        chunks.push(&photos[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_chunks_hold_at_most_the_pixel_cap_and_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [100u32, 100, 100, 200, 100, 100];
        let photos: Vec<PathBuf> = sizes
            .iter()
            .enumerate()
            .map(|(i, &side)| {
                let p = dir.path().join(format!("{i}.png"));
                image::GrayImage::new(side, side).save(&p).unwrap();
                p
            })
            .collect();
        let lens = |count, cap| -> Vec<usize> {
            photo_chunks(&photos, count, cap)
                .iter()
                .map(|c| c.len())
                .collect()
        };
        // 10,000 pixels each, the 200 px one 40,000: it goes alone under a 25,000 cap.
        assert_eq!(lens(4, 25_000), vec![2, 1, 1, 2]);
        assert_eq!(lens(4, u64::MAX), vec![4, 2]);
        assert_eq!(lens(1, u64::MAX), vec![1; 6]);
        assert!(photo_chunks(&[], 4, 10).is_empty());
    }
}
