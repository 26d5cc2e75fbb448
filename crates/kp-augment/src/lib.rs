//! Keypoint-aware image augmentation for kp.
//!
//! Geometric steps (translate, rotate, scale, horizontal flip, face-box jitter and crop,
//! and the final resize) compose into **one** [`Affine`] map, and the image is warped
//! once, bilinearly, straight into the output size: a chain of five steps blurs no more
//! than one, and the cost is proportional to the output pixels. Keypoints go through the
//! same map exactly; flips also reorder them with the landmark scheme's left/right
//! permutation. Photometric steps (brightness, contrast, gamma, occlusion, blur) run on the
//! warped output.
//!
//! Coordinates are 0-based with pixel centres at integers, so a resize by `s` maps
//! `x → (x + 0.5)·s − 0.5` and a flip maps `x → (W − 1) − x`.
//!
//! Pipelines come from a [`PipelineConfig`] (a builder, TOML/JSON via serde, or a named preset:
//! `none`, `seed-shift`, `shift-rotate`, `shift-rotate-jitter`; kp's tuned and 300-W box-crop
//! pipelines are TOML files in kp-train's `recipes/augment/`). Each step has a probability `p` and draws its
//! parameters from a [`Range`] (`[min, max]` uniform or `[min, mode, max]` triangular).
//! Pipelines are deterministic: the same seed gives the same output bytes.
//! [`Augmented::to_original`] maps predictions on the output back to original image pixels
//! (undoing flip reordering too).
//!
//! ```
//! use kp_augment::{GrayF32, Pipeline, PipelineConfig, Point, RotateConfig, StepConfig};
//!
//! # fn main() -> kp_augment::Result<()> {
//! // A 640x480 image with two keypoints: ±10 px shift and ±15° rotation, out at 160x120.
//! let img = GrayF32::new(640, 480);
//! let kps = [Point::new(320.0, 240.0), Point::new(100.5, 50.25)];
//! let config = PipelineConfig::preset("seed-shift")?
//!     .with_step(StepConfig::Rotate(RotateConfig::default()));
//! let pipeline = Pipeline::new(config)?;
//! let out = pipeline.apply(&img, &kps, None, 7)?;
//! assert_eq!(out.image.dimensions(), (160, 120));
//!
//! // Same seed, same result.
//! assert_eq!(out, pipeline.apply(&img, &kps, None, 7)?);
//!
//! // Predictions on the output map back to original pixels.
//! let back = out.to_original(&out.keypoints)?;
//! assert!((back[1].x - 100.5).abs() < 1e-3 && (back[1].y - 50.25).abs() < 1e-3);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod affine;
pub mod config;
pub mod photometric;
pub mod pipeline;
pub mod warp;

use std::path::PathBuf;

pub use affine::Affine;
pub use config::{
    BlurConfig, BoxJitterConfig, BrightnessConfig, Center, ContrastConfig, CropBoxConfig,
    FlipConfig, GammaConfig, OccludeConfig, PipelineConfig, Range, RotateConfig, ScaleConfig,
    ShiftUnit, StepConfig, TranslateConfig, PRESETS,
};
/// The image and point types pipelines take (from kp-data), so that this crate works alone.
pub use kp_data::{BBox, GrayF32, Point};
pub use pipeline::{
    apply_photometric, hflip_points, in_image, is_involution, points_to_original, scheme_by_name,
    validate_permutation, Augmented, PhotometricOp, Pipeline, Plan,
};
pub use warp::{warp_affine, warp_affine_into, WarpOptions};

/// Errors from building or applying a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is out of range or inconsistent.
    #[error("invalid augmentation config: {0}")]
    InvalidConfig(String),
    /// `PipelineConfig::preset` got a name it does not know.
    #[error("unknown augmentation preset {0:?} (known: {known})", known = PRESETS.join(", "))]
    UnknownPreset(String),
    /// A flip step names a landmark scheme that does not exist.
    #[error("unknown landmark scheme {0:?} (known: ibug68, imm58)")]
    UnknownScheme(String),
    /// A flip permutation is not a permutation.
    #[error("bad flip permutation: {0}")]
    BadPermutation(String),
    /// The number of keypoints does not match a flip permutation or point order.
    #[error("got {points} keypoints, but the flip permutation / point order has {expected}")]
    PointCountMismatch {
        /// Points given.
        points: usize,
        /// Points the permutation expects.
        expected: usize,
    },
    /// A box step ran without a face box and without keypoints.
    #[error("box_jitter / crop_box need a face box or keypoints")]
    MissingBox,
    /// The face box is too small to crop.
    #[error("face box {0:?} is too small to crop")]
    DegenerateBox(kp_data::BBox),
    /// The input image has no pixels.
    #[error("empty image")]
    EmptyImage,
    /// A keypoint or box coordinate is NaN or infinite (or a box size negative).
    #[error("non-finite or negative input: {0}")]
    NonFinite(String),
    /// The composed map cannot be inverted.
    #[error("the composed transform is singular")]
    Singular,
    /// Reading a config file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A config file or string did not parse.
    #[error("parsing augmentation config: {0}")]
    Parse(String),
    /// A config could not be written.
    #[error("serialising augmentation config: {0}")]
    Serialize(String),
    /// A config file's extension is neither `.toml` nor `.json`.
    #[error("config file {0} must end in .toml or .json")]
    UnsupportedFormat(PathBuf),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
