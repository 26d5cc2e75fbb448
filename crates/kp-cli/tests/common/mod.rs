//! Helpers shared by the `kp` binary's integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `kp` binary with `args`.
pub fn kp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kp"))
        .args(args)
        .output()
        .expect("run kp")
}

/// The datasets folder.
pub fn data() -> PathBuf {
    kp_data::test_data_dir()
}

/// `kp`'s JSON-lines output (`--json` of `detect`, `predict`, `bench`; `eval --faces`), one
/// object per line.
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// A JSON array of numbers (a box, a point) as `f64`s.
#[allow(dead_code)] // not every test binary reads boxes
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}
