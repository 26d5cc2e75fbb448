//! Batch normalisation over NCHW tensors with PyTorch's training and evaluation behaviour.
//!
//! Training mode normalises with the batch mean and biased variance and updates the running
//! statistics with momentum (`running = (1 - m) * running + m * batch`, the variance term being
//! the *unbiased* batch variance) and increments `num_batches_tracked`, exactly as
//! `torch.nn.BatchNorm2d`. Evaluation mode uses the running statistics. `running_mean`,
//! `running_var` and `num_batches_tracked` (an `i64` scalar) live in the `VarMap`, so they are
//! saved with the weights under PyTorch's names.
//!
//! On the CPU (f32/f64) both modes run as fused custom ops ([`kp_ops::batchnorm`]) with an
//! analytic backward; on CUDA with the `cudnn` feature, cuDNN's (`kp_ops::cudnn::batchnorm`); elsewhere
//! [`BatchNorm2d::forward_composite`] builds the same computation from candle ops.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use kp_ops::batchnorm as cpu;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{py_float, Describe, ModuleNode};

/// Numerical settings of a batch-norm layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the new batch statistics in the running averages.
    pub momentum: f64,
}

impl Default for BatchNormConfig {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`.
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// `BatchNorm2d` with affine parameters and tracked running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    num_features: usize,
    config: BatchNormConfig,
}

impl BatchNorm2d {
    /// Creates (or loads) `weight` (1), `bias` (0), `running_mean` (0), `running_var` (1) and
    /// `num_batches_tracked` (0, i64) under `vb`.
    pub fn new(vb: VarBuilder, num_features: usize, config: BatchNormConfig) -> Result<Self> {
        if num_features == 0 || config.eps < 0.0 || !(0.0..=1.0).contains(&config.momentum) {
            return Err(Error::Config(format!(
                "batch-norm needs features > 0, eps >= 0 and momentum in [0, 1] \
                 ({num_features}, {config:?})"
            )));
        }
        let weight = vb.get_with_hints(num_features, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.0))?;
        let num_batches_tracked =
            vb.get_with_hints_dtype((), "num_batches_tracked", Init::Const(0.0), DType::I64)?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            num_batches_tracked: Var::from_tensor(&num_batches_tracked)?,
            num_features,
            config,
        })
    }

    /// The scale `gamma`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift `beta`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The running mean.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Training batches seen so far.
    pub fn num_batches_tracked(&self) -> Result<i64> {
        Ok(self.num_batches_tracked.as_tensor().to_scalar::<i64>()?)
    }

    /// Channels.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Normalises `x` (NCHW): batch statistics and a running-stat update when `train`, the
    /// running statistics otherwise. Fused kernels on the CPU, cuDNN on CUDA (feature `cudnn`),
    /// candle ops elsewhere.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x, train)?;
        let fused = kp_ops::dispatch::uses_cpu_kernels(x.device())
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == x.dtype();
        #[cfg(feature = "cudnn")]
        if self.config.eps >= kp_ops::cudnn::batchnorm::MIN_EPS && kp_ops::cudnn::applies(x) {
            if train {
                return self.forward_train_cudnn(x);
            }
            return Ok(kp_ops::cudnn::batchnorm::forward_eval(
                x,
                &self.weight,
                &self.bias,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                self.config.eps,
            )?);
        }
        match (fused, train) {
            (true, true) => self.forward_train_cpu(x),
            (true, false) => self.forward_eval_cpu(x),
            (false, true) => self.forward_train(x),
            (false, false) => self.forward_eval(x),
        }
    }

    /// The evaluation-mode layer as a per-channel affine map `y = scale · x + shift`
    /// (`scale = γ / √(running_var + ε)`, `shift = β − running_mean · scale`), both `(C)` and
    /// detached: what folding the layer into the convolution before it multiplies in.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let var = self.running_var.as_tensor().detach();
        let scale = (self.weight.detach() / (var + self.config.eps)?.sqrt()?)?;
        let shift = (self.bias.detach() - (self.running_mean.as_tensor().detach() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Writes the evaluation-mode layer (running statistics) into an ONNX graph as
    /// `BatchNormalization`.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let base = g.next_name("BatchNormalization");
        let scale = g.tensor(&format!("{base}.weight"), &self.weight)?;
        let bias = g.tensor(&format!("{base}.bias"), &self.bias)?;
        let mean = g.tensor(
            &format!("{base}.running_mean"),
            self.running_mean.as_tensor(),
        )?;
        let var = g.tensor(&format!("{base}.running_var"), self.running_var.as_tensor())?;
        Ok(g.node(
            "BatchNormalization",
            &[x, &scale, &bias, &mean, &var],
            vec![Attr::Float("epsilon", self.config.eps as f32)],
        ))
    }

    /// The same computation from plain candle ops (any device; slower on the CPU).
    pub fn forward_composite(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x, train)?;
        if train {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    fn check_input(&self, x: &Tensor, train: bool) -> Result<()> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.num_features {
            return Err(Error::Shape(format!(
                "batch-norm expects {} channels, got {c}",
                self.num_features
            )));
        }
        if train && n * h * w < 2 {
            return Err(Error::Shape(format!(
                "batch-norm in training mode needs more than one value per channel, got input \
                 {:?}",
                x.dims()
            )));
        }
        Ok(())
    }

    fn forward_train_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let x = x.contiguous()?;
        let (mean, var) = cpu::batch_stats(&x)?;
        let host =
            |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
        let y = cpu::normalize(
            &x,
            &self.weight,
            &self.bias,
            host(&mean)?,
            host(&var)?,
            self.config.eps,
            true,
        )?;
        self.update_running(&mean, &var, (n * h * w) as f64)?;
        Ok(y)
    }

    fn forward_eval_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let host =
            |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
        Ok(cpu::normalize(
            &x,
            &self.weight,
            &self.bias,
            host(self.running_mean.as_tensor())?,
            host(self.running_var.as_tensor())?,
            self.config.eps,
            false,
        )?)
    }

    #[cfg(feature = "cudnn")]
    fn forward_train_cudnn(&self, x: &Tensor) -> Result<Tensor> {
        let y = kp_ops::cudnn::batchnorm::forward_train(
            x,
            &self.weight,
            &self.bias,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
            self.config.eps,
            self.config.momentum,
        )?;
        self.count_batch()?;
        Ok(y)
    }

    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let count = (n * h * w) as f64;
        let mean = x.mean_keepdim((0, 2, 3))?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
        let inv_std = (&var + self.config.eps)?.sqrt()?.recip()?;
        let scale = inv_std.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?;
        let y = centered
            .broadcast_mul(&scale)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        self.update_running(
            &mean.detach().flatten_all()?,
            &var.detach().flatten_all()?,
            count,
        )?;
        Ok(y)
    }

    /// Updates the running statistics from a batch's mean and biased variance over `count`
    /// values per channel.
    fn update_running(&self, mean: &Tensor, biased_var: &Tensor, count: f64) -> Result<()> {
        let m = self.config.momentum;
        let dtype = self.running_mean.dtype();
        let mean = mean.to_dtype(dtype)?;
        let unbiased = (biased_var.to_dtype(dtype)? * (count / (count - 1.0)))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        self.count_batch()
    }

    /// Adds one to `num_batches_tracked`.
    fn count_batch(&self) -> Result<()> {
        let nbt = self.num_batches_tracked.as_tensor();
        let next = (nbt + Tensor::ones_like(nbt)?)?;
        self.num_batches_tracked.set(&next)?;
        Ok(())
    }

    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.num_features;
        let dtype = x.dtype();
        let rm = self.running_mean.as_detached_tensor().to_dtype(dtype)?;
        let rv = self.running_var.as_detached_tensor().to_dtype(dtype)?;
        let scale = (rv + self.config.eps)?.sqrt()?.recip()?.mul(&self.weight)?;
        let shift = (&self.bias - rm.mul(&scale)?)?;
        Ok(x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?)
    }

    /// Trainable parameter count (weight and bias).
    pub fn num_params(&self) -> usize {
        2 * self.num_features
    }
}

impl Describe for BatchNorm2d {
    fn describe(&self) -> ModuleNode {
        ModuleNode::leaf(
            "BatchNorm2d",
            format!(
                "{}, eps={}, momentum={}, affine=True, track_running_stats=True",
                self.num_features,
                py_float(self.config.eps),
                py_float(self.config.momentum)
            ),
            self.num_params(),
        )
        .with_buffers(2 * self.num_features + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn bn(vm: &VarMap) -> BatchNorm2d {
        let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
        BatchNorm2d::new(vb.pp("bn"), 2, BatchNormConfig::default()).unwrap()
    }

    #[test]
    fn train_mode_matches_hand_computation() {
        let vm = VarMap::new();
        let bn = bn(&vm);
        // Channel 0: 1,2,3,4 (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: 10 x4.
        let x = Tensor::new(
            &[[[[1f32, 2.], [3., 4.]], [[10., 10.], [10., 10.]]]],
            &Device::Cpu,
        )
        .unwrap();
        let y = bn.forward(&x, true).unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = (1.25f32 + 1e-5).sqrt();
        for (got, want) in y[..4].iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert!(y[4..].iter().all(|v| v.abs() < 1e-6));
        let rm = bn.running_mean().to_vec1::<f32>().unwrap();
        let rv = bn.running_var().to_vec1::<f32>().unwrap();
        assert!((rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 1.0).abs() < 1e-6);
        assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
        assert!((rv[1] - 0.9).abs() < 1e-6);
        assert_eq!(bn.num_batches_tracked().unwrap(), 1);
        // The VarMap sees the update (it is what gets saved).
        let data = vm.data().lock().unwrap();
        let saved = data["bn.running_mean"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(saved, rm);
        let nbt = data["bn.num_batches_tracked"].as_tensor();
        assert_eq!(nbt.dtype(), DType::I64);
        assert_eq!(nbt.dims(), [] as [usize; 0]);
        assert_eq!(nbt.to_scalar::<i64>().unwrap(), 1);
    }

    #[test]
    fn eval_mode_uses_running_stats() {
        let vm = VarMap::new();
        let bn = bn(&vm);
        {
            let data = vm.data().lock().unwrap();
            data["bn.running_mean"]
                .set(&Tensor::new(&[1f32, -2.], &Device::Cpu).unwrap())
                .unwrap();
            data["bn.running_var"]
                .set(&Tensor::new(&[4f32, 0.25], &Device::Cpu).unwrap())
                .unwrap();
            data["bn.weight"]
                .set(&Tensor::new(&[2f32, 1.], &Device::Cpu).unwrap())
                .unwrap();
            data["bn.bias"]
                .set(&Tensor::new(&[0.5f32, 0.], &Device::Cpu).unwrap())
                .unwrap();
        }
        let x = Tensor::new(&[[[[3f32]], [[-1.]]]], &Device::Cpu).unwrap();
        let y = bn.forward(&x, false).unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want0 = (3.0 - 1.0) / (4.0f32 + 1e-5).sqrt() * 2.0 + 0.5;
        let want1 = (-1.0 + 2.0) / (0.25f32 + 1e-5).sqrt();
        assert!(
            (y[0] - want0).abs() < 1e-5 && (y[1] - want1).abs() < 1e-5,
            "{y:?}"
        );
        assert_eq!(bn.num_batches_tracked().unwrap(), 0);
        // A single value per channel cannot be normalised with batch statistics.
        assert!(bn.forward(&x, true).is_err());
    }

    #[test]
    fn fused_matches_composite() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let make = || {
                let vm = VarMap::new();
                let vb = VarBuilder::from_varmap(&vm, dtype, &dev);
                let bn = BatchNorm2d::new(vb.pp("bn"), 3, BatchNormConfig::default()).unwrap();
                let data = vm.data().lock().unwrap();
                let set = |k: &str, v: &[f64]| {
                    data[k]
                        .set(&Tensor::new(v, &dev).unwrap().to_dtype(dtype).unwrap())
                        .unwrap()
                };
                set("bn.weight", &[1.5, -0.5, 2.0]);
                set("bn.bias", &[0.1, 0.2, -0.3]);
                set("bn.running_mean", &[0.3, -0.1, 0.0]);
                set("bn.running_var", &[2.0, 0.5, 1.0]);
                bn
            };
            let x = candle_core::Var::from_tensor(
                &(Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev).unwrap() * 3.0)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let r = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for train in [true, false] {
                let run = |composite: bool| {
                    let bn = make();
                    let y = if composite {
                        bn.forward_composite(x.as_tensor(), train).unwrap()
                    } else {
                        bn.forward(x.as_tensor(), train).unwrap()
                    };
                    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let flat = |t: &Tensor| {
                        t.flatten_all()
                            .unwrap()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .to_vec1::<f64>()
                            .unwrap()
                    };
                    let mut out = flat(&y);
                    for t in [x.as_tensor(), bn.weight(), bn.bias()] {
                        out.extend(flat(g.get(t).unwrap()));
                    }
                    out.extend(flat(bn.running_mean()));
                    out.extend(flat(bn.running_var()));
                    out.push(bn.num_batches_tracked().unwrap() as f64);
                    out
                };
                let fused = run(false);
                let composite = run(true);
                assert_eq!(fused.len(), 120 * 2 + 6 + 6 + 1);
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                for (a, b) in fused.iter().zip(&composite) {
                    assert!(
                        (a - b).abs() <= tol * (1.0 + b.abs()),
                        "{dtype:?} {train}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn repr_matches_pytorch() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(vb, 64, BatchNormConfig::default()).unwrap();
        assert_eq!(
            bn.describe().torch_repr(),
            "BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
        );
    }
}
