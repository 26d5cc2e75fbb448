//! kp's YuNet against OpenCV's `cv2.FaceDetectorYN` on the same ONNX file and images.
//!
//! `tests/data/yunet_opencv.json` holds OpenCV's detections for the fixture set (dlib's sample
//! photos, a lossless 300-W photo, IMM faces, 300-W crops), written by
//! `xtask/bench/yunet_reference.py` on the pixels kp decodes (`examples/decode_fixtures.rs`:
//! OpenCV's JPEG decoder differs slightly); this test needs no OpenCV. Every face OpenCV finds must be
//! found by kp at IoU >= 0.99 with the score within 1e-3 and each of the 5 points within 0.5 px,
//! and kp may find no face OpenCV did not (except one scoring within 1e-3 of the threshold,
//! where the two decoders' rounding can fall either side).

use std::path::Path;

use candle_core::Device;
use kp_models::yunet::{Detection, YuNet, YuNetConfig};
use serde_json::Value;

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let bbox = |v: &[f32; 4]| kp_data::BBox::new(v[0], v[1], v[2], v[3]);
    kp_train::detect::iou(&bbox(a), &bbox(b))
}

fn reference_face(f: &Value) -> Detection {
    let num = |v: &Value| v.as_f64().unwrap() as f32;
    let b: Vec<f32> = f["box"].as_array().unwrap().iter().map(num).collect();
    let mut points5 = [[0f32; 2]; 5];
    for (p, v) in points5.iter_mut().zip(f["points5"].as_array().unwrap()) {
        *p = [num(&v[0]), num(&v[1])];
    }
    Detection {
        bbox: [b[0], b[1], b[2], b[3]],
        points5,
        score: num(&f["score"]),
    }
}

#[test]
fn kps_yunet_finds_the_faces_opencv_finds_on_every_fixture_image() {
    // KP_YUNET_REFERENCE: another reference file of the same format (e.g. a new OpenCV's).
    let text = match std::env::var_os("KP_YUNET_REFERENCE") {
        Some(p) => std::fs::read_to_string(p).unwrap(),
        None => include_str!("data/yunet_opencv.json").to_string(),
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cfg = YuNetConfig {
        score_threshold: doc["score_threshold"].as_f64().unwrap() as f32,
        nms_threshold: doc["nms_threshold"].as_f64().unwrap() as f32,
        top_k: doc["top_k"].as_u64().unwrap() as usize,
    };
    let net = YuNet::bundled(&Device::Cpu).unwrap();
    let data = kp_tests::data_dir();
    let (mut faces, mut worst_iou, mut worst_score, mut worst_point) = (0, 1f32, 0f32, 0f32);
    for img in doc["images"].as_array().unwrap() {
        let rel = img["path"].as_str().unwrap();
        let rgb = kp_data::loading::load_rgb(&Path::new(&data).join(rel)).unwrap();
        let (w, h) = rgb.dimensions();
        assert_eq!(
            (w as u64, h as u64),
            (
                img["width"].as_u64().unwrap(),
                img["height"].as_u64().unwrap()
            ),
            "{rel}"
        );
        let ours = net
            .detect_rgb8(rgb.as_raw(), w as usize, h as usize, &cfg)
            .unwrap();
        let theirs: Vec<Detection> = img["faces"]
            .as_array()
            .unwrap()
            .iter()
            .map(reference_face)
            .collect();
        for r in &theirs {
            let best = ours
                .iter()
                .max_by(|a, b| iou(&a.bbox, &r.bbox).total_cmp(&iou(&b.bbox, &r.bbox)))
                .unwrap_or_else(|| panic!("{rel}: kp found no face, OpenCV found {r:?}"));
            let o = iou(&best.bbox, &r.bbox);
            let ds = (best.score - r.score).abs();
            let dp = best
                .points5
                .iter()
                .zip(&r.points5)
                .map(|(a, b)| (a[0] - b[0]).abs().max((a[1] - b[1]).abs()))
                .fold(0f32, f32::max);
            assert!(
                o >= 0.99 && ds <= 1e-3 && dp <= 0.5,
                "{rel}: OpenCV {r:?}, kp {best:?}: IoU {o}, score diff {ds}, point diff {dp} px"
            );
            faces += 1;
            worst_iou = worst_iou.min(o);
            worst_score = worst_score.max(ds);
            worst_point = worst_point.max(dp);
        }
        for d in &ours {
            let matched = theirs.iter().any(|r| iou(&d.bbox, &r.bbox) >= 0.99);
            assert!(
                matched || (d.score - cfg.score_threshold).abs() <= 1e-3,
                "{rel}: kp found a face OpenCV did not: {d:?}"
            );
        }
    }
    eprintln!("YuNet vs OpenCV: {faces} faces, worst IoU {worst_iou:.4}, score diff {worst_score:.2e}, point diff {worst_point:.3} px");
    assert!(
        faces >= 50,
        "the fixture should hold dozens of faces, got {faces}"
    );
}
