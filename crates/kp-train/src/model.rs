//! A model with its variables on a device: built from a [`TrainConfig`], initialised from a seed,
//! saved and loaded as `model.safetensors`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use kp_models::{build_model, KeypointModel, ModelConfig};

use crate::config::TrainConfig;
use crate::error::{Error, Result};

/// The device named by `cpu` or `cuda` (`cuda` needs the `cuda` feature).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if cfg!(feature = "cuda") {
                Ok(Device::new_cuda(0)?)
            } else {
                Err(Error::Config(
                    "this kp was built without CUDA: rebuild with `--features cuda`".into(),
                ))
            }
        }
        other => Err(Error::Config(format!("unknown device `{other}`"))),
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
        };
        let model = build_model(&cfg.model, vb, &mcfg)?;
        let mirror = cfg.prediction_mirror(num_keypoints)?;
        Ok(Self {
            varmap,
            model,
            device: device.clone(),
            width: cfg.width,
            height: cfg.height,
            mirror,
        })
    }

    /// Named variables, sorted by name (for the optimizer).
    pub fn named_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Saves the variables to a safetensors file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        crate::atomic::write_atomic_with(path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(std::io::Error::other)
        })
    }

    /// Loads variables saved by [`LoadedModel::save`] (every variable must be present).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let run_err = |msg: String| Error::Run {
            path: path.to_path_buf(),
            msg,
        };
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| run_err(format!("cannot read weights: {e}")))?;
        for (name, var) in self.named_vars() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| run_err(format!("no tensor `{name}`")))?;
            if t.shape() != var.shape() {
                return Err(run_err(format!(
                    "`{name}` has shape {:?}, the model expects {:?}",
                    t.shape(),
                    var.shape()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Runs the network on a host batch of `b` images (`b * H * W` pixels) and returns the
    /// normalised coordinates `(b, 2K)` as a flat vector.
    pub fn predict(&self, images: &[f32], b: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(images, (b, 1, self.height, self.width), &self.device)?;
        let y = self.model.forward(&x, false)?;
        Ok(y.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }
}
