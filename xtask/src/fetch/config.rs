//! `data/datasets.toml`: what each dataset is, where it comes from and how to verify it.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

use super::digest::is_sha256_hex;
use super::extract::safe_relative_path;

/// The whole catalogue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of this file; only 1 exists.
    pub schema: u32,
    #[serde(rename = "dataset")]
    pub datasets: Vec<Dataset>,
}

/// One dataset: a folder under the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub name: String,
    /// Folder name under the data directory (a single path component).
    pub folder: String,
    pub description: String,
    /// Where the data comes from (printed for local-only datasets).
    pub source: String,
    pub licence: String,
    pub citation: String,
    /// Content check of the folder: a digest over its `MANIFEST.sha256`.
    pub content: Content,
    /// The official archive; absent for local-only datasets (`--from` only).
    pub archive: Option<Archive>,
}

/// Content check: `digest` is the sha256 of the manifest lines `"<sha256>  <relative/path>\n"`
/// sorted by path (bytes), i.e. `LC_ALL=C sort -k2 MANIFEST.sha256 | sha256sum`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub digest: String,
    /// Number of files listed (the manifest itself excluded).
    pub files: u64,
    /// Total size of those files.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ArchiveKind {
    #[serde(rename = "zip")]
    Zip,
    #[serde(rename = "tar.gz")]
    TarGz,
}

impl std::fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveKind::Zip => "zip",
            ArchiveKind::TarGz => "tar.gz",
        })
    }
}

/// How the unpacked archive is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Unpacked {
    /// The unpacked files must match `[dataset.content]` exactly.
    #[serde(rename = "content")]
    Content,
    /// No content digest is known for the archive: only `required` paths are checked, and the
    /// manifest written at install time guards against later corruption.
    #[serde(rename = "required-files")]
    RequiredFiles,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    pub kind: ArchiveKind,
    /// File name of the archive (also what `--from DIR` and `--mirror URL` look for).
    pub file: String,
    /// Official URL first, then mirrors; tried in order.
    pub urls: Vec<String>,
    /// sha256 of the archive itself, when a trustworthy one is known.
    pub sha256: Option<String>,
    pub unpacked: Unpacked,
    /// Paths (files or folders) that must exist after unpacking (`unpacked = "required-files"`).
    #[serde(default)]
    pub required: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read dataset catalogue {}", path.display()))?;
        Config::parse(&text)
            .with_context(|| format!("invalid dataset catalogue {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.schema == 1,
            "unsupported schema {} (expected 1)",
            self.schema
        );
        let mut names = HashSet::new();
        let mut folders = HashSet::new();
        for d in &self.datasets {
            d.validate()
                .with_context(|| format!("dataset `{}`", d.name))?;
            ensure!(names.insert(&d.name), "duplicate dataset name `{}`", d.name);
            ensure!(folders.insert(&d.folder), "duplicate folder `{}`", d.folder);
        }
        Ok(())
    }

    /// The datasets selected by `--only` (all when empty), in catalogue order.
    pub fn select(&self, only: &[String]) -> Result<Vec<&Dataset>> {
        for n in only {
            if !self.datasets.iter().any(|d| &d.name == n) {
                let known: Vec<&str> = self.datasets.iter().map(|d| d.name.as_str()).collect();
                bail!("unknown dataset `{n}`; known: {}", known.join(", "));
            }
        }
        Ok(self
            .datasets
            .iter()
            .filter(|d| only.is_empty() || only.contains(&d.name))
            .collect())
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && !s.contains(['/', '\\', '\0', ':'])
}

impl Dataset {
    fn validate(&self) -> Result<()> {
        ensure!(!self.name.is_empty(), "empty name");
        ensure!(
            is_plain_name(&self.folder),
            "folder `{}` must be a plain folder name",
            self.folder
        );
        ensure!(
            is_sha256_hex(&self.content.digest),
            "content.digest `{}` is not 64 lowercase hex digits",
            self.content.digest
        );
        if let Some(a) = &self.archive {
            ensure!(
                is_plain_name(&a.file),
                "archive.file `{}` must be a plain file name",
                a.file
            );
            ensure!(!a.urls.is_empty(), "archive.urls is empty");
            for u in &a.urls {
                ensure!(
                    u.starts_with("http://") || u.starts_with("https://"),
                    "archive URL `{u}` is not http(s)"
                );
            }
            if let Some(s) = &a.sha256 {
                ensure!(
                    is_sha256_hex(s),
                    "archive.sha256 `{s}` is not 64 lowercase hex digits"
                );
            }
            match a.unpacked {
                Unpacked::Content => ensure!(
                    a.required.is_empty(),
                    "archive.required is only used with unpacked = \"required-files\""
                ),
                Unpacked::RequiredFiles => ensure!(
                    !a.required.is_empty(),
                    "unpacked = \"required-files\" needs a non-empty archive.required"
                ),
            }
            for r in &a.required {
                ensure!(
                    safe_relative_path(r)?.is_some(),
                    "archive.required entry `{r}` is empty"
                );
            }
        }
        Ok(())
    }

    /// What to tell a user who wants this local-only dataset without `--from`.
    pub fn local_only_message(&self) -> String {
        format!(
            "`{}` is local-only (no official archive to download; source: {}). \
             Copy it with `cargo xtask fetch --from DIR --only {}`, where DIR holds `{}/` \
             (in this project: --from ../shared/datasets)",
            self.name, self.source, self.name, self.folder
        )
    }
}
