//! Landmarks on whole photos: face detection, the box each model expects, and the landmark
//! model, behind one type.
//!
//! [`Landmarker`] joins the bundled detector ([`crate::detect::FaceDetector`]), the box
//! calibration of the model's training convention ([`crate::detect::BoxCalibration`]) and a
//! trained run ([`crate::predict::Predictor`]): `landmarks(&photo)` finds every face and
//! returns its box, score, 5 detector points and the model's keypoints in photo pixels. Models
//! trained on face boxes (300-W) get one calibrated box per detected face; the IMM models were
//! trained on whole 640x480 frames and see the whole photo as one face.
//!
//! ```
//! use kp_train::landmarker::Landmarker;
//! // The ready model; `Landmarker::from_run("runs/ibug".as_ref(), None)` for one you trained.
//! let lm = Landmarker::pretrained(None)?;
//! // A photo without a face gives an empty list, not an error.
//! assert!(lm.landmarks(&image::RgbImage::new(320, 240))?.is_empty());
//! // dlib's group photo, when the datasets are here.
//! if let Some(data) = kp_data::find_data_dir() {
//!     let group = data.join("dlib_examples_faces/2008_002506.jpg");
//!     if group.is_file() {
//!         let photo = kp_data::loading::load_rgb(&group)?;
//!         let faces = lm.landmarks(&photo)?;
//!         assert_eq!(faces.len(), 3);
//!         for face in &faces {
//!             assert_eq!(face.keypoints.len(), 68);
//!             println!("{:?} {:?}: {} points", face.bbox, face.score, face.keypoints.len());
//!         }
//!     }
//! }
//! # Ok::<(), kp_train::Error>(())
//! ```

use std::path::Path;

use image::RgbImage;
use kp_data::{BBox, GrayF32, Point};
use kp_models::yunet::Detection;

use crate::config::{DeviceKind, Task};
use crate::detect::{BoxCalibration, DetectConfig, FaceDetector};
use crate::error::Result;
use crate::predict::Predictor;
use crate::pretrained::ReadyModel;

/// One face found on a photo, in photo pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceLandmarks {
    /// The detector's box `[left, top, width, height]`, the box given, or `None` for a model
    /// that sees the whole photo.
    pub bbox: Option<[f32; 4]>,
    /// The detector's score (`None` when no detector ran).
    pub score: Option<f32>,
    /// The detector's 5 points (eyes, nose tip, mouth corners).
    pub points5: Option<[[f32; 2]; 5]>,
    /// The model's keypoints.
    pub keypoints: Vec<Point>,
}

/// A face detector and a landmark model.
pub struct Landmarker {
    predictor: Predictor,
    detector: FaceDetector,
    calibration: BoxCalibration,
    refine: Refine,
}

/// Second-stage passes of a box model: each re-frames every face around its last keypoints
/// (the box the training labels give for the box around their keypoints,
/// [`BoxCalibration::ibug_points`]) and predicts again with the same network. A detector's
/// box frames a face less consistently than the training crops' boxes; the keypoints of a
/// first pass give a box closer to them.
#[derive(Debug, Clone, Copy)]
struct Refine {
    passes: usize,
    map: BoxCalibration,
}

impl Landmarker {
    /// The model of a run folder, with the bundled detector (default settings) on the run's
    /// device or `device`.
    pub fn from_run(run: &Path, device: Option<DeviceKind>) -> Result<Self> {
        Self::from_predictor(Predictor::open(run, device)?, DetectConfig::default())
    }

    /// The default ready model ([`crate::pretrained`]) with the bundled detector (default
    /// settings), on the CPU or `device`.
    pub fn pretrained(device: Option<DeviceKind>) -> Result<Self> {
        Self::ready(ReadyModel::default(), device)
    }

    /// The ready model `model` (e.g. [`ReadyModel::Compact`], the fast one) with the bundled
    /// detector (default settings), on the CPU or `device`.
    pub fn ready(model: ReadyModel, device: Option<DeviceKind>) -> Result<Self> {
        Self::from_predictor(model.predictor(device)?, DetectConfig::default())
    }

    /// A predictor (its mirroring and preprocessing as set) with a detector configured by `cfg`.
    pub fn from_predictor(predictor: Predictor, cfg: DetectConfig) -> Result<Self> {
        let detector = FaceDetector::bundled(&predictor.model.device, cfg)?;
        Ok(Self {
            predictor,
            detector,
            calibration: BoxCalibration::ibug(),
            refine: Refine {
                passes: Self::DEFAULT_REFINE,
                map: BoxCalibration::ibug_points(),
            },
        })
    }

    /// Second-stage passes by default: none. Held out on 300-W with YuNet's boxes one pass
    /// lowered the NME by 0.5-0.8% relative (3-4% with simulated detector boxes), but on the
    /// 43 labelled faces of dlib's example photos (smaller faces) it raised it by 1-22%
    /// (`models/landmarks/ibug68-compact/README.md`), so it is asked for (`--refine 1`).
    pub const DEFAULT_REFINE: usize = 0;

    /// With `passes` second-stage passes (0: the detector's calibrated box only): each
    /// re-frames every face around its last keypoints and predicts again. Box models only.
    pub fn with_refinement(mut self, passes: usize) -> Self {
        self.refine.passes = passes;
        self
    }

    /// The landmark model.
    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// Whether the model takes face boxes (and so one detected face at a time).
    pub fn uses_boxes(&self) -> bool {
        self.predictor.config.task == Task::Ibug
    }

    /// Every face on `photo` (detector boxes, best first).
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Detection>> {
        self.detector.detect(photo)
    }

    /// Every face on `photo` with its keypoints: one per detected face for box models (none on
    /// a photo without faces), the whole photo for the IMM models.
    pub fn landmarks(&self, photo: &RgbImage) -> Result<Vec<FaceLandmarks>> {
        if !self.uses_boxes() {
            return self.landmarks_in(photo, None);
        }
        let faces = self.detect(photo)?;
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let gray = gray_of(photo);
        let items: Vec<(&GrayF32, Option<BBox>)> = faces
            .iter()
            .map(|d| (&gray, Some(self.calibration.apply(d))))
            .collect();
        let points = self.predict_refined(&items)?;
        Ok(faces
            .iter()
            .zip(points)
            .map(|(d, keypoints)| FaceLandmarks {
                bbox: Some(d.bbox),
                score: Some(d.score),
                points5: Some(d.points5),
                keypoints,
            })
            .collect())
    }

    /// [`Self::landmarks`] on several photos at once: each photo's faces found (photos in
    /// parallel), then the faces of all of them through the landmark network together, in
    /// batches (what `kp predict DIR` does with each group of photos). The same faces and
    /// points as photo by photo.
    pub fn landmarks_many(&self, photos: &[&RgbImage]) -> Result<Vec<Vec<FaceLandmarks>>> {
        use rayon::prelude::*;
        let detections: Vec<Vec<Detection>> = if self.uses_boxes() {
            photos
                .par_iter()
                .map(|p| self.detect(p))
                .collect::<Result<_>>()?
        } else {
            vec![Vec::new(); photos.len()]
        };
        // Grey copies only of photos that have a face to predict.
        let grays: Vec<Option<GrayF32>> = photos
            .par_iter()
            .zip(&detections)
            .map(|(p, d)| (!self.uses_boxes() || !d.is_empty()).then(|| gray_of(p)))
            .collect();
        let mut items: Vec<(&GrayF32, Option<BBox>)> = Vec::new();
        for (gray, dets) in grays.iter().zip(&detections) {
            let Some(gray) = gray else { continue };
            if self.uses_boxes() {
                items.extend(dets.iter().map(|d| (gray, Some(self.calibration.apply(d)))));
            } else {
                items.push((gray, None));
            }
        }
        let mut points = if self.uses_boxes() {
            self.predict_refined(&items)?
        } else {
            self.predictor.predict_many(&items)?
        }
        .into_iter();
        Ok(detections
            .iter()
            .map(|dets| {
                if !self.uses_boxes() {
                    let keypoints = points.next().unwrap_or_default();
                    return vec![FaceLandmarks {
                        bbox: None,
                        score: None,
                        points5: None,
                        keypoints,
                    }];
                }
                dets.iter()
                    .map(|d| FaceLandmarks {
                        bbox: Some(d.bbox),
                        score: Some(d.score),
                        points5: Some(d.points5),
                        keypoints: points.next().unwrap_or_default(),
                    })
                    .collect()
            })
            .collect())
    }

    /// The keypoints of one face in `bbox` (the model's own box convention), or of the whole
    /// photo with `None`.
    pub fn landmarks_in(&self, photo: &RgbImage, bbox: Option<BBox>) -> Result<Vec<FaceLandmarks>> {
        let points = self.predict(photo, vec![bbox])?;
        Ok(points
            .into_iter()
            .map(|keypoints| FaceLandmarks {
                bbox: bbox.map(|b| b.ltwh()),
                score: None,
                points5: None,
                keypoints,
            })
            .collect())
    }

    /// The keypoints of `items` (faces with their first boxes), after the refinement passes:
    /// a face whose keypoints give no box keeps its last ones.
    fn predict_refined(&self, items: &[(&GrayF32, Option<BBox>)]) -> Result<Vec<Vec<Point>>> {
        let mut points = self.predictor.predict_many(items)?;
        for _ in 0..self.refine.passes {
            let reframed: Vec<(&GrayF32, Option<BBox>)> = items
                .iter()
                .zip(&points)
                .map(|((img, b), p)| (*img, self.refine.map.apply_points(p).or(*b)))
                .collect();
            points = self.predictor.predict_many(&reframed)?;
        }
        Ok(points)
    }

    fn predict(&self, photo: &RgbImage, boxes: Vec<Option<BBox>>) -> Result<Vec<Vec<Point>>> {
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        self.predictor.predict_boxes(&gray_of(photo), &boxes)
    }
}

/// The grey image the landmark models take: the luma conversion `DynamicImage::to_luma8` (and
/// so `load_gray`) applies.
fn gray_of(photo: &RgbImage) -> GrayF32 {
    let luma: image::GrayImage = image::buffer::ConvertBuffer::convert(photo);
    kp_data::gray_from_u8(&luma)
}
