//! Throughput of the augmentation pipelines on real images (one thread).
//!
//! - `seed/shift-rotate-jitter`: 640x480 IMM faces → 160x120 (shift, rotate, jitter, resize);
//! - `ibug/ibug`: 300-W training crops → 224x224 (box jitter + crop, rotate, scale, flip,
//!   brightness/contrast, resize);
//! - `ibug/ibug-eval`: the deterministic box crop + resize used for evaluation.
//!
//! Images are decoded once up front; only augmentation is timed. Data comes from
//! `$KP_DATA_DIR` or `/work/shared/datasets`; without it, synthetic images of the same sizes
//! are used. Run short: `cargo bench -p kp-augment -- --quick`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kp_augment::{Pipeline, PipelineConfig};
use kp_data::{load_dlib_xml, load_gray, load_imm, BBox, GrayF32, Point};

struct Sample {
    image: GrayF32,
    keypoints: Vec<Point>,
    bbox: Option<BBox>,
}

const FACES: usize = 16;

fn data_dir() -> PathBuf {
    std::env::var_os("KP_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/datasets"))
}

fn synthetic(w: u32, h: u32, n: usize) -> Vec<Sample> {
    (0..FACES)
        .map(|k| {
            let image = GrayF32::from_fn(w, h, |x, y| {
                image::Luma([((x * 7 + y * 3 + k as u32) % 255) as f32 / 255.0 - 0.5])
            });
            let keypoints = (0..n)
                .map(|i| {
                    let t = i as f32 / n as f32 * std::f32::consts::TAU;
                    Point::new(
                        w as f32 * (0.5 + 0.2 * t.cos()),
                        h as f32 * (0.5 + 0.2 * t.sin()),
                    )
                })
                .collect();
            Sample {
                image,
                keypoints,
                bbox: None,
            }
        })
        .collect()
}

fn load(ibug: bool) -> Vec<Sample> {
    let dir = data_dir();
    let dataset = if ibug {
        load_dlib_xml(&dir.join("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml"))
    } else {
        load_imm(&dir.join("imm_face_db"))
    };
    let loaded: Option<Vec<Sample>> = dataset.ok().and_then(|d| {
        let step = (d.faces.len() / FACES).max(1);
        d.faces
            .iter()
            .step_by(step)
            .take(FACES)
            .map(|f| {
                Some(Sample {
                    image: load_gray(&f.image).ok()?,
                    keypoints: f.keypoints.clone(),
                    bbox: f.bbox,
                })
            })
            .collect()
    });
    match loaded {
        Some(s) if !s.is_empty() => s,
        _ => {
            eprintln!(
                "kp-augment bench: real data not found under {}, using synthetic images",
                dir.display()
            );
            if ibug {
                synthetic(352, 352, 68)
            } else {
                synthetic(640, 480, 58)
            }
        }
    }
}

fn bench_group(c: &mut Criterion, group: &str, presets: &[&str], samples: &[Sample]) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &name in presets {
        // kp-augment's presets by name; the study's 300-W pipelines from kp-train's recipes.
        let p = Pipeline::preset(name).unwrap_or_else(|_| {
            let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../kp-train/recipes/augment")
                .join(format!("{name}.toml"));
            Pipeline::new(PipelineConfig::from_file(file).expect("recipe")).expect("pipeline")
        });
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = &samples[i as usize % samples.len()];
                i += 1;
                black_box(p.apply(&s.image, &s.keypoints, s.bbox, i).expect("apply"))
            })
        });
    }
    g.finish();
}

fn pipelines(c: &mut Criterion) {
    let imm = load(false);
    bench_group(c, "seed", &["shift-rotate-jitter", "seed-shift"], &imm);
    let ibug = load(true);
    bench_group(c, "ibug", &["ibug", "ibug-eval"], &ibug);
}

criterion_group!(benches, pipelines);
criterion_main!(benches);
