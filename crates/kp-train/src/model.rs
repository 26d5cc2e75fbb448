//! A model with its variables on a device: built from a [`TrainConfig`], initialised from a seed,
//! saved and loaded as `model.safetensors`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use kp_models::{build_model, KeypointModel, ModelConfig};

use crate::config::{DeviceKind, TrainConfig};
use crate::error::{Error, Result};

/// The candle device of `kind` (`cuda` needs the `cuda` feature).
pub fn device(kind: DeviceKind) -> Result<Device> {
    device_on(kind, 0)
}

/// The candle device of `kind`, the CUDA device of that ordinal for `cuda` (a data-parallel
/// rank's `LOCAL_RANK`).
pub fn device_on(kind: DeviceKind, ordinal: usize) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => {
            if cfg!(feature = "cuda") {
                Ok(Device::new_cuda(ordinal)?)
            } else {
                Err(Error::Config(
                    "this kp was built without CUDA: rebuild with `--features cuda`".into(),
                ))
            }
        }
    }
}

/// A model and the variables it reads.
pub struct LoadedModel {
    /// The variables (weights and BatchNorm statistics), PyTorch names.
    pub varmap: VarMap,
    /// The network.
    pub model: Box<dyn KeypointModel>,
    /// Where the variables live.
    pub device: Device,
    /// Input width.
    pub width: usize,
    /// Input height.
    pub height: usize,
    /// Test-time mirroring: when set, predictions average the image's points with its mirror
    /// image's, mirrored back and reordered by this permutation (see
    /// [`TrainConfig::mirror_permutation`]).
    pub mirror: Option<Vec<usize>>,
    /// The network's prediction-only copy ([`KeypointModel::for_inference`]), made by
    /// [`LoadedModel::freeze`] once the weights are final; [`LoadedModel::predict`] runs it.
    frozen: Option<Box<dyn KeypointModel>>,
}

impl LoadedModel {
    /// Builds the model of `cfg` for `num_keypoints` points, initialised from `cfg.seed`.
    pub fn build(cfg: &TrainConfig, num_keypoints: usize, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        // candle's CPU generator cannot be seeded: draw the initial weights from `cfg.seed`.
        let vb = kp_models::seeded_var_builder(&varmap, cfg.seed, DType::F32, device);
        let mcfg = ModelConfig {
            in_channels: 1,
            num_keypoints,
            width: cfg.width,
            height: cfg.height,
            channel_multiplier: cfg.channel_multiplier,
        };
        let model = build_model(cfg.model, vb, &mcfg)?;
        let mirror = cfg.prediction_mirror(num_keypoints)?;
        Ok(Self {
            varmap,
            model,
            device: device.clone(),
            width: cfg.width,
            height: cfg.height,
            mirror,
            frozen: None,
        })
    }

    /// Fixes the weights for prediction: from now on [`LoadedModel::predict`] runs the
    /// network's faster prediction-only copy when it has one (the compact family folds its
    /// batch norms). Loading weights afterwards drops the copy.
    pub fn freeze(&mut self) -> Result<()> {
        self.frozen = self.model.for_inference()?;
        Ok(())
    }

    /// Named variables, sorted by name (for the optimizer).
    pub fn named_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Saves the variables to a safetensors file atomically ([`kp_models::save_varmap`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(kp_models::save_varmap(&self.varmap, path)?)
    }

    /// Loads variables saved by [`LoadedModel::save`] ([`kp_models::load_varmap`]: every
    /// variable must be present with its shape, or nothing is changed).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        kp_models::load_varmap(&self.varmap, path)?;
        self.frozen = None;
        Ok(())
    }

    /// [`LoadedModel::load`] from the bytes of a safetensors file (`source` names them in
    /// errors).
    pub fn load_bytes(&mut self, bytes: &[u8], source: &Path) -> Result<()> {
        kp_models::load_varmap_bytes(&self.varmap, bytes, source)?;
        self.frozen = None;
        Ok(())
    }

    /// Runs the network on a host batch of `b` images (`b * H * W` pixels) and returns the
    /// normalised coordinates `(b, 2K)` as a flat vector.
    pub fn predict(&self, images: &[f32], b: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(images, (b, 1, self.height, self.width), &self.device)?;
        let net = self.frozen.as_ref().unwrap_or(&self.model);
        // On one of rayon's threads, so each kernel's parallel loop starts there instead of
        // handing its work from this thread to the pool and waiting (a wake-up per op).
        let y = rayon::scope(|_| net.forward(&x, false))?;
        Ok(y.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Task;

    /// A safetensors file's header (the JSON after its 8-byte length) and tensor bytes.
    fn split(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
        let n = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        (serde_json::from_slice(&bytes[8..n]).unwrap(), &bytes[n..])
    }

    #[test]
    fn checkpoints_written_before_kp_models_io_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig::recipe(Task::Nose, "unused");
        let a = LoadedModel::build(&cfg, 1, &Device::Cpu).unwrap();
        let new = dir.path().join("new.safetensors");
        a.save(&new).unwrap();
        // The writer kp-train used before: candle's `save`, no metadata.
        let old = dir.path().join("old.safetensors");
        let tensors: std::collections::HashMap<String, Tensor> = a
            .named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, &old).unwrap();

        // The same tensors, names, dtypes and bytes; only the `format: pt` metadata is new.
        let (new_bytes, old_bytes) = (std::fs::read(&new).unwrap(), std::fs::read(&old).unwrap());
        let ((mut hn, dn), (ho, d_old)) = (split(&new_bytes), split(&old_bytes));
        assert_eq!(hn["__metadata__"], serde_json::json!({"format": "pt"}));
        assert!(ho.get("__metadata__").is_none());
        hn.as_object_mut().unwrap().remove("__metadata__");
        assert_eq!(hn, ho);
        assert_eq!(dn, d_old);

        // An old file loads into a model of another seed and gives the same outputs.
        let x = vec![0.5f32; 60 * 80];
        let mut b = LoadedModel::build(&TrainConfig { seed: 7, ..cfg }, 1, &Device::Cpu).unwrap();
        assert_ne!(a.predict(&x, 1).unwrap(), b.predict(&x, 1).unwrap());
        b.load(&old).unwrap();
        assert_eq!(a.predict(&x, 1).unwrap(), b.predict(&x, 1).unwrap());
    }
}
