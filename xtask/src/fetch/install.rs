//! Putting a dataset folder in place atomically, and verifying folders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::config::{Archive, Dataset, Unpacked};
use super::digest::{
    copy_hashing, list_files, manifest_of_tree, par_map, sha256_file, Manifest, MANIFEST,
};
use super::extract::unpack;
use super::{progress_bar, Options};

/// Why a folder is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Its manifest matches the content digest in datasets.toml.
    ContentDigest,
    /// No content digest is known (official archive without published checksums): the folder
    /// matches the manifest written when it was installed, and the required files exist.
    RecordedAtInstall,
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trust::ContentDigest => "content digest ok",
            Trust::RecordedAtInstall => {
                "matches manifest recorded at install (no published digest)"
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub trust: Trust,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum State {
    Missing,
    Verified(Verified),
    Broken(anyhow::Error),
}

/// A staging folder next to the target (same file system, so the final rename is atomic).
/// It is removed when dropped, whatever happened.
pub struct Staging {
    pub path: PathBuf,
}

fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        false
    }
}

/// Removes `.FOLDER.tmp.PID` / `.FOLDER.old.PID` left by killed runs (dead PIDs only).
fn clean_stale(data_dir: &Path, folder: &str) {
    let Ok(rd) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&format!(".{folder}.")) else {
            continue;
        };
        let pid = rest
            .strip_prefix("tmp.")
            .or_else(|| rest.strip_prefix("old."))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !pid_alive(pid) {
                tracing::info!(
                    "removing leftover {} from an interrupted run",
                    entry.path().display()
                );
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!("cannot remove {}: {e}", entry.path().display());
                }
            }
        }
    }
}

impl Staging {
    pub fn new(data_dir: &Path, folder: &str) -> Result<Staging> {
        clean_stale(data_dir, folder);
        let path = data_dir.join(format!(".{folder}.tmp.{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Staging { path })
    }

    /// Moves `root` (this staging folder or a folder inside it) to `target`, replacing any
    /// previous `target` by two renames: `target` is never half-written.
    pub fn commit(self, root: &Path, target: &Path) -> Result<()> {
        let data_dir = target.parent().unwrap_or(Path::new("."));
        let folder = target
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        if std::fs::symlink_metadata(target).is_ok() {
            let old = data_dir.join(format!(".{folder}.old.{}", std::process::id()));
            if old.exists() {
                std::fs::remove_dir_all(&old)
                    .with_context(|| format!("cannot remove {}", old.display()))?;
            }
            std::fs::rename(target, &old)
                .with_context(|| format!("cannot move the old {} aside", target.display()))?;
            if let Err(e) = std::fs::rename(root, target) {
                let _ = std::fs::rename(&old, target);
                return Err(e).with_context(|| {
                    format!("cannot rename {} to {}", root.display(), target.display())
                });
            }
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!("cannot remove the replaced copy {}: {e}", old.display());
            }
        } else {
            std::fs::rename(root, target).with_context(|| {
                format!("cannot rename {} to {}", root.display(), target.display())
            })?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!("cannot remove staging folder {}: {e}", self.path.display());
            }
        }
    }
}

/// Checks every file listed in `manifest` under `dir`; returns the problems (one line each).
fn check_files(
    dir: &Path,
    manifest: &Manifest,
    bar: &indicatif::ProgressBar,
) -> (Vec<String>, u64) {
    let items: Vec<(&String, &String)> = manifest.entries.iter().collect();
    let results = par_map(&items, |(key, _)| {
        let r = sha256_file(&dir.join(key));
        if let Ok((_, n)) = &r {
            bar.inc(*n);
        }
        r
    });
    let mut problems = Vec::new();
    let mut bytes = 0;
    for ((key, expected), r) in items.into_iter().zip(results) {
        match r {
            Ok((got, n)) => {
                bytes += n;
                if &got != expected {
                    problems.push(format!(
                        "{}: sha256 mismatch: expected {expected}, got {got}",
                        dir.join(key).display()
                    ));
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    (problems, bytes)
}

fn problems_error(what: String, problems: &[String]) -> anyhow::Error {
    const SHOW: usize = 20;
    let mut msg = format!("{what}: {} problem(s)", problems.len());
    for p in problems.iter().take(SHOW) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > SHOW {
        msg.push_str(&format!("\n  … and {} more", problems.len() - SHOW));
    }
    anyhow!(msg)
}

fn warn_extras(dir: &Path, manifest: &Manifest) {
    let Ok(files) = list_files(dir) else { return };
    let extras: Vec<String> = files
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !manifest.entries.contains_key(k))
        .collect();
    if !extras.is_empty() {
        tracing::warn!(
            "{}: {} file(s) not listed in {MANIFEST} (ignored), e.g. {}",
            dir.display(),
            extras.len(),
            extras[0]
        );
    }
}

fn required_missing(root: &Path, archive: &Archive) -> Vec<String> {
    archive
        .required
        .iter()
        .filter(|r| !root.join(r).exists())
        .cloned()
        .collect()
}

/// Is `dir` a complete, verified copy of `ds`?
pub fn check_installed(ds: &Dataset, dir: &Path, opts: &Options) -> State {
    if std::fs::symlink_metadata(dir).is_err() {
        return State::Missing;
    }
    let mpath = dir.join(MANIFEST);
    if !mpath.is_file() {
        return State::Broken(anyhow!("{} has no {MANIFEST}", dir.display()));
    }
    let manifest = match Manifest::read(&mpath) {
        Ok(m) => m,
        Err(e) => return State::Broken(e),
    };
    let digest = manifest.digest();
    let trust =
        if digest == ds.content.digest {
            Trust::ContentDigest
        } else if let Some(a) = ds.archive.as_ref().filter(|a| {
            a.unpacked == Unpacked::RequiredFiles && required_missing(dir, a).is_empty()
        }) {
            tracing::debug!(
                "{}: trusting the manifest recorded when {} was unpacked",
                dir.display(),
                a.file
            );
            Trust::RecordedAtInstall
        } else {
            return State::Broken(anyhow!(
                "{}: content digest {digest} does not match datasets.toml ({})",
                mpath.display(),
                ds.content.digest
            ));
        };
    let bar = progress_bar(
        opts.progress,
        &format!("verify {}", ds.name),
        Some(ds.content.bytes),
        0,
    );
    let (problems, bytes) = check_files(dir, &manifest, &bar);
    bar.finish_and_clear();
    if !problems.is_empty() {
        return State::Broken(problems_error(
            format!("{} failed verification", dir.display()),
            &problems,
        ));
    }
    warn_extras(dir, &manifest);
    State::Verified(Verified {
        trust,
        files: manifest.entries.len(),
        bytes,
    })
}

/// Copies the dataset folder `src` into place, checking each file against `src`'s manifest and
/// the manifest against datasets.toml.
pub fn install_from_folder(
    ds: &Dataset,
    src: &Path,
    target: &Path,
    opts: &Options,
) -> Result<Verified> {
    let mpath = src.join(MANIFEST);
    let manifest = if mpath.is_file() {
        Manifest::read(&mpath)?
    } else {
        tracing::warn!(
            "{} has no {MANIFEST}: hashing the folder instead",
            src.display()
        );
        manifest_of_tree(src, &indicatif::ProgressBar::hidden())?.0
    };
    tracing::info!(
        "copying {} ({} files)",
        src.display(),
        manifest.entries.len()
    );
    let staging = Staging::new(&opts.data_dir, &ds.folder)?;
    let dirs: BTreeSet<PathBuf> = manifest
        .entries
        .keys()
        .filter_map(|k| Path::new(k).parent().map(Path::to_path_buf))
        .collect();
    for d in dirs {
        let p = staging.path.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let bar = progress_bar(
        opts.progress,
        &format!("copy {}", ds.name),
        Some(ds.content.bytes),
        0,
    );
    let items: Vec<(&String, &String)> = manifest.entries.iter().collect();
    let results = par_map(&items, |(key, _)| {
        let r = copy_hashing(&src.join(key), &staging.path.join(key));
        if let Ok((_, n)) = &r {
            bar.inc(*n);
        }
        r
    });
    bar.finish_and_clear();
    let mut problems = Vec::new();
    let mut bytes = 0;
    for ((key, expected), r) in items.into_iter().zip(results) {
        match r {
            Ok((got, n)) => {
                bytes += n;
                if &got != expected {
                    problems.push(format!(
                        "{}: sha256 mismatch: expected {expected} (from {MANIFEST}), got {got}",
                        src.join(key).display()
                    ));
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems_error(
            format!("{} is corrupt", src.display()),
            &problems,
        ));
    }
    let digest = manifest.digest();
    if digest != ds.content.digest {
        bail!(
            "{} does not hold the expected `{}`: its content digest is {digest} ({} files, {} bytes) \
             but datasets.toml expects {} ({} files, {} bytes)",
            src.display(),
            ds.name,
            manifest.entries.len(),
            bytes,
            ds.content.digest,
            ds.content.files,
            ds.content.bytes
        );
    }
    warn_extras(src, &manifest);
    manifest.write(&staging.path.join(MANIFEST))?;
    let root = staging.path.clone();
    staging.commit(&root, target)?;
    Ok(Verified {
        trust: Trust::ContentDigest,
        files: manifest.entries.len(),
        bytes,
    })
}

/// Candidate dataset roots inside an unpacked archive: its single top-level folder (if that is
/// all it holds), then the archive root.
fn root_candidates(staging: &Path) -> Result<Vec<PathBuf>> {
    let entries: Vec<_> = std::fs::read_dir(staging)
        .with_context(|| format!("cannot list {}", staging.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", staging.display()))?;
    let mut out = Vec::new();
    if let [only] = entries.as_slice() {
        if only.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(only.path());
        }
    }
    out.push(staging.to_path_buf());
    Ok(out)
}

/// Verifies, unpacks and checks an archive, then moves the result into place.
/// `owned`: the archive is our download, so a bad one is deleted.
pub fn install_from_archive(
    ds: &Dataset,
    archive: &Archive,
    path: &Path,
    target: &Path,
    owned: bool,
    opts: &Options,
) -> Result<Verified> {
    let discard = |why: anyhow::Error| -> anyhow::Error {
        if owned {
            match std::fs::remove_file(path) {
                Ok(()) => anyhow!("{why:#}; deleted the bad archive {}", path.display()),
                Err(e) => anyhow!(
                    "{why:#}; could not delete the bad archive {}: {e}",
                    path.display()
                ),
            }
        } else {
            why
        }
    };
    tracing::info!("checking {}", path.display());
    let (got, size) = sha256_file(path)?;
    match &archive.sha256 {
        Some(expected) if &got != expected => {
            return Err(discard(anyhow!(
                "checksum mismatch for {}: expected sha256 {expected}, got {got}",
                path.display()
            )));
        }
        Some(_) => tracing::info!("{}: archive sha256 ok", archive.file),
        None => tracing::warn!(
            "no published sha256 is known for {}: it has sha256 {got} ({size} bytes); relying on the content check",
            archive.file
        ),
    }
    let staging = Staging::new(&opts.data_dir, &ds.folder)?;
    tracing::info!(
        "unpacking {} into {}",
        path.display(),
        staging.path.display()
    );
    unpack(archive.kind, path, &staging.path).map_err(&discard)?;
    let candidates = root_candidates(&staging.path)?;
    let (root, manifest, bytes, trust) = match archive.unpacked {
        Unpacked::Content => {
            let mut seen = Vec::new();
            let mut found = None;
            for c in &candidates {
                let (m, bytes) = manifest_of_tree(c, &indicatif::ProgressBar::hidden())?;
                if m.digest() == ds.content.digest {
                    found = Some((c.clone(), m, bytes));
                    break;
                }
                seen.push(format!(
                    "{} files, {bytes} bytes, content digest {} (as `{}`)",
                    m.entries.len(),
                    m.digest(),
                    c.strip_prefix(&staging.path)
                        .map_or_else(|_| String::new(), |p| p.display().to_string())
                ));
            }
            let Some((root, m, bytes)) = found else {
                return Err(discard(anyhow!(
                    "content of {} does not match datasets.toml: unpacked {}; expected {} files, {} bytes, \
                     content digest {}",
                    path.display(),
                    seen.join(" / "),
                    ds.content.files,
                    ds.content.bytes,
                    ds.content.digest
                )));
            };
            (root, m, bytes, Trust::ContentDigest)
        }
        Unpacked::RequiredFiles => {
            let Some(root) = candidates
                .iter()
                .find(|c| required_missing(c, archive).is_empty())
            else {
                let missing =
                    required_missing(candidates.first().unwrap_or(&staging.path), archive);
                return Err(discard(anyhow!(
                    "{} does not look like `{}`: missing {}",
                    path.display(),
                    ds.name,
                    missing.join(", ")
                )));
            };
            let (m, bytes) = manifest_of_tree(root, &indicatif::ProgressBar::hidden())?;
            tracing::warn!(
                "{}: no content digest is known for the official archive; recorded a {MANIFEST} \
                 ({} files) to detect later corruption",
                ds.name,
                m.entries.len()
            );
            (root.clone(), m, bytes, Trust::RecordedAtInstall)
        }
    };
    manifest.write(&root.join(MANIFEST))?;
    staging.commit(&root, target)?;
    Ok(Verified {
        trust,
        files: manifest.entries.len(),
        bytes,
    })
}
