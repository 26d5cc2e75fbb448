//! Max-pooling by cuDNN (`cudnnPoolingForward`/`cudnnPoolingBackward`, deterministic max mode):
//! the whole gradient of a window goes to its maximum, as kp's CPU kernel and PyTorch.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp3, Error, Layout, Shape, Tensor};
use cudarc::cudnn::sys;

use super::{addr, check, dims4, raw_handle, scale, view, TensorDesc, ONE, ZERO};

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
        let desc =
            PoolDesc(cudarc::cudnn::result::create_pooling_descriptor().map_err(Error::wrap)?);
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

/// What both pooling calls need: the device, this thread's handle, the pooling descriptor and
/// the input and output shapes with their descriptors.
struct Call {
    dev: candle_core::CudaDevice,
    handle: std::rc::Rc<super::RawHandle>,
    pool: PoolDesc,
    x_dims: [usize; 4],
    y_dims: [usize; 4],
    x: TensorDesc,
    y: TensorDesc,
}

impl Call {
    fn new(w: Window, x: &CudaStorage, x_l: &Layout) -> candle_core::Result<Self> {
        let dev = x.device().clone();
        let x_dims = dims4(x_l)?;
        let y_dims = w.out_dims(x_dims)?;
        Ok(Self {
            handle: raw_handle(&dev)?,
            pool: PoolDesc::max(w)?,
            x: TensorDesc::nchw(x_dims)?,
            y: TensorDesc::nchw(y_dims)?,
            x_dims,
            y_dims,
            dev,
        })
    }
}

/// `x → max-pool(x)`.
struct Forward(Window);

/// `(x, y, dy) → dx`.
struct Backward(Window);

impl CustomOp1 for Forward {
    fn name(&self) -> &'static str {
        "kp-cudnn-max-pool"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("max-pool")
    }

    fn cuda_fwd(&self, x: &CudaStorage, x_l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let call = Call::new(self.0, x, x_l)?;
        let dev = &call.dev;
        // SAFETY: fully written by cuDNN.
        let y = unsafe { dev.alloc::<f32>(call.y_dims.iter().product())? };
        // SAFETY: the descriptors match the f32 NCHW buffers.
        let status = unsafe {
            sys::cudnnPoolingForward(
                call.handle.0,
                call.pool.0,
                scale(&ONE),
                call.x.0,
                addr(&view(x, x_l)?, dev),
                scale(&ZERO),
                call.y.0,
                addr(&y, dev),
            )
        };
        check(status, "cudnnPoolingForward")?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, call.dev.clone()),
            Shape::from(call.y_dims.to_vec()),
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
        super::cuda_only("max-pool")
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
        let call = Call::new(self.0, x, x_l)?;
        let dev = &call.dev;
        if dims4(y_l)? != call.y_dims || dims4(dy_l)? != call.y_dims {
            candle_core::bail!("kp cuDNN max-pool grad: output shapes do not match")
        }
        // SAFETY: fully written by cuDNN (beta = 0).
        let dx = unsafe { dev.alloc::<f32>(call.x_dims.iter().product())? };
        // SAFETY: the descriptors match the f32 NCHW buffers.
        let status = unsafe {
            sys::cudnnPoolingBackward(
                call.handle.0,
                call.pool.0,
                scale(&ONE),
                call.y.0,
                addr(&view(y, y_l)?, dev),
                call.y.0,
                addr(&view(dy, dy_l)?, dev),
                call.x.0,
                addr(&view(x, x_l)?, dev),
                scale(&ZERO),
                call.x.0,
                addr(&dx, dev),
            )
        };
        check(status, "cudnnPoolingBackward")?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, call.dev.clone()),
            Shape::from(call.x_dims.to_vec()),
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
