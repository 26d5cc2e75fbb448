//! `kp train` killed with SIGKILL in the middle of a run, then `--resume`d, ends bit for bit
//! where an uninterrupted run with the same seed ends; the killed folder is never left with a
//! truncated file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn train_args(data: &Path, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--task", "face", "--epochs", "3", "--limit", "12"]
        .map(String::from)
        .into();
    args.extend(["--seed", "7", "--quiet", "--data"].map(String::from));
    args.push(data.display().to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args
}

fn kp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kp"))
}

fn run_to_end(args: &[String]) {
    let o = kp().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "kp {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn epochs_done(run: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(run.join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    v["epochs_done"].as_u64()
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sigkill_then_resume_equals_an_unbroken_run() {
    let data = kp_data::test_data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (killed, unbroken) = (tmp.path().join("killed"), tmp.path().join("unbroken"));

    // Start, wait for the first checkpoint, let the second epoch begin, then SIGKILL.
    let mut child = kp()
        .args(train_args(&data, &killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while epochs_done(&killed).is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before its first checkpoint"
        );
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !killed.join("summary.json").exists(),
        "the run finished before it could be killed; make it longer"
    );

    // What the killed run left is whole: metrics.csv parses, the weights load, no temp files
    // are mistaken for results.
    let metrics = String::from_utf8(read(killed.join("metrics.csv"))).unwrap();
    assert!(metrics.starts_with("step,epoch,split,loss"));
    for line in metrics.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 4, "truncated metrics line {line:?}");
        cols[3].parse::<f64>().unwrap();
    }
    let weights = read(killed.join("model.safetensors"));
    safetensors::SafeTensors::deserialize(&weights).expect("whole model.safetensors");

    // Resume to the end, and compare with a run that was never interrupted.
    let mut resume = train_args(&data, &killed);
    resume.push("--resume".into());
    run_to_end(&resume);
    run_to_end(&train_args(&data, &unbroken));
    assert_eq!(
        read(killed.join("summary.json")),
        read(unbroken.join("summary.json")),
        "summary.json differs after kill + resume"
    );
    assert!(
        read(killed.join("model.safetensors")) == read(unbroken.join("model.safetensors")),
        "weights differ after kill + resume"
    );
    assert_eq!(
        read(killed.join("metrics.csv")),
        read(unbroken.join("metrics.csv")),
        "metrics.csv differs after kill + resume"
    );
}
