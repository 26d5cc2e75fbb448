//! Convolutions by cuDNN (feature `cudnn`): the forward by `cudnnConvolutionForward`, the input
//! gradient by `cudnnConvolutionBackwardData` and the weight gradient by
//! `cudnnConvolutionBackwardFilter`, as PyTorch computes them.
//!
//! Each is a candle custom op over contiguous f32 CUDA tensors; cuDNN's heuristics pick the
//! algorithms, with cuDNN's default math (TF32 tensor cores allowed for f32 on Ampere and newer,
//! as PyTorch's default `torch.backends.cudnn.allow_tf32 = True`). The descriptors and the
//! chosen algorithms are made once per geometry and thread ([`Plan`]), and one workspace per
//! thread grows to the largest need, so a training step spends no time choosing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use std::rc::Rc;

use candle_core::backend::BackendStorage;
use candle_core::cuda::DeviceId;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp2, Error, Layout, Shape, Tensor};
use cudarc::cudnn::safe::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor,
    TensorDescriptor,
};
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionFwdAlgo_t,
    cudnnConvolutionMode_t, cudnnTensorFormat_t,
};
use cudarc::driver::CudaSlice;

use super::view;

thread_local! {
    /// One cuDNN handle per thread and device (cuDNN handles are not thread-safe).
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    /// Descriptors and algorithms per device and geometry.
    static PLANS: RefCell<HashMap<(DeviceId, Geometry), Rc<Plan>>> = RefCell::new(HashMap::new());
    /// One workspace per device, grown to the largest need.
    static WORKSPACES: RefCell<HashMap<DeviceId, CudaSlice<u8>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> candle_core::Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// A convolution's shapes: what its descriptors and algorithms depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    /// Input `(n, c, h, w)`.
    x: [usize; 4],
    /// Weight `(out, in, k, k)`.
    w: [usize; 4],
    /// Output `(n, out, oh, ow)`.
    y: [usize; 4],
    stride: usize,
    padding: usize,
}

fn dims4(t: &Tensor) -> candle_core::Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

fn c_int(v: [usize; 4]) -> [std::ffi::c_int; 4] {
    v.map(|d| d as std::ffi::c_int)
}

/// cuDNN's descriptions of one convolution: its geometry and the input (or input gradient),
/// weight (or weight gradient) and output (or output gradient) tensors, all f32 NCHW.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

impl Descriptors {
    fn new(g: Geometry, dev: &CudaDevice) -> candle_core::Result<Self> {
        let cudnn = handle(dev)?;
        let (p, s) = (g.padding as i32, g.stride as i32);
        let conv = cudnn
            .create_conv2d::<f32>(
                [p, p],
                [s, s],
                [1, 1],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(Error::wrap)?;
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        Ok(Self {
            conv,
            x: cudnn
                .create_4d_tensor::<f32>(nchw, c_int(g.x))
                .map_err(Error::wrap)?,
            w: cudnn
                .create_4d_filter::<f32>(nchw, c_int(g.w))
                .map_err(Error::wrap)?,
            y: cudnn
                .create_4d_tensor::<f32>(nchw, c_int(g.y))
                .map_err(Error::wrap)?,
        })
    }

    fn forward(&self) -> ConvForward<'_, f32, f32, f32> {
        ConvForward {
            conv: &self.conv,
            x: &self.x,
            w: &self.w,
            y: &self.y,
        }
    }

    fn data(&self) -> ConvBackwardData<'_, f32, f32, f32> {
        ConvBackwardData {
            conv: &self.conv,
            dx: &self.x,
            w: &self.w,
            dy: &self.y,
        }
    }

    fn filter(&self) -> ConvBackwardFilter<'_, f32, f32, f32> {
        ConvBackwardFilter {
            conv: &self.conv,
            x: &self.x,
            dw: &self.w,
            dy: &self.y,
        }
    }
}

/// One geometry's descriptors and the algorithms (with workspace bytes) cuDNN's heuristics
/// chose for the forward and both gradients.
struct Plan {
    d: Descriptors,
    fwd: (cudnnConvolutionFwdAlgo_t, usize),
    data: (cudnnConvolutionBwdDataAlgo_t, usize),
    filter: (cudnnConvolutionBwdFilterAlgo_t, usize),
}

/// This thread's plan for `g` on `dev`, made on first use.
fn plan(g: Geometry, dev: &CudaDevice) -> candle_core::Result<Rc<Plan>> {
    let key = (dev.id(), g);
    if let Some(p) = PLANS.with(|p| p.borrow().get(&key).cloned()) {
        return Ok(p);
    }
    let d = Descriptors::new(g, dev)?;
    let fwd = d.forward().pick_algorithm().map_err(Error::wrap)?;
    let fwd = (
        fwd,
        d.forward().get_workspace_size(fwd).map_err(Error::wrap)?,
    );
    let data = d.data().pick_algorithm().map_err(Error::wrap)?;
    let data = (
        data,
        d.data().get_workspace_size(data).map_err(Error::wrap)?,
    );
    let filter = d.filter().pick_algorithm().map_err(Error::wrap)?;
    let filter = (
        filter,
        d.filter().get_workspace_size(filter).map_err(Error::wrap)?,
    );
    let plan = Rc::new(Plan {
        d,
        fwd,
        data,
        filter,
    });
    PLANS.with(|p| p.borrow_mut().insert(key, plan.clone()));
    Ok(plan)
}

/// Runs `f` with this thread's workspace for `dev`, of at least `bytes` (uninitialised: cuDNN
/// needs no zeros). Work on candle's one stream runs in order, so reusing it is safe.
fn with_workspace<R>(
    dev: &CudaDevice,
    bytes: usize,
    f: impl FnOnce(&mut CudaSlice<u8>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let cached = WORKSPACES
        .with(|w| w.borrow_mut().remove(&dev.id()))
        .filter(|w| w.len() >= bytes.max(1));
    let mut ws = match cached {
        Some(w) => w,
        // SAFETY: scratch memory for cuDNN, never read before written.
        None => unsafe { dev.alloc::<u8>(bytes.max(1))? },
    };
    let out = f(&mut ws);
    WORKSPACES.with(|w| w.borrow_mut().insert(dev.id(), ws));
    out
}

/// `(x, w) → conv2d(x, w)`, differentiable.
struct Forward(Geometry);

/// `(output gradient, weight) → input gradient`.
struct DataGrad(Geometry);

/// `(input, output gradient) → weight gradient`.
struct FilterGrad(Geometry);

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "kp-cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("convolution")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        w: &CudaStorage,
        w_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let g = self.0;
        let dev = x.device().clone();
        let p = plan(g, &dev)?;
        // SAFETY: fully written by cuDNN (beta = 0).
        let mut y = unsafe { dev.alloc::<f32>(g.y.iter().product())? };
        let (x_v, w_v) = (view(x, x_l)?, view(w, w_l)?);
        with_workspace(&dev, p.fwd.1, |ws| {
            // SAFETY: the descriptors match the buffers' f32 NCHW layouts and sizes.
            unsafe {
                p.d.forward()
                    .launch(p.fwd.0, Some(ws), (1.0, 0.0), &x_v, &w_v, &mut y)
                    .map_err(Error::wrap)
            }
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev),
            Shape::from(g.y.to_vec()),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let dy = grad.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(&w.contiguous()?, &DataGrad(g))?)
        } else {
            None
        };
        let dw = x.contiguous()?.apply_op2_no_bwd(&dy, &FilterGrad(g))?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp2 for DataGrad {
    fn name(&self) -> &'static str {
        "kp-cudnn-conv2d-data-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("convolution")
    }

    fn cuda_fwd(
        &self,
        dy: &CudaStorage,
        dy_l: &Layout,
        w: &CudaStorage,
        w_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let g = self.0;
        let dev = dy.device().clone();
        let p = plan(g, &dev)?;
        // SAFETY: fully written by cuDNN (beta = 0).
        let mut dx = unsafe { dev.alloc::<f32>(g.x.iter().product())? };
        let (dy_v, w_v) = (view(dy, dy_l)?, view(w, w_l)?);
        with_workspace(&dev, p.data.1, |ws| {
            // SAFETY: the descriptors match the buffers' f32 NCHW layouts and sizes.
            unsafe {
                p.d.data()
                    .launch(p.data.0, Some(ws), (1.0, 0.0), &mut dx, &w_v, &dy_v)
                    .map_err(Error::wrap)
            }
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev),
            Shape::from(g.x.to_vec()),
        ))
    }
}

impl CustomOp2 for FilterGrad {
    fn name(&self) -> &'static str {
        "kp-cudnn-conv2d-filter-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::cuda_only("convolution")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_l: &Layout,
        dy: &CudaStorage,
        dy_l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let g = self.0;
        let dev = x.device().clone();
        let p = plan(g, &dev)?;
        // SAFETY: fully written by cuDNN (beta = 0).
        let mut dw = unsafe { dev.alloc::<f32>(g.w.iter().product())? };
        let (x_v, dy_v) = (view(x, x_l)?, view(dy, dy_l)?);
        with_workspace(&dev, p.filter.1, |ws| {
            // SAFETY: the descriptors match the buffers' f32 NCHW layouts and sizes.
            unsafe {
                p.d.filter()
                    .launch(p.filter.0, Some(ws), (1.0, 0.0), &x_v, &mut dw, &dy_v)
                    .map_err(Error::wrap)
            }
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(dw, dev),
            Shape::from(g.w.to_vec()),
        ))
    }
}

fn geometry(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Geometry> {
    let (x, w) = (dims4(x)?, dims4(w)?);
    let out = |l: usize| (l + 2 * padding - w[2]) / stride + 1;
    if x[1] != w[1] || x[2] + 2 * padding < w[2] || x[3] + 2 * padding < w[3] {
        candle_core::bail!("kp cuDNN conv2d: input {x:?} does not fit weight {w:?}")
    }
    Ok(Geometry {
        x,
        w,
        y: [x[0], w[0], out(x[2]), out(x[3])],
        stride,
        padding,
    })
}

/// `conv2d(x, w)` (no bias, square kernel, one stride and padding for both axes) by cuDNN,
/// with cuDNN's gradients.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let g = geometry(x, w, stride, padding)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, Forward(g))
}
