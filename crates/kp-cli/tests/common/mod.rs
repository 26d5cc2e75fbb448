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
