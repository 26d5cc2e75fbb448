//! Writes a PNG grid of augmented faces with their keypoints drawn on top.
//!
//! ```text
//! cargo run --release -p kp-augment --example augment_grid -- \
//!     [DATA_DIR] [--preset seed-shift | --preset PIPELINE.toml] [--faces 4] [--n 5] [--seed 0] \
//!     [--out grid.png]
//! ```
//!
//! `--preset` is a kp-augment preset or a pipeline file, e.g. the study's 300-W recipe
//! `crates/kp-train/recipes/augment/ibug.toml`. `DATA_DIR` defaults to `$KP_DATA_DIR`, then
//! `/work/shared/datasets`. Pipelines with a box crop use the 300-W training crops
//! (`ibug_300w_train_crops/`), the others the IMM faces (`imm_face_db/`). Each row is one face:
//! the first column is the deterministic view (resize only, or a fixed box crop ×1.3), the rest
//! are `--n` draws of the pipeline.
//!
//! Point colours check the flip permutation: a point whose mirror partner has a higher index
//! is red, a lower index blue, a point on the symmetry axis green. After a correct flip the
//! red points stay on the same side of the face as in the first column.

use std::error::Error;
use std::path::{Path, PathBuf};

use image::{imageops, DynamicImage, Rgb, RgbImage};
use imageproc::drawing::draw_filled_circle_mut;
use kp_augment::{Augmented, CropBoxConfig, Pipeline, PipelineConfig, Range, StepConfig};
use kp_data::{gray_to_u8, load_dlib_xml, load_gray, load_imm, Face, LandmarkScheme};

struct Args {
    data: PathBuf,
    preset: String,
    faces: usize,
    n: usize,
    seed: u64,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut data = None;
    let mut args = Args {
        data: PathBuf::new(),
        preset: "seed-shift".into(),
        faces: 4,
        n: 5,
        seed: 0,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--preset" => args.preset = value()?,
            "--faces" => args.faces = value()?.parse()?,
            "--n" => args.n = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--out" => args.out = Some(value()?.into()),
            "-h" | "--help" => {
                println!("augment_grid [DATA_DIR] [--preset NAME] [--faces K] [--n N] [--seed S] [--out PNG]");
                std::process::exit(0);
            }
            s if !s.starts_with("--") && data.is_none() => data = Some(PathBuf::from(s)),
            s => return Err(format!("unknown argument {s}").into()),
        }
    }
    args.data = data
        .or_else(|| std::env::var_os("KP_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/work/shared/datasets"));
    Ok(args)
}

/// Picks `k` faces spread over the dataset (deterministic).
fn pick(faces: &[Face], k: usize) -> Vec<&Face> {
    let k = k.min(faces.len()).max(1);
    (0..k).map(|i| &faces[i * faces.len() / k]).collect()
}

fn colour(scheme: Option<&LandmarkScheme>, i: usize) -> Rgb<u8> {
    match scheme.and_then(|s| s.flip.get(i)) {
        Some(&j) if j > i => Rgb([255, 40, 40]),
        Some(&j) if j < i => Rgb([60, 120, 255]),
        _ => Rgb([40, 230, 40]),
    }
}

/// The augmented image, upscaled by `zoom`, with keypoints drawn.
fn render(a: &Augmented, zoom: u32, scheme: Option<&LandmarkScheme>) -> RgbImage {
    let gray = gray_to_u8(&a.image);
    let (w, h) = gray.dimensions();
    let mut rgb = DynamicImage::ImageLuma8(gray).to_rgb8();
    if zoom > 1 {
        rgb = imageops::resize(&rgb, w * zoom, h * zoom, imageops::FilterType::Triangle);
    }
    let z = zoom as f32;
    for (i, p) in a.keypoints.iter().enumerate() {
        let (x, y) = ((p.x + 0.5) * z - 0.5, (p.y + 0.5) * z - 0.5);
        draw_filled_circle_mut(
            &mut rgb,
            (x.round() as i32, y.round() as i32),
            2,
            colour(scheme, i),
        );
    }
    rgb
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let config = if args.preset.ends_with(".toml") || args.preset.ends_with(".json") {
        PipelineConfig::from_file(&args.preset)?
    } else {
        PipelineConfig::preset(&args.preset)?
    };
    let ibug = config
        .steps
        .iter()
        .any(|s| matches!(s, StepConfig::CropBox(_)));
    let dataset = if ibug {
        load_dlib_xml(
            &args
                .data
                .join("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml"),
        )?
    } else {
        load_imm(&args.data.join("imm_face_db"))?
    };
    let scheme = dataset.scheme;
    let mut base = PipelineConfig::resize_only(config.width, config.height);
    if ibug {
        base = base.with_step(StepConfig::CropBox(CropBoxConfig {
            margin: Range::fixed(1.3),
            ..CropBoxConfig::default()
        }));
    }
    let base = Pipeline::new(base)?;
    let pipeline = Pipeline::new(config)?;
    let (ow, oh) = pipeline.output_size();
    let zoom = if ow < 200 { 2 } else { 1 };
    let (cw, ch) = (ow * zoom, oh * zoom);
    let gap = 4;
    let faces = pick(&dataset.faces, args.faces);
    let cols = 1 + args.n as u32;
    let mut grid = RgbImage::from_pixel(
        cols * (cw + gap) + gap,
        faces.len() as u32 * (ch + gap) + gap,
        Rgb([255, 255, 255]),
    );
    let mut out_of_bounds = 0;
    for (r, face) in faces.iter().enumerate() {
        let img = load_gray(&face.image)?;
        for c in 0..cols {
            let a = if c == 0 {
                base.apply(&img, &face.keypoints, face.bbox, 0)?
            } else {
                let seed = args.seed.wrapping_mul(1_000_003) + (r as u64) * 1000 + c as u64;
                pipeline.apply(&img, &face.keypoints, face.bbox, seed)?
            };
            out_of_bounds += a.out_of_bounds as usize;
            let cell = render(&a, zoom, scheme);
            let (x, y) = (gap + c * (cw + gap), gap + r as u32 * (ch + gap));
            imageops::replace(&mut grid, &cell, x as i64, y as i64);
        }
        println!("row {r}: {}", face.image.display());
    }
    let out = args
        .out
        .unwrap_or_else(|| Path::new("/tmp").join(format!("kp-augment-grid-{}.png", args.preset)));
    grid.save(&out)?;
    println!(
        "wrote {} ({} faces x {} columns, {} augmented samples had points outside)",
        out.display(),
        faces.len(),
        cols,
        out_of_bounds
    );
    Ok(())
}
