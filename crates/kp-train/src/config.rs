//! Training configuration: the seed study's three recipes and everything needed to rerun a run.

use std::path::{Path, PathBuf};

use kp_data::scheme::LandmarkScheme;
use kp_models::ModelKind;
use serde::{Deserialize, Serialize};

use crate::augment::AugmentSpec;
use crate::error::{Error, Result};
use crate::loss::Loss;

/// The three experiments of the seed study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Nose tip (IMM point 52) with NoseTipNet at 80x60.
    Nose,
    /// All 58 IMM points with FaceKeypointNet at 160x120.
    Face,
    /// 68 iBUG points on 300-W faces with ResNet18 at 224x224.
    Ibug,
}

impl Task {
    /// Parses `nose`, `face` or `ibug`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "nose" => Ok(Task::Nose),
            "face" => Ok(Task::Face),
            "ibug" => Ok(Task::Ibug),
            _ => Err(Error::Config(format!(
                "unknown task `{s}` (expected nose, face or ibug)"
            ))),
        }
    }

    /// The task's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Task::Nose => "nose",
            Task::Face => "face",
            Task::Ibug => "ibug",
        }
    }

    /// Where the task's dataset lives inside a datasets folder (as laid out by `cargo xtask fetch`).
    pub fn default_dataset(self) -> &'static str {
        match self {
            Task::Nose | Task::Face => "imm_face_db",
            Task::Ibug => "ibug_300w_train_crops/labels_ibug_300W_train_crops.xml",
        }
    }
}

/// How faces are split into training and validation sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SplitKind {
    /// IMM persons 1-32 train, 33-40 validation.
    ImmStandard,
    /// A seeded random split by face.
    Random {
        /// Fraction of faces for validation.
        val_fraction: f64,
    },
}

/// Where a model trains and predicts (`cpu`, or `cuda` with the `cuda` feature); saved as
/// its name, as `config.json` always held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU (kp's own kernels).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a kp built with `--features cuda`).
    Cuda,
}

impl DeviceKind {
    /// Parses `cpu` or `cuda`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(Error::Config(format!(
                "unknown device `{s}` (expected cpu or cuda)"
            ))),
        }
    }

    /// The device's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a run's defaults come from: the seed study's recipe for its task or kp's tuned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// The seed study's recipe ([`TrainConfig::recipe`]).
    #[default]
    Seed,
    /// kp's tuned recipe ([`TrainConfig::tuned`]).
    Tuned,
    /// The tuned recipe with the compact CPU model ([`TrainConfig::compact`]).
    Compact,
}

impl Recipe {
    /// The recipe's configuration file for `task`, `crates/kp-train/recipes/TASK-RECIPE.toml`
    /// (compiled in): the values, what they are for and what they measured, as data.
    pub fn toml(self, task: Task) -> &'static str {
        match (task, self) {
            (Task::Nose, Self::Seed) => include_str!("../recipes/nose-seed.toml"),
            (Task::Face, Self::Seed) => include_str!("../recipes/face-seed.toml"),
            (Task::Ibug, Self::Seed) => include_str!("../recipes/ibug-seed.toml"),
            (Task::Nose, Self::Tuned) => include_str!("../recipes/nose-tuned.toml"),
            (Task::Face, Self::Tuned) => include_str!("../recipes/face-tuned.toml"),
            (Task::Ibug, Self::Tuned) => include_str!("../recipes/ibug-tuned.toml"),
            (Task::Nose, Self::Compact) => include_str!("../recipes/nose-compact.toml"),
            (Task::Face, Self::Compact) => include_str!("../recipes/face-compact.toml"),
            (Task::Ibug, Self::Compact) => include_str!("../recipes/ibug-compact.toml"),
        }
    }
}

/// How the learning rate changes over a run's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate at every step (the seed's recipes).
    #[default]
    Constant,
    /// Cosine annealing from the rate to zero over all steps of the run (PyTorch's
    /// `CosineAnnealingLR` with `T_max` = total steps, `eta_min` = 0, stepped per batch).
    Cosine,
}

impl LrSchedule {
    /// Parses `constant` or `cosine`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            _ => Err(Error::Config(format!(
                "unknown learning-rate schedule `{s}` (expected constant or cosine)"
            ))),
        }
    }

    /// The schedule's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
        }
    }

    /// The rate of the step that follows `done` of `total` steps, for base rate `lr`.
    pub fn lr_at(self, lr: f64, done: usize, total: usize) -> f64 {
        match self {
            Self::Constant => lr,
            Self::Cosine => {
                let t = done.min(total) as f64 / total.max(1) as f64;
                0.5 * lr * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// The largest input side [`TrainConfig::validate`] accepts.
pub const MAX_INPUT_SIDE: usize = 4096;
/// The largest batch [`TrainConfig::validate`] accepts.
pub const MAX_BATCH: usize = 65_536;
/// The most epochs [`TrainConfig::validate`] accepts.
pub const MAX_EPOCHS: usize = 1_000_000;

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Everything a training run needs; saved as `config.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The experiment.
    pub task: Task,
    /// The network (a kp-models registry name in the file).
    pub model: ModelKind,
    /// Dataset path: an IMM folder, a dlib XML file, a folder of `.pts`, or a datasets folder
    /// holding the task's dataset; empty (a recipe file's default): the datasets folder of
    /// `KP_DATA_DIR` or `../shared/datasets` ([`Self::dataset`] resolves it when data is read).
    #[serde(default)]
    pub data: PathBuf,
    /// Number of epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Learning-rate schedule (`constant` in the seed's recipes).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Decoupled (AdamW) weight decay; 0, the seed's, is plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
    /// Training objective on the coordinates (`mse`, the seed's, in older runs).
    #[serde(default)]
    pub loss: Loss,
    /// Weight of the heatmap regulariser added to the loss (heatmap networks only): the
    /// divergence of each soft-argmax map from a Gaussian at its point
    /// ([`crate::loss::objective`]); 0, the default, adds nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heatmap_reg: f64,
    /// Augmentation used for training: a preset or a TOML/JSON pipeline file.
    pub augment: AugmentSpec,
    /// Deterministic preprocessing for validation, evaluation and prediction (preset or file).
    pub eval_augment: AugmentSpec,
    /// Seed for initialisation, shuffling and augmentation.
    pub seed: u64,
    /// `cpu` or `cuda`.
    pub device: DeviceKind,
    /// Train and validate on the first N faces only (smoke runs).
    pub limit: Option<usize>,
    /// Network input width.
    pub width: usize,
    /// Network input height.
    pub height: usize,
    /// The compact model's width multiplier (MobileNet's α: every channel count times this,
    /// `kp_models::CompactConfig::with_channel_multiplier`); 1, the default, for every model.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub channel_multiplier: f64,
    /// Which of the dataset's points the model predicts (`None` = all).
    pub keypoints: Option<Vec<usize>>,
    /// Train/validation split.
    pub split: SplitKind,
    /// Seed of a random split (`None`: the training [`Self::seed`], as before this field
    /// existed). Runs with other training seeds and the same split seed score the same
    /// held-out faces: the spread over seeds on one validation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// Points per face the model predicts (filled in when training starts).
    #[serde(default)]
    pub num_keypoints: Option<usize>,
    /// Leave out faces whose annotation or image is bad (reported) instead of failing.
    #[serde(default)]
    pub skip_bad: bool,
    /// Test-time mirroring: every prediction (validation, `kp eval`, `kp predict`) averages
    /// the network's points on the image and, mirrored back, on its mirror image.
    #[serde(default)]
    pub test_time_mirror: bool,
}

/// Changes to a recipe, all optional: `kp train`'s flags, and the one place they are applied
/// ([`TrainOverrides::apply`]).
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TrainOverrides {
    /// Number of epochs.
    #[cfg_attr(feature = "clap", arg(long))]
    pub epochs: Option<usize>,
    /// Batch size.
    #[cfg_attr(feature = "clap", arg(long))]
    pub batch_size: Option<usize>,
    /// Learning rate.
    #[cfg_attr(feature = "clap", arg(long))]
    pub lr: Option<f64>,
    /// Decoupled weight decay (AdamW), e.g. 0.05; 0 is the seed's plain Adam.
    #[cfg_attr(feature = "clap", arg(long))]
    pub weight_decay: Option<f64>,
    /// A seeded random split with this fraction of the faces for validation, in [0, 1), instead
    /// of the task's split (IMM: persons 33-40; 300-W: 0.2). 0 trains on every face (a model
    /// to ship) and validates on the training faces.
    #[cfg_attr(feature = "clap", arg(long))]
    pub val_fraction: Option<f64>,
    /// Seed of the random split (default: --seed), e.g. `--seed 1 --split-seed 0` trains with
    /// seed 1 and holds out the same faces as seed 0's run.
    #[cfg_attr(feature = "clap", arg(long))]
    pub split_seed: Option<u64>,
    /// Learning-rate schedule: constant (the seed's) or cosine (annealed to zero per step).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub lr_schedule: Option<LrSchedule>,
    /// Training loss on the coordinates: mse (the seed's, on normalised coordinates), l1 or
    /// wing (both in input pixels; Wing with w = 10, epsilon = 2).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub loss: Option<Loss>,
    /// Add the heatmap regulariser with this weight (heatmap-resnet18 and compact only): each
    /// soft-argmax map is pulled towards a Gaussian of 1 cell at its point (DSNT's), e.g. 1.
    #[cfg_attr(feature = "clap", arg(long))]
    pub heatmap_reg: Option<f64>,
    /// Augmentation: a preset (none, seed-shift, shift-rotate, shift-rotate-jitter, nose-tuned,
    /// face-tuned, ibug, ibug-eval, ibug-detector, ibug-strong) or a kp-augment TOML/JSON
    /// pipeline file.
    #[cfg_attr(feature = "clap", arg(long))]
    pub augment: Option<AugmentSpec>,
    /// The network (default: the recipe's).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub model: Option<ModelKind>,
    /// The compact model's width multiplier (every channel count times this, rounded to a
    /// multiple of 8; 1.5: stages of 48-384 channels), in [0.25, 4].
    #[cfg_attr(feature = "clap", arg(long))]
    pub channel_multiplier: Option<f64>,
    /// Seed for initialisation, shuffling and augmentation (default: the recipe's, 0).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seed: Option<u64>,
    /// cpu or cuda (default: the recipe's, cpu).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub device: Option<DeviceKind>,
    /// Use only the first N faces.
    #[cfg_attr(feature = "clap", arg(long))]
    pub limit: Option<usize>,
    /// Leave out faces whose annotation or image is bad (and report them) instead of failing.
    #[cfg_attr(feature = "clap", arg(long))]
    pub skip_bad: bool,
    /// Test-time mirroring: validation (and later `kp eval` / `kp predict`) averages each
    /// prediction with the mirrored image's, mirrored back.
    #[cfg_attr(feature = "clap", arg(long))]
    pub test_time_mirror: bool,
}

impl TrainOverrides {
    /// Sets every value given on `cfg` (the switches only turn things on).
    pub fn apply(&self, cfg: &mut TrainConfig) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut cfg.epochs, &self.epochs);
        set(&mut cfg.batch_size, &self.batch_size);
        set(&mut cfg.lr, &self.lr);
        set(&mut cfg.weight_decay, &self.weight_decay);
        if let Some(v) = self.val_fraction {
            cfg.split = SplitKind::Random { val_fraction: v };
        }
        if let Some(v) = self.split_seed {
            cfg.split_seed = Some(v);
        }
        set(&mut cfg.lr_schedule, &self.lr_schedule);
        set(&mut cfg.loss, &self.loss);
        set(&mut cfg.heatmap_reg, &self.heatmap_reg);
        set(&mut cfg.augment, &self.augment);
        set(&mut cfg.model, &self.model);
        set(&mut cfg.channel_multiplier, &self.channel_multiplier);
        set(&mut cfg.seed, &self.seed);
        set(&mut cfg.device, &self.device);
        if self.limit.is_some() {
            cfg.limit = self.limit;
        }
        cfg.skip_bad |= self.skip_bad;
        cfg.test_time_mirror |= self.test_time_mirror;
    }
}

impl TrainConfig {
    /// The seed study's recipe for `task` (`recipes/TASK-seed.toml`), reading data from `data`.
    ///
    /// nose: 25 epochs, batch 1, lr 1e-3, 80x60, no augmentation;
    /// face: 30 epochs, batch 2, lr 3e-4, 160x120, ±10 px shift;
    /// ibug: 10 epochs, batch 16, lr 3e-4, 224x224, 80/20 split.
    pub fn recipe(task: Task, data: impl Into<PathBuf>) -> Self {
        Self::from_recipe(Recipe::Seed, task, data)
    }

    /// The recipe `recipe` for `task`, read from its file ([`Recipe::toml`]), reading data
    /// from `data`.
    pub fn from_recipe(recipe: Recipe, task: Task, data: impl Into<PathBuf>) -> Self {
        let mut c: Self = toml::from_str(recipe.toml(task))
            .expect("the bundled recipes parse (test every_recipe_file_parses_and_validates)");
        c.data = data.into();
        c
    }

    /// kp's compact recipe (`recipes/TASK-compact.toml`): [`Self::tuned`] with the `compact`
    /// model (depthwise-separable, `kp_models::CompactNet`) at inputs whose sides are multiples
    /// of 32: 128x128 for `ibug` (the face box's crop at 4/7 of the ResNet's 224 px), 96x64 for
    /// `nose` and 160x128 for `face`, and, for `ibug`, 240 epochs (small networks take longer
    /// to converge: 60, 120 and 240 epochs gave 5.10%, 4.37% and 3.94% NME on the held-out
    /// faces).
    pub fn compact(task: Task, data: impl Into<PathBuf>) -> Self {
        Self::from_recipe(Recipe::Compact, task, data)
    }

    /// kp's tuned recipe for `task` (`recipes/TASK-tuned.toml`; `docs/results.md` has the
    /// errors it measured): the heatmap ResNet18 (`heatmap-resnet18`: 1/4-resolution heatmaps
    /// decoded by soft-argmax) trained longer than the seed with a cosine learning-rate
    /// schedule, and predicted with test-time mirroring. The IMM inputs stay the seed's 80x60
    /// and 160x120 (zero-padded inside the network to a multiple of 16).
    ///
    /// - nose: batch 8, lr 1e-3, 100 epochs, AdamW weight decay 0.05, `nose-tuned`
    ///   augmentation (mild, with mirroring);
    /// - face: batch 8, lr 1e-3, 100 epochs, `face-tuned` augmentation;
    /// - ibug: batch 8, lr 1e-3, 20 epochs (the seed's 10 underfit), `ibug` augmentation and
    ///   the Wing loss (in input pixels) instead of the MSE.
    pub fn tuned(task: Task, data: impl Into<PathBuf>) -> Self {
        Self::from_recipe(Recipe::Tuned, task, data)
    }

    /// The landmark scheme of the task's points: IMM-58 for `nose` and `face`, iBUG-68 for
    /// `ibug`.
    pub fn scheme(&self) -> &'static LandmarkScheme {
        match self.task {
            Task::Nose | Task::Face => &kp_data::scheme::IMM58,
            Task::Ibug => &kp_data::scheme::IBUG68,
        }
    }

    /// How the model's `num_keypoints` points reorder when the image is mirrored: entry `i`
    /// is the index of point `i`'s mirror partner (see [`LandmarkScheme::flip_within`]).
    pub fn mirror_permutation(&self, num_keypoints: usize) -> Result<Vec<usize>> {
        let scheme = self.scheme();
        let all: Vec<usize>;
        let points = match &self.keypoints {
            Some(subset) => subset.as_slice(),
            None => {
                all = (0..num_keypoints).collect();
                &all
            }
        };
        match scheme.flip_within(points) {
            Some(perm) if perm.len() == num_keypoints => Ok(perm),
            _ => Err(Error::Config(format!(
                "test-time mirroring needs points closed under the {} mirror; the model's {} \
                 points ({:?}) are not",
                scheme.name,
                num_keypoints,
                self.keypoints.as_deref().unwrap_or(&[])
            ))),
        }
    }

    /// The permutation test-time mirroring predicts with ([`Self::mirror_permutation`]), or
    /// `None` when [`Self::test_time_mirror`] is off.
    pub fn prediction_mirror(&self, num_keypoints: usize) -> Result<Option<Vec<usize>>> {
        self.test_time_mirror
            .then(|| self.mirror_permutation(num_keypoints))
            .transpose()
    }

    /// The dataset `data` names, resolved where data is read (training, evaluation), so no
    /// caller has to: `data` itself, or the task's dataset inside it when it is a datasets
    /// folder (`../shared/datasets` → `../shared/datasets/imm_face_db`); an empty `data` is
    /// the datasets folder of `KP_DATA_DIR` or `../shared/datasets` ([`kp_data::find_data_dir`]).
    pub fn dataset(&self) -> Result<PathBuf> {
        let folder = if self.data.as_os_str().is_empty() {
            kp_data::find_data_dir().ok_or_else(|| {
                Error::Config(
                    "no dataset: set `data` in the configuration, pass --data or set KP_DATA_DIR"
                        .into(),
                )
            })?
        } else {
            self.data.clone()
        };
        let inner = folder.join(self.task.default_dataset());
        Ok(if inner.exists() { inner } else { folder })
    }

    /// Checks the values make sense.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be zero or positive, got {}",
                self.weight_decay
            ));
        }
        if self.width == 0 || self.height == 0 {
            return bad("input size must be positive".into());
        }
        // Bounds that no real run reaches and that keep a hostile config.json from asking
        // for terabytes (a 10^6-side input, a 10^9 batch) before anything checks it.
        let limits = [
            ("width", self.width, MAX_INPUT_SIDE),
            ("height", self.height, MAX_INPUT_SIDE),
            ("batch size", self.batch_size, MAX_BATCH),
            ("epochs", self.epochs, MAX_EPOCHS),
        ];
        for (what, v, max) in limits {
            if v > max {
                return bad(format!(
                    "{what} = {v} is more than the most kp accepts ({max})"
                ));
            }
        }
        if let Some(k) = self.num_keypoints {
            if k == 0 || k > self.scheme().num_points {
                return bad(format!(
                    "num_keypoints = {k} is not 1..={} ({} points)",
                    self.scheme().num_points,
                    self.scheme().name
                ));
            }
        }
        if let Some(points) = &self.keypoints {
            let n = self.scheme().num_points;
            if points.is_empty() || points.iter().any(|&p| p >= n) {
                return bad(format!(
                    "keypoints {} must be indices of the {} scheme's {n} points",
                    kp_fs::shown(&format!("{points:?}")),
                    self.scheme().name
                ));
            }
        }
        let sizes = kp_models::ModelConfig {
            channel_multiplier: self.channel_multiplier,
            ..Default::default()
        };
        match sizes.check_channel_multiplier(self.model) {
            Err(kp_models::Error::Config(m)) => return bad(m),
            Err(e) => return bad(e.to_string()),
            Ok(()) => {}
        }
        if !(self.heatmap_reg.is_finite() && self.heatmap_reg >= 0.0) {
            return bad(format!(
                "heatmap regulariser weight must be 0 or more, got {}",
                self.heatmap_reg
            ));
        }
        if self.heatmap_reg > 0.0 && !self.model.decodes_heatmaps() {
            return bad(format!(
                "the heatmap regulariser needs a heatmap model (heatmap-resnet18 or compact); {} \
                 regresses coordinates",
                self.model
            ));
        }
        if let (Some(seed), SplitKind::ImmStandard) = (self.split_seed, self.split) {
            return bad(format!(
                "a split seed ({seed}) needs a random split (--val-fraction); the IMM standard \
                 split is fixed"
            ));
        }
        if let SplitKind::Random { val_fraction } = self.split {
            if !(0.0..1.0).contains(&val_fraction) {
                return bad(format!(
                    "val fraction must be in [0, 1), got {val_fraction}"
                ));
            }
        }
        Ok(())
    }

    /// Reads a `config.json` and checks its values ([`Self::validate`]): a damaged or hostile
    /// file is refused in one line naming it, before any of it is used.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = crate::atomic::read_json(path)?;
        cfg.validate().map_err(|e| match e {
            // One "invalid configuration:", then the file, then what is wrong.
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// The fields where `given` differs from this (a run's saved) configuration, as
    /// `name = GIVEN (the run has SAVED)`; the points the model predicts (filled in when
    /// training starts) and a datasets folder that resolves to the run's dataset do not count.
    pub fn conflicts(&self, given: &Self) -> Vec<String> {
        let mut given = given.clone();
        given.num_keypoints = self.num_keypoints;
        if given.dataset().ok().as_ref() == Some(&self.data) {
            given.data = self.data.clone();
        }
        let (Ok(serde_json::Value::Object(saved)), Ok(serde_json::Value::Object(given))) =
            (serde_json::to_value(self), serde_json::to_value(&given))
        else {
            return vec!["a configuration that cannot be compared".into()];
        };
        saved
            .iter()
            .filter(|(k, v)| given.get(*k) != Some(v))
            .map(|(k, v)| {
                let g = given.get(k).map(|g| g.to_string()).unwrap_or_default();
                format!(
                    "{k} = {} (the run has {})",
                    kp_fs::shown(&g),
                    kp_fs::shown(&v.to_string())
                )
            })
            .collect()
    }

    /// Reads a configuration file to train from (`kp train --config`): a run's `config.json`
    /// or the same fields in TOML (`.toml`).
    pub fn from_file(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "toml") {
            let text = kp_fs::read_text(path).map_err(|e| Error::io(path, e))?;
            toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
                let at = line.map(|l| format!(" line {l}:")).unwrap_or_default();
                Error::Config(format!("{}:{at} {}", path.display(), e.message()))
            })
        } else {
            Self::load(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipe_file_parses_and_validates() {
        for r in [Recipe::Seed, Recipe::Tuned, Recipe::Compact] {
            for t in [Task::Nose, Task::Face, Task::Ibug] {
                let c: TrainConfig = toml::from_str(r.toml(t)).unwrap();
                assert_eq!(
                    (c.task, c.data.as_os_str()),
                    (t, "".as_ref()),
                    "{r:?} {t:?}"
                );
                c.validate().unwrap();
                c.augment.pipeline(c.width, c.height).unwrap();
                c.eval_augment.pipeline(c.width, c.height).unwrap();
            }
        }
    }

    #[test]
    fn recipes_follow_the_seed() {
        let n = TrainConfig::recipe(Task::Nose, "d");
        assert_eq!(
            (n.epochs, n.batch_size, n.lr, n.width, n.height),
            (25, 1, 1e-3, 80, 60)
        );
        assert_eq!(n.keypoints, Some(vec![52]));
        let f = TrainConfig::recipe(Task::Face, "d");
        assert_eq!(
            (f.epochs, f.batch_size, f.lr, f.width, f.height),
            (30, 2, 3e-4, 160, 120)
        );
        let i = TrainConfig::recipe(Task::Ibug, "d");
        assert_eq!(
            (i.epochs, i.batch_size, i.lr, i.width, i.height),
            (10, 16, 3e-4, 224, 224)
        );
        assert_eq!(i.split, SplitKind::Random { val_fraction: 0.2 });
        for c in [n, f, i] {
            c.validate().unwrap();
        }
        let t = TrainConfig::tuned(Task::Nose, "d");
        assert_eq!(
            (t.batch_size, t.lr, t.width, t.lr_schedule, t.weight_decay),
            (8, 1e-3, 80, LrSchedule::Cosine, 0.05)
        );
        for task in [Task::Nose, Task::Face] {
            let t = TrainConfig::tuned(task, "d");
            let r = TrainConfig::recipe(task, "d");
            assert_eq!((t.width, t.height), (r.width, r.height));
            assert_eq!(t.model, ModelKind::HeatmapResNet18);
            t.augment.pipeline(t.width, t.height).unwrap();
            t.validate().unwrap();
            assert!(t.test_time_mirror && !TrainConfig::recipe(task, "d").test_time_mirror);
        }
        let (t, r) = (
            TrainConfig::tuned(Task::Ibug, "d"),
            TrainConfig::recipe(Task::Ibug, "d"),
        );
        assert_eq!(
            (t.model, t.epochs),
            (ModelKind::HeatmapResNet18, 2 * r.epochs)
        );
        assert_eq!((t.batch_size, t.lr, &t.augment), (8, 1e-3, &r.augment));
        assert!(t.test_time_mirror && t.lr_schedule == LrSchedule::Cosine);
        assert_eq!((t.loss, r.loss), (Loss::Wing, Loss::Mse));
        assert_eq!(TrainConfig::tuned(Task::Face, "d").loss, Loss::Mse);
    }

    #[test]
    fn the_compact_recipe_is_the_tuned_one_with_the_compact_model_at_multiples_of_32() {
        for task in [Task::Nose, Task::Face, Task::Ibug] {
            let c = TrainConfig::from_recipe(Recipe::Compact, task, "d");
            let t = TrainConfig::tuned(task, "d");
            assert_eq!(c.model, ModelKind::Compact);
            assert!(
                c.width.is_multiple_of(32) && c.height.is_multiple_of(32),
                "{task:?}"
            );
            assert!(c.width >= t.width.min(128) && c.height >= t.height.min(128));
            assert_eq!(
                (c.loss, c.lr_schedule, &c.augment),
                (t.loss, t.lr_schedule, &t.augment)
            );
            c.validate().unwrap();
        }
        assert_eq!(
            TrainConfig::compact(Task::Ibug, "d").epochs,
            12 * TrainConfig::tuned(Task::Ibug, "d").epochs
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut c = TrainConfig::recipe(Task::Nose, "d");
        c.lr = f64::NAN;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("learning rate"));
        let mut c = TrainConfig::recipe(Task::Nose, "d");
        c.batch_size = 0;
        assert!(c.validate().is_err());
        let mut c = TrainConfig::recipe(Task::Nose, "d");
        c.weight_decay = -0.1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("weight decay"));
        assert!(Task::parse("nosee").is_err());
        assert!(LrSchedule::parse("cosin").is_err());
        let mut c = TrainConfig::recipe(Task::Nose, "d");
        c.channel_multiplier = 1.5;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("only the compact model") && e.contains("nosetipnet") && e.contains("1.5"),
            "{e}"
        );
        let mut c = TrainConfig::recipe(Task::Ibug, "d");
        c.heatmap_reg = 1.0;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("needs a heatmap model") && e.contains("resnet18"),
            "{e}"
        );
        let mut c = TrainConfig::compact(Task::Ibug, "d");
        c.heatmap_reg = f64::NAN;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("heatmap regulariser weight") && e.contains("NaN"),
            "{e}"
        );
        c.heatmap_reg = 1.0;
        c.validate().unwrap();
        c.split_seed = Some(0);
        c.validate().unwrap();
        let mut c = TrainConfig::recipe(Task::Nose, "d");
        c.split_seed = Some(4);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("split seed (4) needs a random split"), "{e}");
        let mut c = TrainConfig::compact(Task::Ibug, "d");
        c.channel_multiplier = 1.5;
        c.validate().unwrap();
        c.channel_multiplier = 8.0;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("channel multiplier 8 is not in 0.25..=4.0"),
            "{e}"
        );
    }

    #[test]
    fn cosine_schedule_anneals_from_the_rate_to_zero() {
        let s = LrSchedule::parse("cosine").unwrap();
        assert_eq!(s.lr_at(0.1, 0, 100), 0.1);
        assert!((s.lr_at(0.1, 50, 100) - 0.05).abs() < 1e-12);
        assert!(s.lr_at(0.1, 100, 100).abs() < 1e-12);
        assert!(s.lr_at(0.1, 30, 100) > s.lr_at(0.1, 31, 100));
        assert_eq!(LrSchedule::Constant.lr_at(0.1, 99, 100), 0.1);
    }

    #[test]
    fn configs_of_older_runs_load_with_the_seed_defaults() {
        let mut v = serde_json::to_value(TrainConfig::tuned(Task::Nose, "d")).unwrap();
        for field in ["lr_schedule", "test_time_mirror", "weight_decay", "loss"] {
            v.as_object_mut().unwrap().remove(field);
        }
        let c: TrainConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.lr_schedule, LrSchedule::Constant);
        assert!(!c.test_time_mirror);
        assert_eq!(c.weight_decay, 0.0);
        assert_eq!(c.loss, Loss::Mse);
        assert_eq!(c.channel_multiplier, 1.0);
        assert_eq!(c.heatmap_reg, 0.0);
        assert_eq!(c.split_seed, None);
        // And a configuration without the regulariser or a split seed is written as before
        // they existed.
        let v = serde_json::to_value(TrainConfig::compact(Task::Ibug, "d")).unwrap();
        assert!(v.get("heatmap_reg").is_none() && v.get("split_seed").is_none());
    }

    #[test]
    fn json_round_trip() {
        let c = TrainConfig::recipe(Task::Ibug, "x/y.xml");
        let s = serde_json::to_string(&c).unwrap();
        let back: TrainConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let tuned = TrainConfig::tuned(Task::Ibug, "d");
        let mut c = tuned.clone();
        TrainOverrides::default().apply(&mut c);
        assert_eq!(c, tuned, "no flags, no change");
        let o = TrainOverrides {
            epochs: Some(3),
            val_fraction: Some(0.0),
            loss: Some(Loss::L1),
            device: Some(DeviceKind::Cuda),
            skip_bad: true,
            split_seed: Some(7),
            ..Default::default()
        };
        o.apply(&mut c);
        assert_eq!(c.split_seed, Some(7));
        assert_eq!(
            (c.epochs, c.split, c.loss, c.device, c.skip_bad),
            (
                3,
                SplitKind::Random { val_fraction: 0.0 },
                Loss::L1,
                DeviceKind::Cuda,
                true
            )
        );
        assert_eq!(
            (c.lr, c.batch_size, &c.model),
            (tuned.lr, tuned.batch_size, &tuned.model)
        );
        assert!(
            c.test_time_mirror,
            "a switch left off keeps the recipe's setting"
        );
    }

    #[test]
    fn a_toml_configuration_reads_as_its_json_twin_and_a_bad_one_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let c = TrainConfig::tuned(Task::Face, "data/imm_face_db");
        let json = dir.path().join("config.json");
        crate::atomic::write_json(&json, &c).unwrap();
        let toml_path = dir.path().join("face.toml");
        std::fs::write(&toml_path, toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(TrainConfig::from_file(&json).unwrap(), c);
        assert_eq!(TrainConfig::from_file(&toml_path).unwrap(), c);

        let text = toml::to_string(&c)
            .unwrap()
            .replace("epochs = 100", "epochs = \"many\"");
        std::fs::write(&toml_path, &text).unwrap();
        let line = text.lines().position(|l| l.starts_with("epochs")).unwrap() + 1;
        let err = TrainConfig::from_file(&toml_path).unwrap_err().to_string();
        assert!(
            err.contains("face.toml") && err.contains(&format!("line {line}:")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn devices_keep_their_names_in_config_json() {
        let mut c = TrainConfig::recipe(Task::Nose, "d");
        c.device = DeviceKind::Cuda;
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["device"], "cuda");
        assert_eq!(DeviceKind::parse("cpu").unwrap(), DeviceKind::Cpu);
        assert!(DeviceKind::parse("gpu")
            .unwrap_err()
            .to_string()
            .contains("cpu or cuda"));
        assert_eq!(
            TrainConfig::from_recipe(Recipe::Tuned, Task::Nose, "d"),
            TrainConfig::tuned(Task::Nose, "d")
        );
    }
}
