//! Max-pooling by cuDNN (`cudnnPoolingForward`/`cudnnPoolingBackward`, deterministic max mode):
//! the whole gradient of a window goes to its maximum, as kp's CPU kernel and PyTorch.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use cudarc::cudnn::sys;

use super::{addr, check, dims4, raw_handle, scale, view, wrap, TensorDesc, ONE, ZERO};

/// A square window's size, stride and padding.
#[derive(Debug, Clone, Copy)]
struct Window {
    k: usize,
    s: usize,
    p: usize,
}

impl Window {
    fn out_dims(&self, d: [usize; 4]) -> candle_core::Result<[usize; 4]> {
        let len = |l: usize| -> candle_core::Result<usize> {
            let padded = l + 2 * self.p;
            if padded < self.k {
                candle_core::bail!("kp cuDNN max-pool: input {d:?} is smaller than the window")
            }
            Ok((padded - self.k) / self.s + 1)
        };
        Ok([d[0], d[1], len(d[2])?, len(d[3])?])
    }
}

/// A raw pooling descriptor, destroyed on drop.
struct PoolDesc(sys::cudnnPoolingDescriptor_t);

impl PoolDesc {
    fn max(w: Window) -> candle_core::Result<Self> {
        let desc = PoolDesc(cudarc::cudnn::result::create_pooling_descriptor().map_err(wrap)?);
        let (k, s, p) = (w.k as i32, w.s as i32, w.p as i32);
        // SAFETY: a fresh descriptor.
        let status = unsafe {
            sys::cudnnSetPooling2dDescriptor(
                desc.0,
                sys::cudnnPoolingMode_t::CUDNN_POOLING_MAX_DETERMINISTIC,
                sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                k,
                k,
                p,
                p,
                s,
                s,
            )
        };
        check(status, "cudnnSetPooling2dDescriptor")?;
        Ok(desc)
    }
}

impl Drop for PoolDesc {
    fn drop(&mut self) {
        // SAFETY: created by `cudnnCreatePoolingDescriptor` and dropped once.
        unsafe {
            let _ = sys::cudnnDestroyPoolingDescriptor(self.0);
        }
    }
}

/// `x → max-pool(x)`.
struct Forward(Window);

/// `(x, y, dy) → dx`.
struct Backward(Window);

fn cpu_only() -> candle_core::Result<(CpuStorage, Shape)> {
    candle_core::bail!("the cuDNN max-pool runs on CUDA only")
}

impl CustomOp1 for Forward {
    fn name(&self) -> &'static str {
        "kp-cudnn-max-pool"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_only()
    }

    fn cuda_fwd(&self, x: &CudaStorage, x_l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let d = dims4(x_l)?;
        let od = self.0.out_dims(d)?;
        let handle = raw_handle(&dev)?;
        let (pool, xd, yd) = (
            PoolDesc::max(self.0)?,
            TensorDesc::nchw(d)?,
            TensorDesc::nchw(od)?,
        );
        // SAFETY: fully written by cuDNN.
        let y = unsafe { dev.alloc::<f32>(od.iter().product())? };
        // SAFETY: the descriptors match the f32 NCHW buffers.
        let status = unsafe {
            sys::cudnnPoolingForward(
                handle.0,
                pool.0,
                scale(&ONE),
                xd.0,
                addr(&view(x, x_l)?, &dev),
                scale(&ZERO),
                yd.0,
                addr(&y, &dev),
            )
        };
        check(status, "cudnnPoolingForward")?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev),
            Shape::from(od.to_vec()),
        ))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = x
            .contiguous()?
            .apply_op3_no_bwd(y, &dy.contiguous()?, &Backward(self.0))?;
        Ok(Some(dx))
    }
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "kp-cudnn-max-pool-grad"
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
        cpu_only()
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        y: &CudaStorage,
        y_l: &Layout,
        dy: &CudaStorage,
        dy_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let d = dims4(x_l)?;
        let od = self.0.out_dims(d)?;
        if dims4(y_l)? != od || dims4(dy_l)? != od {
            candle_core::bail!("kp cuDNN max-pool grad: output shapes do not match")
        }
        let handle = raw_handle(&dev)?;
        let (pool, xd, yd) = (
            PoolDesc::max(self.0)?,
            TensorDesc::nchw(d)?,
            TensorDesc::nchw(od)?,
        );
        // SAFETY: fully written by cuDNN (beta = 0).
        let dx = unsafe { dev.alloc::<f32>(d.iter().product())? };
        // SAFETY: the descriptors match the f32 NCHW buffers.
        let status = unsafe {
            sys::cudnnPoolingBackward(
                handle.0,
                pool.0,
                scale(&ONE),
                yd.0,
                addr(&view(y, y_l)?, &dev),
                yd.0,
                addr(&view(dy, dy_l)?, &dev),
                xd.0,
                addr(&view(x, x_l)?, &dev),
                scale(&ZERO),
                xd.0,
                addr(&dx, &dev),
            )
        };
        check(status, "cudnnPoolingBackward")?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev),
            Shape::from(d.to_vec()),
        ))
    }
}

/// Max-pools NCHW `x` (f32 CUDA) with a `k`x`k` window, stride `s` and padding `p` (floor
/// mode; padding never wins a window).
pub fn max_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> candle_core::Result<Tensor> {
    if k == 0 || s == 0 || 2 * p > k {
        candle_core::bail!("kp cuDNN max-pool: bad window k={k} s={s} p={p}")
    }
    x.contiguous()?.apply_op1(Forward(Window { k, s, p }))
}
