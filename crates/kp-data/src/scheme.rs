//! Landmark schemes as data: point counts, named groups, left/right flip permutations.
//!
//! Group names follow the subject's point of view (as dlib and 300-W do): the subject's
//! `right_eye` appears on the **left** of a frontal image.
//!
//! * [`IMM58`]: the IMM Face Database's 58 points. The groups are the seven ASF paths
//!   (path 0 jaw, 1 left eye, 2 right eye, 3 left eyebrow, 4 right eyebrow, 5 mouth, 6 nose);
//!   the authors' note says "seven point paths, three closed (eyes, mouth) and four open".
//! * [`IBUG68`]: the iBUG 300-W 68-point markup used by dlib.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::geometry::Point;

/// A landmark annotation scheme (which point means what).
#[derive(Debug, PartialEq, Eq)]
pub struct LandmarkScheme {
    /// Short name: `imm58` or `ibug68`.
    pub name: &'static str,
    /// Number of points per face.
    pub num_points: usize,
    /// Named groups of consecutive points (jaw, eyebrows, eyes, nose, mouth...).
    pub groups: &'static [(&'static str, Range<usize>)],
    /// `flip[i]` is the index that point `i` becomes after a horizontal mirror.
    pub flip: &'static [usize],
    /// Index of the nose tip.
    pub nose_tip: usize,
    /// Outer eye corners `(left-in-image, right-in-image)` used for inter-ocular NME.
    pub outer_eye_corners: (usize, usize),
}

/// IMM flip permutation, derived from the ASF paths of a frontal face (`01-1m.asf`):
/// jaw `i <-> 12-i`; eyes `13+k <-> 21+k` (both paths run outer corner, upper lid inwards,
/// inner corner, lower lid outwards); eyebrows `29+k <-> 34+k` (both run inner to outer);
/// mouth `39<->43, 40<->42, 44<->46`, `41`, `45` fixed; nose `47+k <-> 57-k` (`52` fixed).
/// Checked on the data by the test `imm_flip_matches_mirrored_mean_shape`.
const IMM58_FLIP: [usize; 58] = [
    12, 11, 10, 9, 8, 7, 6, 5, 4, 3, //
    2, 1, 0, 21, 22, 23, 24, 25, 26, 27, //
    28, 13, 14, 15, 16, 17, 18, 19, 20, 34, //
    35, 36, 37, 38, 29, 30, 31, 32, 33, 43, //
    42, 41, 40, 39, 46, 45, 44, 57, 56, 55, //
    54, 53, 52, 51, 50, 49, 48, 47,
];

/// The standard iBUG-68 flip permutation (as used by dlib's `_mirror.jpg` copies).
const IBUG68_FLIP: [usize; 68] = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, //
    6, 5, 4, 3, 2, 1, 0, 26, 25, 24, //
    23, 22, 21, 20, 19, 18, 17, 27, 28, 29, //
    30, 35, 34, 33, 32, 31, 45, 44, 43, 42, //
    47, 46, 39, 38, 37, 36, 41, 40, 54, 53, //
    52, 51, 50, 49, 48, 59, 58, 57, 56, 55, //
    64, 63, 62, 61, 60, 67, 66, 65,
];

/// The IMM Face Database's 58-point scheme.
pub static IMM58: LandmarkScheme = LandmarkScheme {
    name: "imm58",
    num_points: 58,
    groups: &[
        ("jaw", 0..13),
        ("left_eye", 13..21),
        ("right_eye", 21..29),
        ("left_eyebrow", 29..34),
        ("right_eyebrow", 34..39),
        ("mouth", 39..47),
        ("nose", 47..58),
    ],
    flip: &IMM58_FLIP,
    nose_tip: 52,
    outer_eye_corners: (21, 13),
};

/// The iBUG 300-W 68-point scheme.
pub static IBUG68: LandmarkScheme = LandmarkScheme {
    name: "ibug68",
    num_points: 68,
    groups: &[
        ("jaw", 0..17),
        ("right_eyebrow", 17..22),
        ("left_eyebrow", 22..27),
        ("nose", 27..36),
        ("right_eye", 36..42),
        ("left_eye", 42..48),
        ("mouth", 48..68),
    ],
    flip: &IBUG68_FLIP,
    nose_tip: 30,
    outer_eye_corners: (36, 45),
};

/// All known schemes.
pub static SCHEMES: [&LandmarkScheme; 2] = [&IMM58, &IBUG68];

impl LandmarkScheme {
    /// The known scheme with `n` points per face, if any.
    pub fn for_num_points(n: usize) -> Option<&'static LandmarkScheme> {
        SCHEMES.iter().copied().find(|s| s.num_points == n)
    }

    /// The known scheme called `name` (`imm58` / `imm`, `ibug68` / `ibug`), case-insensitive.
    pub fn by_name(name: &str) -> Option<&'static LandmarkScheme> {
        match name.to_ascii_lowercase().as_str() {
            "imm58" | "imm" => Some(&IMM58),
            "ibug68" | "ibug" | "300w" | "dlib68" => Some(&IBUG68),
            _ => None,
        }
    }

    /// The index range of the group called `name`.
    pub fn group(&self, name: &str) -> Option<Range<usize>> {
        self.groups
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
    }

    /// The name of the group that holds point `index`.
    pub fn group_of(&self, index: usize) -> Option<&'static str> {
        self.groups
            .iter()
            .find(|(_, r)| r.contains(&index))
            .map(|(n, _)| *n)
    }

    /// The flip permutation of a subset of this scheme's points (`subset[i]` is a point
    /// index): entry `i` is the position in `subset` of point `subset[i]`'s mirror partner.
    /// `None` when a partner is not in the subset (or an index is out of range). For the nose
    /// tip alone (a midline point) this is `[0]`.
    pub fn flip_within(&self, subset: &[usize]) -> Option<Vec<usize>> {
        subset
            .iter()
            .map(|&p| {
                let partner = *self.flip.get(p)?;
                subset.iter().position(|&q| q == partner)
            })
            .collect()
    }

    /// Mirrors a face horizontally in an image `image_width` pixels wide: each point moves to
    /// `x' = image_width - 1 - x` (pixel centres at integers) and the points are re-ordered with
    /// [`flip`](Self::flip) so that, e.g., the new left eye is the old right eye.
    pub fn mirror(&self, points: &[Point], image_width: f32) -> Result<Vec<Point>> {
        if points.len() != self.num_points {
            return Err(Error::InvalidArgument(format!(
                "{}: cannot mirror {} points (scheme has {})",
                self.name,
                points.len(),
                self.num_points
            )));
        }
        Ok(mirror_points(points, image_width, self.flip))
    }
}

/// Mirrors points horizontally in an image `image_width` pixels wide: point `i` of the result is
/// point `flip[i]` moved to `x' = image_width - 1 - x`. The one landmark mirror of kp, behind
/// [`LandmarkScheme::mirror`] and `kp_augment::hflip_points`.
///
/// # Panics
/// When an entry of `flip` is not an index of `points`.
pub fn mirror_points(points: &[Point], image_width: f32, flip: &[usize]) -> Vec<Point> {
    flip.iter()
        .map(|&src| {
            let p = points[src];
            Point::new(image_width - 1.0 - p.x, p.y)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flip_within_subsets() {
        assert_eq!(IMM58.flip_within(&[IMM58.nose_tip]), Some(vec![0]));
        let full: Vec<usize> = (0..68).collect();
        assert_eq!(IBUG68.flip_within(&full).as_deref(), Some(IBUG68.flip));
        // The outer eye corners swap; one corner alone has no partner.
        let (a, b) = IBUG68.outer_eye_corners;
        assert_eq!(
            IBUG68.flip_within(&[a, IBUG68.nose_tip, b]),
            Some(vec![2, 1, 0])
        );
        assert_eq!(IBUG68.flip_within(&[a]), None);
        assert_eq!(IBUG68.flip_within(&[68]), None);
    }

    fn check_permutation_involution(s: &LandmarkScheme) {
        assert_eq!(s.flip.len(), s.num_points, "{}", s.name);
        let mut seen = vec![false; s.num_points];
        for (i, &j) in s.flip.iter().enumerate() {
            assert!(j < s.num_points, "{}: flip[{i}] = {j} out of range", s.name);
            assert!(!seen[j], "{}: {j} is the image of two points", s.name);
            seen[j] = true;
            assert_eq!(s.flip[j], i, "{}: flip is not an involution at {i}", s.name);
        }
    }

    #[test]
    fn flips_are_permutations_and_involutions() {
        for s in SCHEMES {
            check_permutation_involution(s);
        }
    }

    #[test]
    fn groups_partition_the_points() {
        for s in SCHEMES {
            let mut owner = vec![None; s.num_points];
            for (name, r) in s.groups {
                for i in r.clone() {
                    assert!(owner[i].is_none(), "{}: {i} in two groups", s.name);
                    owner[i] = Some(*name);
                }
            }
            assert!(owner.iter().all(Option::is_some), "{}", s.name);
        }
    }

    #[test]
    fn flip_maps_groups_to_their_mirror_groups() {
        for s in SCHEMES {
            for (name, r) in s.groups {
                let partner = if let Some(rest) = name.strip_prefix("left_") {
                    format!("right_{rest}")
                } else if let Some(rest) = name.strip_prefix("right_") {
                    format!("left_{rest}")
                } else {
                    name.to_string()
                };
                for i in r.clone() {
                    assert_eq!(
                        s.group_of(s.flip[i]),
                        Some(partner.as_str()),
                        "{}: point {i} of {name}",
                        s.name
                    );
                }
            }
        }
    }

    #[test]
    fn special_points_lie_in_their_groups() {
        for s in SCHEMES {
            assert_eq!(s.group_of(s.nose_tip), Some("nose"));
            assert_eq!(s.flip[s.nose_tip], s.nose_tip);
            let (l, r) = s.outer_eye_corners;
            assert_eq!(s.group_of(l), Some("right_eye"), "{}", s.name);
            assert_eq!(s.group_of(r), Some("left_eye"), "{}", s.name);
            assert_eq!(s.flip[l], r);
        }
    }

    #[test]
    fn lookup_by_count_and_name() {
        assert_eq!(LandmarkScheme::for_num_points(58), Some(&IMM58));
        assert_eq!(LandmarkScheme::for_num_points(68), Some(&IBUG68));
        assert_eq!(LandmarkScheme::for_num_points(12), None);
        assert_eq!(LandmarkScheme::by_name("IMM58"), Some(&IMM58));
        assert_eq!(LandmarkScheme::by_name("ibug"), Some(&IBUG68));
        assert_eq!(LandmarkScheme::by_name("muct76"), None);
        assert_eq!(IBUG68.group("mouth"), Some(48..68));
    }

    #[test]
    fn mirror_rejects_wrong_count() {
        assert!(IMM58.mirror(&[Point::new(1.0, 2.0)], 10.0).is_err());
    }

    proptest! {
        #[test]
        fn mirror_twice_is_identity(
            xs in proptest::collection::vec((0f32..640.0, 0f32..480.0), 68),
            width in 1u32..2000,
        ) {
            for s in SCHEMES {
                let pts: Vec<Point> =
                    xs[..s.num_points].iter().map(|&(x, y)| Point::new(x, y)).collect();
                let once = s.mirror(&pts, width as f32).unwrap();
                let twice = s.mirror(&once, width as f32).unwrap();
                for (a, b) in pts.iter().zip(&twice) {
                    prop_assert!((a.x - b.x).abs() < 1e-3 && a.y == b.y);
                }
                // The nose tip stays the nose tip, mirrored in place.
                let t = s.nose_tip;
                prop_assert!((once[t].x - (width as f32 - 1.0 - pts[t].x)).abs() < 1e-3);
            }
        }
    }
}
