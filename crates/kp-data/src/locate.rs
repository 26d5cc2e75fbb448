//! Finding the dataset folder: `KP_DATA_DIR`, a `shared/datasets` beside the checkout, or `data/`.

use std::path::{Path, PathBuf};

/// Name of the environment variable that points at the datasets folder.
pub const DATA_DIR_ENV: &str = "KP_DATA_DIR";

/// Finds the datasets folder, looking in this order:
/// 1. `$KP_DATA_DIR` when set (returned even if it does not exist, so callers report it);
/// 2. for the current directory and each ancestor `a`: `a/shared/datasets`, then `a/data`
///    when it holds a fetched dataset (`imm_face_db/`).
///
/// Returns `None` when nothing is found.
pub fn find_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    let cwd = std::env::current_dir().ok()?;
    find_data_dir_from(&cwd)
}

/// Like [`find_data_dir`] without the environment variable, starting at `start`.
pub fn find_data_dir_from(start: &Path) -> Option<PathBuf> {
    for a in start.ancestors() {
        let shared = a.join("shared").join("datasets");
        if shared.is_dir() {
            return Some(shared);
        }
        let data = a.join("data");
        if data.join("imm_face_db").is_dir() {
            return Some(data);
        }
    }
    None
}

/// The datasets folder for tests: [`find_data_dir`], or a panic that says how to set it.
///
/// Only for test code; libraries return errors instead.
pub fn test_data_dir() -> PathBuf {
    match find_data_dir() {
        Some(d) if d.is_dir() => d,
        Some(d) => panic!("{DATA_DIR_ENV}={} is not a folder", d.display()),
        None => panic!(
            "no datasets found: set {DATA_DIR_ENV} to the datasets folder \
             (e.g. ../shared/datasets) or run `cargo xtask fetch`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_shared_datasets_in_an_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("repo/crates/x");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(tmp.path().join("shared/datasets")).unwrap();
        assert_eq!(
            find_data_dir_from(&deep),
            Some(tmp.path().join("shared/datasets"))
        );
    }

    #[test]
    fn finds_fetched_data_folder() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data/imm_face_db")).unwrap();
        assert_eq!(
            find_data_dir_from(tmp.path()),
            Some(tmp.path().join("data"))
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(find_data_dir_from(empty.path()), None);
    }
}
