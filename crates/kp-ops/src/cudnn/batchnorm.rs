//! Batch normalisation by cuDNN (spatial mode), as PyTorch's `BatchNorm2d` on CUDA: training
//! mode by `cudnnBatchNormalizationForwardTraining` and `cudnnBatchNormalizationBackward`,
//! evaluation mode by `cudnnBatchNormalizationForwardInference` (one pass).
//!
//! The forward also updates the running mean and (unbiased) variance in place with the
//! momentum, and keeps the batch mean and inverse standard deviation it computed for the
//! backward, which returns the input, scale and shift gradients from one call.

use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use cudarc::driver::CudaSlice;

use super::{addr, check, dims4, raw_handle, scale, view, RawHandle, TensorDesc, ONE, ZERO};

/// The smallest `eps` cuDNN's batch norm accepts (`CUDNN_BN_MIN_EPSILON`); layers with a smaller
/// one take candle's ops.
pub const MIN_EPS: f64 = 1e-5;

const MODE: cudarc::cudnn::sys::cudnnBatchNormMode_t =
    cudarc::cudnn::sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// What every batch-norm call needs: the device, this thread's handle and the descriptors of
/// the NCHW input and of the per-channel values, once these were checked to hold `c` values.
struct Call {
    dev: CudaDevice,
    handle: Rc<RawHandle>,
    x: TensorDesc,
    per_channel: TensorDesc,
    /// Elements of the input.
    n: usize,
    /// Channels.
    c: usize,
}

impl Call {
    fn new(x: &CudaStorage, x_l: &Layout, per_channel: &[&Layout]) -> candle_core::Result<Self> {
        let dev = x.device().clone();
        let d = dims4(x_l)?;
        let c = d[1];
        if per_channel.iter().any(|l| l.shape().elem_count() != c) {
            candle_core::bail!("kp cuDNN batch norm: scale and shift need {c} values")
        }
        Ok(Self {
            handle: raw_handle(&dev)?,
            x: TensorDesc::nchw(d)?,
            per_channel: TensorDesc::nchw([1, c, 1, 1])?,
            n: x_l.shape().elem_count(),
            c,
            dev,
        })
    }
}

/// A layer's running mean and variance: contiguous f32 CUDA buffers of its own, which cuDNN
/// reads (evaluation) or updates in place (training).
struct Running {
    mean: Tensor,
    var: Tensor,
}

impl Running {
    fn new(mean: &Tensor, var: &Tensor) -> candle_core::Result<Self> {
        for t in [mean, var] {
            if !t.is_contiguous() || !super::applies(t) {
                candle_core::bail!(
                    "kp cuDNN batch norm: running statistics must be contiguous f32 on CUDA"
                )
            }
        }
        Ok(Self {
            mean: mean.clone(),
            var: var.clone(),
        })
    }

    /// The device addresses of the mean and the variance.
    fn addrs(&self, dev: &CudaDevice) -> candle_core::Result<(*mut c_void, *mut c_void)> {
        Ok((tensor_addr(&self.mean, dev)?, tensor_addr(&self.var, dev)?))
    }
}

/// The batch statistics the forward saved: per-channel mean and `1 / sqrt(var + eps)`.
struct Saved {
    mean: CudaSlice<f32>,
    inv_std: CudaSlice<f32>,
}

/// `(x, gamma, beta) → y`, updating `running_mean`/`running_var` in place.
struct Train {
    eps: f64,
    momentum: f64,
    running: Running,
    saved: Mutex<Option<Saved>>,
}

/// The address of a contiguous f32 CUDA tensor's data (for cuDNN to update in place).
fn tensor_addr(t: &Tensor, dev: &CudaDevice) -> candle_core::Result<*mut c_void> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(c) => Ok(addr(&view(c, l)?, dev)),
        _ => candle_core::bail!("kp cuDNN batch norm: running statistics must be on CUDA"),
    }
}

impl CustomOp3 for Train {
    fn name(&self) -> &'static str {
        "kp-cudnn-batch-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("batch norm")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        gamma: &CudaStorage,
        g_l: &Layout,
        beta: &CudaStorage,
        b_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let call = Call::new(x, x_l, &[g_l, b_l])?;
        let dev = &call.dev;
        // SAFETY: fully written by cuDNN.
        let y = unsafe { dev.alloc::<f32>(call.n)? };
        let mean = unsafe { dev.alloc::<f32>(call.c)? };
        let inv_std = unsafe { dev.alloc::<f32>(call.c)? };
        let (rm, rv) = self.running.addrs(dev)?;
        // SAFETY: the descriptors match the buffers (f32 NCHW, `c` per-channel values); the
        // running statistics are this layer's own buffers, updated in place on the stream.
        let status = unsafe {
            cudarc::cudnn::sys::cudnnBatchNormalizationForwardTraining(
                call.handle.0,
                MODE,
                scale(&ONE),
                scale(&ZERO),
                call.x.0,
                addr(&view(x, x_l)?, dev),
                call.x.0,
                addr(&y, dev),
                call.per_channel.0,
                addr(&view(gamma, g_l)?, dev),
                addr(&view(beta, b_l)?, dev),
                self.momentum,
                rm,
                rv,
                self.eps,
                addr(&mean, dev),
                addr(&inv_std, dev),
            )
        };
        check(status, "cudnnBatchNormalizationForwardTraining")?;
        *self.saved.lock().expect("batch-norm saved statistics") = Some(Saved { mean, inv_std });
        Ok((
            CudaStorage::wrap_cuda_slice(y, call.dev),
            x_l.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .expect("batch-norm saved statistics")
            .take();
        let op = Backward {
            eps: self.eps,
            saved: Mutex::new(saved),
        };
        let (n, c) = (x.elem_count(), gamma.elem_count());
        let packed =
            x.contiguous()?
                .apply_op3_no_bwd(&grad.contiguous()?, &gamma.contiguous()?, &op)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + c, c)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(x, dy, gamma) → [dx | dgamma | dbeta]` (flat), from the forward's saved statistics (or
/// recomputed by cuDNN when there are none).
struct Backward {
    eps: f64,
    saved: Mutex<Option<Saved>>,
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "kp-cudnn-batch-norm-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("batch norm")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        dy: &CudaStorage,
        dy_l: &Layout,
        gamma: &CudaStorage,
        g_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        if dy_l.shape() != x_l.shape() {
            candle_core::bail!("kp cuDNN batch norm grad: gradient and input shapes differ")
        }
        let call = Call::new(x, x_l, &[g_l])?;
        let (dev, n, c) = (&call.dev, call.n, call.c);
        // SAFETY: fully written by cuDNN (beta factors 0).
        let out = unsafe { dev.alloc::<f32>(n + 2 * c)? };
        let saved = self.saved.lock().expect("batch-norm saved statistics");
        let (mean, inv_std) = match saved.as_ref() {
            Some(s) => (
                addr(&s.mean, dev) as *const c_void,
                addr(&s.inv_std, dev) as *const c_void,
            ),
            None => (std::ptr::null(), std::ptr::null()),
        };
        let dx = out.slice(0..n);
        let dgamma = out.slice(n..n + c);
        let dbeta = out.slice(n + c..n + 2 * c);
        // SAFETY: the descriptors match the buffers; `out` holds dx, dgamma and dbeta.
        let status = unsafe {
            cudarc::cudnn::sys::cudnnBatchNormalizationBackward(
                call.handle.0,
                MODE,
                scale(&ONE),
                scale(&ZERO),
                scale(&ONE),
                scale(&ZERO),
                call.x.0,
                addr(&view(x, x_l)?, dev),
                call.x.0,
                addr(&view(dy, dy_l)?, dev),
                call.x.0,
                addr(&dx, dev),
                call.per_channel.0,
                addr(&view(gamma, g_l)?, dev),
                addr(&dgamma, dev),
                addr(&dbeta, dev),
                self.eps,
                mean,
                inv_std,
            )
        };
        check(status, "cudnnBatchNormalizationBackward")?;
        drop(saved);
        Ok((
            CudaStorage::wrap_cuda_slice(out, call.dev),
            Shape::from(n + 2 * c),
        ))
    }
}

/// Training-mode batch norm of NCHW `x` with scale `gamma` and shift `beta` (f32 CUDA), updating
/// the running statistics in place (`running = (1 - momentum) running + momentum batch`, the
/// variance unbiased). The running tensors must be contiguous f32 buffers of this layer alone.
pub fn forward_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    momentum: f64,
) -> candle_core::Result<Tensor> {
    let op = Train {
        eps,
        momentum,
        running: Running::new(running_mean, running_var)?,
        saved: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// `(x, gamma, beta) → y` with fixed statistics (evaluation mode; no gradient).
struct Eval {
    eps: f64,
    running: Running,
}

impl CustomOp3 for Eval {
    fn name(&self) -> &'static str {
        "kp-cudnn-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("batch norm")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        gamma: &CudaStorage,
        g_l: &Layout,
        beta: &CudaStorage,
        b_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let call = Call::new(x, x_l, &[g_l, b_l])?;
        let dev = &call.dev;
        // SAFETY: fully written by cuDNN.
        let y = unsafe { dev.alloc::<f32>(call.n)? };
        let (rm, rv) = self.running.addrs(dev)?;
        // SAFETY: the descriptors match the buffers (f32 NCHW, `c` per-channel values).
        let status = unsafe {
            cudarc::cudnn::sys::cudnnBatchNormalizationForwardInference(
                call.handle.0,
                MODE,
                scale(&ONE),
                scale(&ZERO),
                call.x.0,
                addr(&view(x, x_l)?, dev),
                call.x.0,
                addr(&y, dev),
                call.per_channel.0,
                addr(&view(gamma, g_l)?, dev),
                addr(&view(beta, b_l)?, dev),
                rm,
                rv,
                self.eps,
            )
        };
        check(status, "cudnnBatchNormalizationForwardInference")?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, call.dev),
            x_l.shape().clone(),
        ))
    }

    /// With fixed statistics: `dx = dy gamma / std`, `dgamma = sum(dy xhat)`, `dbeta = sum(dy)`
    /// (candle ops; evaluation mode rarely needs it).
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        let per_channel = |t: &Tensor| t.detach().reshape((1, c, 1, 1));
        let inv_std = (per_channel(&self.running.var)? + self.eps)?
            .sqrt()?
            .recip()?;
        let dx = grad.broadcast_mul(&per_channel(gamma)?.mul(&inv_std)?)?;
        let xhat = x
            .broadcast_sub(&per_channel(&self.running.mean)?)?
            .broadcast_mul(&inv_std)?;
        let dgamma = (grad * xhat)?.sum((0, 2, 3))?.reshape(gamma.shape())?;
        let dbeta = grad.sum((0, 2, 3))?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Evaluation-mode batch norm of NCHW `x` (f32 CUDA) with the running statistics.
pub fn forward_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let op = Eval {
        eps,
        running: Running::new(running_mean, running_var)?,
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}
