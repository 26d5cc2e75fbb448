//! Serde configuration of an augmentation pipeline, and the named presets.
//!
//! A config is an output size plus an ordered list of steps, each with a probability `p`.
//! In TOML:
//!
//! ```toml
//! width = 224
//! height = 224
//! fill = 0.0
//!
//! [[steps]]
//! kind = "box_jitter"
//! shift_x = [-0.26, -0.02, 0.21]   # [min, mode, max]: triangular
//! shift_y = [-0.23, -0.11, 0.08]
//! scale = [0.81, 1.01, 1.24]
//!
//! [[steps]]
//! kind = "crop_box"
//! margin = [1.2, 1.4]              # [min, max]: uniform
//!
//! [[steps]]
//! kind = "rotate"
//! p = 0.8
//! degrees = [-15.0, 15.0]
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The interval a parameter is drawn from: `[min, max]` (uniform) or `[min, mode, max]`
/// (triangular, peaked at `mode`). Written as a 2- or 3-element array in TOML/JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f32>", into = "Vec<f32>")]
pub struct Range {
    /// Smallest value.
    pub min: f32,
    /// Most likely value for a triangular draw; `None` for uniform.
    pub mode: Option<f32>,
    /// Largest value.
    pub max: f32,
}

impl Range {
    /// Uniform on `[min, max]`.
    pub const fn uniform(min: f32, max: f32) -> Self {
        Self {
            min,
            mode: None,
            max,
        }
    }

    /// Triangular on `[min, max]` with its peak at `mode`.
    pub const fn triangular(min: f32, mode: f32, max: f32) -> Self {
        Self {
            min,
            mode: Some(mode),
            max,
        }
    }

    /// Always `v`.
    pub const fn fixed(v: f32) -> Self {
        Self::uniform(v, v)
    }

    /// The value at quantile `u ∈ [0, 1)` (inverse CDF), so one uniform draw gives one value.
    pub fn quantile(&self, u: f64) -> f64 {
        let (a, b) = (self.min as f64, self.max as f64);
        if b <= a {
            return a;
        }
        match self.mode {
            None => a + (b - a) * u,
            Some(c) => {
                let c = (c as f64).clamp(a, b);
                let split = (c - a) / (b - a);
                if u < split {
                    a + (u * (b - a) * (c - a)).sqrt()
                } else {
                    b - ((1.0 - u) * (b - a) * (b - c)).sqrt()
                }
            }
        }
    }

    fn is_valid(&self) -> bool {
        let mode_ok = self
            .mode
            .is_none_or(|m| m.is_finite() && self.min <= m && m <= self.max);
        self.min.is_finite() && self.max.is_finite() && self.min <= self.max && mode_ok
    }
}

impl From<[f32; 2]> for Range {
    fn from(v: [f32; 2]) -> Self {
        Self::uniform(v[0], v[1])
    }
}

impl From<[f32; 3]> for Range {
    fn from(v: [f32; 3]) -> Self {
        Self::triangular(v[0], v[1], v[2])
    }
}

impl TryFrom<Vec<f32>> for Range {
    type Error = String;

    fn try_from(v: Vec<f32>) -> std::result::Result<Self, String> {
        match v[..] {
            [a, b] => Ok(Self::uniform(a, b)),
            [a, m, b] => Ok(Self::triangular(a, m, b)),
            _ => Err(format!(
                "a range is [min, max] or [min, mode, max], got {} numbers",
                v.len()
            )),
        }
    }
}

impl From<Range> for Vec<f32> {
    fn from(r: Range) -> Self {
        match r.mode {
            None => vec![r.min, r.max],
            Some(m) => vec![r.min, m, r.max],
        }
    }
}

/// Largest output side accepted by [`PipelineConfig::validate`].
pub const MAX_OUTPUT_SIDE: u32 = 16384;

/// Names accepted by [`PipelineConfig::preset`].
pub const PRESETS: &[&str] = &["none", "seed-shift", "shift-rotate", "shift-rotate-jitter"];

fn one() -> f32 {
    1.0
}

fn yes() -> bool {
    true
}

/// A whole pipeline: output size, sampling options and the ordered steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Output width in pixels (the final resize).
    pub width: u32,
    /// Output height in pixels (the final resize).
    pub height: u32,
    /// Value for output pixels that come from outside the source (0.0 = mid gray).
    #[serde(default)]
    pub fill: f32,
    /// Box-filter supersampling when the map shrinks the image (see [`crate::WarpOptions`]).
    #[serde(default = "yes")]
    pub antialias: bool,
    /// The steps, applied in order. Geometric steps compose into one affine map;
    /// photometric steps run after the single warp.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

impl Default for PipelineConfig {
    /// Resize only, to the seed's full-face input size 160x120.
    fn default() -> Self {
        Self::resize_only(160, 120)
    }
}

/// One step of a pipeline, tagged by `kind` in TOML/JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepConfig {
    /// Shift by a uniform `(dx, dy)`.
    Translate(TranslateConfig),
    /// Rotate about a centre.
    Rotate(RotateConfig),
    /// Zoom about a centre.
    Scale(ScaleConfig),
    /// Horizontal mirror with the landmark scheme's left/right permutation.
    Hflip(FlipConfig),
    /// Shift and scale the face box (before [`StepConfig::CropBox`]).
    BoxJitter(BoxJitterConfig),
    /// Crop to the (jittered) face box enlarged by a margin.
    CropBox(CropBoxConfig),
    /// Add a constant to every pixel.
    Brightness(BrightnessConfig),
    /// Scale pixel deviations from the mean.
    Contrast(ContrastConfig),
    /// `v → (v + 0.5)^g − 0.5`.
    Gamma(GammaConfig),
    /// Cover a random rectangle of the output with one grey value (cutout). The keypoints
    /// keep their labels, so a network learns to place hidden points from the rest of the face.
    Occlude(OccludeConfig),
    /// Gaussian blur of the output (a face out of focus, or a small face enlarged).
    Blur(BlurConfig),
}

/// Units of a [`TranslateConfig`] shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftUnit {
    /// Pixels of the final output image.
    #[default]
    Output,
    /// Pixels of the current canvas (the source image, or the crop after a box crop).
    Canvas,
    /// Fractions of the current canvas width / height.
    Fraction,
}

/// The point that rotation and scaling keep fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Center {
    /// Centre of the current canvas (image, or crop after a box crop).
    #[default]
    Canvas,
    /// Centroid of the keypoints (canvas centre when there are none).
    Keypoints,
    /// Centre of the current face box (canvas centre when there is none).
    Box,
}

/// Translation parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Horizontal shift range.
    pub x: Range,
    /// Vertical shift range.
    pub y: Range,
    /// Units of `x` and `y`.
    #[serde(default)]
    pub unit: ShiftUnit,
}

impl Default for TranslateConfig {
    /// The seed's shift: ±10 output pixels on both axes.
    fn default() -> Self {
        Self {
            p: 1.0,
            x: Range::uniform(-10.0, 10.0),
            y: Range::uniform(-10.0, 10.0),
            unit: ShiftUnit::Output,
        }
    }
}

/// Rotation parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Angle range in degrees (positive = counter-clockwise on screen).
    pub degrees: Range,
    /// Fixed point of the rotation.
    #[serde(default)]
    pub center: Center,
}

impl Default for RotateConfig {
    /// ±15° about the canvas centre.
    fn default() -> Self {
        Self {
            p: 1.0,
            degrees: Range::uniform(-15.0, 15.0),
            center: Center::Canvas,
        }
    }
}

/// Zoom parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Zoom factor range (> 1 enlarges the content).
    pub factor: Range,
    /// Fixed point of the zoom.
    #[serde(default)]
    pub center: Center,
}

impl Default for ScaleConfig {
    /// 0.9–1.1 about the canvas centre.
    fn default() -> Self {
        Self {
            p: 1.0,
            factor: Range::uniform(0.9, 1.1),
            center: Center::Canvas,
        }
    }
}

/// Horizontal flip parameters. Give at most one of `scheme` and `permutation`; with
/// neither, points keep their order (only their x is mirrored).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlipConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Landmark scheme whose `flip` permutation reorders the points: `ibug68` or `imm58`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// An explicit permutation: point `i` becomes point `permutation[i]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permutation: Option<Vec<usize>>,
}

/// Face-box jitter, in units of the box size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxJitterConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Centre shift range as a fraction of the box width (negative = left).
    pub shift_x: Range,
    /// Centre shift range as a fraction of the box height (negative = up).
    pub shift_y: Range,
    /// Box size factor range.
    pub scale: Range,
}

impl Default for BoxJitterConfig {
    /// dlib's detector box relative to the landmark box on real 300-W faces, as triangular
    /// draws peaked at the measured medians: 0.26 left to 0.21 right (median 0.02 left),
    /// 0.23 higher to 0.08 lower (median 0.11 higher), 0.81–1.24× the size (median 1.01).
    fn default() -> Self {
        Self {
            p: 1.0,
            shift_x: Range::triangular(-0.26, -0.02, 0.21),
            shift_y: Range::triangular(-0.23, -0.11, 0.08),
            scale: Range::triangular(0.81, 1.01, 1.24),
        }
    }
}

/// Box crop parameters. The box is the one passed to `apply`, or the keypoints' tight box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropBoxConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Range of the factor the box side is enlarged by.
    pub margin: Range,
    /// Crop a square of side `max(width, height)·margin` (else `width·margin × height·margin`).
    #[serde(default = "yes")]
    pub square: bool,
}

impl Default for CropBoxConfig {
    /// The 300-W recipe: square box enlarged ×1.2–1.4.
    fn default() -> Self {
        Self {
            p: 1.0,
            margin: Range::uniform(1.2, 1.4),
            square: true,
        }
    }
}

/// Brightness jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrightnessConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Range of the value added to every pixel.
    pub delta: Range,
}

impl Default for BrightnessConfig {
    /// ±0.15 with probability 0.5.
    fn default() -> Self {
        Self {
            p: 0.5,
            delta: Range::uniform(-0.15, 0.15),
        }
    }
}

/// Contrast jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Range of the factor on deviations from the image mean.
    pub factor: Range,
}

impl Default for ContrastConfig {
    /// 0.7–1.3 with probability 0.5.
    fn default() -> Self {
        Self {
            p: 0.5,
            factor: Range::uniform(0.7, 1.3),
        }
    }
}

/// Gamma jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GammaConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Range of the exponent.
    pub gamma: Range,
}

impl Default for GammaConfig {
    /// 0.7–1.4 with probability 0.5.
    fn default() -> Self {
        Self {
            p: 0.5,
            gamma: Range::uniform(0.7, 1.4),
        }
    }
}

/// Occlusion (cutout) parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OccludeConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Range of the rectangle's width and of its height (drawn apart) as fractions of the
    /// output's, in (0, 1]; its place is uniform over the positions where it fits.
    pub size: Range,
    /// Range of the grey value it is filled with (pixels are in `[-0.5, 0.5]`).
    pub value: Range,
}

impl Default for OccludeConfig {
    /// A rectangle of 10-40% of each side, any grey, with probability 0.5.
    fn default() -> Self {
        Self {
            p: 0.5,
            size: Range::uniform(0.1, 0.4),
            value: Range::uniform(-0.5, 0.5),
        }
    }
}

/// Blur parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlurConfig {
    /// Probability that the step runs.
    #[serde(default = "one")]
    pub p: f32,
    /// Range of the Gaussian's standard deviation in output pixels, in (0, 16].
    pub sigma: Range,
}

impl Default for BlurConfig {
    /// σ 0.5-2 output pixels with probability 0.3.
    fn default() -> Self {
        Self {
            p: 0.3,
            sigma: Range::uniform(0.5, 2.0),
        }
    }
}

/// The largest blur σ a pipeline accepts, in output pixels (the kernel has `6σ + 1` taps).
pub const MAX_BLUR_SIGMA: f32 = 16.0;

impl StepConfig {
    /// The step's probability.
    pub fn probability(&self) -> f32 {
        match self {
            StepConfig::Translate(c) => c.p,
            StepConfig::Rotate(c) => c.p,
            StepConfig::Scale(c) => c.p,
            StepConfig::Hflip(c) => c.p,
            StepConfig::BoxJitter(c) => c.p,
            StepConfig::CropBox(c) => c.p,
            StepConfig::Brightness(c) => c.p,
            StepConfig::Contrast(c) => c.p,
            StepConfig::Gamma(c) => c.p,
            StepConfig::Occlude(c) => c.p,
            StepConfig::Blur(c) => c.p,
        }
    }

    /// The `kind` tag used in config files.
    pub fn kind(&self) -> &'static str {
        match self {
            StepConfig::Translate(_) => "translate",
            StepConfig::Rotate(_) => "rotate",
            StepConfig::Scale(_) => "scale",
            StepConfig::Hflip(_) => "hflip",
            StepConfig::BoxJitter(_) => "box_jitter",
            StepConfig::CropBox(_) => "crop_box",
            StepConfig::Brightness(_) => "brightness",
            StepConfig::Contrast(_) => "contrast",
            StepConfig::Gamma(_) => "gamma",
            StepConfig::Occlude(_) => "occlude",
            StepConfig::Blur(_) => "blur",
        }
    }

    /// True for steps that change geometry (and so the keypoints).
    pub fn is_geometric(&self) -> bool {
        !matches!(
            self,
            StepConfig::Brightness(_)
                | StepConfig::Contrast(_)
                | StepConfig::Gamma(_)
                | StepConfig::Occlude(_)
                | StepConfig::Blur(_)
        )
    }

    fn validate(&self, i: usize) -> Result<()> {
        let kind = self.kind();
        let bad = |what: String| Error::InvalidConfig(format!("step {i} ({kind}): {what}"));
        let p = self.probability();
        if !(0.0..=1.0).contains(&p) {
            return Err(bad(format!("p = {p} is not in [0, 1]")));
        }
        let range = |name: &str, r: Range, positive: bool| -> Result<()> {
            if !r.is_valid() {
                return Err(bad(format!(
                    "{name} = {:?} is not a finite [min, (mode,) max] range",
                    Vec::from(r)
                )));
            }
            if positive && r.min <= 0.0 {
                return Err(bad(format!("{name} must be > 0, got min {}", r.min)));
            }
            Ok(())
        };
        match self {
            StepConfig::Translate(c) => {
                range("x", c.x, false)?;
                range("y", c.y, false)
            }
            StepConfig::Rotate(c) => range("degrees", c.degrees, false),
            StepConfig::Scale(c) => range("factor", c.factor, true),
            StepConfig::Hflip(c) => {
                if c.scheme.is_some() && c.permutation.is_some() {
                    return Err(bad("give either scheme or permutation, not both".into()));
                }
                Ok(())
            }
            StepConfig::BoxJitter(c) => {
                range("shift_x", c.shift_x, false)?;
                range("shift_y", c.shift_y, false)?;
                range("scale", c.scale, true)
            }
            StepConfig::CropBox(c) => range("margin", c.margin, true),
            StepConfig::Brightness(c) => range("delta", c.delta, false),
            StepConfig::Contrast(c) => {
                range("factor", c.factor, false)?;
                if c.factor.min < 0.0 {
                    return Err(bad(format!(
                        "factor must be >= 0, got min {}",
                        c.factor.min
                    )));
                }
                Ok(())
            }
            StepConfig::Gamma(c) => range("gamma", c.gamma, true),
            StepConfig::Occlude(c) => {
                range("size", c.size, true)?;
                range("value", c.value, false)?;
                if c.size.max > 1.0 {
                    return Err(bad(format!(
                        "size must be at most 1 (the whole side), got max {}",
                        c.size.max
                    )));
                }
                Ok(())
            }
            StepConfig::Blur(c) => {
                range("sigma", c.sigma, true)?;
                if c.sigma.max > MAX_BLUR_SIGMA {
                    return Err(bad(format!(
                        "sigma must be at most {MAX_BLUR_SIGMA} output pixels, got max {}",
                        c.sigma.max
                    )));
                }
                Ok(())
            }
        }
    }
}

impl PipelineConfig {
    /// A pipeline that only resizes to `width × height`.
    pub fn resize_only(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            fill: 0.0,
            antialias: true,
            steps: Vec::new(),
        }
    }

    /// Returns the config with another output size.
    pub fn with_output(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Returns the config with one more step at the end.
    pub fn with_step(mut self, step: StepConfig) -> Self {
        self.steps.push(step);
        self
    }

    /// A named preset (see [`PRESETS`]), at 160x120:
    ///
    /// - `none`: resize only;
    /// - `seed-shift`: ±10 px shift (output pixels), the seed study's full-face recipe;
    /// - `shift-rotate`: the shift plus ±15° rotation about the keypoint centroid;
    /// - `shift-rotate-jitter`: plus brightness, contrast and gamma jitter (p = 0.5 each).
    ///
    /// Recipes tuned for one dataset (kp's `nose-tuned`, `face-tuned` and the 300-W box-crop
    /// pipelines `ibug`, `ibug-eval`, `ibug-detector`, `ibug-strong`) are TOML files in the
    /// kp-train crate (`recipes/augment/`), read with [`PipelineConfig::from_file`] or
    /// [`PipelineConfig::from_toml_str`].
    pub fn preset(name: &str) -> Result<Self> {
        let seed_shift = || {
            Self::resize_only(160, 120).with_step(StepConfig::Translate(TranslateConfig::default()))
        };
        let shift_rotate = || {
            seed_shift().with_step(StepConfig::Rotate(RotateConfig {
                center: Center::Keypoints,
                ..RotateConfig::default()
            }))
        };
        Ok(match name {
            "none" => Self::resize_only(160, 120),
            "seed-shift" => seed_shift(),
            "shift-rotate" => shift_rotate(),
            "shift-rotate-jitter" => shift_rotate()
                .with_step(StepConfig::Brightness(BrightnessConfig::default()))
                .with_step(StepConfig::Contrast(ContrastConfig::default()))
                .with_step(StepConfig::Gamma(GammaConfig::default())),
            _ => return Err(Error::UnknownPreset(name.to_string())),
        })
    }

    /// Checks sizes, ranges and probabilities (flip schemes are resolved by
    /// [`crate::Pipeline::new`]).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v > MAX_OUTPUT_SIDE {
                return Err(Error::InvalidConfig(format!(
                    "{name} = {v} is not in 1..={MAX_OUTPUT_SIDE}"
                )));
            }
        }
        if !self.fill.is_finite() {
            return Err(Error::InvalidConfig(format!(
                "fill = {} is not finite",
                self.fill
            )));
        }
        for (i, s) in self.steps.iter().enumerate() {
            s.validate(i)?;
        }
        Ok(())
    }

    /// Parses TOML and validates.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let c: Self = toml::from_str(s).map_err(|e| Error::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Parses JSON and validates.
    pub fn from_json_str(s: &str) -> Result<Self> {
        let c: Self = serde_json::from_str(s).map_err(|e| Error::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a `.toml` or `.json` file (chosen by extension) and validates.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let parse: fn(&str) -> Result<Self> = match ext.as_deref() {
            Some("toml") => Self::from_toml_str,
            Some("json") => Self::from_json_str,
            _ => return Err(Error::UnsupportedFormat(path.to_path_buf())),
        };
        let text = kp_fs::read_text(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text).map_err(|e| match e {
            Error::Parse(msg) => Error::Parse(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Serialises to TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Serialize(e.to_string()))
    }

    /// Serialises to pretty JSON.
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Serialize(e.to_string()))
    }
}
