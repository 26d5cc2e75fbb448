//! Validating a dataset before training on it (`kp data check`): every image decoded, every
//! face's points and box checked against the image they belong to.
//!
//! Loading a dataset reads its label files and image headers only; a truncated JPEG, an image of
//! one pixel or a box that lies off the image would otherwise surface an hour into training (or
//! never: a box off the image trains on padding). [`check_dataset`] decodes each image once (in
//! parallel, one image per thread at a time, so memory stays within the threads' count of
//! images under the pixel cap of [`crate::loading::max_pixels`]) and lists every problem, one
//! line each, naming the image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::face::{Dataset, Face};
use crate::geometry::BBox;

/// The smallest image side a face can be trained on.
pub const MIN_IMAGE_SIDE: u32 = 8;

/// What [`check_dataset`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// Distinct images.
    pub images: usize,
    /// Faces.
    pub faces: usize,
    /// Images that decoded.
    pub decoded: usize,
    /// One line per problem: `IMAGE: what is wrong`.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How far outside the image a point may lie (as a fraction of the image side) before it is
/// reported: 300-W labels the occluded jaw a few pixels off the edge, which is not an error.
const POINT_MARGIN: f32 = 0.1;

/// The problems of one face on an image of `(w, h)` pixels.
fn face_problems(face: &Face, (w, h): (u32, u32), out: &mut Vec<String>) {
    let name = face.image.display();
    if w < MIN_IMAGE_SIDE || h < MIN_IMAGE_SIDE {
        out.push(format!(
            "{name}: the image is {w}x{h} pixels, smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
        ));
        return;
    }
    let (wf, hf) = (w as f32, h as f32);
    let (mx, my) = (POINT_MARGIN * wf, POINT_MARGIN * hf);
    let outside = face
        .keypoints
        .iter()
        .filter(|p| !(p.x >= -mx && p.x <= wf + mx && p.y >= -my && p.y <= hf + my))
        .count();
    if outside > 0 {
        out.push(format!(
            "{name}: {outside} of {} points lie outside the {w}x{h} image (by more than {:.0}%)",
            face.keypoints.len(),
            POINT_MARGIN * 100.0
        ));
    }
    if let Some(b) = face.bbox {
        let inside = b.intersection_area(&BBox::new(0.0, 0.0, wf, hf));
        let area = b.width * b.height;
        if area.is_nan() || area <= 0.0 {
            out.push(format!("{name}: the face box {:?} is empty", b.ltwh()));
        } else if inside < 0.5 * area {
            out.push(format!(
                "{name}: the face box {:?} lies mostly outside the {w}x{h} image",
                b.ltwh()
            ));
        }
    }
}

/// Decodes every image of `dataset` and checks each face against its image: the image decodes
/// and is at least [`MIN_IMAGE_SIDE`] pixels on each side, the points lie on it (within 10% of
/// its side), the face box covers at least half of itself inside it.
pub fn check_dataset(dataset: &Dataset) -> CheckReport {
    let mut by_image: BTreeMap<&PathBuf, Vec<&Face>> = BTreeMap::new();
    for f in &dataset.faces {
        by_image.entry(&f.image).or_default().push(f);
    }
    let results: Vec<(bool, Vec<String>)> = by_image
        .par_iter()
        .map(|(path, faces)| {
            let mut problems = Vec::new();
            match crate::loading::load_image(path) {
                Ok(img) => {
                    let size = (img.width(), img.height());
                    drop(img);
                    for f in faces {
                        face_problems(f, size, &mut problems);
                    }
                    (true, problems)
                }
                Err(e) => {
                    problems.push(e.to_string());
                    (false, problems)
                }
            }
        })
        .collect();
    CheckReport {
        images: by_image.len(),
        faces: dataset.faces.len(),
        decoded: results.iter().filter(|(ok, _)| *ok).count(),
        problems: results.into_iter().flat_map(|(_, p)| p).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Point;

    fn write_png(dir: &std::path::Path, name: &str, w: u32, h: u32) -> PathBuf {
        let p = dir.join(name);
        image::GrayImage::new(w, h).save(&p).unwrap();
        p
    }

    #[test]
    fn check_names_each_bad_image_and_face_and_passes_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_png(dir.path(), "good.png", 64, 48);
        let tiny = write_png(dir.path(), "tiny.png", 1, 1);
        let broken = dir.path().join("broken.png");
        std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let on = vec![Point::new(10.0, 10.0), Point::new(60.0, 40.0)];
        let mut boxed = Face::new(&good, on.clone());
        boxed.bbox = Some(BBox::new(5.0, 5.0, 40.0, 30.0));
        let mut off_box = Face::new(&good, on.clone());
        off_box.bbox = Some(BBox::new(100.0, 100.0, 40.0, 30.0));
        let dataset = Dataset {
            name: "t".into(),
            scheme: None,
            faces: vec![
                boxed,
                Face::new(&good, vec![Point::new(10.0, 10.0), Point::new(500.0, 40.0)]),
                off_box,
                Face::new(&tiny, on.clone()),
                Face::new(&broken, on),
            ],
        };
        let r = check_dataset(&dataset);
        assert_eq!((r.images, r.faces, r.decoded), (3, 5, 1));
        assert_eq!(r.problems.len(), 4, "{:#?}", r.problems);
        let has = |file: &str, what: &str| {
            r.problems
                .iter()
                .any(|p| p.contains(file) && p.contains(what))
        };
        assert!(has("good.png", "1 of 2 points lie outside the 64x48 image"));
        assert!(has("good.png", "lies mostly outside"));
        assert!(has("tiny.png", "1x1 pixels is smaller than 8x8"));
        assert!(has("broken.png", ""));
        assert!(!r.is_clean());
        let clean = Dataset {
            faces: dataset.faces[..1].to_vec(),
            ..dataset
        };
        assert!(check_dataset(&clean).is_clean());
    }
}
