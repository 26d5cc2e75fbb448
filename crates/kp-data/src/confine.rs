//! Image references stay inside their dataset's folder.
//!
//! A label file names its images (`<image file='...'>` in dlib XML, the host line of an `.asf`,
//! the image beside a `.pts`). A hostile or careless file could name `/etc/shadow`,
//! `../../home/user/photo.jpg` or a link to either, and training or `kp eval` would read it (and
//! its error messages would say whether it exists). By default every reference must resolve
//! inside the folder of the label file: lexically (no absolute path elsewhere, no `..` out of
//! it) and, when the file exists, after following links. `kp --allow-outside-data` (or
//! `KP_ALLOW_OUTSIDE_DATA=1`, [`set_allow_outside`]) lifts this, e.g. for an XML that
//! `write_dlib_xml` wrote with absolute paths to images elsewhere.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_OUTSIDE: AtomicBool = AtomicBool::new(false);

/// Lets image references point outside their dataset's folder (process-wide).
pub fn set_allow_outside(allow: bool) {
    ALLOW_OUTSIDE.store(allow, Ordering::Relaxed);
}

/// Whether image references may point outside their dataset's folder.
pub fn allow_outside() -> bool {
    ALLOW_OUTSIDE.load(Ordering::Relaxed)
}

/// `path` with `.` and `..` resolved without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Checks that `reference`, an image path as a label file in folder `root` writes it, names a
/// file inside `root` (see the module doc); the error says why not, in words that do not
/// depend on whether the file exists.
pub fn check_inside(root: &Path, reference: &Path) -> Result<(), String> {
    if allow_outside() {
        return Ok(());
    }
    let root_abs = normalise(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
    let joined = normalise(&root_abs.join(reference));
    let why = "names a file outside the dataset's folder (kp --allow-outside-data reads it)";
    if !joined.starts_with(&root_abs) {
        return Err(why.into());
    }
    if let (Ok(real), Ok(real_root)) = (joined.canonicalize(), root_abs.canonicalize()) {
        if !real.starts_with(&real_root) {
            return Err(format!("is a link that {why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_stay_in_the_dataset_folder_links_included() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("secret.jpg"), b"x").unwrap();
        assert!(check_inside(&root, Path::new("sub/a.jpg")).is_ok());
        assert!(check_inside(&root, Path::new("sub/../sub/a.jpg")).is_ok());
        assert!(check_inside(&root, &root.join("sub/a.jpg")).is_ok());
        assert!(check_inside(&root, Path::new("missing/b.jpg")).is_ok());
        for bad in ["../secret.jpg", "sub/../../secret.jpg", "/etc/passwd"] {
            let e = check_inside(&root, Path::new(bad)).unwrap_err();
            assert!(e.contains("outside the dataset's folder"), "{bad}: {e}");
        }
        // The same words whether the file exists or not.
        assert_eq!(
            check_inside(&root, Path::new("../secret.jpg")),
            check_inside(&root, Path::new("../missing.jpg"))
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.jpg"), root.join("link.jpg"))
                .unwrap();
            let e = check_inside(&root, Path::new("link.jpg")).unwrap_err();
            assert!(e.starts_with("is a link"), "{e}");
        }
    }
}
