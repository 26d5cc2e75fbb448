//! One annotated face and a dataset of them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::geometry::{BBox, Point};
use crate::scheme::LandmarkScheme;

/// Gender as encoded in IMM file names (`f` / `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gender {
    /// `f` in the file name.
    Female,
    /// `m` in the file name.
    Male,
}

/// One face in one image: its landmarks (possibly none, e.g. a test box) and metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// Absolute (or caller-relative) path of the host image.
    pub image: PathBuf,
    /// Landmarks in pixels of the host image, in the scheme's order. Empty when unlabelled.
    pub keypoints: Vec<Point>,
    /// Face box in pixels of the host image, when the format has one.
    pub bbox: Option<BBox>,
    /// Host image size `(width, height)` when known without decoding.
    pub image_size: Option<(u32, u32)>,
    /// IMM person id (1-40).
    pub person: Option<u32>,
    /// IMM image type / pose id (1-6).
    pub pose: Option<u32>,
    /// IMM gender.
    pub gender: Option<Gender>,
    /// dlib's `ignore` attribute on the box.
    pub ignore: bool,
}

impl Face {
    /// A face with the given image and keypoints and no metadata.
    pub fn new(image: impl Into<PathBuf>, keypoints: Vec<Point>) -> Self {
        Self {
            image: image.into(),
            keypoints,
            bbox: None,
            image_size: None,
            person: None,
            pose: None,
            gender: None,
            ignore: false,
        }
    }

    /// True when the face carries landmarks.
    pub fn is_labelled(&self) -> bool {
        !self.keypoints.is_empty()
    }
}

/// A named collection of faces sharing one landmark scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Short name (e.g. `imm`, `ibug-300w-train-crops`).
    pub name: String,
    /// The landmark scheme, when the point count matches a known one.
    pub scheme: Option<&'static LandmarkScheme>,
    /// The faces, in file order.
    pub faces: Vec<Face>,
}

impl Dataset {
    /// Number of faces.
    pub fn len(&self) -> usize {
        self.faces.len()
    }

    /// True when there are no faces.
    pub fn is_empty(&self) -> bool {
        self.faces.is_empty()
    }

    /// Keeps the first `n` faces (for smoke runs).
    pub fn truncate(&mut self, n: usize) {
        self.faces.truncate(n);
    }
}
