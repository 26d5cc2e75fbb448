//! `kp detect` and detector-driven `kp predict` on real photos: every face of dlib's sample
//! photos as JSON lines, no face on a blank image, a closed pipe ends quietly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;
use common::{data, floats, json_lines, kp};

#[test]
fn detect_prints_one_json_line_per_photo_with_every_face_of_the_group_photos() {
    let dir = data().join("dlib_examples_faces");
    let o = kp(&["detect", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&o.stdout);
    assert_eq!(lines.len(), 9, "dlib's 9 sample photos");
    let names: Vec<&str> = lines.iter().map(|v| v["image"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        names, sorted,
        "photos are processed in parallel but printed in name order"
    );
    let mut total = 0;
    for v in &lines {
        let faces = v["faces"].as_array().unwrap();
        assert!(!faces.is_empty(), "every sample photo shows a face: {v}");
        for f in faces {
            let b = floats(&f["box"]);
            assert!(b[2] > 4.0 && b[3] > 4.0, "{f}");
            let s = f["score"].as_f64().unwrap();
            assert!((0.6..=1.0).contains(&s), "{f}");
            assert_eq!(f["points5"].as_array().unwrap().len(), 5);
        }
        total += faces.len();
    }
    // The group photo of the any-photo issue: three people.
    let group = lines
        .iter()
        .find(|v| v["image"].as_str().unwrap().ends_with("2008_002506.jpg"))
        .unwrap();
    assert_eq!(group["faces"].as_array().unwrap().len(), 3, "{group}");
    assert!(total >= 45, "{total} faces on dlib's samples");
}

#[test]
fn a_photo_without_a_face_gives_an_empty_list_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path().join("blank.png");
    image::RgbImage::from_pixel(320, 240, image::Rgb([90, 120, 200]))
        .save(&blank)
        .unwrap();
    let o = kp(&["detect", blank.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["faces"], serde_json::json!([]));
    let o = kp(&["detect", blank.to_str().unwrap(), "--score", "1.5"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected a number from 0 to 1"));
}

#[test]
fn a_reader_that_stops_early_ends_detect_quietly() {
    let dir = data().join("dlib_examples_faces");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kp"))
        .args(["detect", dir.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The pipe is closed here (as `| head -1` does); kp must not panic on the next line.
    let o = child.wait_with_output().unwrap();
    assert!(first.contains("\"faces\""));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.status.success(), "{err}");
}

#[test]
fn detect_out_writes_an_overlay_per_photo_of_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data().join("dlib_examples_faces");
    let out = tmp.path().join("overlays");
    let o = kp(&[
        "detect",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = image::open(out.join("2008_002506_faces.png")).unwrap();
    assert_eq!((png.width(), png.height()), (500, 375));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 9);
}
