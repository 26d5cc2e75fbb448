//! What the fuzz targets share: the run-folder loaders read files, so each input is written to
//! a file of the name they expect, in a folder of this process's own.

use std::path::PathBuf;

/// Writes `data` to `NAME` in this process's scratch folder (under `/dev/shm` when there, so
/// a million inputs cost no disk) and returns its path.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("kp-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}
