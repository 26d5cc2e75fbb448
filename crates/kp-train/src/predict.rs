//! Using a trained run folder: predict keypoints on new photos, evaluate on any dataset.

use std::path::{Path, PathBuf};

use kp_augment::Pipeline;
use kp_data::{BBox, Face, GrayF32, Point};
use rayon::prelude::*;

use crate::augment::AugmentSpec;
use crate::config::{DeviceKind, Task, TrainConfig};
use crate::error::{Error, Result};
use crate::eval::{evaluate, predict_samples, Evaluation};
use crate::model::{device, LoadedModel};
use crate::prep::{cache_decoded, cache_for_sample, prepare, sample_seed, CachedFace, Sample};
use crate::run::RunDir;
use crate::trainer::PreparedData;

/// Which faces of a dataset to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalSplit {
    /// The training faces of the run's split.
    Train,
    /// The validation faces of the run's split.
    Val,
    /// Every labelled face.
    All,
}

/// Puts faces cached again with new boxes (`(index, box, cache)`, `None` for faces that keep
/// theirs) into `prepared`; returns how many there were.
fn store_boxed(
    prepared: &mut PreparedData,
    recached: Vec<Option<(usize, BBox, CachedFace)>>,
) -> usize {
    let mut n = 0;
    for (i, bbox, c) in recached.into_iter().flatten() {
        prepared.cache[i] = c;
        prepared.dataset.faces[i].bbox = Some(bbox);
        n += 1;
    }
    n
}

impl EvalSplit {
    /// Parses `train`, `val` or `all`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Self::Train),
            "val" => Ok(Self::Val),
            "all" => Ok(Self::All),
            _ => Err(Error::Config(format!(
                "unknown split `{s}` (expected train, val or all)"
            ))),
        }
    }
}

/// A trained model ready to predict, with the preprocessing it was trained with.
pub struct Predictor {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The model with its trained weights.
    pub model: LoadedModel,
    pipeline: Pipeline,
    seed: u64,
}

impl Predictor {
    /// Opens a run folder (`device`: `None` = the run's own device).
    pub fn open(run: &Path, device: Option<DeviceKind>) -> Result<Self> {
        let dir = RunDir::open(run)?;
        let (config, weights) = dir.trained()?;
        Self::from_config(config, device, &dir.config_path(), |m| m.load(&weights))
    }

    /// The untrained model of `config`, its weights drawn from `config.seed` (for checks that
    /// need a network of each kind, such as the ONNX export's); `num_keypoints` as the run's.
    pub fn untrained(mut config: TrainConfig, num_keypoints: usize) -> Result<Self> {
        config.num_keypoints = Some(num_keypoints);
        Self::from_config(config, None, Path::new("<untrained>"), |_| Ok(()))
    }

    /// A predictor for the model of `config` (read from `source`, named in errors) on
    /// `config.device` or `device_kind`, its weights set by `load`.
    pub(crate) fn from_config(
        mut config: TrainConfig,
        device_kind: Option<DeviceKind>,
        source: &Path,
        load: impl FnOnce(&mut LoadedModel) -> Result<()>,
    ) -> Result<Self> {
        if let Some(d) = device_kind {
            config.device = d;
        }
        let k = config.num_keypoints.ok_or_else(|| Error::Run {
            path: source.to_path_buf(),
            msg: "no num_keypoints (training never started?)".into(),
        })?;
        let mut model = LoadedModel::build(&config, k, &device(config.device)?)?;
        load(&mut model)?;
        model.freeze()?;
        let pipeline = config.eval_augment.pipeline(config.width, config.height)?;
        Ok(Self {
            config,
            model,
            pipeline,
            seed: 0,
        })
    }

    /// Replaces the run's evaluation preprocessing (`eval_augment`) with `spec` at the run's
    /// input size, whose random steps draw per face from `seed`. `ibug-detector`, for
    /// example, scores tight-box data with detector-like boxes.
    pub fn with_preprocessing(mut self, spec: AugmentSpec, seed: u64) -> Result<Self> {
        self.pipeline = spec.pipeline(self.config.width, self.config.height)?;
        self.config.eval_augment = spec;
        self.seed = seed;
        Ok(self)
    }

    /// Turns test-time mirroring on or off, whatever the run was trained with (see
    /// [`TrainConfig::test_time_mirror`]); fails when the run's points have no mirror order.
    pub fn with_test_time_mirror(mut self, on: bool) -> Result<Self> {
        self.config.test_time_mirror = on;
        // `open` checked that the run knows its point count.
        let k = self.config.num_keypoints.unwrap_or(0);
        self.model.mirror = self.config.prediction_mirror(k)?;
        Ok(self)
    }

    /// The face box used when none is given: the whole image for box-based models.
    fn default_box(&self, image: &GrayF32, bbox: Option<BBox>) -> Option<BBox> {
        match (bbox, self.config.task) {
            (Some(b), _) => Some(b),
            (None, Task::Ibug) => Some(BBox::new(
                0.0,
                0.0,
                image.width() as f32,
                image.height() as f32,
            )),
            (None, _) => None,
        }
    }

    /// The face in `image` (its box `bbox`, or the default) cached for one prediction with
    /// `seed`: only the pixels the pipeline reads ([`cache_for_sample`]), the same sample as
    /// evaluation's whole cached image gives.
    fn cached(&self, image: &GrayF32, bbox: Option<BBox>, seed: u64) -> Result<CachedFace> {
        let mut face = Face::new("", Vec::new());
        face.bbox = self.default_box(image, bbox);
        let (w, h) = (self.config.width, self.config.height);
        cache_for_sample(image, &face, w, h, &self.pipeline, seed)
    }

    /// Predicts keypoints on decoded images (with optional face boxes), in original pixels.
    pub fn predict_images(&self, items: &[(GrayF32, Option<BBox>)]) -> Result<Vec<Vec<Point>>> {
        self.predict_numbered(items, 0)
    }

    /// Predicts the keypoints of several faces of one image, one per box (`None`: the
    /// default box), in original pixels, without copying the image per face.
    pub fn predict_boxes(
        &self,
        image: &GrayF32,
        boxes: &[Option<BBox>],
    ) -> Result<Vec<Vec<Point>>> {
        let items: Vec<(&GrayF32, Option<BBox>)> = boxes.iter().map(|b| (image, *b)).collect();
        self.predict_each(&items, 0)
    }

    /// Predicts the keypoints of faces of any number of images at once, one per `(image,
    /// box)` pair (`None`: the default box), in original pixels: every face goes through the
    /// network in the same batches (faces of many photos batched), no image is copied.
    pub fn predict_many(&self, items: &[(&GrayF32, Option<BBox>)]) -> Result<Vec<Vec<Point>>> {
        self.predict_each(items, 0)
    }

    /// [`Self::predict_images`] where `items[j]` is image number `first + j` (for its seed).
    fn predict_numbered(
        &self,
        items: &[(GrayF32, Option<BBox>)],
        first: usize,
    ) -> Result<Vec<Vec<Point>>> {
        let items: Vec<(&GrayF32, Option<BBox>)> = items.iter().map(|(i, b)| (i, *b)).collect();
        self.predict_each(&items, first)
    }

    /// Prepares, predicts and maps back `items[j]` (image number `first + j`, for its seed).
    fn predict_each(
        &self,
        items: &[(&GrayF32, Option<BBox>)],
        first: usize,
    ) -> Result<Vec<Vec<Point>>> {
        let samples = items
            .par_iter()
            .enumerate()
            .map(|(j, (img, b))| {
                let seed = sample_seed(self.seed, 0, first + j);
                prepare(&self.pipeline, &self.cached(img, *b, seed)?, seed)
            })
            .collect::<Result<Vec<_>>>()?;
        let pred = predict_samples(&self.model, &samples)?;
        samples
            .iter()
            .zip(&pred)
            .map(|(s, p)| Ok(kp_augment::points_to_original(&s.to_input, None, p)?))
            .collect()
    }

    /// Predicts keypoints for faces (decoding their images), in original pixels.
    pub fn predict_faces(&self, faces: &[Face]) -> Result<Vec<Vec<Point>>> {
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(64) {
            let items = chunk
                .par_iter()
                .map(|f| Ok((kp_data::loading::load_gray(&f.image)?, f.bbox)))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.predict_numbered(&items, out.len())?);
        }
        Ok(out)
    }

    /// Evaluates the model on a dataset (its labelled faces), using the run's split rules.
    pub fn evaluate_dataset(&self, data: &Path, split: EvalSplit) -> Result<Evaluation> {
        let prepared = self.prepare(data)?;
        self.evaluate_prepared(&prepared, split)
    }

    /// Loads and caches a dataset with the run's settings (limit, split, keypoint subset).
    ///
    /// A dataset whose landmark scheme or point count is not the model's is refused: a
    /// 68-point model scored on 58-point labels would print a meaningless error.
    pub fn prepare(&self, data: &Path) -> Result<PreparedData> {
        let mut cfg = self.config.clone();
        cfg.data = data.to_path_buf();
        let prepared = crate::trainer::prepare_data(&cfg)?;
        let model_scheme = self.config.scheme();
        let mismatch = |what: String| {
            Err(Error::Config(format!(
                "{}: {what}; the model predicts {} {} points",
                cfg.data.display(),
                self.config.num_keypoints.unwrap_or(0),
                model_scheme.name
            )))
        };
        if let Some(s) = prepared.dataset.scheme {
            if s.name != model_scheme.name {
                return mismatch(format!(
                    "its faces have {} points ({})",
                    s.num_points, s.name
                ));
            }
        }
        if self
            .config
            .num_keypoints
            .is_some_and(|k| k != prepared.num_keypoints)
        {
            return mismatch(format!("its faces give {} points", prepared.num_keypoints));
        }
        Ok(prepared)
    }

    /// Replaces the face boxes of `split`'s faces in `prepared` by the face detector's: each
    /// face's photo goes through `detector`, the detection that best overlaps the face's own
    /// box (or its points' box) is mapped by `calibration` to the run's box convention, and the
    /// face is cached again with that box (and `prepared.dataset` holds it). Faces the detector
    /// misses keep the dataset's box; the count of detected faces is returned beside the
    /// split's size.
    pub fn use_detector_boxes(
        &self,
        prepared: &mut PreparedData,
        split: EvalSplit,
        detector: &crate::detect::FaceDetector,
        calibration: &crate::detect::BoxCalibration,
    ) -> Result<(usize, usize)> {
        let indices = split.indices(prepared);
        let faces = &prepared.dataset.faces;
        let recached = indices
            .par_iter()
            .map(|&i| {
                let face = &faces[i];
                let own = face.bbox.or_else(|| BBox::around(&face.keypoints));
                // Decoded once: the detector takes its colours, the model its luma (as
                // `load_gray` gives it).
                let photo = kp_data::loading::load_image(&face.image)?;
                let found = detector.detect(&photo.to_rgb8())?;
                let Some(d) = own.and_then(|b| crate::detect::best_match(&found, &b)) else {
                    return Ok(None);
                };
                let bbox = calibration.apply(d);
                let gray = kp_data::gray_from_u8(&photo.into_luma8());
                Ok(Some((i, bbox, self.cache_boxed(&gray, face, bbox))))
            })
            .collect::<Result<Vec<_>>>()?;
        let detected = store_boxed(prepared, recached);
        Ok((detected, indices.len()))
    }

    /// `face` cached from its decoded photo `gray` with the box `bbox` (the run's size and
    /// keypoint subset).
    fn cache_boxed(&self, gray: &GrayF32, face: &Face, bbox: BBox) -> CachedFace {
        let mut f = face.clone();
        f.bbox = Some(bbox);
        let cfg = &self.config;
        cache_decoded(gray, &f, cfg.keypoints.as_deref(), cfg.width, cfg.height)
    }

    /// Re-frames `split`'s faces around a first prediction: face `split[j]` gets the box
    /// `map` gives for the box around `predictions[j]` (its points in original pixels) and is
    /// cached again with it, so a second [`Self::evaluate_prepared`] sees each face framed as
    /// the training faces were (a cascade's second stage, with the same network). Returns
    /// how many faces were re-framed (those whose prediction has a box).
    pub fn refine_boxes(
        &self,
        prepared: &mut PreparedData,
        split: EvalSplit,
        predictions: &[Vec<Point>],
        map: &crate::detect::BoxCalibration,
    ) -> Result<usize> {
        let indices = split.indices(prepared);
        if indices.len() != predictions.len() {
            return Err(Error::Config(format!(
                "refining boxes: {} predictions for {} faces",
                predictions.len(),
                indices.len()
            )));
        }
        let faces = &prepared.dataset.faces;
        let recached = indices
            .par_iter()
            .zip(predictions)
            .map(|(&i, pred)| {
                let Some(bbox) = map.apply_points(pred) else {
                    return Ok(None);
                };
                let gray = kp_data::loading::load_gray(&faces[i].image)?;
                Ok(Some((i, bbox, self.cache_boxed(&gray, &faces[i], bbox))))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(store_boxed(prepared, recached))
    }

    /// The network inputs of `prepared`'s faces `indices` after the evaluation preprocessing:
    /// what [`Self::evaluate_prepared`] feeds the model.
    pub fn samples(&self, prepared: &PreparedData, indices: &[usize]) -> Result<Vec<Sample>> {
        crate::eval::eval_samples(&prepared.cache, indices, &self.pipeline, self.seed)
    }

    /// Evaluates the model on one split of already prepared data.
    pub fn evaluate_prepared(
        &self,
        prepared: &PreparedData,
        split: EvalSplit,
    ) -> Result<Evaluation> {
        evaluate(
            &self.model,
            &prepared.cache,
            &split.indices(prepared),
            &self.pipeline,
            prepared.eye_corners,
            self.seed,
        )
    }
}

/// One evaluated face, as `kp eval --faces` writes it (one JSON line each) and
/// `xtask/bench/dlib_landmarks.py` reads it to score another system on the same faces and boxes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaceRecord {
    /// The image file.
    pub image: PathBuf,
    /// The face's box in original pixels, `[left, top, width, height]`: the dataset's, or the
    /// detector's after [`Predictor::use_detector_boxes`] (an evaluation's box noise moves it
    /// only before the model sees it).
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// The labelled points, `[x, y]` in original pixels.
    pub truth: Vec<[f32; 2]>,
    /// The predicted points, `[x, y]` in original pixels.
    pub pred: Vec<[f32; 2]>,
    /// The face's NME (when the full scheme is predicted).
    pub nme: Option<f64>,
}

impl FaceRecord {
    /// The faces of `split` that `ev` evaluated (`Predictor::evaluate_prepared` on `prepared`
    /// and `split`), in its order.
    pub fn of(prepared: &PreparedData, split: EvalSplit, ev: &Evaluation) -> Vec<Self> {
        let xy = |p: &[Point]| p.iter().map(|p| [p.x, p.y]).collect::<Vec<_>>();
        split
            .indices(prepared)
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let face = &prepared.dataset.faces[i];
                FaceRecord {
                    image: face.image.clone(),
                    bbox: face.bbox.map(|b| b.ltwh()),
                    truth: xy(&prepared.cache[i].original),
                    pred: xy(&ev.predictions[j]),
                    nme: ev.errors.nme.get(j).copied(),
                }
            })
            .collect()
    }

    /// Writes `records` as JSON lines to `path`, atomically.
    pub fn write_jsonl(path: &Path, records: &[Self]) -> Result<()> {
        let mut text = String::new();
        for r in records {
            let line = serde_json::to_string(r).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        Ok(kp_fs::write_atomic(path, text.as_bytes())?)
    }
}

impl EvalSplit {
    /// The face indices of this split.
    pub fn indices(self, prepared: &PreparedData) -> Vec<usize> {
        match self {
            EvalSplit::Train => prepared.train.clone(),
            EvalSplit::Val => prepared.val.clone(),
            EvalSplit::All => (0..prepared.cache.len()).collect(),
        }
    }
}
