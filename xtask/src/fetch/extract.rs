//! Safe unpacking of zip and tar.gz archives: entries that would land outside the
//! destination (`..`, absolute paths, drive letters) and links are refused.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::ArchiveKind;

/// Checks an archive entry or manifest path and turns it into a relative path.
/// `Ok(None)` means the name denotes the root itself (`./`).
pub fn safe_relative_path(name: &str) -> Result<Option<PathBuf>> {
    if name.is_empty() {
        bail!("empty path");
    }
    if name.contains('\0') {
        bail!("path `{}` contains a NUL byte", name.escape_debug());
    }
    if name.starts_with('/') || name.starts_with('\\') {
        bail!("path `{name}` is absolute (it would escape the destination)");
    }
    let mut out = PathBuf::new();
    for (i, part) in name.split(['/', '\\']).enumerate() {
        match part {
            "" | "." => {}
            ".." => bail!("path `{name}` contains `..` (it would escape the destination)"),
            p if i == 0 && p.contains(':') => {
                bail!("path `{name}` starts with a drive or scheme prefix (it would escape the destination)")
            }
            p => out.push(p),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Unpacks `archive` into the existing, empty folder `dest`. Returns the number of files.
pub fn unpack(kind: ArchiveKind, archive: &Path, dest: &Path) -> Result<u64> {
    match kind {
        ArchiveKind::Zip => unpack_zip(archive, dest),
        ArchiveKind::TarGz => unpack_tar_gz(archive, dest),
    }
    .with_context(|| format!("cannot unpack {}", archive.display()))
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {}", parent.display()))?;
    }
    Ok(())
}

fn write_entry(reader: &mut impl std::io::Read, path: &Path, name: &str) -> Result<()> {
    create_parent(path)?;
    let mut out =
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::copy(reader, &mut out).with_context(|| format!("cannot extract entry `{name}`"))?;
    Ok(())
}

fn unpack_zip(archive: &Path, dest: &Path) -> Result<u64> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).context("not a valid zip file")?;
    let mut files = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("cannot read zip entry #{i}"))?;
        let name = entry
            .name()
            .with_context(|| format!("zip entry #{i} has an unreadable name"))?
            .into_owned();
        let rel =
            safe_relative_path(&name).with_context(|| format!("refusing zip entry `{name}`"))?;
        let Some(rel) = rel else { continue };
        let path = dest.join(&rel);
        if entry.is_symlink() {
            bail!("refusing zip entry `{name}`: symbolic links are not allowed");
        }
        if entry.encrypted() {
            bail!("refusing zip entry `{name}`: it is encrypted");
        }
        if entry.is_dir() {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create folder {}", path.display()))?;
        } else {
            write_entry(&mut entry, &path, &name)?;
            files += 1;
        }
    }
    Ok(files)
}

fn unpack_tar_gz(archive: &Path, dest: &Path) -> Result<u64> {
    use tar::EntryType;
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
    let mut tar = tar::Archive::new(gz);
    let mut files = 0;
    for entry in tar.entries().context("not a valid tar.gz file")? {
        let mut entry = entry.context("corrupt tar.gz (bad entry header or data)")?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|e| {
            anyhow::anyhow!(
                "refusing tar entry with a non-UTF-8 name {:?}",
                e.as_bytes()
            )
        })?;
        let rel =
            safe_relative_path(&name).with_context(|| format!("refusing tar entry `{name}`"))?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            EntryType::Directory => {
                if let Some(rel) = rel {
                    let path = dest.join(rel);
                    std::fs::create_dir_all(&path)
                        .with_context(|| format!("cannot create folder {}", path.display()))?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                let Some(rel) = rel else {
                    bail!("refusing tar entry `{name}`: a file cannot be the archive root")
                };
                write_entry(&mut entry, &dest.join(rel), &name)?;
                files += 1;
            }
            EntryType::Symlink | EntryType::Link => {
                bail!("refusing tar entry `{name}`: links are not allowed")
            }
            other => bail!("refusing tar entry `{name}`: unsupported entry type {other:?}"),
        }
    }
    Ok(files)
}
