//! sha256 helpers, `MANIFEST.sha256` files and a small parallel map.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use super::extract::safe_relative_path;

/// Name of the per-folder manifest (`sha256sum` format).
pub const MANIFEST: &str = "MANIFEST.sha256";

const BUF: usize = 256 * 1024;

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hashes everything `reader` yields; `on_chunk` sees each chunk (progress, copying).
pub fn sha256_reader(
    mut reader: impl Read,
    mut on_chunk: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        on_chunk(&buf[..n])?;
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_reader(f, |_| Ok(())).with_context(|| format!("cannot read {}", path.display()))
}

/// Copies `src` to `dst` (created, parent must exist) and returns the sha256 and size of
/// the bytes copied, reading the source once.
pub fn copy_hashing(src: &Path, dst: &Path) -> Result<(String, u64)> {
    let input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut out = File::create(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let res = sha256_reader(input, |chunk| out.write_all(chunk))
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    Ok(res)
}

/// A parsed manifest: relative path (with `/`) → sha256 hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses `sha256sum` output (`<hex>  <path>` or `<hex> *<path>`), rejecting unsafe paths.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let where_ = || format!("{}:{}", origin.display(), i + 1);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let (digest, rest) = line
                .split_once(' ')
                .with_context(|| format!("{}: expected `<sha256>  <path>`", where_()))?;
            let path = rest
                .strip_prefix(' ')
                .or_else(|| rest.strip_prefix('*'))
                .with_context(|| format!("{}: expected `<sha256>  <path>`", where_()))?;
            ensure!(
                is_sha256_hex(digest),
                "{}: `{digest}` is not a lowercase sha256 hex digest",
                where_()
            );
            let rel = safe_relative_path(path)
                .with_context(where_)?
                .with_context(|| format!("{}: empty path", where_()))?;
            let key = path_key(&rel)?;
            if entries.insert(key.clone(), digest.to_string()).is_some() {
                bail!("{}: `{key}` is listed twice", where_());
            }
        }
        Ok(Manifest { entries })
    }

    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Manifest::parse(&text, path)
    }

    /// Canonical text: one `"<hex>  <path>\n"` line per file, sorted by path.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.entries.len() * 100);
        for (path, digest) in &self.entries {
            s.push_str(digest);
            s.push_str("  ");
            s.push_str(path);
            s.push('\n');
        }
        s
    }

    /// The content digest stored in datasets.toml: sha256 of [`Manifest::to_text`].
    pub fn digest(&self) -> String {
        sha256_bytes(self.to_text().as_bytes())
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_text())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// `a/b/c` form of a relative path (must be UTF-8).
pub fn path_key(rel: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        let s = c
            .as_os_str()
            .to_str()
            .with_context(|| format!("path {} is not UTF-8", rel.display()))?;
        parts.push(s);
    }
    Ok(parts.join("/"))
}

/// All regular files under `root` as (key, path), sorted, skipping `root/MANIFEST.sha256`.
/// Symbolic links are skipped with a warning.
pub fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        let rd =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in rd {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if ft.is_dir() {
                walk(root, &path, out)?;
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
                let key = path_key(rel)?;
                if key != MANIFEST {
                    out.push((key, path));
                }
            } else {
                tracing::warn!("ignoring {} (not a regular file or folder)", path.display());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Hashes every file under `root` (parallel) into a manifest; also returns the total size.
pub fn manifest_of_tree(root: &Path, progress: &indicatif::ProgressBar) -> Result<(Manifest, u64)> {
    let files = list_files(root)?;
    let results = par_map(&files, |(_, path)| {
        let r = sha256_file(path);
        if let Ok((_, n)) = &r {
            progress.inc(*n);
        }
        r
    });
    let mut entries = BTreeMap::new();
    let mut bytes = 0;
    for ((key, _), r) in files.into_iter().zip(results) {
        let (digest, n) = r?;
        bytes += n;
        entries.insert(key, digest);
    }
    Ok((Manifest { entries }, bytes))
}

/// Runs `f` over `items` on all cores, keeping the order of the results.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
