//! Datasets with some bad entries: keep the good faces, report the rest (`--skip-bad`).
//!
//! The `*_skipping_bad` loaders ([`crate::load_dataset_skipping_bad`] and the per-format ones)
//! return the faces that loaded and one [`Error`] per file, `<image>` or box they left out; each
//! error still names the file and line or element. [`SkipReport`] counts them by cause.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Splits per-entry results into the values that loaded and the errors of the rest.
pub(crate) fn partition<T>(results: Vec<Result<T>>) -> (Vec<T>, Vec<Error>) {
    let mut ok = Vec::with_capacity(results.len());
    let mut bad = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
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
    fn partition_keeps_order() {
        let (ok, bad) = partition(vec![Ok(1), Err(Error::InvalidArgument("x".into())), Ok(3)]);
        assert_eq!(ok, vec![1, 3]);
        assert_eq!(bad.len(), 1);
    }
}
