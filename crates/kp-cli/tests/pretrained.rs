//! The ready models kp ships (`models/landmarks/ibug68`, `ibug68-compact`): `kp predict` and
//! `kp eval` with no `--run`, on full photos and on held-out 300-W faces.

mod common;
use common::{data, floats, json_lines, kp};

#[test]
fn predict_without_a_run_puts_68_points_on_every_face_of_the_group_photo() {
    group_photo_faces(&[]);
    // The text form names the scheme and where the eyes, nose and mouth are.
    let photo = data().join("dlib_examples_faces/2008_002506.jpg");
    let o = kp(&["predict", photo.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("3 faces"), "{text}");
    assert_eq!(
        text.matches("68 ibug68 points; nose (").count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("left eye (") && text.contains("mouth ("),
        "{text}"
    );
}

#[test]
fn the_resnet_ready_model_puts_68_points_on_every_face_of_the_group_photo() {
    group_photo_faces(&["--ready", "resnet18"]);
}

#[test]
fn the_wide_compact_ready_model_puts_68_points_on_every_face_of_the_group_photo() {
    group_photo_faces(&["--ready", "compact-wide"]);
}

/// `kp predict` (with `extra` arguments) on dlib's group photo: three faces, 68 points each on
/// the face, the eyes where the detector saw them.
fn group_photo_faces(extra: &[&str]) {
    let photo = data().join("dlib_examples_faces/2008_002506.jpg");
    let mut args = vec!["predict", photo.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = kp(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&o.stdout);
    assert_eq!(lines.len(), 1);
    let faces = lines[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 3, "three people: {}", lines[0]);
    // Each line says which model and which points these are.
    assert_eq!(lines[0]["scheme"], "ibug68");
    assert!(lines[0]["model"]
        .as_str()
        .unwrap()
        .starts_with("ready:ibug68"));
    for f in faces {
        let b = floats(&f["box"]);
        let pts = f["keypoints"].as_array().unwrap();
        assert_eq!(pts.len(), 68);
        // The 68 points sit on the detected face: within the box grown by a quarter each way.
        let (l, t, w, h) = (b[0], b[1], b[2], b[3]);
        for p in pts {
            let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            assert!(
                x > l - w / 4.0 && x < l + w * 1.25 && y > t - h / 4.0 && y < t + h * 1.25,
                "({x}, {y}) outside box {b:?}"
            );
        }
        // The eyes' points lie near the detector's eye points (5-point order: right eye of
        // the person first, on the image's left).
        let p5 = f["points5"].as_array().unwrap();
        let centre = |a: usize, b: usize| {
            let n = (b - a) as f64;
            let xs: f64 = (a..b).map(|i| pts[i][0].as_f64().unwrap()).sum::<f64>() / n;
            let ys: f64 = (a..b).map(|i| pts[i][1].as_f64().unwrap()).sum::<f64>() / n;
            (xs, ys)
        };
        let eyes = [centre(36, 42), centre(42, 48)];
        for (e, q) in eyes.iter().zip(&p5[..2]) {
            let (qx, qy) = (q[0].as_f64().unwrap(), q[1].as_f64().unwrap());
            let d = ((e.0 - qx).powi(2) + (e.1 - qy).powi(2)).sqrt();
            assert!(
                d < w * 0.15,
                "eye {e:?} is {d:.1} px from the detector's {q} (box {b:?})"
            );
        }
    }
}

#[test]
fn a_folder_batched_across_photos_gives_each_photos_own_faces_and_points() {
    // `kp predict DIR` sends the faces of several photos through the network together; each
    // photo must come out as it does alone.
    let dir = data().join("dlib_examples_faces");
    let o = kp(&["predict", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let folder = json_lines(&o.stdout);
    assert_eq!(folder.len(), 9, "one line per photo");
    let mut faces = 0;
    for line in &folder {
        let photo = line["image"].as_str().unwrap();
        let alone = kp(&["predict", photo, "--json"]);
        let alone = &json_lines(&alone.stdout)[0];
        let (a, b) = (
            line["faces"].as_array().unwrap(),
            alone["faces"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{photo}");
        faces += a.len();
        for (fa, fb) in a.iter().zip(b) {
            assert_eq!(fa["box"], fb["box"], "{photo}");
            let flat = |v: &serde_json::Value| -> Vec<f64> {
                v.as_array().unwrap().iter().flat_map(floats).collect()
            };
            let (pa, pb) = (flat(&fa["keypoints"]), flat(&fb["keypoints"]));
            assert_eq!(pa.len(), 136);
            let worst = pa
                .iter()
                .zip(&pb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-3, "{photo}: points differ by {worst} px batched");
        }
    }
    assert!(faces >= 9, "{faces} faces on dlib's 9 photos");
}

#[test]
fn the_ready_model_scores_dlibs_sample_photos_end_to_end_from_detector_boxes() {
    // dlib's sample landmarks were made by a model, so this measures agreement, not truth:
    // the detector, the box calibration and the landmarks on whole photos.
    let xml = data().join("dlib_examples_faces/training_with_face_landmarks.xml");
    let o = kp(&[
        "eval",
        "--data",
        xml.to_str().unwrap(),
        "--split",
        "all",
        "--boxes",
        "detector",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(m["faces"].as_u64().unwrap() >= 4, "{m}");
    let nme = m["nme"].as_f64().unwrap();
    assert!(nme < 0.08, "NME {nme} against dlib's sample landmarks");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("face detector:"), "{stderr}");
}

#[test]
fn eval_without_a_run_writes_every_validation_face_for_other_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let faces = tmp.path().join("faces.jsonl");
    let o = kp(&[
        "eval",
        "--data",
        data().to_str().unwrap(),
        "--json",
        "--faces",
        faces.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lines = json_lines(&std::fs::read(&faces).unwrap());
    assert_eq!(lines.len() as u64, m["faces"].as_u64().unwrap());
    assert_eq!(lines.len(), 265, "the 80/20 split's validation faces");
    let mean: f64 = lines
        .iter()
        .map(|l| l["nme"].as_f64().unwrap())
        .sum::<f64>()
        / lines.len() as f64;
    assert!((mean - m["nme"].as_f64().unwrap()).abs() < 1e-9);
    for l in &lines {
        assert_eq!(l["truth"].as_array().unwrap().len(), 68);
        assert_eq!(l["pred"].as_array().unwrap().len(), 68);
        assert!(std::path::Path::new(l["image"].as_str().unwrap()).is_file());
        assert_eq!(l["box"].as_array().unwrap().len(), 4);
    }
    // The model card's held-out accuracy, from the same faces.
    assert!(m["nme"].as_f64().unwrap() < 0.06, "{m}");
}

#[test]
fn the_compact_model_cards_held_out_error_is_what_kp_eval_measures() {
    let card = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/landmarks/ibug68-compact/results.json");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card).unwrap()).unwrap();
    let row = results["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["weights"] == "f16" && r["boxes"] == "dataset")
        .expect("an f16 row with the dataset's boxes");
    let o = kp(&[
        "eval",
        "--ready",
        "compact",
        "--data",
        data().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["faces"], row["faces"]);
    let (got, card) = (m["nme"].as_f64().unwrap(), row["nme"].as_f64().unwrap());
    assert!(
        (got - card).abs() < 1e-6,
        "kp eval {got} vs the card's {card}"
    );
}

#[test]
fn a_68_point_model_is_not_scored_on_58_point_labels() {
    let imm = data().join("imm_face_db");
    let o = kp(&["eval", "--data", imm.to_str().unwrap(), "--json"]);
    assert!(
        !o.status.success(),
        "scored a 68-point model on IMM's 58 points"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("58 points (imm58)") && err.contains("68 ibug68 points"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn kp_export_writes_the_ready_model_as_onnx_with_its_crop_rule_in_the_metadata() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("ready.onnx");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kp"))
        .args(["export", "--onnx", onnx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&onnx).unwrap();
    let model = kp_models::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    let meta: std::collections::HashMap<_, _> = model
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(meta["kp.model"], "compact");
    assert_eq!(meta["kp.scheme"], "ibug68");
    assert_eq!(meta["kp.input"], "1x128x128");
    assert!(meta["kp.box_to_crop"].contains("1.3 x max(width, height)"));
    assert!(meta["kp.preprocessing"].contains("crop_box"));
    assert!(meta["kp.detector_box"].contains("side"));
    let graph = model.graph.unwrap();
    assert_eq!(graph.input[0].name, "image");
    assert_eq!(graph.output[0].name, "keypoints");
}

#[test]
fn submit_with_missing_images_marks_their_placeholder_rows() {
    let photo = data().join("dlib_examples_faces/2008_002506.jpg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&photo, dir.path().join("here.jpg")).unwrap();
    let xml = dir.path().join("boxes.xml");
    std::fs::write(
        &xml,
        "<dataset><images>\
         <image file='here.jpg'><box top='84' left='231' width='78' height='108'/></image>\
         <image file='gone.jpg'><box top='10' left='10' width='50' height='60'/></image>\
         </images></dataset>",
    )
    .unwrap();
    let out = dir.path().join("sub.csv");
    let args = [
        "submit",
        "--xml",
        xml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = kp(&args);
    assert!(
        !o.status.success() && !out.exists(),
        "a missing image fails by default"
    );
    let mut allow = args.to_vec();
    allow.push("--allow-missing");
    let o = kp(&allow);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("placeholders"),
        "{err}"
    );
    let rows = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        rows.lines().count(),
        1 + 2 * 68 * 2,
        "header and 2 faces x 68 x 2"
    );
    let marks = std::fs::read_to_string(dir.path().join("sub.missing.csv")).unwrap();
    let lines: Vec<&str> = marks.lines().collect();
    assert_eq!(lines.len(), 2, "{marks}");
    assert!(
        lines[1].starts_with("1,") && lines[1].ends_with(",136,271"),
        "{marks}"
    );
    assert!(lines[1].contains("gone.jpg"), "{marks}");
}
