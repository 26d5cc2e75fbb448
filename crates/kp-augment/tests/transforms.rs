//! Point mapping of each transform through the pipeline, determinism, inverse mapping.

use image::Luma;
use kp_augment::{
    hflip_points, is_involution, Affine, BlurConfig, BoxJitterConfig, Center, CropBoxConfig, Error,
    FlipConfig, OccludeConfig, PhotometricOp, Pipeline, PipelineConfig, RotateConfig, ScaleConfig,
    ShiftUnit, StepConfig, TranslateConfig,
};
use kp_data::scheme::{IBUG68, IMM58};
use kp_data::{BBox, GrayF32, Point};

fn close(p: Point, x: f32, y: f32) -> bool {
    (p.x - x).abs() < 1e-3 && (p.y - y).abs() < 1e-3
}

fn assert_close(p: Point, x: f32, y: f32) {
    assert!(close(p, x, y), "got ({}, {}), want ({x}, {y})", p.x, p.y);
}

/// One of the study's pipelines, kept as data in kp-train's `recipes/augment/` (`ibug`: box
/// jitter, crop, rotation, zoom, mirror, photometric; `ibug-eval`: a fixed box crop ×1.3).
fn study_pipeline(name: &str) -> Pipeline {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kp-train/recipes/augment")
        .join(format!("{name}.toml"));
    Pipeline::new(PipelineConfig::from_file(path).unwrap()).unwrap()
}

fn textured(w: u32, h: u32) -> GrayF32 {
    GrayF32::from_fn(w, h, |x, y| {
        Luma([((x * 31 + y * 17 + (x * y) % 7) % 101) as f32 / 100.0 - 0.5])
    })
}

fn one_step(w: u32, h: u32, step: StepConfig) -> Pipeline {
    Pipeline::new(PipelineConfig::resize_only(w, h).with_step(step)).unwrap()
}

#[test]
fn resize_only_maps_pixel_areas() {
    let p = Pipeline::new(PipelineConfig::resize_only(160, 120)).unwrap();
    let out = p
        .apply(
            &textured(640, 480),
            &[Point::new(1.5, 1.5), Point::new(639.5, 479.5)],
            None,
            0,
        )
        .unwrap();
    assert_close(out.keypoints[0], 0.0, 0.0);
    assert_close(out.keypoints[1], 159.5, 119.5);
    assert!(!out.out_of_bounds);
}

#[test]
fn translate_in_canvas_and_output_units() {
    let step = |unit| {
        StepConfig::Translate(TranslateConfig {
            x: [3.0, 3.0].into(),
            y: [-2.0, -2.0].into(),
            unit,
            ..Default::default()
        })
    };
    let img = textured(64, 48);
    let kp = [Point::new(10.0, 20.0)];
    let canvas = one_step(64, 48, step(ShiftUnit::Canvas));
    assert_close(
        canvas.apply(&img, &kp, None, 1).unwrap().keypoints[0],
        13.0,
        18.0,
    );
    // At half the size, 3 output pixels are 6 source pixels.
    let output = one_step(32, 24, step(ShiftUnit::Output));
    let out = output.apply(&img, &kp, None, 1).unwrap();
    let want = Affine::resize(64.0, 48.0, 32.0, 24.0).apply(Point::new(16.0, 16.0));
    assert_close(out.keypoints[0], want.x, want.y);
    let frac = one_step(64, 48, step(ShiftUnit::Fraction));
    let out = frac.apply(&img, &kp, None, 1).unwrap();
    assert_close(out.keypoints[0], 10.0 + 3.0 * 64.0, 20.0 - 2.0 * 48.0);
    assert!(out.out_of_bounds, "points are not clamped, and flagged");
    assert_eq!(out.outside(), vec![0]);
}

#[test]
fn translate_moves_image_content_with_points() {
    let img = textured(40, 30);
    let p = one_step(
        40,
        30,
        StepConfig::Translate(TranslateConfig {
            x: [5.0, 5.0].into(),
            y: [4.0, 4.0].into(),
            unit: ShiftUnit::Canvas,
            ..Default::default()
        }),
    );
    let out = p.apply(&img, &[], None, 0).unwrap();
    assert_eq!(out.image.get_pixel(15, 14), img.get_pixel(10, 10));
    assert_eq!(out.image.get_pixel(2, 2)[0], 0.0, "border fill is mid gray");
}

#[test]
fn rotate_about_canvas_centre() {
    let p = one_step(
        21,
        21,
        StepConfig::Rotate(RotateConfig {
            degrees: [90.0, 90.0].into(),
            ..Default::default()
        }),
    );
    let img = textured(21, 21);
    // Canvas centre is (10, 10); a point right of it goes above it.
    let out = p
        .apply(
            &img,
            &[Point::new(15.0, 10.0), Point::new(10.0, 10.0)],
            None,
            0,
        )
        .unwrap();
    assert_close(out.keypoints[0], 10.0, 5.0);
    assert_close(out.keypoints[1], 10.0, 10.0);
    // A quarter turn of a square grid moves pixels exactly.
    assert_eq!(out.image.get_pixel(10, 5), img.get_pixel(15, 10));
}

#[test]
fn rotate_about_keypoint_centroid() {
    let p = one_step(
        100,
        100,
        StepConfig::Rotate(RotateConfig {
            degrees: [180.0, 180.0].into(),
            center: Center::Keypoints,
            ..Default::default()
        }),
    );
    let kps = [Point::new(10.0, 10.0), Point::new(20.0, 30.0)];
    let out = p.apply(&textured(100, 100), &kps, None, 0).unwrap();
    assert_close(out.keypoints[0], 20.0, 30.0);
    assert_close(out.keypoints[1], 10.0, 10.0);
}

#[test]
fn scale_about_box_centre() {
    let p = one_step(
        100,
        100,
        StepConfig::Scale(ScaleConfig {
            factor: [2.0, 2.0].into(),
            center: Center::Box,
            ..Default::default()
        }),
    );
    let bbox = BBox::new(40.0, 40.0, 20.0, 20.0); // centre (50, 50)
    let out = p
        .apply(
            &textured(100, 100),
            &[Point::new(55.0, 45.0)],
            Some(bbox),
            0,
        )
        .unwrap();
    assert_close(out.keypoints[0], 60.0, 40.0);
}

#[test]
fn hflip_mirrors_and_permutes() {
    let perm = vec![2, 1, 0];
    let p = one_step(
        10,
        8,
        StepConfig::Hflip(FlipConfig {
            p: 1.0,
            scheme: None,
            permutation: Some(perm.clone()),
        }),
    );
    let img = textured(10, 8);
    let kps = [
        Point::new(1.0, 1.0),
        Point::new(4.5, 2.0),
        Point::new(8.0, 3.0),
    ];
    let out = p.apply(&img, &kps, None, 0).unwrap();
    // Point 0 (x=1) becomes point 2 at x = 9 - 1 = 8.
    assert_close(out.keypoints[2], 8.0, 1.0);
    assert_close(out.keypoints[1], 4.5, 2.0);
    assert_close(out.keypoints[0], 1.0, 3.0);
    assert_eq!(out.point_order, Some(perm.clone()));
    assert_eq!(out.image.get_pixel(9, 5), img.get_pixel(0, 5));
    assert_eq!(hflip_points(&kps, 10, &perm).unwrap(), out.keypoints);
    // Mapping predictions back undoes both the mirror and the reordering.
    let back = out.to_original(&out.keypoints).unwrap();
    for (b, k) in back.iter().zip(&kps) {
        assert_close(*b, k.x, k.y);
    }
}

#[test]
fn flip_with_scheme_uses_its_permutation() {
    let p = one_step(
        100,
        100,
        StepConfig::Hflip(FlipConfig {
            p: 1.0,
            scheme: Some("ibug68".into()),
            permutation: None,
        }),
    );
    let kps: Vec<Point> = (0..68).map(|i| Point::new(i as f32, 50.0)).collect();
    let out = p.apply(&textured(100, 100), &kps, None, 0).unwrap();
    for i in 0..68 {
        let j = IBUG68.flip[i];
        assert_close(out.keypoints[j], 99.0 - i as f32, 50.0);
    }
    // The jaw's first point (0) and last point (16) swap.
    assert_eq!(IBUG68.flip[0], 16);
    let err = p
        .apply(&textured(100, 100), &kps[..5], None, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::PointCountMismatch {
            points: 5,
            expected: 68
        }
    ));
}

#[test]
fn scheme_flip_permutations_are_involutions() {
    for scheme in [&IBUG68, &IMM58] {
        assert_eq!(scheme.flip.len(), scheme.num_points, "{}", scheme.name);
        kp_augment::validate_permutation(scheme.flip).unwrap();
        assert!(is_involution(scheme.flip), "{}", scheme.name);
        let kps: Vec<Point> = (0..scheme.num_points)
            .map(|i| Point::new(i as f32 * 1.5, (i * i % 17) as f32))
            .collect();
        let once = hflip_points(&kps, 120, scheme.flip).unwrap();
        assert_ne!(once, kps);
        assert_eq!(hflip_points(&once, 120, scheme.flip).unwrap(), kps);
    }
    assert!(!is_involution(&[1, 2, 0]));
}

#[test]
fn crop_box_maps_box_to_centre_with_margin() {
    let p = one_step(
        100,
        100,
        StepConfig::CropBox(CropBoxConfig {
            margin: [2.0, 2.0].into(),
            ..Default::default()
        }),
    );
    // Non-square box 40x20 centred on (70, 60): square side 40, crop 80 px -> 100 px.
    let bbox = BBox::new(50.0, 50.0, 40.0, 20.0);
    let out = p
        .apply(
            &textured(200, 150),
            &[Point::new(70.0, 60.0), Point::new(50.0, 40.0)],
            Some(bbox),
            0,
        )
        .unwrap();
    assert_close(out.keypoints[0], 49.5, 49.5);
    // 20 px left/up of centre is a quarter of the crop: 25 output px.
    assert_close(out.keypoints[1], 24.5, 24.5);
}

#[test]
fn crop_box_without_box_uses_keypoints_box() {
    let p = one_step(
        64,
        64,
        StepConfig::CropBox(CropBoxConfig {
            margin: [1.0, 1.0].into(),
            ..Default::default()
        }),
    );
    let kps = [Point::new(10.0, 10.0), Point::new(50.0, 50.0)];
    let out = p.apply(&textured(80, 80), &kps, None, 0).unwrap();
    // Box area 10..50 (40 px) maps onto the output area (-0.5..63.5).
    assert_close(out.keypoints[0], -0.5, -0.5);
    assert_close(out.keypoints[1], 63.5, 63.5);
    let err = p.apply(&textured(80, 80), &[], None, 0).unwrap_err();
    assert!(matches!(err, Error::MissingBox));
    let err = p.apply(&textured(80, 80), &kps[..1], None, 0).unwrap_err();
    assert!(matches!(err, Error::DegenerateBox(_)));
}

#[test]
fn box_jitter_shifts_and_scales_the_crop() {
    let cfg = PipelineConfig::resize_only(100, 100)
        .with_step(StepConfig::BoxJitter(BoxJitterConfig {
            p: 1.0,
            shift_x: [0.25, 0.25].into(),
            shift_y: [-0.1, -0.1].into(),
            scale: [2.0, 2.0].into(),
        }))
        .with_step(StepConfig::CropBox(CropBoxConfig {
            margin: [1.0, 1.0].into(),
            ..Default::default()
        }));
    let p = Pipeline::new(cfg).unwrap();
    // Box centre (50, 50), side 40 -> centre (60, 46), side 80.
    let bbox = BBox::new(30.0, 30.0, 40.0, 40.0);
    let out = p
        .apply(
            &textured(120, 120),
            &[Point::new(60.0, 46.0)],
            Some(bbox),
            0,
        )
        .unwrap();
    assert_close(out.keypoints[0], 49.5, 49.5);
}

#[test]
fn occlusion_covers_one_rectangle_inside_the_output_and_keeps_the_points() {
    let img = textured(64, 48);
    let kps = [Point::new(10.0, 10.0), Point::new(50.0, 30.0)];
    let p = one_step(
        40,
        30,
        StepConfig::Occlude(OccludeConfig {
            p: 1.0,
            size: [0.2, 0.6].into(),
            value: [-0.5, 0.5].into(),
        }),
    );
    let plain = Pipeline::new(PipelineConfig::resize_only(40, 30)).unwrap();
    let base = plain.apply(&img, &kps, None, 0).unwrap();
    let mut sizes = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let plan = p.plan(64, 48, &kps, None, seed).unwrap();
        let [PhotometricOp::Occlude { x, y, w, h, value }] = plan.photometric[..] else {
            panic!("{:?}", plan.photometric)
        };
        assert!(x + w <= 40 && y + h <= 30, "seed {seed}: {x} {y} {w} {h}");
        assert!((8..=24).contains(&w) && (6..=18).contains(&h), "{w}x{h}");
        sizes.insert((w, h));
        let out = p.apply(&img, &kps, None, seed).unwrap();
        assert_eq!(out.keypoints, base.keypoints);
        for (i, (a, b)) in out.image.iter().zip(base.image.iter()).enumerate() {
            let (px, py) = (i as u32 % 40, i as u32 / 40);
            let inside = (x..x + w).contains(&px) && (y..y + h).contains(&py);
            assert_eq!(
                *a,
                if inside { value } else { *b },
                "seed {seed} ({px}, {py})"
            );
        }
    }
    assert!(sizes.len() > 10, "{sizes:?}");
}

#[test]
fn blur_smooths_the_output_and_keeps_the_points() {
    let img = textured(64, 48);
    let kps = [Point::new(10.0, 10.0)];
    let blur = one_step(
        32,
        24,
        StepConfig::Blur(BlurConfig {
            p: 1.0,
            sigma: [1.5, 2.0].into(),
        }),
    );
    let plain = Pipeline::new(PipelineConfig::resize_only(32, 24)).unwrap();
    let (a, b) = (
        blur.apply(&img, &kps, None, 3).unwrap(),
        plain.apply(&img, &kps, None, 3).unwrap(),
    );
    assert_eq!(a.keypoints, b.keypoints);
    let roughness = |g: &GrayF32| -> f32 {
        let r = g.as_raw();
        r.windows(2).map(|w| (w[1] - w[0]).abs()).sum()
    };
    assert!(
        roughness(&a.image) < 0.5 * roughness(&b.image),
        "{} vs {}",
        roughness(&a.image),
        roughness(&b.image)
    );
}

#[test]
fn seed_determinism_same_bytes() {
    let img = textured(352, 352);
    let kps: Vec<Point> = (0..68)
        .map(|i| {
            Point::new(
                100.0 + (i % 10) as f32 * 15.0,
                100.0 + (i / 10) as f32 * 20.0,
            )
        })
        .collect();
    for preset in ["ibug", "shift-rotate-jitter"] {
        let p = match preset {
            "ibug" => study_pipeline(preset),
            _ => Pipeline::preset(preset).unwrap(),
        };
        let a = p.apply(&img, &kps, None, 42).unwrap();
        let b = p.apply(&img, &kps, None, 42).unwrap();
        let bytes = |x: &GrayF32| -> Vec<u32> { x.as_raw().iter().map(|v| v.to_bits()).collect() };
        assert_eq!(bytes(&a.image), bytes(&b.image), "{preset}");
        assert_eq!(a.keypoints, b.keypoints);
        assert_eq!(a.transform, b.transform);
        let others: Vec<_> = (43..48)
            .map(|s| p.apply(&img, &kps, None, s).unwrap().transform)
            .collect();
        assert!(others.iter().all(|t| *t != a.transform), "{preset}");
    }
}

#[test]
fn ibug_eval_is_deterministic_and_maps_back() {
    let p = study_pipeline("ibug-eval");
    let img = textured(640, 790);
    // A detector box (no keypoints at prediction time).
    let bbox = BBox::new(70.0, 224.0, 295.0, 295.0);
    let a = p.apply(&img, &[], Some(bbox), 1).unwrap();
    let b = p.apply(&img, &[], Some(bbox), 2).unwrap();
    assert_eq!(a, b, "the eval preset draws nothing");
    // The box centre lands on the output centre; the box spans 224/1.3 output px.
    let c = a.transform.apply(bbox.center());
    assert_close(c, 111.5, 111.5);
    assert!((a.transform.a * 295.0 - 224.0 / 1.3).abs() < 1e-3);
    let pred = [Point::new(10.0, 200.0), Point::new(111.5, 111.5)];
    let orig = a.to_original(&pred).unwrap();
    assert_close(orig[1], bbox.center().x, bbox.center().y);
    assert_close(a.transform.apply(orig[0]), 10.0, 200.0);
    assert!(a.to_original(&pred[..1]).is_ok());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let p = study_pipeline("ibug");
    let img = textured(50, 50);
    let nan = [Point::new(f32::NAN, 1.0); 68];
    assert!(matches!(
        p.apply(&img, &nan, None, 0),
        Err(Error::NonFinite(_))
    ));
    let bad_box = BBox::new(0.0, 0.0, f32::INFINITY, 1.0);
    assert!(matches!(
        p.apply(&img, &[], Some(bad_box), 0),
        Err(Error::NonFinite(_))
    ));
    assert!(matches!(
        p.apply(
            &GrayF32::new(0, 0),
            &[],
            Some(BBox::new(0.0, 0.0, 5.0, 5.0)),
            0
        ),
        Err(Error::EmptyImage)
    ));
}
