//! The `kp` binary end to end on real data: summaries, a short training run, evaluation,
//! prediction, and one-line errors with a non-zero exit code on bad input.

use std::process::Output;

mod common;
use common::{data, json_lines, kp};

fn stdout_json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "kp failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

#[test]
fn data_summary_of_imm_reports_240_faces_with_58_points() {
    let imm = data().join("imm_face_db");
    let v = stdout_json(&kp(&["data", "summary", imm.to_str().unwrap(), "--json"]));
    assert_eq!(v["images"], 240);
    assert_eq!(v["faces"], 240);
    assert_eq!(v["points_per_face"], 58);
    assert_eq!(v["split"]["train"], 192);
    assert_eq!(v["split"]["val"], 48);
}

#[test]
fn data_check_decodes_every_imm_image_and_finds_nothing_wrong() {
    let imm = data().join("imm_face_db");
    let v = stdout_json(&kp(&["data", "check", imm.to_str().unwrap(), "--json"]));
    assert_eq!(
        (v["faces"].as_u64(), v["decoded"].as_u64()),
        (Some(240), Some(240))
    );
    assert_eq!(v["problems"], serde_json::json!([]));
}

#[test]
fn data_summary_of_the_300w_crops_and_kaggle_xml() {
    let crops = data().join("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml");
    let v = stdout_json(&kp(&["data", "summary", crops.to_str().unwrap(), "--json"]));
    assert_eq!(v["faces"], 1326);
    assert_eq!(v["points_per_face"], 68);
    let kaggle =
        data().join("ibug_300W_large_face_landmark_dataset/labels_ibug_300W_test_parsed.xml");
    let v = stdout_json(&kp(&[
        "data",
        "summary",
        kaggle.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["faces"], 1008);
    assert_eq!(v["labelled_faces"], 0);
}

#[test]
fn train_eval_predict_on_a_few_faces() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let d = data();
    let o = kp(&[
        "train",
        "--task",
        "face",
        "--data",
        d.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--recipe",
        "tuned",
        "--epochs",
        "1",
        "--limit",
        "8",
        "--loss",
        "l1",
        "--quiet",
        "--json",
    ]);
    let summary = stdout_json(&o);
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["epochs"], 1);
    // --recipe tuned sets kp's defaults; --epochs still overrides them.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["augment"], "face-tuned");
    assert_eq!(config["model"], "heatmap-resnet18");
    assert_eq!(config["lr_schedule"], "cosine");
    assert_eq!(config["epochs"], 1);
    assert_eq!(config["loss"], "l1");
    assert_eq!(config["test_time_mirror"], true);
    let r = run.to_str().unwrap();
    let ev = stdout_json(&kp(&["eval", "--run", r, "--json"]));
    assert!(ev["mean_px_error"].as_f64().unwrap().is_finite());
    assert!(ev["mae"].as_f64().unwrap().is_finite());
    assert_eq!(ev["mean_px_error"], summary["val"]["mean_px_error"]);
    // The run's test-time mirroring is on by default, off with --no-mirror.
    assert_eq!(
        stdout_json(&kp(&["eval", "--run", r, "--json", "--mirror"])),
        ev
    );
    let plain = stdout_json(&kp(&["eval", "--run", r, "--json", "--no-mirror"]));
    assert_ne!(plain["mean_px_error"], ev["mean_px_error"]);

    let photo = d.join("imm_face_db/40-1m.jpg");
    let png = tmp.path().join("pred.png");
    let v = stdout_json(&kp(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--image",
        photo.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--json",
    ]));
    // An IMM model sees the whole photo: one face, no detector box.
    assert_eq!(v["faces"].as_array().unwrap().len(), 1);
    assert!(v["faces"][0]["score"].is_null());
    assert_eq!(v["faces"][0]["keypoints"].as_array().unwrap().len(), 58);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (640, 480));
}

#[test]
fn eval_with_simulated_detector_boxes_is_seeded_per_face() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let d = data();
    let o = kp(&[
        "train",
        "--task",
        "ibug",
        "--data",
        d.to_str().unwrap(),
        "--out",
        r,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--limit",
        "10",
        "--quiet",
        "--json",
    ]);
    let summary = stdout_json(&o);
    let eval = |split: &str, extra: &[&str]| {
        let mut args = vec!["eval", "--run", r, "--split", split, "--json"];
        args.extend_from_slice(extra);
        stdout_json(&kp(&args))
    };
    let tight = eval("all", &[]);
    assert_eq!(tight["faces"], 10);
    assert_eq!(eval("val", &[])["mae"], summary["val"]["mae"]);
    let det = ["--augment", "ibug-detector", "--seed"];
    let det1 = eval("all", &[&det[..], &["1"]].concat());
    let det1_again = eval("all", &[&det[..], &["1"]].concat());
    let det2 = eval("all", &[&det[..], &["2"]].concat());
    assert_eq!(det1, det1_again, "same seed, same boxes, same scores");
    assert_ne!(det1["mae"], tight["mae"], "jittered boxes change the crops");
    assert_ne!(det1["mae"], det2["mae"], "another seed draws other boxes");
    let o = kp(&["eval", "--run", r, "--augment", "no-such-preset"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-preset"));

    // The face detector's calibrated boxes instead of the crops' own.
    let o = kp(&[
        "eval", "--run", r, "--split", "all", "--json", "--boxes", "detector",
    ]);
    let detected = stdout_json(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("face detector: 10 of 10 faces found"));
    assert_eq!(detected["faces"], 10);
    assert_ne!(detected["mae"], tight["mae"], "other boxes, other crops");

    // A 300-W model on a group photo: one set of 68 points per detected face.
    let group = d.join("dlib_examples_faces/2008_002506.jpg");
    let v = stdout_json(&kp(&[
        "predict",
        group.to_str().unwrap(),
        "--run",
        r,
        "--json",
    ]));
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 3, "{v}");
    for f in faces {
        assert_eq!(f["keypoints"].as_array().unwrap().len(), 68);
        assert_eq!(f["points5"].as_array().unwrap().len(), 5);
        assert!(f["score"].as_f64().unwrap() > 0.6);
    }
    // --csv: a header and one row per face with the same numbers.
    let o = kp(&["predict", group.to_str().unwrap(), "--run", r, "--csv"]);
    assert!(o.status.success());
    let csv = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("image,face,score,left,top,width,height,x0,y0,"));
    assert_eq!(lines[0].split(',').count(), 7 + 2 * 68);
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row.len(), 7 + 2 * 68);
    let x0: f64 = row[7].parse().unwrap();
    assert!((x0 - faces[0]["keypoints"][0][0].as_f64().unwrap()).abs() < 1e-3);
}

/// A value outside an option's choices is refused by name, with the choices listed.
fn rejected_value(o: &std::process::Output, value: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("invalid value '{value}'")) && err.contains("possible values"),
        "{err}"
    );
}

#[test]
fn bad_input_gives_one_line_error_and_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let asf = tmp.path().join("01-1m.asf");
    std::fs::write(&asf, "# truncated\n58\n0 4 0.1 0.2 0 0 1\n").unwrap();
    let o = kp(&["data", "summary", tmp.path().to_str().unwrap(), "--json"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error:") && lines[0].contains("01-1m"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let o = kp(&["train", "--task", "nosee", "--data", ".", "--out", "x"]);
    assert!(!o.status.success());
    rejected_value(&o, "nosee");

    let o = kp(&[
        "train",
        "--task",
        "nose",
        "--data",
        ".",
        "--out",
        "x",
        "--lr-schedule",
        "cosin",
    ]);
    assert!(!o.status.success());
    rejected_value(&o, "cosin");
    let o = kp(&[
        "train", "--task", "nose", "--data", ".", "--out", "x", "--loss", "l3",
    ]);
    assert!(!o.status.success());
    rejected_value(&o, "l3");

    let out = tmp.path().join("wd");
    let o = kp(&[
        "train",
        "--task",
        "nose",
        "--data",
        data().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--weight-decay=-0.5",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("weight decay must be zero or positive"),
        "{err}"
    );

    let o = kp(&["eval", "--run", tmp.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("config.json"));

    let vf = tmp.path().join("vf");
    let d = data();
    let vf_args = |f: &'static str| {
        [
            "train",
            "--task",
            "nose",
            "--data",
            d.to_str().unwrap(),
            "--out",
            vf.to_str().unwrap(),
            "--limit",
            "8",
            "--epochs",
            "1",
            "--quiet",
            "--json",
            "--val-fraction",
            f,
        ]
        .map(String::from)
    };
    let o = kp(&vf_args("1.5")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("val fraction must be in [0, 1), got 1.5"));
    // 0: every face trains (a model to ship), recorded in the run's config.
    let o = kp(&vf_args("0").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(stdout_json(&o)["status"], "finished");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vf.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["split"],
        serde_json::json!({"kind": "random", "val_fraction": 0.0})
    );
}

#[test]
fn bench_times_training_steps_per_batch_size() {
    let o = kp(&[
        "bench",
        "--model",
        "nosetipnet",
        "--batch-size",
        "1,3",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&o.stdout);
    assert_eq!(lines.len(), 2);
    for (line, b) in lines.iter().zip([1u64, 3]) {
        assert_eq!(line["case"], format!("nosetipnet_train_b{b}"));
        assert_eq!(line["batch"], b);
        assert_eq!(line["ms"].as_array().unwrap().len(), 2);
        let (ms, img_s) = (
            line["median_ms"].as_f64().unwrap(),
            line["images_per_second"].as_f64().unwrap(),
        );
        assert!(ms > 0.0);
        assert!((img_s - b as f64 * 1e3 / ms).abs() < 1e-6 * img_s);
    }
    // The table form, and inference.
    let o = kp(&[
        "bench",
        "--model",
        "nosetipnet",
        "--batch-size",
        "2",
        "--iters",
        "1",
        "--infer",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nosetipnet_infer_b2"));
    // A model that is not registered is refused by the flag, with the registered ones.
    let o = kp(&["bench", "--model", "vgg16", "--iters", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("vgg16") && err.contains("heatmap-resnet18"));
    // A kp without CUDA says so.
    if !cfg!(feature = "cuda") {
        let o = kp(&["bench", "--device", "cuda", "--iters", "1"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("built without CUDA"));
    }
}

#[test]
fn a_recipe_file_configures_training_as_its_recipe_does_and_misspelt_names_are_refused() {
    let recipes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kp-train/recipes");
    let data = data();
    let data = data.to_str().unwrap();
    for (task, recipe) in [("nose", "seed"), ("ibug", "compact")] {
        let file = recipes.join(format!("{task}-{recipe}.toml"));
        let from_file = stdout_json(&kp(&[
            "train",
            "--config",
            file.to_str().unwrap(),
            "--data",
            data,
            "--print-config",
        ]));
        let from_flags = stdout_json(&kp(&[
            "train",
            "--task",
            task,
            "--recipe",
            recipe,
            "--data",
            data,
            "--print-config",
        ]));
        assert_eq!(from_file, from_flags, "{task}-{recipe}");
    }
    // --resume alone continues a run; with no run there it says so.
    let empty = tempfile::tempdir().unwrap();
    let o = kp(&["train", "--resume", "--out", empty.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("nothing to resume"),
        "{err}"
    );
    // Six faces of one person leave no validation faces: training says what it validates on;
    // --resume with another epoch count is refused, naming both values.
    let run = empty.path().join("tiny");
    let run = run.to_str().unwrap();
    let o = kp(&[
        "train", "--task", "nose", "--data", data, "--limit", "6", "--epochs", "1", "--out", run,
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("no validation faces") && err.contains("not held out"),
        "{err}"
    );
    let o = kp(&["train", "--resume", "--out", run, "--epochs", "3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("epochs = 3 (the run has 1)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A finished run whose final model was damaged: eval refuses it in one line, --resume
    // writes it again from the last checkpoint, byte for byte.
    let model = std::path::Path::new(run).join("model.safetensors");
    let kept = std::fs::read(&model).unwrap();
    let mut flipped = kept.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&model, &flipped).unwrap();
    let o = kp(&["eval", "--run", run, "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("model.safetensors"),
        "{err}"
    );
    let o = kp(&["train", "--resume", "--out", run, "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("writing it again"), "{err}");
    assert_eq!(
        std::fs::read(&model).unwrap(),
        kept,
        "the final model is the checkpoint's"
    );
    let o = kp(&["eval", "--run", run, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (flag, value, known) in [
        ("--augment", "seed-shfit", "face-tuned"),
        ("--model", "vgg16", "heatmap-resnet18"),
    ] {
        let o = kp(&["train", "--task", "face", flag, value, "--print-config"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flag} {value} was accepted");
        assert!(err.contains(value) && err.contains(known), "{err}");
    }
}

#[test]
fn images_outside_a_label_files_folder_are_read_only_when_allowed() {
    let photo = data().join("dlib_examples_faces/2008_002506.jpg");
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("elsewhere.xml");
    std::fs::write(
        &xml,
        format!(
            "<dataset><images><image file='{}'><box top='84' left='231' width='78' \
             height='108'/></image></images></dataset>",
            photo.display()
        ),
    )
    .unwrap();
    let xml = xml.to_str().unwrap();
    let o = kp(&["data", "summary", xml, "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("outside the dataset's folder"),
        "{err}"
    );
    let v = stdout_json(&kp(&[
        "--allow-outside-data",
        "data",
        "summary",
        xml,
        "--json",
    ]));
    assert_eq!(v["faces"], 1);
}

/// `kp train --devices cpu,cpu` starts two ranks (processes) and gives the run of one process
/// with the same global batch: NoseTipNet has no BatchNorm, so to float rounding.
#[test]
fn two_cpu_ranks_train_the_same_run_as_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data();
    let args = |out: &std::path::Path| {
        vec![
            "train".to_string(),
            "--task".into(),
            "nose".into(),
            "--data".into(),
            d.to_str().unwrap().into(),
            "--limit".into(),
            "14".into(),
            "--epochs".into(),
            "1".into(),
            "--batch-size".into(),
            "4".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--quiet".into(),
            "--json".into(),
        ]
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let a = args(&one);
    let single = stdout_json(&kp(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let mut b = args(&two);
    b.extend(["--devices".to_string(), "cpu,cpu".into()]);
    let o = kp(&b.iter().map(String::as_str).collect::<Vec<_>>());
    // Rank 0 alone prints the summary.
    let parallel = stdout_json(&o);
    assert_eq!(parallel["status"], "finished");
    assert_eq!(parallel["steps"], single["steps"]);
    let (x, y) = (
        single["val"]["mean_px_error_input"].as_f64().unwrap(),
        parallel["val"]["mean_px_error_input"].as_f64().unwrap(),
    );
    assert!((x - y).abs() < 1e-3 * x, "{x} vs {y}");
    assert!(two.join("model.safetensors").is_file());

    // A bad list is refused before anything starts.
    let mut c = args(&tmp.path().join("three"));
    c.extend(["--devices".to_string(), "0,1".into()]);
    let o = kp(&c.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("add --device cuda"));
    assert!(!tmp.path().join("three").exists());
}
