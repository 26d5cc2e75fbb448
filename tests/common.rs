//! Helpers shared by the workspace integration tests.

use std::path::{Path, PathBuf};

/// The datasets folder (`KP_DATA_DIR` or `../shared/datasets` beside the checkout).
pub fn data_dir() -> PathBuf {
    kp_data::test_data_dir()
}

/// The IMM Face Database folder.
pub fn imm_dir() -> PathBuf {
    data_dir().join("imm_face_db")
}

/// The 300-W training crops XML.
pub fn ibug_crops_xml() -> PathBuf {
    data_dir().join("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml")
}

/// Asserts that each of `files` has the same bytes in run folders `a` and `b` (naming the file
/// that differs).
pub fn assert_same_files(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        let read = |dir: &Path| {
            std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
        };
        assert!(
            read(a) == read(b),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// The training loss of each epoch of the run in `run` (its metrics.csv's `train` rows).
pub fn train_losses(run: &Path) -> Vec<f64> {
    kp_train::run::RunDir::open(run)
        .unwrap()
        .read_metrics()
        .unwrap()
        .into_iter()
        .filter(|r| r.split == "train")
        .map(|r| r.loss)
        .collect()
}
