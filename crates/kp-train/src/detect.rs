//! Face detection on whole photos: the bundled YuNet ([`kp_models::yunet`]) with the photo-level
//! steps around it.
//!
//! YuNet was trained on faces of about 10-300 pixels, and its cost grows with the pixel count,
//! so photos whose longer side exceeds [`DetectConfig::max_side`] are downscaled first (a
//! triangle filter, i.e. bilinear with area averaging) and the faces mapped back to the photo's
//! pixels. Faces narrower than [`DetectConfig::min_face`] pixels (in the photo) are dropped.

use candle_core::Device;
use image::RgbImage;
use kp_data::BBox;
use kp_models::yunet::{Detection, YuNet, YuNetConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Photo-level detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectConfig {
    /// YuNet's score threshold, NMS IoU and top-k.
    pub yunet: YuNetConfig,
    /// Photos with a longer side above this are downscaled to it before detection (0: never).
    pub max_side: usize,
    /// Faces whose box is narrower than this many photo pixels are dropped.
    pub min_face: f32,
}

impl Default for DetectConfig {
    /// Score 0.6 (finds the small and turned faces of group photos that OpenCV's 0.9 misses: on
    /// dlib's 9 sample photos 47 faces, against 43 for dlib's HOG detector, the 4 more being 2
    /// small people in the background and 2 faces printed on cut-outs), NMS IoU 0.3, top
    /// 5,000, longer side at most 640 px, no smallest face.
    fn default() -> Self {
        Self {
            yunet: YuNetConfig {
                score_threshold: 0.6,
                ..YuNetConfig::default()
            },
            max_side: 640,
            min_face: 0.0,
        }
    }
}

/// YuNet with [`DetectConfig`]'s photo-level steps.
#[derive(Debug, Clone)]
pub struct FaceDetector {
    net: YuNet,
    cfg: DetectConfig,
}

impl FaceDetector {
    /// The bundled YuNet-n on `device` with `cfg`.
    pub fn bundled(device: &Device, cfg: DetectConfig) -> Result<Self> {
        Ok(Self {
            net: YuNet::bundled(device)?,
            cfg,
        })
    }

    /// The settings.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// The network.
    pub fn net(&self) -> &YuNet {
        &self.net
    }

    /// The scale a photo of `width x height` is detected at (1 when it is small enough).
    pub fn scale_for(&self, width: u32, height: u32) -> f32 {
        let side = width.max(height) as usize;
        if self.cfg.max_side == 0 || side <= self.cfg.max_side {
            1.0
        } else {
            self.cfg.max_side as f32 / side as f32
        }
    }

    /// Every face in `photo`, best first, in the photo's pixels.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = photo.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        // On one of rayon's threads, so each kernel's parallel loop starts there instead of
        // handing its work from this thread to the pool and waiting (a wake-up per op).
        rayon::scope(|_| self.detect_here(photo, w, h))
    }

    fn detect_here(&self, photo: &RgbImage, w: u32, h: u32) -> Result<Vec<Detection>> {
        let scale = self.scale_for(w, h);
        let faces = if scale < 1.0 {
            let sw = ((w as f32 * scale).round() as u32).max(1);
            let sh = ((h as f32 * scale).round() as u32).max(1);
            let small = kp_data::loading::resize_rgb8(photo, sw, sh);
            // Map back with the exact per-axis ratio the resize used.
            let (fx, fy) = (sw as f32 / w as f32, sh as f32 / h as f32);
            self.net
                .detect_rgb8(small.as_raw(), sw as usize, sh as usize, &self.cfg.yunet)?
                .into_iter()
                .map(|d| d.unscaled(fx, fy))
                .collect()
        } else {
            self.net
                .detect_rgb8(photo.as_raw(), w as usize, h as usize, &self.cfg.yunet)?
        };
        Ok(faces
            .into_iter()
            .filter(|d| d.bbox[2] >= self.cfg.min_face)
            .collect())
    }
}

/// The map from a YuNet box to the face box a landmark model was trained with, fitted on a
/// labelled dataset (`kp data calibrate`): a detector box frames a face differently from a
/// dataset's convention (300-W's crops: the square around the 68 points), and a model fed boxes
/// framed otherwise loses accuracy.
///
/// With the detection's centre `(cx, cy)` and size `(w, h)`: the box is a square of side
/// `side · sqrt(w · h)` centred on `(cx + dx · w, cy + dy · h)`; each coefficient is the median
/// over the dataset's faces, robust to the odd missed or mismatched detection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxCalibration {
    /// Centre shift right, in detection widths.
    pub dx: f32,
    /// Centre shift down, in detection heights.
    pub dy: f32,
    /// Side of the square, in `sqrt(w · h)` of the detection.
    pub side: f32,
    /// Faces the fit used.
    pub faces: usize,
    /// Median IoU of the mapped boxes with the dataset's boxes.
    pub median_iou: f32,
}

/// The bundled calibration for 300-W's training convention (the crops' square landmark
/// boxes), fitted by `kp data calibrate` on the 1,326 training crops (`models/yunet/README.md`).
pub const IBUG_CALIBRATION_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/yunet/box_calibration_ibug.json"
));

/// The bundled map from the box around a face's 68 keypoints to 300-W's crop box, fitted by
/// `kp data calibrate --from-points` on the 1,326 training crops: how
/// [`crate::landmarker::Landmarker`] re-frames a face around a first prediction.
pub const IBUG_POINTS_CALIBRATION_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/landmarks/box_from_points_ibug.json"
));

impl BoxCalibration {
    /// The bundled 300-W calibration.
    pub fn ibug() -> Self {
        serde_json::from_str(IBUG_CALIBRATION_JSON)
            .expect("the bundled calibration parses (tested)")
    }

    /// The bundled 300-W keypoints-to-box map ([`IBUG_POINTS_CALIBRATION_JSON`]).
    pub fn ibug_points() -> Self {
        serde_json::from_str(IBUG_POINTS_CALIBRATION_JSON)
            .expect("the bundled keypoints-to-box map parses (tested)")
    }

    /// The box a model trained with this convention expects for detection `d`.
    pub fn apply(&self, d: &Detection) -> BBox {
        self.apply_rect(d.bbox)
    }

    /// The box for any rectangle `[left, top, width, height]` of the kind the map was fitted
    /// on (a detection's box, or the box around predicted keypoints: [`Self::fit_rects`]).
    pub fn apply_rect(&self, [l, t, w, h]: [f32; 4]) -> BBox {
        let (cx, cy) = (l + w / 2.0 + self.dx * w, t + h / 2.0 + self.dy * h);
        let side = self.side * (w * h).max(0.0).sqrt();
        BBox::new(cx - side / 2.0, cy - side / 2.0, side, side)
    }

    /// Fits the map on `(detection, dataset box)` pairs.
    pub fn fit(pairs: &[(Detection, BBox)]) -> Result<Self> {
        if pairs.is_empty() {
            return Err(Error::Config(
                "box calibration: no face was detected on the dataset".into(),
            ));
        }
        let rects: Vec<([f32; 4], BBox)> = pairs.iter().map(|(d, b)| (d.bbox, *b)).collect();
        Self::fit_rects(&rects)
    }

    /// Fits the map on `(rectangle, dataset box)` pairs: the medians of the centre shifts and
    /// of the side ratio.
    pub fn fit_rects(pairs: &[([f32; 4], BBox)]) -> Result<Self> {
        if pairs.is_empty() {
            return Err(Error::Config("box calibration: no (box, box) pair".into()));
        }
        let median = |v: Vec<f32>| {
            crate::bench::median(&v.into_iter().map(f64::from).collect::<Vec<_>>()) as f32
        };
        let (mut dx, mut dy, mut side) = (Vec::new(), Vec::new(), Vec::new());
        for ([l, t, w, h], b) in pairs {
            let c = b.center();
            dx.push((c.x - (l + w / 2.0)) / w);
            dy.push((c.y - (t + h / 2.0)) / h);
            side.push(b.width.max(b.height) / (w * h).sqrt());
        }
        let mut cal = Self {
            dx: median(dx),
            dy: median(dy),
            side: median(side),
            faces: pairs.len(),
            median_iou: 0.0,
        };
        cal.median_iou = median(
            pairs
                .iter()
                .map(|(r, b)| iou(&cal.apply_rect(*r), b))
                .collect(),
        );
        Ok(cal)
    }

    /// The box for the box around `points` (a prediction's keypoints, for a map fitted by
    /// [`Self::fit_points`]), or `None` when they span no area.
    pub fn apply_points(&self, points: &[kp_data::Point]) -> Option<BBox> {
        points_rect(points).map(|r| self.apply_rect(r))
    }

    /// The map from the box around a face's 68 keypoints to its dataset box, fitted on
    /// `faces`' labels: what re-frames a face around a first prediction
    /// ([`crate::predict::Predictor::refine_boxes`]). Faces without a box or keypoints are
    /// left out.
    pub fn fit_points(faces: &[&kp_data::Face]) -> Result<Self> {
        let pairs: Vec<([f32; 4], BBox)> = faces
            .iter()
            .filter_map(|f| Some((points_rect(&f.keypoints)?, f.bbox?)))
            .collect();
        Self::fit_rects(&pairs)
    }
}

/// `[left, top, width, height]` of the box around `points`, when it has an area.
fn points_rect(points: &[kp_data::Point]) -> Option<[f32; 4]> {
    let r = BBox::around(points)?;
    (r.width > 0.0 && r.height > 0.0).then_some(r.ltwh())
}

/// Intersection over union of two boxes.
pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let inter = a.intersection_area(b);
    let union = a.width * a.height + b.width * b.height - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The detection that best matches `b` (highest IoU of its raw box), if any overlaps it.
pub fn best_match<'a>(faces: &'a [Detection], b: &BBox) -> Option<&'a Detection> {
    let raw = |d: &Detection| BBox::new(d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]);
    faces
        .iter()
        .map(|d| (iou(&raw(d), b), d))
        .filter(|(o, _)| *o > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_photos_are_detected_at_the_largest_side_and_small_ones_as_they_are() {
        let det = FaceDetector::bundled(&Device::Cpu, DetectConfig::default()).unwrap();
        assert_eq!(det.scale_for(500, 375), 1.0);
        assert_eq!(det.scale_for(1280, 1024), 0.5);
        let off = FaceDetector::bundled(
            &Device::Cpu,
            DetectConfig {
                max_side: 0,
                ..DetectConfig::default()
            },
        )
        .unwrap();
        assert_eq!(off.scale_for(4000, 3000), 1.0);
    }

    #[test]
    fn the_bundled_calibration_parses_and_a_fit_recovers_a_known_map() {
        let cal = BoxCalibration::ibug();
        assert!(cal.faces > 1000 && cal.median_iou > 0.5, "{cal:?}");
        let truth = BoxCalibration {
            dx: 0.05,
            dy: 0.1,
            side: 1.2,
            faces: 0,
            median_iou: 0.0,
        };
        let pairs: Vec<(Detection, BBox)> = (0..9)
            .map(|i| {
                let d = Detection {
                    bbox: [10.0 * i as f32, 5.0, 40.0 + i as f32, 50.0],
                    points5: [[0.0; 2]; 5],
                    score: 0.9,
                };
                (d, truth.apply(&d))
            })
            .collect();
        let fit = BoxCalibration::fit(&pairs).unwrap();
        assert!(
            (fit.dx - 0.05).abs() < 1e-5 && (fit.dy - 0.1).abs() < 1e-5,
            "{fit:?}"
        );
        assert!(
            (fit.side - 1.2).abs() < 1e-5 && fit.median_iou > 0.999,
            "{fit:?}"
        );
        assert!(BoxCalibration::fit(&[]).is_err());
    }

    #[test]
    fn the_keypoints_to_box_map_is_bundled_and_fits_faces_boxes_around_their_points() {
        // 300-W's crop boxes are squares centred on the box around the 68 points.
        let bundled = BoxCalibration::ibug_points();
        assert!(
            bundled.faces > 1000 && bundled.median_iou > 0.9,
            "{bundled:?}"
        );
        assert!(
            bundled.dx.abs() < 0.01 && bundled.dy.abs() < 0.01,
            "{bundled:?}"
        );
        // Faces whose box is the known map of their points' box; one without a box and one
        // whose points are a single spot are left out.
        let truth = BoxCalibration {
            dx: -0.02,
            dy: 0.08,
            side: 1.1,
            faces: 0,
            median_iou: 0.0,
        };
        let mut faces: Vec<kp_data::Face> = (0..7)
            .map(|i| {
                let k = i as f32;
                let pts = vec![
                    kp_data::Point::new(10.0 + k, 20.0),
                    kp_data::Point::new(60.0 + 2.0 * k, 35.0),
                    kp_data::Point::new(30.0, 90.0 + k),
                ];
                let r = BBox::around(&pts).unwrap();
                let mut f = kp_data::Face::new("a.png", pts);
                f.bbox = Some(truth.apply_rect(r.ltwh()));
                f
            })
            .collect();
        faces.push(kp_data::Face::new(
            "b.png",
            vec![kp_data::Point::new(1.0, 1.0)],
        ));
        let mut spot = kp_data::Face::new("c.png", vec![kp_data::Point::new(5.0, 5.0); 3]);
        spot.bbox = Some(BBox::new(0.0, 0.0, 10.0, 10.0));
        faces.push(spot);
        let refs: Vec<&kp_data::Face> = faces.iter().collect();
        let fit = BoxCalibration::fit_points(&refs).unwrap();
        assert_eq!(fit.faces, 7);
        assert!(
            (fit.dx + 0.02).abs() < 1e-5
                && (fit.dy - 0.08).abs() < 1e-5
                && (fit.side - 1.1).abs() < 1e-5,
            "{fit:?}"
        );
        assert!(BoxCalibration::fit_points(&refs[7..]).is_err());
    }

    #[test]
    fn an_empty_or_blank_photo_has_no_faces() {
        let det = FaceDetector::bundled(&Device::Cpu, DetectConfig::default()).unwrap();
        assert!(det.detect(&RgbImage::new(0, 0)).unwrap().is_empty());
        assert!(det
            .detect(&RgbImage::from_pixel(700, 90, image::Rgb([200, 10, 10])))
            .unwrap()
            .is_empty());
    }
}
