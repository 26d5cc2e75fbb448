//! `--skip-bad` on a dataset with some bad entries, a run whose loss becomes infinite, and an
//! output folder that cannot be written: each ends with a clear message and nothing lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kp"))
        .args(args)
        .output()
        .unwrap()
}

fn shared(rel: &str) -> PathBuf {
    kp_data::test_data_dir().join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_file(p: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Twelve real IMM faces, three of them broken in different ways.
fn imm_with_bad_entries(root: &Path) -> PathBuf {
    let dir = root.join("imm");
    std::fs::create_dir_all(&dir).unwrap();
    for person in ["01", "02"] {
        for pose in 1..=6 {
            for ext in ["asf", "jpg"] {
                let name = format!("{person}-{pose}m.{ext}");
                std::fs::copy(shared(&format!("imm_face_db/{name}")), dir.join(&name)).unwrap();
            }
        }
    }
    // A truncated annotation, a JPEG cut in half, a missing image.
    let asf = std::fs::read_to_string(dir.join("01-3m.asf")).unwrap();
    std::fs::write(dir.join("01-3m.asf"), &asf[..asf.len() / 3]).unwrap();
    let jpg = std::fs::read(dir.join("02-2m.jpg")).unwrap();
    std::fs::write(dir.join("02-2m.jpg"), &jpg[..jpg.len() / 2]).unwrap();
    std::fs::remove_file(dir.join("02-5m.jpg")).unwrap();
    dir
}

#[test]
fn skip_bad_reports_and_leaves_out_only_the_bad_faces() {
    let tmp = tempfile::tempdir().unwrap();
    let data = imm_with_bad_entries(tmp.path());

    // Without the flag: one line naming a bad file, non-zero exit.
    let o = kp(&["data", "summary", s(&data)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(".asf") || stderr(&o).contains(".jpg"));

    let o = kp(&["data", "summary", s(&data), "--skip-bad", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = v["skipped"]["total"].as_u64().unwrap();
    assert!(skipped >= 2, "{v}");
    assert_eq!(v["faces"].as_u64().unwrap() + skipped, 12, "{v}");
    let messages = v["skipped"]["messages"].to_string();
    assert!(messages.contains("01-3m.asf"), "{messages}");
    assert!(messages.contains("02-5m"), "{messages}");

    let run = tmp.path().join("run");
    let args = [
        "train",
        "--task",
        "nose",
        "--epochs",
        "1",
        "--quiet",
        "--data",
        s(&data),
        "--out",
    ];
    let o = kp(&[&args[..], &[s(&run)]].concat());
    assert!(!o.status.success(), "trained on a dataset with bad entries");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));

    let o = kp(&[&args[..], &[s(&run), "--skip-bad"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped 3 bad faces"), "{}", stderr(&o));
    let summary = json_file(run.join("summary.json"));
    let listed = summary["skipped"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{summary}");
    for name in ["01-3m.asf", "02-2m.jpg", "02-5m"] {
        assert!(
            listed.iter().any(|m| m.as_str().unwrap().contains(name)),
            "{name} not reported: {listed:?}"
        );
    }
    assert_eq!(summary["train_faces"], 9, "{summary}");
    assert_eq!(json_file(run.join("config.json"))["skip_bad"], true);
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let data = shared("imm_face_db");
    // Adam's first step moves every weight by about lr: 1e30 overflows f32 activations.
    let o = kp(&[
        "train",
        "--task",
        "nose",
        "--epochs",
        "2",
        "--limit",
        "16",
        "--lr",
        "1e30",
        "--quiet",
        "--data",
        s(&data),
        "--out",
        s(&run),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a run with lr 1e30 finished");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("diverged at step"), "{err}");
    // One error line (a tracing warning may precede it).
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );

    let summary = json_file(run.join("summary.json"));
    assert_eq!(summary["status"], "diverged", "{summary}");
    let at = summary["diverged_at_step"].as_u64().unwrap();
    assert!(err.contains(&format!("step {at}")), "{err} vs {at}");
    // The kept model is finite and scores finitely.
    let mae = summary["val"]["mae"].as_f64().unwrap();
    assert!(mae.is_finite(), "{summary}");
    let o = kp(&["eval", "--run", s(&run), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["mean_px_error"].as_f64().unwrap().is_finite(), "{v}");
    // metrics.csv holds no NaN/inf row.
    if let Ok(csv) = std::fs::read_to_string(run.join("metrics.csv")) {
        for l in csv.lines() {
            let l = l.to_ascii_lowercase();
            assert!(!l.contains("nan") && !l.contains("inf"), "{l}");
        }
    }
}

#[test]
fn an_unwritable_output_folder_fails_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    // A file where a folder should be (root ignores permission bits, so chmod is no test here).
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = blocker.join("run");
    let o = kp(&[
        "train",
        "--task",
        "face",
        "--quiet",
        "--data",
        s(&shared("imm_face_db")),
        "--out",
        s(&out),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(s(&out)) || err.contains(s(&blocker)), "{err}");
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "x");
}
