//! The ready models: kp's 68-point landmark models, kept in the repository and embedded in the
//! binary, so `kp predict group.jpg` works on a fresh clone with no training and no download.
//!
//! Each is one seeded run of a 300-W recipe on 1,061 of the 1,326 training crops, with 265
//! held out (the faces of the accuracy numbers), stored in `models/landmarks/<name>/` as the
//! run's `config.json` and its weights in f16 (half the size of f32; they load into f32
//! variables):
//!
//! - [`ReadyModel::Compact`] (the default, `ibug68-compact`): `kp train --task ibug --recipe
//!   compact`, the compact depthwise-separable network at 128x128 (`kp_models::CompactNet`),
//!   373 KB, about 2 ms per face on one CPU thread;
//! - [`ReadyModel::CompactWide`] (`ibug68-compact-x1.5`): the same recipe with 1.5x the
//!   channels (`--channel-multiplier 1.5`), 0.8 MB, the most accurate (6% relative) and 1.6-1.8
//!   times slower, past the real-time 2 ms per face on a slow CPU, so not the default;
//! - [`ReadyModel::Resnet18`] (`ibug68`): `--recipe tuned`, the heatmap ResNet18 at 224x224,
//!   6.5 MB, about 50 times slower a face and less accurate (trained for 20 epochs only).
//!
//! All are predicted with test-time mirroring. Each folder's `README.md` is the model card:
//! data, recipe, the accuracy measured on the held-out faces with the dataset's boxes and with
//! the bundled detector's, what f16 changed, and the command that re-creates it (`cargo xtask
//! pretrained --all-faces` / `--ready resnet18`, which trains the runs, writes the folder with
//! [`write_bundle`] and measures it).
//!
//! ```
//! use kp_train::pretrained::ReadyModel;
//! let predictor = kp_train::pretrained::predictor(None)?;
//! assert_eq!(predictor.config.num_keypoints, Some(68));
//! assert_eq!(predictor.config.model, kp_models::ModelKind::Compact);
//! let resnet = ReadyModel::Resnet18.predictor(None)?;
//! assert_eq!((resnet.config.width, resnet.config.height), (224, 224));
//! assert_eq!(ReadyModel::CompactWide.config()?.channel_multiplier, 1.5);
//! # Ok::<(), kp_train::Error>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::DType;

use crate::config::{DeviceKind, TrainConfig};
use crate::error::{Error, Result};
use crate::predict::Predictor;
use crate::run::RunDir;

/// The ready models kp ships, each a folder under `models/landmarks/` embedded in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ReadyModel {
    /// `ibug68-compact` (`models/landmarks/ibug68-compact`): the compact depthwise-separable
    /// model at 128x128, real time on a CPU and more accurate than the ResNet on the held-out
    /// faces (NME 3.94% against 4.30%, from a longer schedule; the default).
    #[default]
    Compact,
    /// `ibug68-compact-x1.5` (`models/landmarks/ibug68-compact-x1.5`): the compact model with
    /// 1.5x the channels, the most accurate (NME 3.70% against 3.94% on the held-out faces)
    /// and 1.6-1.8 times slower.
    CompactWide,
    /// `ibug68-heatmap-resnet18` (`models/landmarks/ibug68`): the heatmap ResNet18 at 224x224,
    /// trained for 20 epochs only, about 50 times slower a face.
    Resnet18,
}

/// What the repository holds of one ready model, in one place: the names users and files know
/// it by, and its folder's two files, embedded.
struct Spec {
    key: &'static str,
    name: &'static str,
    folder: &'static str,
    config_json: &'static str,
    weights: &'static [u8],
}

/// A [`Spec`] from the key, the name and the folder under `models/landmarks/`; the folder
/// gives both the path errors name and the files embedded.
macro_rules! spec {
    ($key:literal, $name:literal, $folder:literal) => {
        Spec {
            key: $key,
            name: $name,
            folder: concat!("models/landmarks/", $folder),
            config_json: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/landmarks/",
                $folder,
                "/config.json"
            )),
            weights: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/landmarks/",
                $folder,
                "/model.safetensors"
            )),
        }
    };
}

impl ReadyModel {
    /// Every ready model, the default first.
    pub const ALL: [Self; 3] = [Self::Compact, Self::CompactWide, Self::Resnet18];

    fn spec(self) -> &'static Spec {
        const COMPACT: Spec = spec!("compact", "ibug68-compact", "ibug68-compact");
        const COMPACT_WIDE: Spec =
            spec!("compact-wide", "ibug68-compact-x1.5", "ibug68-compact-x1.5");
        const RESNET18: Spec = spec!("resnet18", "ibug68-heatmap-resnet18", "ibug68");
        match self {
            Self::Compact => &COMPACT,
            Self::CompactWide => &COMPACT_WIDE,
            Self::Resnet18 => &RESNET18,
        }
    }

    /// The short name users pick it by: `kp predict --ready <key>`, `kp.Landmarker("<key>")`.
    /// clap's `ValueEnum` derives the same names from the variants (a test checks they agree).
    pub fn key(self) -> &'static str {
        self.spec().key
    }

    /// The model's name (in logs, `results.json` and the model card).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Its folder, relative to the repository root.
    pub fn folder(self) -> &'static str {
        self.spec().folder
    }

    /// The run's configuration, as `kp train` wrote it (its data path made relative).
    pub fn config_json(self) -> &'static str {
        self.spec().config_json
    }

    /// The weights (safetensors, f16).
    pub fn weights(self) -> &'static [u8] {
        self.spec().weights
    }

    /// Where errors say the embedded file `file` comes from.
    fn source(self, file: &str) -> PathBuf {
        Path::new(self.folder()).join(file)
    }

    /// The model's training configuration.
    pub fn config(self) -> Result<TrainConfig> {
        serde_json::from_str(self.config_json()).map_err(|e| Error::Json {
            path: self.source("config.json"),
            source: e,
        })
    }

    /// The model on the CPU or on `device`, with its recipe's preprocessing and test-time
    /// mirroring.
    pub fn predictor(self, device: Option<DeviceKind>) -> Result<Predictor> {
        let weights = self.source("model.safetensors");
        Predictor::from_config(self.config()?, device, &self.source("config.json"), |m| {
            m.load_bytes(self.weights(), &weights)
        })
    }
}

/// A name that is no ready model's [`ReadyModel::key`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ready model `{0}` (expected {keys})", keys = expected_keys())]
pub struct UnknownReadyModel(pub String);

/// "compact, compact-wide or resnet18": every key, for error messages.
fn expected_keys() -> String {
    let keys: Vec<&str> = ReadyModel::ALL.iter().map(|m| m.key()).collect();
    match keys.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl std::str::FromStr for ReadyModel {
    type Err = UnknownReadyModel;

    /// The ready model whose [`key`](ReadyModel::key) is `s`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.key() == s)
            .ok_or_else(|| UnknownReadyModel(s.to_string()))
    }
}

/// The default ready model's training configuration.
pub fn config() -> Result<TrainConfig> {
    ReadyModel::default().config()
}

/// The default ready model on the CPU or on `device` ([`ReadyModel::predictor`]).
pub fn predictor(device: Option<DeviceKind>) -> Result<Predictor> {
    ReadyModel::default().predictor(device)
}

/// Writes a trained run as a ready-model folder `out`: `config.json` (the run's, its data path
/// replaced by the task's dataset name, so it names no folder of the machine that trained it)
/// and `model.safetensors` with the weights in `dtype` (f16 for the repository).
pub fn write_bundle(run: &Path, out: &Path, dtype: DType) -> Result<()> {
    let (mut config, weights) = RunDir::open(run)?.trained()?;
    config.data = PathBuf::from(config.task.default_dataset());
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    kp_models::convert_floats(&weights, &out.join("model.safetensors"), dtype)?;
    crate::atomic::write_json(&out.join("config.json"), &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ready_model_is_found_by_its_key() {
        for model in ReadyModel::ALL {
            assert_eq!(model.key().parse::<ReadyModel>(), Ok(model));
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_name_and_every_key() {
        let err = "mobilenet".parse::<ReadyModel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown ready model `mobilenet` (expected compact, compact-wide or resnet18)"
        );
    }

    #[test]
    fn each_ready_models_folder_holds_the_files_embedded_for_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for model in ReadyModel::ALL {
            let folder = root.join(model.folder());
            let config = std::fs::read_to_string(folder.join("config.json")).unwrap();
            assert_eq!(config, model.config_json(), "{}", model.folder());
            let weights = std::fs::read(folder.join("model.safetensors")).unwrap();
            assert!(weights == model.weights(), "{}", model.folder());
        }
    }

    #[cfg(feature = "clap")]
    #[test]
    fn clap_names_the_ready_models_by_their_keys() {
        use clap::ValueEnum;
        for model in ReadyModel::ALL {
            let value = model.to_possible_value().expect("every variant is a value");
            assert_eq!(value.get_name(), model.key());
        }
        assert_eq!(ReadyModel::value_variants(), &ReadyModel::ALL);
    }
}
