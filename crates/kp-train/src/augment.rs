//! Which augmentation a run uses, as a type: a named preset or a pipeline file.
//!
//! kp-augment is the generic crate: it knows transforms, TOML/JSON pipelines and four plain
//! presets (`none`, `seed-shift`, `shift-rotate`, `shift-rotate-jitter`). The pipelines this
//! project tuned for its own experiments (`nose-tuned`, `face-tuned`, and the 300-W recipe's
//! `ibug`, `ibug-eval`, `ibug-detector`, `ibug-strong`) are data beside the training recipes, in
//! `crates/kp-train/recipes/augment/*.toml`, compiled into the crate: a user reads, copies and
//! edits the same file the study trains with (`kp train --augment my-ibug.toml`).
//!
//! A configuration holds an [`AugmentSpec`], written as its name or path (old `config.json`
//! files read unchanged); a name that is neither a preset nor a `.toml`/`.json` file is refused
//! where it is read, with the known presets.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kp_augment::{Pipeline, PipelineConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A named augmentation pipeline: kp-augment's plain presets and the study's recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AugmentPreset {
    /// Resize only (kp-augment).
    None,
    /// ±10 px shift at 160x120, the seed's full-face recipe (kp-augment).
    SeedShift,
    /// The shift plus ±15° rotation about the keypoints' centroid (kp-augment).
    ShiftRotate,
    /// Plus brightness, contrast and gamma jitter, p = 0.5 each (kp-augment).
    ShiftRotateJitter,
    /// kp's tuned IMM recipe for a point on the face's midline (`recipes/augment/nose-tuned.toml`).
    NoseTuned,
    /// The same for all 58 IMM points, mirrored with the IMM-58 order (`face-tuned.toml`).
    FaceTuned,
    /// The 300-W training recipe: detector-like box jitter, box crop ×1.2–1.4, rotation, zoom,
    /// mirror, brightness and contrast (`ibug.toml`).
    Ibug,
    /// The deterministic box crop ×1.3 of evaluation and prediction (`ibug-eval.toml`).
    IbugEval,
    /// `ibug-eval` after the training recipe's box jitter: tight-box datasets scored as if a
    /// face detector gave the boxes, seeded per face (`ibug-detector.toml`).
    IbugDetector,
    /// `ibug` made stronger: rotation ±30°, zoom 0.8–1.2, gamma, an occluding rectangle and
    /// blur (`ibug-strong.toml`, with what it measured).
    IbugStrong,
}

impl AugmentPreset {
    /// Every preset.
    pub const ALL: [AugmentPreset; 10] = [
        Self::None,
        Self::SeedShift,
        Self::ShiftRotate,
        Self::ShiftRotateJitter,
        Self::NoseTuned,
        Self::FaceTuned,
        Self::Ibug,
        Self::IbugEval,
        Self::IbugDetector,
        Self::IbugStrong,
    ];

    /// The preset's name, as configurations and `--augment` write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SeedShift => "seed-shift",
            Self::ShiftRotate => "shift-rotate",
            Self::ShiftRotateJitter => "shift-rotate-jitter",
            Self::NoseTuned => "nose-tuned",
            Self::FaceTuned => "face-tuned",
            Self::Ibug => "ibug",
            Self::IbugEval => "ibug-eval",
            Self::IbugDetector => "ibug-detector",
            Self::IbugStrong => "ibug-strong",
        }
    }

    /// The study's TOML of this preset, or `None` for kp-augment's own.
    pub fn recipe_toml(self) -> Option<&'static str> {
        Some(match self {
            Self::None | Self::SeedShift | Self::ShiftRotate | Self::ShiftRotateJitter => {
                return None
            }
            Self::NoseTuned => include_str!("../recipes/augment/nose-tuned.toml"),
            Self::FaceTuned => include_str!("../recipes/augment/face-tuned.toml"),
            Self::Ibug => include_str!("../recipes/augment/ibug.toml"),
            Self::IbugEval => include_str!("../recipes/augment/ibug-eval.toml"),
            Self::IbugDetector => include_str!("../recipes/augment/ibug-detector.toml"),
            Self::IbugStrong => include_str!("../recipes/augment/ibug-strong.toml"),
        })
    }

    /// The preset's pipeline configuration (at its own output size).
    pub fn config(self) -> Result<PipelineConfig> {
        Ok(match self.recipe_toml() {
            None => PipelineConfig::preset(self.name())?,
            Some(toml) => PipelineConfig::from_toml_str(toml)
                .map_err(|e| Error::Config(format!("recipes/augment/{}.toml: {e}", self.name())))?,
        })
    }

    /// The preset called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Where a run's augmentation (or evaluation preprocessing) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AugmentSpec {
    /// A named preset.
    Preset(AugmentPreset),
    /// A kp-augment pipeline in a `.toml` or `.json` file.
    File(PathBuf),
}

impl AugmentSpec {
    /// The pipeline, with its output set to the network's input size.
    pub fn pipeline(&self, width: usize, height: usize) -> Result<Pipeline> {
        Ok(Pipeline::new(self.pipeline_config(width, height)?)?)
    }

    /// The pipeline's configuration, with its output set to the network's input size.
    pub fn pipeline_config(&self, width: usize, height: usize) -> Result<PipelineConfig> {
        let mut cfg = match self {
            Self::Preset(p) => p.config()?,
            Self::File(path) => PipelineConfig::from_file(path)?,
        };
        cfg.width = width as u32;
        cfg.height = height as u32;
        Ok(cfg)
    }
}

impl From<AugmentPreset> for AugmentSpec {
    fn from(p: AugmentPreset) -> Self {
        Self::Preset(p)
    }
}

impl fmt::Display for AugmentSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Preset(p) => f.write_str(p.name()),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for AugmentSpec {
    type Err = Error;

    /// A preset name, or a path ending in `.toml` or `.json`.
    fn from_str(s: &str) -> Result<Self> {
        if let Some(p) = AugmentPreset::from_name(s) {
            return Ok(Self::Preset(p));
        }
        let ext = Path::new(s)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("toml" | "json") => Ok(Self::File(PathBuf::from(s))),
            _ => Err(Error::Config(format!(
                "unknown augmentation `{s}`: a preset ({}) or a .toml/.json pipeline file",
                AugmentPreset::ALL.map(AugmentPreset::name).join(", ")
            ))),
        }
    }
}

impl Serialize for AugmentSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AugmentSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_at_its_own_size_and_at_the_networks() {
        for p in AugmentPreset::ALL {
            let cfg = p.config().unwrap();
            let ibug = p.name().starts_with("ibug");
            assert_eq!(
                (cfg.width, cfg.height),
                if ibug { (224, 224) } else { (160, 120) }
            );
            let spec = AugmentSpec::from(p);
            assert_eq!(spec.pipeline(96, 64).unwrap().output_size(), (96, 64));
            assert_eq!(spec.to_string().parse::<AugmentSpec>().unwrap(), spec);
        }
        let kinds = |p: AugmentPreset| -> Vec<&'static str> {
            let cfg = p.config().unwrap();
            cfg.steps.iter().map(kp_augment::StepConfig::kind).collect()
        };
        assert_eq!(
            kinds(AugmentPreset::Ibug),
            [
                "box_jitter",
                "crop_box",
                "rotate",
                "scale",
                "hflip",
                "brightness",
                "contrast"
            ]
        );
        assert_eq!(kinds(AugmentPreset::IbugEval), ["crop_box"]);
        assert_eq!(
            kinds(AugmentPreset::IbugDetector),
            ["box_jitter", "crop_box"]
        );
        assert_eq!(
            kinds(AugmentPreset::FaceTuned),
            [
                "translate",
                "rotate",
                "scale",
                "hflip",
                "brightness",
                "contrast"
            ]
        );
    }

    #[test]
    fn specs_are_written_as_their_names_or_paths_and_misspellings_are_refused() {
        let json = serde_json::to_string(&AugmentSpec::Preset(AugmentPreset::IbugEval)).unwrap();
        assert_eq!(json, r#""ibug-eval""#);
        let file: AugmentSpec = serde_json::from_str(r#""my/aug.TOML""#).unwrap();
        assert_eq!(file, AugmentSpec::File("my/aug.TOML".into()));
        let err = "ibgu".parse::<AugmentSpec>().unwrap_err().to_string();
        assert!(
            err.contains("ibgu") && err.contains("ibug-detector"),
            "{err}"
        );
        assert!(serde_json::from_str::<AugmentSpec>(r#""ibgu""#).is_err());
        // A file that is not there fails when the pipeline is built, naming it.
        let missing = AugmentSpec::File("/nonexistent/aug.toml".into());
        let err = missing.pipeline(8, 8).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/aug.toml"), "{err}");
    }
}
