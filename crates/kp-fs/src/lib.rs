//! Atomic file writes: the one way every kp crate writes a file that others read; reads
//! that a hostile path cannot turn into a hang or an unbounded allocation; and [`shown`], the
//! way a value read from such a file goes into a one-line error message.
//!
//! [`open_regular`] and [`read_limited`] refuse anything but a regular file (following links)
//! before opening it: a FIFO would block the open until a writer comes, a device such as
//! `/dev/zero` would be read without end. [`read_limited`] also stops at a byte cap instead of
//! growing a buffer to whatever the file (or a file that grows while read) holds.
//!
//! [`write_atomic`] and [`write_atomic_with`] fill a temporary file with a unique name in the
//! target's folder (`.NAME.<pid>.<counter>.tmp`, so the rename stays on one file system and two
//! writers never share it), sync it, rename it over the target and sync the folder, so the
//! rename itself survives a crash. A reader, or a process killed half way, sees either the old
//! file or the whole new one. On failure the temporary file is removed and the target is left
//! as it was. Missing folders are not created.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("kp-fs-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("metrics.csv");
//! kp_fs::write_atomic(&path, b"step,loss\n1,0.5\n")?;
//! kp_fs::write_atomic_with(&path, |w| {
//!     use std::io::Write;
//!     writeln!(w, "step,loss")?;
//!     writeln!(w, "2,0.25")?;
//!     Ok::<(), std::io::Error>(())
//! })?;
//! assert_eq!(std::fs::read_to_string(&path)?, "step,loss\n2,0.25\n");
//! // Only the target is left in the folder.
//! assert_eq!(std::fs::read_dir(&dir)?.count(), 1);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file could not be written: the target path and the operating system's error.
#[derive(Debug)]
pub struct Error {
    /// The file being written (the target, not its temporary file).
    pub path: PathBuf,
    /// The operating system's error.
    pub source: std::io::Error,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<Error> for std::io::Error {
    /// The same kind of error, its message naming the path.
    fn from(e: Error) -> Self {
        std::io::Error::new(e.source.kind(), e.to_string())
    }
}

/// The folder `path` lives in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary path beside `path` that no other write of this process uses:
/// `.NAME.<pid>.<counter>.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    folder_of(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Whether `name` is a file name [`temp_path`] makes: `.NAME.<pid>.<counter>.tmp`.
pub fn is_temp_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let mut parts = inner.rsplitn(3, '.');
    let (counter, pid, base) = (parts.next(), parts.next(), parts.next());
    let digits =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(counter) && digits(pid) && base.is_some_and(|b| !b.is_empty())
}

/// Removes the temporary files of [`temp_path`] left in `dir` and its direct subfolders by a
/// writer that was killed before its rename; returns how many. Call it only while no other
/// process writes there (kp's run folders: under the run's lock). Other files are kept.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut folders = vec![dir.to_path_buf()];
    for _depth in 0..2 {
        let mut next = Vec::new();
        for folder in folders {
            for entry in std::fs::read_dir(&folder)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    next.push(entry.path());
                } else if kind.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        folders = next;
    }
    Ok(removed)
}

/// Syncs the folder `dir`, so that a rename into it is on disk (a no-op where folders cannot be
/// opened as files).
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` atomically (see the crate documentation).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
    let path = path.as_ref();
    write_atomic_with(path, |w| {
        w.write_all(bytes).map_err(|source| Error {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Writes `path` atomically, letting `write` fill a buffered temporary file first.
///
/// An error `write` returns is passed on as it is (after the temporary file is removed); I/O
/// errors of creating, syncing or renaming are [`Error`]s naming `path`, turned into `E`
/// (`std::io::Error` works as `E`, its message naming the path).
pub fn write_atomic_with<E, F>(path: impl AsRef<Path>, write: F) -> Result<(), E>
where
    E: From<Error>,
    F: FnOnce(&mut BufWriter<File>) -> Result<(), E>,
{
    let path = path.as_ref();
    let named = |source: std::io::Error| {
        E::from(Error {
            path: path.to_path_buf(),
            source,
        })
    };
    if path.file_name().is_none() {
        return Err(named(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        )));
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp).map_err(named)?);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| named(e.into_error()))?;
        file.sync_all().map_err(named)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(named)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_folder(folder_of(path)).map_err(named)
}

/// What a non-regular file is, for error messages (`a FIFO`, `a directory`, ...).
fn describe(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// `Ok(len)` for a regular file's metadata, else an `InvalidInput` error saying what it is.
fn regular_len(meta: &std::fs::Metadata) -> std::io::Result<u64> {
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", describe(meta.file_type())),
        ));
    }
    Ok(meta.len())
}

/// The length of `path` when it is (or links to) a regular file; otherwise an
/// `InvalidInput` error saying what it is (`is a FIFO, not a regular file`).
pub fn regular_file_len(path: &Path) -> std::io::Result<u64> {
    regular_len(&std::fs::metadata(path)?)
}

/// [`open_regular`] with the opened file's length.
fn open_regular_len(path: &Path) -> std::io::Result<(File, u64)> {
    regular_file_len(path)?;
    let f = File::open(path)?;
    let len = regular_len(&f.metadata()?)?;
    Ok((f, len))
}

/// Opens `path` for reading if it is a regular file (checked before opening, so a FIFO cannot
/// block, and again on the opened file, so a swap in between is caught).
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    Ok(open_regular_len(path)?.0)
}

/// Largest text file (labels, configurations, run state) kp reads: 1 GiB.
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// The bytes of the regular file `path`, at most `max_bytes` of them: a longer file is an
/// `InvalidData` error naming the cap, read no further than one byte past it.
pub fn read_limited(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let (f, len) = open_regular_len(path)?;
    let mut buf = Vec::with_capacity(len.min(max_bytes) as usize);
    f.take(max_bytes.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("is larger than {max_bytes} bytes, kp's limit for this kind of file"),
        ));
    }
    Ok(buf)
}

/// [`read_limited`] as UTF-8 text ([`MAX_TEXT_BYTES`]).
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_limited(path, MAX_TEXT_BYTES)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("is not UTF-8 text ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_files_are_removed_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_path(&dir.path().join("model.safetensors"));
        assert!(is_temp_name(&t.file_name().unwrap().to_string_lossy()));
        std::fs::write(&t, b"half").unwrap();
        std::fs::create_dir(dir.path().join("checkpoints")).unwrap();
        let nested = dir.path().join("checkpoints/.last.safetensors.77.3.tmp");
        std::fs::write(&nested, b"half").unwrap();
        for keep in ["notes.tmp", ".x.tmp", ".a.b.tmp", "config.json", ".lock"] {
            assert!(!is_temp_name(keep), "{keep}");
            std::fs::write(dir.path().join(keep), b"keep").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 2);
        assert!(!t.exists() && !nested.exists());
        assert!(dir.path().join("notes.tmp").exists() && dir.path().join("config.json").exists());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(names(dir.path()), ["a.txt"]);
    }

    #[test]
    fn temp_names_are_unique_hidden_and_beside_the_target() {
        let p = Path::new("/some/folder/model.safetensors");
        let (a, b) = (temp_path(p), temp_path(p));
        assert_ne!(a, b);
        assert_eq!(a.parent(), p.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        let prefix = format!(".model.safetensors.{}.", std::process::id());
        assert!(
            name.starts_with(&prefix) && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(temp_path(Path::new("bare")).parent(), Some(Path::new(".")));
    }

    #[test]
    fn two_threads_writing_one_target_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shared.bin");
        let contents: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i; 256 * 1024]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, c).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert!(contents.contains(&got), "a mix of both writes");
        assert_eq!(names(dir.path()), ["shared.bin"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(names(dir.path()), ["a.txt"]);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_target_and_no_temp_file() {
        // A folder in the target's place: the rename fails after the temp file is complete.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inner"), "kept").unwrap();
        let err = write_atomic(&p, b"new").unwrap_err();
        assert_eq!(err.path, p);
        assert_eq!(std::fs::read_to_string(p.join("inner")).unwrap(), "kept");
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/a.txt");
        let err = write_atomic(&p, b"x").unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no/such/a.txt"), "{err}");
        assert!(!dir.path().join("no").exists());
    }

    #[test]
    fn a_path_without_a_file_name_is_invalid_input() {
        let err = write_atomic("/", b"x").unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_folder_sync_covers_bare_names_and_folders() {
        assert_eq!(folder_of(Path::new("a.txt")), Path::new("."));
        assert_eq!(folder_of(Path::new("d/a.txt")), Path::new("d"));
        let dir = tempfile::tempdir().unwrap();
        sync_folder(dir.path()).unwrap();
        sync_folder(Path::new(".")).unwrap();
        #[cfg(unix)]
        assert!(sync_folder(&dir.path().join("missing")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking_and_a_device_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("labels.xml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let e = read_text(&fifo).unwrap_err();
        assert!(
            e.to_string().contains("is a FIFO, not a regular file"),
            "{e}"
        );
        // Through a link too.
        let link = dir.path().join("link.xml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(open_regular(&link)
            .unwrap_err()
            .to_string()
            .contains("FIFO"));
        let e = read_limited(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("is a device"), "{e}");
        let e = read_text(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.txt");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_limited(&p, 100).unwrap().len(), 100);
        let e = read_limited(&p, 99).unwrap_err();
        assert!(e.to_string().contains("larger than 99 bytes"), "{e}");
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_text(&p).unwrap_err().to_string().contains("not UTF-8"));
    }
}

/// The most characters of a value [`shown`] echoes into an error message.
pub const MAX_SHOWN_CHARS: usize = 200;

/// A value from a file, as a one-line error message shows it: control characters escaped
/// (`\n`, `\u{1b}`, ...), so a hostile file cannot break the line or drive the terminal, and
/// cut after [`MAX_SHOWN_CHARS`] characters with the length of the rest, so a 50 MB attribute
/// does not become a 50 MB message.
pub fn shown(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    for c in chars.by_ref().take(MAX_SHOWN_CHARS) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    let rest = chars.count();
    if rest > 0 {
        out.push_str(&format!("… ({rest} more characters)"));
    }
    out
}

#[cfg(test)]
mod shown_tests {
    use super::*;

    #[test]
    fn shown_values_stay_on_one_short_line() {
        assert_eq!(shown("img/01.jpg"), "img/01.jpg");
        assert_eq!(shown("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        let long = "x".repeat(MAX_SHOWN_CHARS + 50);
        let s = shown(&long);
        assert!(s.starts_with(&"x".repeat(MAX_SHOWN_CHARS)));
        assert!(s.ends_with("(50 more characters)"), "{s}");
        assert_eq!(
            shown(&"é".repeat(MAX_SHOWN_CHARS)).chars().count(),
            MAX_SHOWN_CHARS
        );
    }
}
