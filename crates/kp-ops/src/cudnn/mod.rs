//! cuDNN for kp's layers on CUDA (feature `cudnn`, f32): convolutions ([`conv`]), batch
//! normalisation ([`batchnorm`]) and max-pooling ([`pool`]), forward and backward, as PyTorch
//! runs them.
//!
//! candle builds batch norm and max-pool on a GPU from element-wise ops (about fifteen full
//! passes over the activation per batch-norm layer, forward and backward); cuDNN does each in one
//! or two kernels. cudarc's safe API covers the convolutions; batch norm and pooling go through
//! its raw bindings with the per-thread handle and the descriptors of this module.

pub mod batchnorm;
pub mod conv;
pub mod pool;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::rc::Rc;

use candle_core::cuda::DeviceId;
use candle_core::{CudaDevice, CudaStorage, Error, Layout};
use cudarc::cudnn::{result, sys};
use cudarc::driver::{CudaView, DevicePtr};

pub use crate::cuda_kernels::applies;

/// The `cpu_fwd` of kp's cuDNN ops: an error (they run on CUDA only).
pub(crate) fn cuda_only(
    layer: &str,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    candle_core::bail!("the cuDNN {layer} runs on CUDA only")
}

/// Turns a cuDNN status into a candle error naming the call.
pub(crate) fn check(status: sys::cudnnStatus_t, call: &str) -> candle_core::Result<()> {
    status
        .result()
        .map_err(|e| candle_core::Error::Msg(format!("{call}: {e:?}")))
}

/// A raw cuDNN handle bound to candle's stream of one device.
pub(crate) struct RawHandle(pub(crate) sys::cudnnHandle_t);

impl Drop for RawHandle {
    fn drop(&mut self) {
        // SAFETY: created by `cudnnCreate` and dropped once.
        unsafe {
            let _ = result::destroy_handle(self.0);
        }
    }
}

thread_local! {
    /// One raw handle per thread and device (cuDNN handles are not thread-safe).
    static RAW_HANDLES: RefCell<HashMap<DeviceId, Rc<RawHandle>>> = RefCell::new(HashMap::new());
}

/// This thread's raw cuDNN handle for `dev`, on candle's stream.
pub(crate) fn raw_handle(dev: &CudaDevice) -> candle_core::Result<Rc<RawHandle>> {
    RAW_HANDLES.with(|h| {
        if let Some(handle) = h.borrow().get(&dev.id()) {
            return Ok(handle.clone());
        }
        let stream = dev.cuda_stream();
        stream.context().bind_to_thread().map_err(Error::wrap)?;
        let handle = RawHandle(result::create_handle().map_err(Error::wrap)?);
        // SAFETY: a fresh handle and candle's live stream.
        unsafe { result::set_stream(handle.0, stream.cu_stream() as sys::cudaStream_t) }
            .map_err(Error::wrap)?;
        let handle = Rc::new(handle);
        h.borrow_mut().insert(dev.id(), handle.clone());
        Ok(handle)
    })
}

/// An f32 NCHW tensor descriptor (raw), destroyed on drop.
pub(crate) struct TensorDesc(pub(crate) sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    /// Describes a packed f32 NCHW tensor of `dims`.
    pub(crate) fn nchw(dims: [usize; 4]) -> candle_core::Result<Self> {
        let desc = TensorDesc(result::create_tensor_descriptor().map_err(Error::wrap)?);
        let dims = dims.map(|d| d as c_int);
        // SAFETY: a fresh descriptor.
        unsafe {
            result::set_tensor4d_descriptor(
                desc.0,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                dims,
            )
        }
        .map_err(Error::wrap)?;
        Ok(desc)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `cudnnCreateTensorDescriptor` and dropped once.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.0);
        }
    }
}

/// `(n, c, h, w)` of a 4-D layout.
pub(crate) fn dims4(l: &Layout) -> candle_core::Result<[usize; 4]> {
    match l.dims() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        d => candle_core::bail!("kp cuDNN: a 4-D NCHW tensor expected, got {d:?}"),
    }
}

/// The contiguous f32 data of a CUDA storage, from its layout's offset.
pub(crate) fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
    crate::cuda_kernels::view(s, l, "cuDNN layer")
}

/// The raw device address of `v` for a call on `dev`'s stream (candle's single stream orders
/// every use, so the address is used at once, before any other work is queued).
pub(crate) fn addr<T, V: DevicePtr<T>>(v: &V, dev: &CudaDevice) -> *mut c_void {
    let stream = dev.cuda_stream();
    let (ptr, _sync) = v.device_ptr(&stream);
    ptr as *mut c_void
}

/// `1.0` and `0.0` as cuDNN's f32 scaling factors (`alpha`, `beta`).
pub(crate) const ONE: f32 = 1.0;
/// See [`ONE`].
pub(crate) const ZERO: f32 = 0.0;

/// A pointer to a scaling factor.
pub(crate) fn scale(v: &f32) -> *const c_void {
    v as *const f32 as *const c_void
}
