//! Writes one of every kp-viz figure, from synthetic data, into a folder, plus an
//! `index.html` report that shows them all.
//!
//! ```text
//! cargo run -p kp-viz --example demo -- [OUT_DIR] [FACE_JPG]
//! ```
//!
//! `OUT_DIR` defaults to `<tmp>/kp-viz-demo`. `FACE_JPG` defaults to the IMM face
//! `shared/datasets/imm_face_db/01-1m.jpg` when that exists (its `.asf` file next to it gives
//! the 58 ground-truth points); otherwise a synthetic face is drawn.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};
use kp_viz::{
    ced_chart, ced_stats, filter_grid, image_grid, learning_curves, overlay_keypoints, save_png,
    CedOptions, CedSeries, CurvesOptions, FilterGridOptions, GridOptions, HtmlReport, LossCurve,
    OverlayOptions, Table, TableImageOptions,
};

/// Small deterministic generator (xorshift64*), so the demo needs no `rand`.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of uniforms), mean 0, std 1.
    fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.next_f32()).sum::<f32>() - 6.0
    }
}

/// Reads the 58 relative points of an IMM `.asf` file and scales them to pixels.
fn read_asf(path: &Path, width: f32, height: f32) -> Option<Vec<(f32, f32)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let points: Vec<(f32, f32)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 7 || f.len() == 10)
        .filter_map(|f| {
            Some((
                f[2].parse::<f32>().ok()? * width,
                f[3].parse::<f32>().ok()? * height,
            ))
        })
        .collect();
    (points.len() == 58).then_some(points)
}

fn default_face() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../../../shared", "../../shared", "../../../../shared"]
        .iter()
        .map(|p| manifest.join(p).join("datasets/imm_face_db/01-1m.jpg"))
        .find(|p| p.exists())
}

/// A face image with 58 ground-truth points: the IMM face if available, else a drawing.
fn load_face(path: Option<PathBuf>) -> (DynamicImage, Vec<(f32, f32)>, String) {
    if let Some(p) = path {
        if let Ok(img) = image::open(&p) {
            let (w, h) = (img.width() as f32, img.height() as f32);
            if let Some(points) = read_asf(&p.with_extension("asf"), w, h) {
                return (img, points, p.display().to_string());
            }
        }
    }
    let (w, h) = (640u32, 480u32);
    let img = GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((x as f32 - 320.0) / 140.0, (y as f32 - 240.0) / 190.0);
        Luma([if dx * dx + dy * dy < 1.0 { 190 } else { 60 }])
    });
    let points = (0..58)
        .map(|i| {
            let t = i as f32 / 58.0 * std::f32::consts::TAU;
            (320.0 + 120.0 * t.cos(), 240.0 + 160.0 * t.sin())
        })
        .collect();
    (
        DynamicImage::ImageLuma8(img),
        points,
        "synthetic face".into(),
    )
}

fn jitter(points: &[(f32, f32)], rng: &mut Rng, sigma: f32) -> Vec<(f32, f32)> {
    points
        .iter()
        .map(|&(x, y)| (x + sigma * rng.normal(), y + sigma * rng.normal()))
        .collect()
}

fn fake_run(label: &str, rng: &mut Rng, epochs: usize, steps: usize, lr_gain: f32) -> LossCurve {
    let mut train = Vec::with_capacity(epochs * steps);
    let mut val = Vec::with_capacity(epochs);
    for e in 0..epochs {
        for s in 0..steps {
            let t = (e * steps + s) as f32 / steps as f32;
            let base = 0.004 + 0.03 / (1.0 + lr_gain * t);
            train.push(base * (1.0 + 0.8 * rng.normal().abs()));
        }
        let t = (e + 1) as f32;
        val.push(0.006 + 0.03 / (1.0 + lr_gain * t) + 0.0004 * t);
    }
    LossCurve::from_epochs(label, &train, &val, steps)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kp-viz-demo"));
    let face_path = args.next().map(PathBuf::from).or_else(default_face);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = Vec::new();
    let mut save = |name: &str, img: &image::RgbImage| -> Result<(), kp_viz::Error> {
        save_png(img, out.join(name))?;
        println!(
            "wrote {} ({}x{})",
            out.join(name).display(),
            img.width(),
            img.height()
        );
        written.push(name.to_string());
        Ok(())
    };

    // 1. Overlays: the full face with all 58 points and labels, and an 80x60 nose-tip face.
    let (face, gt, source) = load_face(face_path);
    let pred = jitter(&gt, &mut rng, 6.0);
    let full = OverlayOptions {
        labels: true,
        error_lines: true,
        ..Default::default()
    };
    save(
        "overlay_full.png",
        &overlay_keypoints(&face, &gt, &pred, &full)?,
    )?;
    let small =
        DynamicImage::ImageLuma8(face.to_luma8()).resize_exact(80, 60, FilterType::Triangle);
    let (sx, sy) = (80.0 / face.width() as f32, 60.0 / face.height() as f32);
    let nose = (gt[52].0 * sx, gt[52].1 * sy);
    let small_opts = OverlayOptions::default();
    save(
        "overlay_small.png",
        &overlay_keypoints(
            &small,
            &[nose],
            &[(nose.0 + 3.0, nose.1 - 2.0)],
            &small_opts,
        )?,
    )?;

    // 2. A 2x4 grid of nose-tip predictions with growing error.
    let mut tiles = Vec::new();
    let mut captions = Vec::new();
    for i in 0..8 {
        let sigma = 0.5 + i as f32;
        let p = (nose.0 + sigma * rng.normal(), nose.1 + sigma * rng.normal());
        let err = ((p.0 - nose.0).powi(2) + (p.1 - nose.1).powi(2)).sqrt();
        tiles.push(overlay_keypoints(&small, &[nose], &[p], &small_opts)?);
        captions.push(format!("val face {}\nerror {err:.1} px", 33 + i));
    }
    let grid_opts = GridOptions {
        title: Some("Nose tip: validation predictions (green GT, red prediction)".into()),
        ..Default::default()
    };
    save("grid.png", &image_grid(&tiles, &captions, &grid_opts)?)?;

    // 3. Learning curves: one run (linear and log y) and a five-run sweep.
    let default_run = fake_run("", &mut rng, 25, 192, 1.0);
    save(
        "curve.png",
        &learning_curves(
            std::slice::from_ref(&default_run),
            &CurvesOptions::default(),
        )?,
    )?;
    let log_opts = CurvesOptions {
        title: "Learning curve (log scale)".into(),
        log_y: true,
        ..Default::default()
    };
    save(
        "curve_log.png",
        &learning_curves(&[default_run], &log_opts)?,
    )?;
    let sweep: Vec<LossCurve> = [
        ("bs 1, lr 1e-3", 192, 1.0),
        ("bs 4, lr 1e-3", 48, 0.6),
        ("bs 32, lr 1e-3", 6, 0.2),
        ("bs 1, lr 1e-4", 192, 0.15),
        ("bs 1, lr 1e-2", 192, 0.05),
    ]
    .iter()
    .map(|&(label, steps, gain)| fake_run(label, &mut rng, 25, steps, gain))
    .collect();
    let sweep_opts = CurvesOptions {
        title: "Batch size / learning rate sweep".into(),
        log_y: true,
        smooth: 20,
        ..Default::default()
    };
    save("sweep.png", &learning_curves(&sweep, &sweep_opts)?)?;

    // 4. Sixteen random 5x5 first-layer filters.
    let weights: Vec<f32> = (0..16 * 25).map(|_| rng.normal() * 0.1).collect();
    save(
        "filters.png",
        &filter_grid(&weights, [16, 1, 5, 5], &FilterGridOptions::default())?,
    )?;

    // 5. CED of three fake models.
    let models: Vec<CedSeries> = [
        ("ResNet18", 0.025),
        ("FaceKeypointNet", 0.04),
        ("mean face", 0.06),
    ]
    .iter()
    .map(|&(name, scale)| {
        let errors: Vec<f64> = (0..300)
            .map(|_| (scale * (0.4 + 0.6 * rng.normal().abs())) as f64)
            .collect();
        CedSeries::new(name, errors)
    })
    .collect();
    save("ced.png", &ced_chart(&models, &CedOptions::default())?)?;

    // 6. A results table (PNG and HTML) and the report.
    let mut table = Table::new(["model", "faces", "AUC@0.08", "failure rate @0.08"])
        .with_caption("Table 1. CED summary on the validation faces");
    for m in &models {
        let s = ced_stats(&m.errors, 0.08)?;
        table.push_row([
            m.label.clone(),
            s.n.to_string(),
            format!("{:.3}", s.auc),
            format!("{:.1}%", 100.0 * s.failure_rate),
        ]);
    }
    save("table.png", &table.to_png(&TableImageOptions::default())?)?;

    let mut report = HtmlReport::new("kp-viz demo");
    report
        .paragraph(format!(
            "Every figure type of kp-viz, from synthetic data. Face: {source}."
        ))
        .heading("Keypoint overlays")
        .figure(
            "overlay_full.png",
            "Green: ground truth, red: prediction (noise), labels are point indices.",
        )
        .figure("overlay_small.png", "An 80x60 face drawn at 4x.")
        .figure("grid.png", "2x4 validation grid.")
        .heading("Learning curves")
        .figure(
            "curve.png",
            "Training loss (blue) and validation loss (orange) per gradient step.",
        )
        .figure("curve_log.png", "The same on a log scale.")
        .figure("sweep.png", "Five runs on one chart.")
        .heading("Filters")
        .figure("filters.png", "First convolutional layer's 16 5x5 filters.")
        .heading("Cumulative error distribution")
        .figure("ced.png", "CED with AUC and failure rate at 0.08.")
        .table(table)
        .figure("table.png", "The same table as an image.");
    report.write(out.join("index.html"))?;
    println!(
        "wrote {} ({} figures)",
        out.join("index.html").display(),
        written.len()
    );
    Ok(())
}
