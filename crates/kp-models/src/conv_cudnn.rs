//! cuDNN's backward convolutions (feature `cudnn`): the input gradient by
//! `cudnnConvolutionBackwardData` and the weight gradient by `cudnnConvolutionBackwardFilter`,
//! as PyTorch computes them, instead of [`crate::conv_device`]'s convolutions of the output
//! gradient (which candle, built with `cudnn`, runs through cuDNN's forward kernels).
//!
//! Each is a candle custom op over contiguous f32 CUDA tensors; cuDNN's heuristics pick the
//! algorithm, with cuDNN's default math (TF32 tensor cores allowed for f32 on Ampere and newer,
//! as PyTorch's default `torch.backends.cudnn.allow_tf32 = True`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Shape, Tensor};
use cudarc::cudnn::safe::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, Cudnn, FilterDescriptor, TensorDescriptor,
};
use cudarc::cudnn::sys::{cudnnConvolutionMode_t, cudnnTensorFormat_t};

thread_local! {
    /// One cuDNN handle per thread and device (cuDNN handles are not thread-safe).
    static HANDLES: RefCell<HashMap<candle_core::cuda::DeviceId, Arc<Cudnn>>> =
        RefCell::new(HashMap::new());
}

fn handle(dev: &candle_core::CudaDevice) -> candle_core::Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// The geometry both gradients need.
#[derive(Debug, Clone, Copy)]
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

/// The contiguous f32 data of a CUDA storage, from its layout's offset.
fn view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
) -> candle_core::Result<cudarc::driver::CudaView<'a, f32>> {
    if !l.is_contiguous() {
        candle_core::bail!("kp cuDNN convolution gradients need contiguous tensors")
    }
    Ok(s.as_cuda_slice::<f32>()?.slice(l.start_offset()..))
}

/// cuDNN's descriptions of one convolution: its geometry and the input (or input gradient),
/// weight (or weight gradient) and output gradient tensors, all f32 NCHW.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

impl Descriptors {
    fn new(g: Geometry, dev: &candle_core::CudaDevice) -> candle_core::Result<Self> {
        let cudnn = handle(dev)?;
        let e = candle_core::Error::wrap;
        let (p, s) = (g.padding as i32, g.stride as i32);
        let conv = cudnn
            .create_conv2d::<f32>(
                [p, p],
                [s, s],
                [1, 1],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(e)?;
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        Ok(Self {
            conv,
            x: cudnn.create_4d_tensor::<f32>(nchw, c_int(g.x)).map_err(e)?,
            w: cudnn.create_4d_filter::<f32>(nchw, c_int(g.w)).map_err(e)?,
            y: cudnn.create_4d_tensor::<f32>(nchw, c_int(g.y)).map_err(e)?,
        })
    }
}

/// `(output gradient, weight) → input gradient`.
struct DataGrad(Geometry);

/// `(input, output gradient) → weight gradient`.
struct FilterGrad(Geometry);

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
        candle_core::bail!("the cuDNN convolution gradient runs on CUDA only")
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
        let e = candle_core::Error::wrap;
        let d = Descriptors::new(g, &dev)?;
        let op = ConvBackwardData {
            conv: &d.conv,
            dx: &d.x,
            w: &d.w,
            dy: &d.y,
        };
        let algo = op.pick_algorithm().map_err(e)?;
        let ws = op.get_workspace_size(algo).map_err(e)?;
        let mut workspace = dev.alloc_zeros::<u8>(ws.max(1))?;
        // SAFETY: fully written by cuDNN (beta = 0).
        let mut dx = unsafe { dev.alloc::<f32>(g.x.iter().product())? };
        let (dy_v, w_v) = (view(dy, dy_l)?, view(w, w_l)?);
        // SAFETY: the descriptors match the buffers' f32 NCHW layouts and sizes.
        unsafe {
            op.launch(algo, Some(&mut workspace), (1.0, 0.0), &mut dx, &w_v, &dy_v)
                .map_err(e)?;
        }
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
        candle_core::bail!("the cuDNN convolution gradient runs on CUDA only")
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
        let e = candle_core::Error::wrap;
        let d = Descriptors::new(g, &dev)?;
        let op = ConvBackwardFilter {
            conv: &d.conv,
            x: &d.x,
            dw: &d.w,
            dy: &d.y,
        };
        let algo = op.pick_algorithm().map_err(e)?;
        let ws = op.get_workspace_size(algo).map_err(e)?;
        let mut workspace = dev.alloc_zeros::<u8>(ws.max(1))?;
        // SAFETY: fully written by cuDNN (beta = 0).
        let mut dw = unsafe { dev.alloc::<f32>(g.w.iter().product())? };
        let (x_v, dy_v) = (view(x, x_l)?, view(dy, dy_l)?);
        // SAFETY: the descriptors match the buffers' f32 NCHW layouts and sizes.
        unsafe {
            op.launch(algo, Some(&mut workspace), (1.0, 0.0), &x_v, &mut dw, &dy_v)
                .map_err(e)?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(dw, dev),
            Shape::from(g.w.to_vec()),
        ))
    }
}

/// Whether the cuDNN gradients apply: f32 tensors on a CUDA device.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cuda() && x.dtype() == candle_core::DType::F32
}

/// The input and weight gradients of `conv2d(x, w, stride, padding)` for the output gradient
/// `dy`; the input's only when `input_grad`.
pub fn gradients(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    stride: usize,
    padding: usize,
    input_grad: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor)> {
    let g = Geometry {
        x: dims4(x)?,
        w: dims4(w)?,
        y: dims4(dy)?,
        stride,
        padding,
    };
    let dy = dy.contiguous()?;
    let dx = if input_grad {
        Some(dy.apply_op2_no_bwd(&w.contiguous()?, &DataGrad(g))?)
    } else {
        None
    };
    let dw = x.contiguous()?.apply_op2_no_bwd(&dy, &FilterGrad(g))?;
    Ok((dx, dw))
}
