//! Adam, as PyTorch's `torch.optim.Adam` (no amsgrad), with optional decoupled weight decay
//! as `torch.optim.AdamW`, and a saveable state.
//!
//! On the CPU the update runs in place over the parameter's storage (one pass, no temporary
//! tensors), on CUDA (f32) as one kernel in place (`kp_ops::cuda_kernels::adam_step`); on
//! other devices it falls back to tensor ops. The moments and the step count are
//! saved with [`Adam::save`] so a resumed run continues with exactly the same numbers.

use std::cell::RefCell;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Adam hyper-parameters (PyTorch defaults apart from the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Term added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay (AdamW): each step first scales parameters by `1 - lr·wd`.
    /// 0 (the seed's) is plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Moments of one parameter.
enum Moments {
    /// Host vectors updated in place (CPU f32 parameters).
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Device tensors (any other device or dtype).
    Device { m: Tensor, v: Tensor },
}

struct Param {
    name: String,
    var: Var,
    moments: Moments,
}

/// The Adam optimizer over a named set of variables.
pub struct Adam {
    config: AdamConfig,
    params: Vec<Param>,
    step: u64,
}

impl Adam {
    /// Makes an optimizer for `vars` (name, variable). Non-float variables are ignored.
    /// Names must be unique; they key the saved state.
    pub fn new(mut vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if !var.dtype().is_float() {
                continue;
            }
            let moments =
                if kp_ops::dispatch::uses_cpu_kernels(var.device()) && var.dtype() == DType::F32 {
                    let n = var.elem_count();
                    Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    Moments::Device {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    }
                };
            params.push(Param { name, var, moments });
        }
        Ok(Self {
            config,
            params,
            step: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of updates done so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Changes the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Computes the gradients of `loss` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Applies one update with the given gradients (variables without a gradient are skipped).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for p in self.params.iter_mut() {
            let Some(grad) = grads.get(&p.var) else {
                continue;
            };
            match &mut p.moments {
                Moments::Host { m, v } => {
                    let grad = grad.contiguous()?;
                    let op = HostAdam {
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                        lr: c.lr,
                        beta1: c.beta1,
                        beta2: c.beta2,
                        eps: c.eps,
                        decay: 1.0 - c.lr * c.weight_decay,
                        bc1,
                        bc2,
                    };
                    p.var.as_tensor().inplace_op2(&grad, &op)?;
                }
                #[cfg(feature = "cuda")]
                Moments::Device { m, v } if kp_ops::cuda_kernels::applies(p.var.as_tensor()) => {
                    // One fused kernel, in place (the moments are this optimizer's own buffers).
                    let step = kp_ops::cuda_kernels::AdamStep {
                        beta1: c.beta1,
                        beta2: c.beta2,
                        step_size: c.lr / bc1,
                        inv_sqrt_bc2: 1.0 / bc2.sqrt(),
                        eps: c.eps,
                        decay: 1.0 - c.lr * c.weight_decay,
                    };
                    kp_ops::cuda_kernels::adam_step(p.var.as_tensor(), m, v, grad, step)?;
                }
                Moments::Device { m, v } => {
                    // A gradient carries the graph of the step that made it (candle records the
                    // backward's ops); detached, the moments do not chain every step's
                    // activations to the next (a leak that filled a GPU in a few steps).
                    let grad = grad.detach();
                    *m = ((m.affine(c.beta1, 0.0)?) + grad.affine(1.0 - c.beta1, 0.0)?)?;
                    *v = ((v.affine(c.beta2, 0.0)?) + grad.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
                    // PyTorch: denom = sqrt(v)/sqrt(bc2) + eps; p -= lr/bc1 * m / denom
                    let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), c.eps)?;
                    let update = (m.affine(c.lr / bc1, 0.0)? / denom)?;
                    let decayed = p.var.as_tensor().affine(1.0 - c.lr * c.weight_decay, 0.0)?;
                    p.var.set(&decayed.sub(&update)?)?;
                }
            }
        }
        Ok(())
    }

    /// Saves the moments (safetensors, atomically) and returns the step count to store beside.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.params.len() + 1);
        for p in &self.params {
            let shape = p.var.shape().clone();
            let (m, v) = match &p.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, shape.clone(), &Device::Cpu)?,
                    Tensor::from_slice(v, shape, &Device::Cpu)?,
                ),
                Moments::Device { m, v } => (m.clone(), v.clone()),
            };
            tensors.push((format!("m.{}", p.name), m));
            tensors.push((format!("v.{}", p.name), v));
        }
        tensors.push((
            "step".to_string(),
            Tensor::new(&[self.step as i64], &Device::Cpu)?,
        ));
        Ok(kp_models::io::save_tensors(&tensors, path)?)
    }

    /// Restores the moments and step count written by [`Adam::save`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let run_err = |msg: String| Error::Run {
            path: path.to_path_buf(),
            msg,
        };
        let device = self
            .params
            .first()
            .map(|p| p.var.device().clone())
            .unwrap_or(Device::Cpu);
        let bytes = kp_models::io::read_weights(path)?;
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &device)
            .map_err(|e| run_err(format!("cannot read optimizer state: {e}")))?;
        let step = tensors
            .remove("step")
            .ok_or_else(|| run_err("no `step` in optimizer state".into()))?;
        self.step = step.to_device(&Device::Cpu)?.to_vec1::<i64>()?[0] as u64;
        for p in self.params.iter_mut() {
            let mut take = |key: String| {
                tensors
                    .remove(&key)
                    .ok_or_else(|| run_err(format!("no `{key}` in optimizer state")))
            };
            let m = take(format!("m.{}", p.name))?;
            let v = take(format!("v.{}", p.name))?;
            if m.shape() != p.var.shape() || v.shape() != p.var.shape() {
                return Err(run_err(format!("shape mismatch for `{}`", p.name)));
            }
            match &mut p.moments {
                Moments::Host { m: hm, v: hv } => {
                    *hm = m.flatten_all()?.to_vec1::<f32>()?;
                    *hv = v.flatten_all()?.to_vec1::<f32>()?;
                }
                Moments::Device { m: dm, v: dv } => {
                    *dm = m;
                    *dv = v;
                }
            }
        }
        Ok(())
    }
}

/// The in-place CPU update of one parameter.
struct HostAdam<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// `1 - lr·weight_decay`.
    decay: f64,
    bc1: f64,
    bc2: f64,
}

impl InplaceOp2 for HostAdam<'_> {
    fn name(&self) -> &'static str {
        "kp-adam"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (dst, src) else {
            candle_core::bail!("kp-adam: f32 tensors expected");
        };
        let (Some((d0, d1)), Some((s0, s1))) =
            (dst_l.contiguous_offsets(), src_l.contiguous_offsets())
        else {
            candle_core::bail!("kp-adam: contiguous tensors expected");
        };
        let p = &mut p[d0..d1];
        let g = &g[s0..s1];
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if p.len() != g.len() || p.len() != m.len() {
            candle_core::bail!("kp-adam: size mismatch");
        }
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let step_size = (self.lr / self.bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / self.bc2.sqrt()) as f32;
        let eps = self.eps as f32;
        let decay = self.decay as f32;
        let _ftz = FlushDenormals::new();
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() * inv_sqrt_bc2 + eps;
            *p = *p * decay - step_size * *m / denom;
        }
        Ok(())
    }
}

/// Flush-to-zero and denormals-are-zero on the current thread while alive (x86-64 only).
///
/// Parameters whose gradient stays 0 (a dead ReLU's weights) have first moments that decay
/// geometrically through the subnormal range, and every arithmetic on a subnormal takes a
/// microcode assist (~100x slower): in real runs the update became half of a training step.
/// Subnormals (below 1.2e-38) are far below anything that changes an f32 parameter.
struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    /// MXCSR bits: flush to zero (15) and denormals are zero (6).
    #[cfg(target_arch = "x86_64")]
    const FTZ_DAZ: u32 = 0x8040;

    #[allow(deprecated)] // _mm_getcsr/_mm_setcsr: still the documented way to set MXCSR.
    fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            // SAFETY: only the FTZ/DAZ bits change; restored on drop.
            let saved = unsafe { _mm_getcsr() };
            unsafe { _mm_setcsr(saved | Self::FTZ_DAZ) };
            Self { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {}
    }
}

impl Drop for FlushDenormals {
    #[allow(deprecated)]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the value read in `new`.
        unsafe {
            std::arch::x86_64::_mm_setcsr(self.saved)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference Adam in f64 on plain numbers.
    fn reference(p0: &[f64], grads: &[Vec<f64>], c: AdamConfig) -> Vec<f64> {
        let mut p = p0.to_vec();
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..p.len() {
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                let mh = m[i] / (1.0 - c.beta1.powi(t));
                let vh = v[i] / (1.0 - c.beta2.powi(t));
                p[i] *= 1.0 - c.lr * c.weight_decay;
                p[i] -= c.lr * mh / (vh.sqrt() + c.eps);
            }
        }
        p
    }

    fn run(dtype: DType, c: AdamConfig) -> Vec<f64> {
        let p0 = [1.0f64, -2.0, 0.5];
        let var = Var::from_tensor(
            &Tensor::new(&p0, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let mut opt = Adam::new(vec![("w".into(), var.clone())], c).unwrap();
        for _ in 0..5 {
            // loss = sum(w^2 * [1,2,3]) -> grad = 2 w * [1,2,3]
            let k = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let loss = (var.as_tensor().sqr().unwrap() * k)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        var.as_tensor()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    /// The device path's moments hold values, not the graph of the step whose gradient made
    /// them: otherwise every step's activations stay alive through the next step's moments.
    #[test]
    fn device_moments_do_not_keep_the_graph() {
        let var = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("w".into(), var.clone())], AdamConfig::default()).unwrap();
        for _ in 0..2 {
            let x = (var.as_tensor() * 3.0).unwrap();
            let loss = (var.as_tensor() * &x).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            // candle's gradient of `w * x` for `w` is built from `x`, so it tracks the graph
            // (as a convolution's weight gradient is built from its input).
            assert!(grads.get(&var).unwrap().track_op());
            opt.step(&grads).unwrap();
            match &opt.params[0].moments {
                Moments::Device { m, v } => assert!(!m.track_op() && !v.track_op()),
                Moments::Host { .. } => unreachable!("f64 uses device moments"),
            }
        }
    }

    /// A gradient that becomes 0 lets the first moment decay by beta1 per step; it must reach
    /// exactly 0 instead of lingering in the (slow) subnormal range, and the MXCSR is restored.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn moments_flush_to_zero_instead_of_going_subnormal() {
        let var = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("w".into(), var.clone())], AdamConfig::default()).unwrap();
        let mut grads = (var.as_tensor() * 1.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&grads).unwrap();
        let zero = Tensor::new(&[0.0f32], &Device::Cpu).unwrap();
        grads.insert(var.as_tensor(), zero);
        let first_moment = |opt: &Adam| match &opt.params[0].moments {
            Moments::Host { m, .. } => m[0],
            Moments::Device { .. } => unreachable!("CPU f32 uses host moments"),
        };
        let mut saw_subnormal = false;
        for _ in 0..1000 {
            opt.step(&grads).unwrap();
            let m = first_moment(&opt);
            saw_subnormal |= m != 0.0 && !m.is_normal();
        }
        // 0.1 * 0.9^1000 is far below the subnormal range: without flushing it would have
        // passed through it.
        assert!(!saw_subnormal);
        assert_eq!(first_moment(&opt), 0.0);
        // The thread's own float mode is back to normal: subnormals survive arithmetic.
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        assert!(tiny / 4.0 > 0.0);
    }

    /// Adam and AdamW (weight decay 0.5) on the host f32 and tensor f64 paths follow an f64
    /// reference (PyTorch's formulas) step by step.
    #[test]
    fn matches_reference_adam_on_cpu_f32_and_f64() {
        let mut finals = Vec::new();
        for weight_decay in [0.0, 0.5] {
            let c = AdamConfig {
                lr: 0.1,
                weight_decay,
                ..Default::default()
            };
            // Recompute reference gradients along the reference trajectory.
            let mut p = vec![1.0f64, -2.0, 0.5];
            let mut grads = Vec::new();
            for _ in 0..5 {
                let g: Vec<f64> = p
                    .iter()
                    .zip([1.0, 2.0, 3.0])
                    .map(|(w, k)| 2.0 * w * k)
                    .collect();
                grads.push(g);
                p = reference(&[1.0, -2.0, 0.5], &grads, c);
            }
            let f32_path = run(DType::F32, c);
            let f64_path = run(DType::F64, c);
            for i in 0..3 {
                assert!((f32_path[i] - p[i]).abs() < 1e-5, "{f32_path:?} vs {p:?}");
                assert!((f64_path[i] - p[i]).abs() < 1e-9, "{f64_path:?} vs {p:?}");
            }
            // And it actually moved towards the minimum at 0.
            assert!(p
                .iter()
                .zip([1.0, -2.0, 0.5])
                .all(|(a, b): (&f64, f64)| a.abs() < b.abs()));
            finals.push(p);
        }
        // Decay pulls every parameter further towards 0.
        assert!((0..3).all(|i| finals[1][i].abs() < finals[0][i].abs()));
    }

    #[test]
    fn save_and_load_continue_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let make =
            || Var::from_tensor(&Tensor::new(&[0.3f32, -0.7], &Device::Cpu).unwrap()).unwrap();
        let loss_of = |v: &Var| v.as_tensor().sqr().unwrap().sum_all().unwrap();
        // Unbroken: 4 steps.
        let a = make();
        let mut oa = Adam::new(vec![("a".into(), a.clone())], AdamConfig::default()).unwrap();
        for _ in 0..4 {
            oa.backward_step(&loss_of(&a)).unwrap();
        }
        // Broken: 2 steps, save, new optimizer, load, 2 more.
        let b = make();
        let mut ob = Adam::new(vec![("a".into(), b.clone())], AdamConfig::default()).unwrap();
        for _ in 0..2 {
            ob.backward_step(&loss_of(&b)).unwrap();
        }
        ob.save(&path).unwrap();
        let mut ob2 = Adam::new(vec![("a".into(), b.clone())], AdamConfig::default()).unwrap();
        ob2.load(&path).unwrap();
        assert_eq!(ob2.step_count(), 2);
        for _ in 0..2 {
            ob2.backward_step(&loss_of(&b)).unwrap();
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f32>().unwrap(),
            b.as_tensor().to_vec1::<f32>().unwrap()
        );
    }
}
