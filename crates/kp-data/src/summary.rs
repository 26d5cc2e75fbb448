//! A dataset's vital statistics, for `kp data summary` (human text or JSON).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::face::Dataset;
use crate::loading::image_dimensions;
use crate::scheme::IMM58;
use crate::split::{Split, DEFAULT_VAL_FRACTION};

/// Seed of the random split that summaries report for non-IMM datasets.
pub const SUMMARY_SPLIT_SEED: u64 = 0;

/// Sizes of the split a summary reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitSummary {
    /// `imm-standard` (persons 1-32 / 33-40) or `random-80-20-seed-0`.
    pub kind: String,
    /// Training faces.
    pub train: usize,
    /// Validation faces.
    pub val: usize,
}

/// Counts and sizes of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The dataset's name.
    pub name: String,
    /// The landmark scheme's name, when known.
    pub scheme: Option<String>,
    /// Distinct images.
    pub images: usize,
    /// Images that do not exist on disk (e.g. the Kaggle test XML ships without images).
    pub missing_images: usize,
    /// Faces (boxes).
    pub faces: usize,
    /// Faces with landmarks.
    pub labelled_faces: usize,
    /// Faces marked `ignore`.
    pub ignored_faces: usize,
    /// Points per labelled face, when all labelled faces have the same number.
    pub points_per_face: Option<usize>,
    /// Smallest image width (from image headers, or the annotation for missing images).
    pub width_min: Option<u32>,
    /// Largest image width.
    pub width_max: Option<u32>,
    /// Smallest image height.
    pub height_min: Option<u32>,
    /// Largest image height.
    pub height_max: Option<u32>,
    /// The default split: IMM's standard one for IMM, otherwise 80/20 random with seed 0.
    pub split: SplitSummary,
}

impl Summary {
    /// Computes the summary; image sizes come from the image headers, read in parallel.
    pub fn compute(dataset: &Dataset) -> Result<Summary> {
        let faces = &dataset.faces;
        let mut seen = HashSet::new();
        let images: Vec<(&Path, Option<(u32, u32)>)> = faces
            .iter()
            .filter(|f| seen.insert(f.image.as_path()))
            .map(|f| (f.image.as_path(), f.image_size))
            .collect();
        let sizes = images
            .par_iter()
            .map(|&(p, annotated)| {
                if p.is_file() {
                    image_dimensions(p).map(|s| (Some(s), false))
                } else {
                    Ok((annotated, true))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let missing_images = sizes.iter().filter(|(_, missing)| *missing).count();
        let known: Vec<(u32, u32)> = sizes.iter().filter_map(|(s, _)| *s).collect();

        let labelled: Vec<usize> = faces
            .iter()
            .filter(|f| f.is_labelled())
            .map(|f| f.keypoints.len())
            .collect();
        let points_per_face = match labelled.first() {
            Some(&n) if labelled.iter().all(|&m| m == n) => Some(n),
            _ => None,
        };

        let imm = dataset.scheme == Some(&IMM58) && faces.iter().all(|f| f.person.is_some());
        let split = if imm {
            let s = Split::imm_standard(dataset)?;
            SplitSummary {
                kind: "imm-standard".into(),
                train: s.train.len(),
                val: s.val.len(),
            }
        } else {
            let s = Split::random(faces.len(), DEFAULT_VAL_FRACTION, SUMMARY_SPLIT_SEED)?;
            SplitSummary {
                kind: format!("random-80-20-seed-{SUMMARY_SPLIT_SEED}"),
                train: s.train.len(),
                val: s.val.len(),
            }
        };

        Ok(Summary {
            name: dataset.name.clone(),
            scheme: dataset.scheme.map(|s| s.name.to_owned()),
            images: images.len(),
            missing_images,
            faces: faces.len(),
            labelled_faces: labelled.len(),
            ignored_faces: faces.iter().filter(|f| f.ignore).count(),
            points_per_face,
            width_min: known.iter().map(|s| s.0).min(),
            width_max: known.iter().map(|s| s.0).max(),
            height_min: known.iter().map(|s| s.1).min(),
            height_max: known.iter().map(|s| s.1).max(),
            split,
        })
    }
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dataset     {} ({})",
            self.name,
            self.scheme.as_deref().unwrap_or("unknown scheme")
        )?;
        writeln!(
            f,
            "images      {} ({} missing on disk)",
            self.images, self.missing_images
        )?;
        writeln!(
            f,
            "faces       {} ({} labelled, {} ignored)",
            self.faces, self.labelled_faces, self.ignored_faces
        )?;
        match self.points_per_face {
            Some(n) => writeln!(f, "points      {n} per labelled face")?,
            None if self.labelled_faces == 0 => writeln!(f, "points      none (unlabelled)")?,
            None => writeln!(f, "points      mixed counts")?,
        }
        writeln!(
            f,
            "image size  width {}..{}, height {}..{}",
            opt(self.width_min),
            opt(self.width_max),
            opt(self.height_min),
            opt(self.height_max)
        )?;
        write!(
            f,
            "split       {}: {} train / {} val",
            self.split.kind, self.split.train, self.split.val
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::Face;
    use crate::geometry::Point;

    #[test]
    fn counts_sizes_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        image::RgbImage::new(30, 20).save(&a).unwrap();
        image::RgbImage::new(10, 40).save(&b).unwrap();
        let pts = vec![Point::new(1.0, 1.0); 3];
        let mut missing = Face::new(dir.path().join("gone.jpg"), vec![]);
        missing.image_size = Some((500, 5));
        missing.ignore = true;
        let d = Dataset {
            name: "t".into(),
            scheme: None,
            faces: vec![
                Face::new(&a, pts.clone()),
                Face::new(&a, pts.clone()),
                Face::new(&b, pts),
                missing,
                Face::new(dir.path().join("gone2.jpg"), vec![]),
            ],
        };
        let s = Summary::compute(&d).unwrap();
        assert_eq!((s.images, s.missing_images, s.faces), (4, 2, 5));
        assert_eq!((s.labelled_faces, s.ignored_faces), (3, 1));
        assert_eq!(s.points_per_face, Some(3));
        assert_eq!((s.width_min, s.width_max), (Some(10), Some(500)));
        assert_eq!((s.height_min, s.height_max), (Some(5), Some(40)));
        assert_eq!((s.split.train, s.split.val), (4, 1));
        let json = serde_json::to_value(&s).unwrap();
        for key in ["images", "faces", "points_per_face"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        let text = s.to_string();
        assert!(
            text.contains("faces       5 (3 labelled, 1 ignored)"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_image_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jpg");
        std::fs::write(&a, b"\xFF\xD8\xFF").unwrap();
        let d = Dataset {
            name: "t".into(),
            scheme: None,
            faces: vec![Face::new(&a, vec![])],
        };
        let e = Summary::compute(&d).unwrap_err();
        assert!(e.to_string().contains("a.jpg"), "{e}");
    }
}
