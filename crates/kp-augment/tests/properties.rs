//! Property tests: keypoints follow the image exactly through random pipelines.

use kp_augment::{
    Affine, Center, CropBoxConfig, FlipConfig, Pipeline, PipelineConfig, RotateConfig, ScaleConfig,
    ShiftUnit, StepConfig, TranslateConfig,
};
use kp_data::{GrayF32, Point};
use proptest::prelude::*;

const SIGMA: f32 = 2.0;
const CELL: u32 = 60;

/// A dark image with a Gaussian blob of amplitude `amps[j]` at each keypoint `j`.
fn blob_image(w: u32, h: u32, kps: &[Point], amps: &[f32]) -> GrayF32 {
    let mut img = GrayF32::from_pixel(w, h, image::Luma([-0.5]));
    let r = (4.0 * SIGMA).ceil() as i64;
    for (p, &a) in kps.iter().zip(amps) {
        let (cx, cy) = (p.x.round() as i64, p.y.round() as i64);
        for y in (cy - r).max(0)..=(cy + r).min(h as i64 - 1) {
            for x in (cx - r).max(0)..=(cx + r).min(w as i64 - 1) {
                let d2 = (x as f32 - p.x).powi(2) + (y as f32 - p.y).powi(2);
                img.get_pixel_mut(x as u32, y as u32).0[0] +=
                    a * (-d2 / (2.0 * SIGMA * SIGMA)).exp();
            }
        }
    }
    img
}

/// Peak position (intensity-weighted centroid over a disc around the brightest pixel near
/// `guess`) and blob mass, with background -0.5 subtracted.
fn measure(img: &GrayF32, guess: Point, search: i64, r: i64) -> (Point, f32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let v = |x: i64, y: i64| img.get_pixel(x as u32, y as u32).0[0] + 0.5;
    let (gx, gy) = (guess.x.round() as i64, guess.y.round() as i64);
    let mut best = (gx, gy, f32::MIN);
    for y in (gy - search).max(0)..=(gy + search).min(h - 1) {
        for x in (gx - search).max(0)..=(gx + search).min(w - 1) {
            if v(x, y) > best.2 {
                best = (x, y, v(x, y));
            }
        }
    }
    let (mut sx, mut sy, mut sw) = (0.0f64, 0.0f64, 0.0f64);
    for y in (best.1 - r).max(0)..=(best.1 + r).min(h - 1) {
        for x in (best.0 - r).max(0)..=(best.0 + r).min(w - 1) {
            if (x - best.0).pow(2) + (y - best.1).pow(2) <= r * r {
                let wgt = v(x, y).max(0.0) as f64;
                sx += wgt * x as f64;
                sy += wgt * y as f64;
                sw += wgt;
            }
        }
    }
    (Point::new((sx / sw) as f32, (sy / sw) as f32), sw as f32)
}

/// A random involution on `n` points (random disjoint swaps).
fn involution(n: usize, swaps: &[(usize, usize)]) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for &(a, b) in swaps {
        let (a, b) = (a % n, b % n);
        if p[a] == a && p[b] == b && a != b {
            p.swap(a, b);
        }
    }
    p
}

#[derive(Debug, Clone)]
struct Case {
    w: u32,
    h: u32,
    kps: Vec<Point>,
    cfg: PipelineConfig,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        2u32..5,
        2u32..5,
        prop::collection::vec((any::<bool>(), -8.0f32..8.0, -8.0f32..8.0), 16),
        (0.0f32..15.0, 0.0f32..35.0, 0.75f32..1.0, 1.0f32..1.3),
        (any::<bool>(), any::<bool>(), 0.6f32..1.4, 0u32..3),
        prop::collection::vec((0usize..16, 0usize..16), 4),
        any::<u64>(),
    )
        .prop_map(
            |(cx, cy, cells, (shift, rot, s0, s1), (crop, flip, ratio, centre), swaps, seed)| {
                let (w, h) = (cx * CELL, cy * CELL);
                let mut kps = Vec::new();
                for j in 0..cy {
                    for i in 0..cx {
                        let (on, dx, dy) = cells[(j * cx + i) as usize];
                        if on || kps.len() < 2 {
                            kps.push(Point::new(
                                (i * CELL + CELL / 2) as f32 + dx,
                                (j * CELL + CELL / 2) as f32 + dy,
                            ));
                        }
                    }
                }
                let center = [Center::Canvas, Center::Keypoints, Center::Box][centre as usize];
                let mut cfg = PipelineConfig::resize_only(1, 1);
                cfg.fill = -0.5;
                // Canvas size before the final resize (roughly, for the crop).
                let (mut cw, mut ch) = (w as f32, h as f32);
                if crop {
                    let b = kp_data::BBox::around(&kps).unwrap();
                    let side = b.width.max(b.height) * 1.5;
                    (cw, ch) = (side, side);
                    cfg = cfg.with_step(StepConfig::CropBox(CropBoxConfig {
                        margin: [1.3, 1.7].into(),
                        ..Default::default()
                    }));
                }
                cfg = cfg
                    .with_step(StepConfig::Translate(TranslateConfig {
                        x: [-shift, shift].into(),
                        y: [-shift, shift].into(),
                        unit: ShiftUnit::Canvas,
                        p: 0.8,
                    }))
                    .with_step(StepConfig::Rotate(RotateConfig {
                        p: 0.8,
                        degrees: [-rot, rot].into(),
                        center,
                    }))
                    .with_step(StepConfig::Scale(ScaleConfig {
                        p: 0.8,
                        factor: [s0, s1].into(),
                        center,
                    }));
                if flip {
                    cfg = cfg.with_step(StepConfig::Hflip(FlipConfig {
                        p: 0.5,
                        scheme: None,
                        permutation: Some(involution(kps.len(), &swaps)),
                    }));
                }
                cfg.width = ((cw * ratio).round() as u32).max(8);
                cfg.height = ((ch * ratio).round() as u32).max(8);
                Case {
                    w,
                    h,
                    kps,
                    cfg,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every keypoint that stays safely inside lands within a fraction of a pixel of its
    /// blob's peak, and the blob is the right one (flips reorder points by amplitude).
    #[test]
    fn keypoints_follow_their_blobs(c in case()) {
        let n = c.kps.len();
        let amps: Vec<f32> = (0..n).map(|j| 0.3 + 0.7 * (j + 1) as f32 / n as f32).collect();
        let img = blob_image(c.w, c.h, &c.kps, &amps);
        let p = Pipeline::new(c.cfg.clone()).unwrap();
        let out = p.apply(&img, &c.kps, None, c.seed).unwrap();
        let m = out.transform;
        let area = m.determinant().abs() as f32;
        let zoom = area.sqrt();
        let sigma_out = SIGMA * zoom;
        let r = (3.0 * sigma_out).ceil().max(2.0) as i64;
        let search = ((CELL as f32 - 16.0) * zoom / 2.0 - 1.0).floor().max(1.0) as i64;
        let (ow, oh) = (c.cfg.width as f32, c.cfg.height as f32);
        // Output index i holds original point order[i]: a mirror (det < 0) means one flip.
        let order: Vec<usize> = match (&out.point_order, m.determinant() < 0.0) {
            (Some(o), true) => o.clone(),
            (None, false) => (0..n).collect(),
            (o, mirrored) => panic!("order {o:?} but mirrored = {mirrored}"),
        };
        let mut checked = 0;
        for (i, &k) in out.keypoints.iter().enumerate() {
            let margin = (r + search) as f32 + 1.0;
            if k.x < margin || k.y < margin || k.x > ow - 1.0 - margin || k.y > oh - 1.0 - margin {
                continue;
            }
            let (peak, mass) = measure(&out.image, k, search, r);
            let err = peak.distance(k);
            prop_assert!(err < 0.25, "kp {i} at ({}, {}) but blob peak at ({}, {}), err {err}, zoom {zoom}",
                k.x, k.y, peak.x, peak.y);
            // Mass of a Gaussian blob: amplitude · 2πσ² · area scale.
            let want = amps[order[i]] * 2.0 * std::f32::consts::PI * SIGMA * SIGMA * area;
            prop_assert!((mass / want - 1.0).abs() < 0.06,
                "kp {i}: blob mass {mass}, expected {want} for original point {}", order[i]);
            checked += 1;
        }
        // Also check the keypoints themselves: exact map of the originals.
        for (i, &k) in out.keypoints.iter().enumerate() {
            let want = m.apply(c.kps[order[i]]);
            prop_assert!(k.distance(want) < 1e-3);
        }
        let _ = checked;
    }

    /// Mapping back to the original undoes everything, flips included.
    #[test]
    fn to_original_inverts(c in case()) {
        let img = GrayF32::new(c.w, c.h);
        let p = Pipeline::new(c.cfg.clone()).unwrap();
        let out = p.apply(&img, &c.kps, None, c.seed).unwrap();
        let back = out.to_original(&out.keypoints).unwrap();
        for (b, k) in back.iter().zip(&c.kps) {
            prop_assert!(b.distance(*k) < 1e-2, "{b:?} vs {k:?}");
        }
    }

    /// Flipping twice gives back the exact image and points.
    #[test]
    fn flip_twice_is_identity(w in 1u32..40, h in 1u32..40, seed in any::<u64>(),
                              pts in prop::collection::vec((-5.0f32..45.0, -5.0f32..45.0), 1..6),
                              swaps in prop::collection::vec((0usize..6, 0usize..6), 3)) {
        let img = GrayF32::from_fn(w, h, |x, y| image::Luma([((x * 13 + y * 7) % 11) as f32 / 10.0 - 0.5]));
        let kps: Vec<Point> = pts.iter().map(|&(x, y)| Point::new(x, y)).collect();
        let flip = StepConfig::Hflip(FlipConfig {
            p: 1.0,
            scheme: None,
            permutation: Some(involution(kps.len(), &swaps)),
        });
        let once = Pipeline::new(PipelineConfig::resize_only(w, h).with_step(flip.clone())).unwrap();
        let twice = Pipeline::new(
            PipelineConfig::resize_only(w, h).with_step(flip.clone()).with_step(flip),
        ).unwrap();
        // Two flips in one pipeline.
        let a = twice.apply(&img, &kps, None, seed).unwrap();
        prop_assert_eq!(a.image.as_raw(), img.as_raw());
        prop_assert!(a.transform.approx_eq(&Affine::IDENTITY, 1e-12));
        for (p, q) in a.keypoints.iter().zip(&kps) {
            prop_assert!(p.distance(*q) < 1e-4);
        }
        // One flip applied twice.
        let b1 = once.apply(&img, &kps, None, seed).unwrap();
        prop_assert!(b1.image.as_raw() != img.as_raw() || w == 1 || is_mirror_symmetric(&img));
        let b2 = once.apply(&b1.image, &b1.keypoints, None, seed).unwrap();
        prop_assert_eq!(b2.image.as_raw(), img.as_raw());
        for (p, q) in b2.keypoints.iter().zip(&kps) {
            prop_assert!(p.distance(*q) < 1e-4);
        }
    }

    /// Affine algebra: associativity, inverses, composition order.
    #[test]
    fn affine_identities(
        a in affine(), b in affine(), c in affine(),
        x in -500.0f32..500.0, y in -500.0f32..500.0,
    ) {
        let p = Point::new(x, y);
        prop_assert!(((a * b) * c).approx_eq(&(a * (b * c)), 1e-9));
        let ai = a.inverse().unwrap();
        prop_assert!((a * ai).approx_eq(&Affine::IDENTITY, 1e-9));
        prop_assert!((ai * a).approx_eq(&Affine::IDENTITY, 1e-9));
        let ab = a.then(b);
        let q1 = ab.apply(p);
        let q2 = b.apply(a.apply(p));
        prop_assert!(q1.distance(q2) < 1e-2 * (1.0 + q1.x.abs().max(q1.y.abs()) * 1e-3));
        let abi = ab.inverse().unwrap();
        prop_assert!(abi.approx_eq(&(ai * b.inverse().unwrap()), 1e-9));
        let back = abi.apply(q1);
        prop_assert!(back.distance(p) < 1e-2);
        prop_assert!((ab.determinant() - a.determinant() * b.determinant()).abs() < 1e-9);
    }
}

fn is_mirror_symmetric(img: &GrayF32) -> bool {
    let w = img.width();
    img.enumerate_pixels()
        .all(|(x, y, v)| img.get_pixel(w - 1 - x, y) == v)
}

/// Well-conditioned random affine maps: rotation · anisotropic scale · optional mirror + shift.
fn affine() -> impl Strategy<Value = Affine> {
    (
        -180.0f64..180.0,
        0.3f64..3.0,
        0.3f64..3.0,
        any::<bool>(),
        -100.0f64..100.0,
        -100.0f64..100.0,
    )
        .prop_map(|(deg, sx, sy, mirror, tx, ty)| {
            let m = if mirror {
                Affine::hflip(0.0)
            } else {
                Affine::IDENTITY
            };
            m.then(Affine::scale(sx, sy))
                .then(Affine::rotate_about(deg, 0.0, 0.0))
                .then(Affine::translate(tx, ty))
        })
}
