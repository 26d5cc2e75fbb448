//! `kp predict` and `kp submit`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kp_data::{BBox, GrayF32, Point};
use kp_train::predict::Predictor;
use serde::Serialize;

/// `--mirror` / `--no-mirror`: test-time mirroring regardless of the run's own setting.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Average each prediction with the mirrored image's (mirrored back): test-time mirroring.
    #[arg(long, overrides_with = "no_mirror")]
    mirror: bool,
    /// No test-time mirroring, even if the run was trained with it.
    #[arg(long)]
    no_mirror: bool,
}

impl MirrorArgs {
    /// Applies the flags to `predictor` (neither flag: the run's own setting).
    pub fn apply(&self, predictor: Predictor) -> Result<Predictor> {
        match (self.mirror, self.no_mirror) {
            (true, _) => Ok(predictor.with_test_time_mirror(true)?),
            (_, true) => Ok(predictor.with_test_time_mirror(false)?),
            _ => Ok(predictor),
        }
    }
}

/// Arguments of `kp predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Run folder written by `kp train`.
    #[arg(long)]
    run: PathBuf,
    /// A photo, or a folder of photos (.jpg, .jpeg, .png).
    #[arg(long)]
    image: PathBuf,
    /// Face box LEFT,TOP,WIDTH,HEIGHT in pixels (default: the whole image).
    #[arg(long, value_parser = parse_box)]
    r#box: Option<BBox>,
    /// Overlay PNG to write (a folder when --image is a folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the points as JSON.
    #[arg(long)]
    json: bool,
    /// cpu or cuda (default: the run's device).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    mirror: MirrorArgs,
}

/// Arguments of `kp submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Run folder written by `kp train`.
    #[arg(long)]
    run: PathBuf,
    /// dlib-style XML with one box per face (e.g. labels_ibug_300W_test_parsed.xml).
    #[arg(long)]
    xml: PathBuf,
    /// Submission CSV to write (`Id,Predicted`).
    #[arg(long)]
    out: PathBuf,
    /// Write rows for faces whose image is missing too (predicted on a blank box) instead of failing.
    #[arg(long)]
    allow_missing: bool,
    /// cpu or cuda (default: the run's device).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    mirror: MirrorArgs,
}

fn parse_box(s: &str) -> std::result::Result<BBox, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("`{s}`: expected LEFT,TOP,WIDTH,HEIGHT numbers"))?;
    match v[..] {
        [l, t, w, h] if w > 0.0 && h > 0.0 && v.iter().all(|x| x.is_finite()) => {
            Ok(BBox::new(l, t, w, h))
        }
        _ => Err(format!(
            "`{s}`: expected LEFT,TOP,WIDTH,HEIGHT with positive width and height"
        )),
    }
}

#[derive(Serialize)]
struct Prediction<'a> {
    image: &'a Path,
    r#box: Option<BBox>,
    keypoints: &'a [Point],
    overlay: Option<&'a Path>,
}

fn is_photo(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()),
        Some(e) if e == "jpg" || e == "jpeg" || e == "png"
    )
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let predictor = Predictor::open(&a.run, a.device.as_deref())
        .with_context(|| format!("opening run {}", a.run.display()))?;
    let predictor = a.mirror.apply(predictor)?;
    let (photos, folder_mode) = if a.image.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&a.image)
            .with_context(|| format!("reading {}", a.image.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_photo(p))
            .collect();
        v.sort();
        if v.is_empty() {
            bail!("{}: no .jpg/.jpeg/.png photos", a.image.display());
        }
        (v, true)
    } else {
        (vec![a.image.clone()], false)
    };
    if folder_mode && a.r#box.is_some() {
        bail!("--box applies to one photo, not to a folder");
    }
    if let (true, Some(out)) = (folder_mode, &a.out) {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut all = Vec::new();
    for photo in &photos {
        let color = image::open(photo).with_context(|| format!("reading {}", photo.display()))?;
        let gray: GrayF32 = kp_data::gray_from_u8(&color.to_luma8());
        let points = predictor
            .predict_images(&[(gray, a.r#box)])?
            .pop()
            .unwrap_or_default();
        let overlay = a.out.as_ref().map(|out| {
            if folder_mode {
                let stem = photo.file_stem().unwrap_or_default().to_string_lossy();
                out.join(format!("{stem}_kp.png"))
            } else {
                out.clone()
            }
        });
        if let Some(path) = &overlay {
            let pts: Vec<(f32, f32)> = points.iter().map(|p| (p.x, p.y)).collect();
            let img = kp_viz::overlay::overlay_keypoints(
                &color,
                &[],
                &pts,
                &kp_viz::overlay::OverlayOptions::default(),
            )?;
            kp_viz::io::save_png(&img, path)?;
        }
        all.push((photo.clone(), points, overlay));
    }
    if a.json {
        let v: Vec<Prediction<'_>> = all
            .iter()
            .map(|(p, k, o)| Prediction {
                image: p,
                r#box: a.r#box,
                keypoints: k,
                overlay: o.as_deref(),
            })
            .collect();
        if folder_mode {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&v[0])?);
        }
    } else {
        for (p, k, o) in &all {
            println!(
                "{}: {} points{}",
                p.display(),
                k.len(),
                o.as_ref()
                    .map(|o| format!(" -> {}", o.display()))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub fn submit(a: SubmitArgs) -> Result<()> {
    let predictor = Predictor::open(&a.run, a.device.as_deref())
        .with_context(|| format!("opening run {}", a.run.display()))?;
    let predictor = a.mirror.apply(predictor)?;
    let dataset = kp_data::dlib_xml::load_dlib_xml(&a.xml)?;
    let missing: Vec<usize> = (0..dataset.faces.len())
        .filter(|&i| !dataset.faces[i].image.is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "{} of {} faces have no image (first: {})",
            missing.len(),
            dataset.faces.len(),
            dataset.faces[missing[0]].image.display()
        );
        if !a.allow_missing {
            bail!(
                "{} faces of {} have missing images; pass --allow-missing to predict them on a blank box",
                missing.len(),
                a.xml.display()
            );
        }
    }
    let mut preds: Vec<Vec<Point>> = Vec::with_capacity(dataset.faces.len());
    for chunk in dataset.faces.chunks(64) {
        let mut items = Vec::with_capacity(chunk.len());
        for f in chunk {
            let bbox = f
                .bbox
                .with_context(|| format!("{}: a face without a box", f.image.display()))?;
            let img = if f.image.is_file() {
                kp_data::loading::load_gray(&f.image)?
            } else {
                // A blank (mid-grey) image just large enough to hold the box.
                let w = (bbox.right().max(1.0)).ceil() as u32;
                let h = (bbox.bottom().max(1.0)).ceil() as u32;
                GrayF32::from_pixel(w, h, image::Luma([0.0]))
            };
            items.push((img, Some(bbox)));
        }
        preds.extend(predictor.predict_images(&items)?);
    }
    let k = preds.first().map(|p| p.len()).unwrap_or(0);
    let mut csv = String::with_capacity(preds.len() * k * 2 * 16 + 16);
    csv.push_str("Id,Predicted\n");
    for (face, pts) in preds.iter().enumerate() {
        for (j, p) in pts.iter().enumerate() {
            let id = 2 * k * face + 2 * j;
            csv.push_str(&format!("{},{}\n{},{}\n", id, p.x, id + 1, p.y));
        }
    }
    kp_train::atomic::write_atomic(&a.out, csv.as_bytes())?;
    println!(
        "{}: {} faces x {} points = {} rows ({} faces without image)",
        a.out.display(),
        preds.len(),
        k,
        preds.len() * k * 2,
        missing.len()
    );
    Ok(())
}
