//! Datasets with some bad entries: keep the good faces, report the rest (`--skip-bad`).
//!
//! The `*_skipping_bad` loaders ([`crate::load_dataset_skipping_bad`] and the per-format ones)
//! return the faces that loaded and one [`Error`] per file, `<image>` or box they left out; each
//! error still names the file and line or element. [`SkipReport`] counts them by cause.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Loads every file with `load` (in parallel, results in file order). With `skip_bad`, files
/// that fail are left out and their errors returned; without it, the first failing file (in
/// file order) fails the whole load.
pub(crate) fn load_files<T: Send>(
    files: &[PathBuf],
    load: impl Fn(&Path) -> Result<T> + Sync,
    skip_bad: bool,
) -> Result<(Vec<T>, Vec<Error>)> {
    let results: Vec<Result<T>> = files.par_iter().map(|p| load(p)).collect();
    let mut ok = Vec::with_capacity(results.len());
    let mut bad = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) if skip_bad => bad.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok((ok, bad))
}

/// How many entries were left out, by cause, with every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipReport {
    /// Count per cause ([`Error::kind`]), sorted by cause.
    pub by_kind: BTreeMap<&'static str, usize>,
    /// One message per entry left out (file and line or element first).
    pub messages: Vec<String>,
}

impl SkipReport {
    /// Summarises the errors of the entries left out.
    pub fn new(skipped: &[Error]) -> Self {
        let mut by_kind = BTreeMap::new();
        for e in skipped {
            *by_kind.entry(e.kind()).or_insert(0) += 1;
        }
        SkipReport {
            by_kind,
            messages: skipped.iter().map(ToString::to_string).collect(),
        }
    }

    /// Number of entries left out.
    pub fn total(&self) -> usize {
        self.messages.len()
    }
}

impl fmt::Display for SkipReport {
    /// `skipped 3 bad entries (2 bad annotation, 1 missing image)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped {} bad entries", self.total())?;
        if !self.by_kind.is_empty() {
            let parts: Vec<String> = self
                .by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn counts_by_cause() {
        let errors = vec![
            Error::parse("a.asf", 3, "bad"),
            Error::parse("b.asf", 9, "bad"),
            Error::MissingImage {
                annotation: PathBuf::from("c.asf"),
                image: PathBuf::from("c.jpg"),
            },
        ];
        let r = SkipReport::new(&errors);
        assert_eq!(r.total(), 3);
        assert_eq!(r.by_kind["bad annotation line"], 2);
        assert_eq!(r.by_kind["missing image"], 1);
        assert_eq!(
            r.to_string(),
            "skipped 3 bad entries (2 bad annotation line, 1 missing image)"
        );
        assert!(r.messages[0].starts_with("a.asf:3"));
    }

    #[test]
    fn load_files_keeps_order_and_skips_or_fails() {
        let files: Vec<PathBuf> = ["1", "x", "3", "y"].iter().map(PathBuf::from).collect();
        let load = |p: &Path| -> Result<u32> {
            let s = p.to_str().unwrap();
            s.parse()
                .map_err(|_| Error::parse(p, 1, format!("`{s}` is no number")))
        };
        let (ok, bad) = load_files(&files, load, true).unwrap();
        assert_eq!(ok, vec![1, 3]);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].to_string().starts_with("x:1"), "{}", bad[0]);
        // Without skipping, the first bad file in file order fails the load.
        let e = load_files(&files, load, false).unwrap_err();
        assert!(e.to_string().starts_with("x:1"), "{e}");
    }
}
