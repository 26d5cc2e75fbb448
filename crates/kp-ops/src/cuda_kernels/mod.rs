//! kp's own CUDA kernels (feature `cuda`): a ReLU whose backward is one pass, and a fused Adam
//! step.
//!
//! candle differentiates its `relu` with four kernels over the activation (zeros, a comparison,
//! a dtype conversion and a product), and an Adam step written with tensor ops is about fourteen
//! kernels per parameter. Here each is one kernel. The kernels (`kernels.cu`) are compiled to
//! PTX by the build script with `nvcc`, the compiler candle's own CUDA kernels need, and loaded
//! once per device through candle's custom-kernel cache.

use candle_core::backend::BackendStorage;
use candle_core::{CudaDevice, CudaStorage, DType, Error, Layout, Shape, Storage, Tensor};
use cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};

/// The kernels' PTX, built by `build.rs`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kp_kernels.ptx"));
/// The module name under which candle caches the PTX.
const MODULE: &str = "kp_kernels";

/// The contiguous f32 data of a CUDA storage, from its layout's offset.
pub(crate) fn view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, f32>> {
    if !l.is_contiguous() {
        candle_core::bail!("kp {what} needs contiguous tensors")
    }
    let slice = s.as_cuda_slice::<f32>()?;
    Ok(slice.slice(l.start_offset()..l.start_offset() + l.shape().elem_count()))
}

/// Whether kp's CUDA kernels (and, with `cudnn`, its cuDNN layers) apply: an f32 tensor on a
/// CUDA device.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cuda() && t.dtype() == DType::F32
}

fn config(n: usize) -> candle_core::Result<LaunchConfig> {
    let n = u32::try_from(n)
        .map_err(|_| candle_core::Error::Msg(format!("kp kernel: {n} elements are too many")))?;
    Ok(LaunchConfig::for_num_elems(n.max(1)))
}

/// `max(x, 0)` of a contiguous f32 CUDA tensor into a new buffer.
pub(crate) fn relu_fwd(s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
    let dev = s.device().clone();
    let x = view(s, l, "relu")?;
    let n = l.shape().elem_count();
    // SAFETY: every element is written by the kernel.
    let y = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func("kp_relu_f32", MODULE, PTX)?;
    let mut b = func.builder();
    b.arg(&x).arg(&y).arg(&n);
    // SAFETY: `x` and `y` hold `n` f32 each; the kernel's signature is (const float*, float*,
    // size_t).
    unsafe { b.launch(config(n)?) }.map_err(Error::wrap)?;
    Ok((CudaStorage::wrap_cuda_slice(y, dev), l.shape().clone()))
}

/// `dy · [y > 0]` of two contiguous f32 CUDA tensors of one shape.
pub(crate) fn relu_bwd(
    dy: &CudaStorage,
    dy_l: &Layout,
    y: &CudaStorage,
    y_l: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    if dy_l.shape() != y_l.shape() {
        candle_core::bail!(
            "kp relu grad: gradient {:?} and output {:?} differ",
            dy_l.shape(),
            y_l.shape()
        )
    }
    let dev = dy.device().clone();
    let (g, yv) = (view(dy, dy_l, "relu grad")?, view(y, y_l, "relu grad")?);
    let n = dy_l.shape().elem_count();
    // SAFETY: every element is written by the kernel.
    let dx = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func("kp_relu_backward_f32", MODULE, PTX)?;
    let mut b = func.builder();
    b.arg(&g).arg(&yv).arg(&dx).arg(&n);
    // SAFETY: three buffers of `n` f32; signature (const float*, const float*, float*, size_t).
    unsafe { b.launch(config(n)?) }.map_err(Error::wrap)?;
    Ok((CudaStorage::wrap_cuda_slice(dx, dev), dy_l.shape().clone()))
}

/// Adam's hyper-parameters for one step (see [`adam_step`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_sqrt_bc2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// `1 - lr * weight_decay`, the factor on the parameter.
    pub decay: f64,
}

fn cuda_view<'a>(
    storage: &'a Storage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<(&'a CudaStorage, CudaView<'a, f32>)> {
    match storage {
        Storage::Cuda(s) => Ok((s, view(s, l, what)?)),
        _ => candle_core::bail!("kp {what}: a CUDA tensor expected"),
    }
}

/// One Adam update in place of the parameter `p` and its moments `m` and `v` (contiguous f32
/// CUDA tensors of `g`'s size, three distinct buffers that nothing else reads during the call),
/// as one kernel.
pub fn adam_step(
    p: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    h: AdamStep,
) -> candle_core::Result<()> {
    let n = g.elem_count();
    for t in [p, m, v] {
        if t.elem_count() != n || t.dtype() != DType::F32 || !t.is_contiguous() {
            candle_core::bail!(
                "kp adam: parameter and moments must be contiguous f32 tensors of {n} elements"
            )
        }
    }
    let g = g.contiguous()?;
    let (ps, pl) = p.storage_and_layout();
    let (ms, ml) = m.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let (p_cuda, pv) = cuda_view(&ps, pl, "adam")?;
    let (_, mv) = cuda_view(&ms, ml, "adam")?;
    let (_, vv) = cuda_view(&vs, vl, "adam")?;
    let (_, gv) = cuda_view(&gs, gl, "adam")?;
    let dev: &CudaDevice = p_cuda.device();
    let func = dev.get_or_load_custom_func("kp_adam_f32", MODULE, PTX)?;
    let scalars = [
        h.beta1 as f32,
        h.beta2 as f32,
        h.step_size as f32,
        h.inv_sqrt_bc2 as f32,
        h.eps as f32,
        h.decay as f32,
    ];
    let mut b = func.builder();
    b.arg(&pv).arg(&mv).arg(&vv).arg(&gv).arg(&n);
    for s in &scalars {
        b.arg(s);
    }
    // SAFETY: four buffers of `n` f32, the first three written in place by the kernel (the
    // caller guarantees no one else uses them meanwhile; kernels on the stream run in order);
    // signature (float*, float*, float*, const float*, size_t, float x6).
    unsafe { b.launch(config(n)?) }.map_err(Error::wrap)?;
    Ok(())
}
