//! Train/validation splits as sorted lists of face indices.

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::face::{Dataset, Face};
use crate::imm::IMM_TRAIN_PERSONS;

/// Default validation fraction of the random splits (80/20).
pub const DEFAULT_VAL_FRACTION: f64 = 0.2;

/// Face indices for training and validation; both sorted ascending and disjoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Split {
    /// Indices of training faces.
    pub train: Vec<usize>,
    /// Indices of validation faces.
    pub val: Vec<usize>,
}

fn check_fraction(val_fraction: f64) -> Result<()> {
    if (0.0..1.0).contains(&val_fraction) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "validation fraction {val_fraction} is not in [0, 1)"
        )))
    }
}

/// Number of validation items for `n` items: `round(n * val_fraction)`.
fn val_count(n: usize, val_fraction: f64) -> usize {
    ((n as f64 * val_fraction).round() as usize).min(n)
}

impl Split {
    /// The CS194-26 IMM split: persons 1-32 train, persons 33-40 validate.
    /// Every face must carry a person id.
    pub fn imm_standard(dataset: &Dataset) -> Result<Split> {
        let mut s = Split {
            train: Vec::new(),
            val: Vec::new(),
        };
        for (i, f) in dataset.faces.iter().enumerate() {
            let person = f.person.ok_or_else(|| Error::Dataset {
                dataset: dataset.name.clone(),
                message: format!(
                    "face {i} ({}) has no IMM person id for the standard split",
                    f.image.display()
                ),
            })?;
            if IMM_TRAIN_PERSONS.contains(&person) {
                s.train.push(i);
            } else {
                s.val.push(i);
            }
        }
        Ok(s)
    }

    /// A seeded random split of `n` items: `round(n * val_fraction)` validate, the rest train.
    /// The same `(n, val_fraction, seed)` always gives the same split.
    pub fn random(n: usize, val_fraction: f64, seed: u64) -> Result<Split> {
        check_fraction(val_fraction)?;
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(seed));
        let mut val = idx.split_off(n - val_count(n, val_fraction));
        idx.sort_unstable();
        val.sort_unstable();
        Ok(Split { train: idx, val })
    }

    /// A seeded random split that keeps all faces of one image on the same side: whole images
    /// are drawn (in seeded random order) into validation until it holds at least
    /// `round(n * val_fraction)` faces.
    pub fn by_image(faces: &[Face], val_fraction: f64, seed: u64) -> Result<Split> {
        check_fraction(val_fraction)?;
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<&Path, usize> = HashMap::new();
        for (i, f) in faces.iter().enumerate() {
            let g = *index.entry(f.image.as_path()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        groups.shuffle(&mut StdRng::seed_from_u64(seed));
        let want = val_count(faces.len(), val_fraction);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for g in groups {
            if val.len() < want {
                val.extend(g);
            } else {
                train.extend(g);
            }
        }
        train.sort_unstable();
        val.sort_unstable();
        Ok(Split { train, val })
    }

    /// Checks that the split covers `0..n` exactly once, with both lists sorted.
    pub fn validate(&self, n: usize) -> Result<()> {
        let mut seen = vec![false; n];
        for list in [&self.train, &self.val] {
            if !list.windows(2).all(|w| w[0] < w[1]) {
                return Err(Error::InvalidArgument("split lists must be sorted".into()));
            }
            for &i in list {
                match seen.get_mut(i) {
                    Some(s) if !*s => *s = true,
                    Some(_) => {
                        return Err(Error::InvalidArgument(format!(
                            "index {i} is in both lists"
                        )))
                    }
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "index {i} is out of range for {n} faces"
                        )))
                    }
                }
            }
        }
        match seen.iter().position(|s| !s) {
            Some(i) => Err(Error::InvalidArgument(format!("index {i} is in no list"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn imm_standard_by_person() {
        let faces = (1..=40)
            .map(|p| {
                let mut f = Face::new(format!("{p}.jpg"), vec![]);
                f.person = Some(p);
                f
            })
            .collect();
        let d = Dataset {
            name: "t".into(),
            scheme: None,
            faces,
        };
        let s = Split::imm_standard(&d).unwrap();
        assert_eq!(s.train, (0..32).collect::<Vec<_>>());
        assert_eq!(s.val, (32..40).collect::<Vec<_>>());
        let mut d = d;
        d.faces[3].person = None;
        let e = Split::imm_standard(&d).unwrap_err();
        assert!(e.to_string().contains("face 3 (4.jpg)"), "{e}");
    }

    #[test]
    fn random_is_reproducible_and_seed_dependent() {
        let a = Split::random(100, 0.2, 7).unwrap();
        assert_eq!(a, Split::random(100, 0.2, 7).unwrap());
        assert_ne!(a, Split::random(100, 0.2, 8).unwrap());
        assert_eq!((a.train.len(), a.val.len()), (80, 20));
        assert_ne!(a.val, (80..100).collect::<Vec<_>>(), "not shuffled");
    }

    #[test]
    fn bad_fraction_is_rejected() {
        for f in [-0.1, 1.0, f64::NAN] {
            assert!(Split::random(10, f, 0).is_err(), "{f}");
            assert!(Split::by_image(&[], f, 0).is_err(), "{f}");
        }
    }

    #[test]
    fn by_image_keeps_images_together() {
        let faces: Vec<Face> = (0..30)
            .map(|i| Face::new(format!("img{}.jpg", i % 7), vec![]))
            .collect();
        let s = Split::by_image(&faces, 0.25, 3).unwrap();
        s.validate(faces.len()).unwrap();
        assert!(s.val.len() >= 8 && !s.train.is_empty());
        for &v in &s.val {
            for &t in &s.train {
                assert_ne!(faces[v].image, faces[t].image);
            }
        }
        assert_eq!(s, Split::by_image(&faces, 0.25, 3).unwrap());
    }

    #[test]
    fn validate_catches_bad_splits() {
        let ok = Split {
            train: vec![0, 2],
            val: vec![1],
        };
        ok.validate(3).unwrap();
        for (train, val, n) in [
            (vec![0, 1], vec![1], 2),
            (vec![0], vec![], 2),
            (vec![0, 5], vec![1], 3),
            (vec![1, 0], vec![], 2),
        ] {
            assert!(Split { train, val }.validate(n).is_err());
        }
    }

    proptest! {
        #[test]
        fn random_covers_everything_once(n in 0usize..500, f in 0.0f64..0.99, seed: u64) {
            let s = Split::random(n, f, seed).unwrap();
            prop_assert!(s.validate(n).is_ok());
            prop_assert_eq!(s.val.len(), (n as f64 * f).round() as usize);
        }
    }
}
