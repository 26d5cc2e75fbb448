//! Timing a model's training step or inference on a fixed random batch, on any device: what
//! `kp bench` and `cargo xtask bench` measure.
//!
//! A training step is forward + MSE loss + backward + Adam update (the same definition as
//! `xtask/bench/torch_bench.py`); inference is one forward pass in eval mode. On a GPU each
//! iteration ends with a device synchronisation, so the time is the work's, not its launch's.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use kp_models::{build_model, seeded_var_builder, trainable_vars, ModelConfig, ModelKind};
use serde::Serialize;

use crate::error::Result;
use crate::optim::{Adam, AdamConfig};

/// What an iteration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Forward + MSE loss + backward + Adam update.
    Train,
    /// A forward pass in eval mode.
    Infer,
}

/// One timing case: a registry model at its default input size, a batch size and a kind.
#[derive(Debug, Clone)]
pub struct StepBench {
    /// The registry model, at its default sizes.
    pub model: ModelKind,
    /// The compact model's width multiplier (1 for every other model); named in the case as
    /// `compact-x1.5` when not 1.
    pub channel_multiplier: f64,
    /// Images per iteration.
    pub batch: usize,
    /// Training step or inference.
    pub kind: StepKind,
    /// Untimed iterations first (allocator, kernel loading, cuBLAS set-up).
    pub warmup: usize,
    /// Timed iterations.
    pub iters: usize,
    /// Run on a pool of this many threads (`None`: the global pool, `RAYON_NUM_THREADS` or
    /// every core); named in the case as `_1thread`, `_2threads`, ...
    pub threads: Option<usize>,
    /// Input (width, height) instead of the model's default (`None`), e.g. the compact model
    /// at 160x160 as a `width = height = 160` configuration trains it; named in the case as
    /// `-160x160` after the model.
    pub input_size: Option<(usize, usize)>,
}

/// The times of one case.
#[derive(Debug, Clone, Serialize)]
pub struct StepTimes {
    /// `<model>_<train|infer>_b<batch>`, as in `cargo xtask bench`.
    pub case: String,
    /// Milliseconds of each timed iteration.
    pub ms: Vec<f64>,
}

impl StepTimes {
    /// Median milliseconds per iteration.
    pub fn median_ms(&self) -> f64 {
        median(&self.ms)
    }
}

/// The median of `values` (the mean of the middle two for an even count; NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

impl StepBench {
    /// The case's name: `<model>_<train|infer>_b<batch>`, then `_<n>thread(s)` with
    /// [`Self::threads`] (`<model>` with `-x<multiplier>` and `-<w>x<h>` where they are set).
    pub fn name(&self) -> String {
        let kind = match self.kind {
            StepKind::Train => "train",
            StepKind::Infer => "infer",
        };
        let threads = match self.threads {
            None => String::new(),
            Some(1) => "_1thread".into(),
            Some(n) => format!("_{n}threads"),
        };
        let mut model = match self.channel_multiplier {
            1.0 => self.model.to_string(),
            m => format!("{}-x{m}", self.model),
        };
        if let Some((w, h)) = self.input_size {
            model.push_str(&format!("-{w}x{h}"));
        }
        format!("{model}_{kind}_b{}{threads}", self.batch)
    }

    /// Builds the model on `device` (weights from seed 0) and times the iterations; inference
    /// runs the model's prediction-only copy when it has one
    /// ([`kp_models::KeypointModel::for_inference`]), as `kp predict` does.
    pub fn run(&self, device: &Device) -> Result<StepTimes> {
        match self.threads {
            // On a pool thread, as `LoadedModel::predict` runs (no hand-off per kernel).
            None => rayon::scope(|_| self.run_here(device)),
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| crate::error::Error::Config(format!("a pool of {n} threads: {e}")))?
                .install(|| self.run_here(device)),
        }
    }

    fn run_here(&self, device: &Device) -> Result<StepTimes> {
        let default = ModelConfig::for_model(self.model);
        let (width, height) = self.input_size.unwrap_or((default.width, default.height));
        let cfg = ModelConfig {
            channel_multiplier: self.channel_multiplier,
            width,
            height,
            ..default
        };
        let varmap = VarMap::new();
        let model = build_model(
            self.model,
            seeded_var_builder(&varmap, 0, DType::F32, device),
            &cfg,
        )?;
        let (w, h) = model.input_size();
        let x = (Tensor::rand(0f32, 1.0, (self.batch, cfg.in_channels, h, w), device)? - 0.5)?;
        let y = Tensor::rand(0f32, 1.0, (self.batch, 2 * cfg.num_keypoints), device)?;
        let mut adam = Adam::new(trainable_vars(&varmap), AdamConfig::default())?;
        let frozen = match self.kind {
            StepKind::Infer => model.for_inference()?,
            StepKind::Train => None,
        };
        let net = frozen.as_ref().unwrap_or(&model);
        let mut ms = Vec::with_capacity(self.iters);
        for i in 0..self.warmup + self.iters {
            device.synchronize()?;
            let t0 = Instant::now();
            match self.kind {
                StepKind::Train => {
                    let loss = (model.forward(&x, true)? - &y)?.sqr()?.mean_all()?;
                    adam.backward_step(&loss)?;
                }
                StepKind::Infer => {
                    let out = net.forward(&x, false)?;
                    std::hint::black_box(out.dims());
                }
            }
            device.synchronize()?;
            if i >= self.warmup {
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(StepTimes {
            case: self.name(),
            ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_a_training_step_and_inference() {
        for kind in [StepKind::Train, StepKind::Infer] {
            let b = StepBench {
                model: ModelKind::NoseTipNet,
                channel_multiplier: 1.0,
                batch: 2,
                kind,
                warmup: 1,
                iters: 3,
                threads: None,
                input_size: None,
            };
            let t = b.run(&Device::Cpu).unwrap();
            assert_eq!(t.ms.len(), 3);
            assert!(t.ms.iter().all(|&m| m > 0.0));
            assert!(t.median_ms() > 0.0);
        }
        let b = StepBench {
            model: ModelKind::NoseTipNet,
            channel_multiplier: 1.0,
            batch: 4,
            kind: StepKind::Train,
            warmup: 0,
            iters: 0,
            threads: None,
            input_size: None,
        };
        assert_eq!(b.name(), "nosetipnet_train_b4");
        let one = StepBench {
            threads: Some(1),
            iters: 1,
            kind: StepKind::Infer,
            model: ModelKind::Compact,
            ..b.clone()
        };
        assert_eq!(one.name(), "compact_infer_b4_1thread");
        assert_eq!(one.run(&Device::Cpu).unwrap().ms.len(), 1);
        let wide = StepBench {
            channel_multiplier: 1.5,
            ..one.clone()
        };
        assert_eq!(wide.name(), "compact-x1.5_infer_b4_1thread");
        assert_eq!(wide.run(&Device::Cpu).unwrap().ms.len(), 1);
        let larger = StepBench {
            input_size: Some((160, 160)),
            ..one.clone()
        };
        assert_eq!(larger.name(), "compact-160x160_infer_b4_1thread");
        assert_eq!(larger.run(&Device::Cpu).unwrap().ms.len(), 1);
        assert_eq!(
            StepBench {
                threads: Some(2),
                ..b.clone()
            }
            .name(),
            "nosetipnet_train_b4_2threads"
        );
        assert!(b.run(&Device::Cpu).unwrap().median_ms().is_nan());
    }

    #[test]
    fn medians() {
        let t = |ms: Vec<f64>| StepTimes {
            case: String::new(),
            ms,
        };
        assert_eq!(t(vec![3.0, 1.0, 2.0]).median_ms(), 2.0);
        assert_eq!(t(vec![4.0, 1.0, 2.0, 3.0]).median_ms(), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
