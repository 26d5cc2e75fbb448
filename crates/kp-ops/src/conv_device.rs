//! Convolution for GPUs (any candle device): candle's `conv2d` forward with a backward made of
//! convolutions too.
//!
//! candle differentiates its `conv2d` with `conv_transpose2d` for the input gradient, which on
//! CUDA is a naive kernel (one thread per input element, looping over every channel and tap).
//! Here the input gradient is the stride-1 convolution of the output gradient (spread out with
//! zeros between its elements when the stride is larger) with the flipped, channel-transposed
//! kernel, so that it runs through candle's im2col + GEMM path (cuBLAS on CUDA) like the forward.
//! The weight gradient is candle's own (a convolution of the input with the output gradient).
//!
//! The forward is candle's `conv2d` on detached inputs; a custom op then hands its result on
//! (one copy) and attaches [`ConvBackward`] as the gradient. In a `cudnn` build, f32 convolutions
//! on CUDA go to `kp_ops::cudnn::conv` instead (cuDNN's forward and backward kernels), unless
//! [`set_gpu_backward`] chose otherwise.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use candle_core::{Error, Result};

/// How convolutions on GPUs compute their gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuBackward {
    /// candle's own `conv2d` backward (input gradient by its naive `conv_transpose2d`).
    Candle,
    /// [`conv2d`]'s: convolutions of the output gradient (through candle's im2col + GEMM, or
    /// cuDNN's forward kernels when candle is built with `cudnn`).
    Convolutions,
    /// cuDNN all through (feature `cudnn`, f32 on CUDA; other cases fall back to
    /// `Convolutions`): `cudnn::conv::conv2d`, its forward, backward-data and
    /// backward-filter kernels.
    Cudnn,
}

impl GpuBackward {
    /// The default: `Cudnn` when built with the `cudnn` feature, else `Convolutions`.
    pub const fn default_for_build() -> Self {
        if cfg!(feature = "cudnn") {
            GpuBackward::Cudnn
        } else {
            GpuBackward::Convolutions
        }
    }

    fn code(self) -> u8 {
        match self {
            GpuBackward::Candle => 0,
            GpuBackward::Convolutions => 1,
            GpuBackward::Cudnn => 2,
        }
    }
}

/// Unset until [`set_gpu_backward`] is called (then [`GpuBackward::default_for_build`]).
static GPU_BACKWARD: AtomicU8 = AtomicU8::new(u8::MAX);

/// Chooses how every convolution on a GPU computes its gradients. Process-wide; meant for
/// benchmarks and cross-checks.
pub fn set_gpu_backward(kind: GpuBackward) {
    GPU_BACKWARD.store(kind.code(), Ordering::Relaxed);
}

/// The current choice (see [`set_gpu_backward`]).
pub fn gpu_backward() -> GpuBackward {
    match GPU_BACKWARD.load(Ordering::Relaxed) {
        0 => GpuBackward::Candle,
        1 => GpuBackward::Convolutions,
        2 => GpuBackward::Cudnn,
        _ => GpuBackward::default_for_build(),
    }
}

/// `conv2d(x, w)` (no bias; square kernel, equal stride and padding on both axes) whose backward
/// uses only convolutions, on any device.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, k, kw) = w.dims4()?;
    if k != kw {
        return Err(Error::Msg(format!(
            "conv2d needs a square kernel, got {:?}",
            w.dims()
        )));
    }
    if padding >= k {
        return Err(Error::Msg(format!(
            "conv2d padding {padding} must be smaller than the kernel {k}"
        )));
    }
    #[cfg(feature = "cudnn")]
    if gpu_backward() == GpuBackward::Cudnn && crate::cudnn::applies(x) {
        return crate::cudnn::conv::conv2d(x, w, stride, padding);
    }
    let y = x
        .detach()
        .conv2d(&w.detach(), padding, stride, 1, 1)?
        .contiguous()?;
    if !x.track_op() && !w.track_op() {
        return Ok(y);
    }
    let op = ConvBackward {
        stride,
        padding,
        input_grad: x.track_op(),
    };
    y.apply_op3(x, w, op)
}

/// The custom op: passes the convolution's result (its first argument) through and gives the
/// input and weight gradients (its second and third arguments).
struct ConvBackward {
    stride: usize,
    padding: usize,
    /// Whether the input needs a gradient (not for a network's input image).
    input_grad: bool,
}

/// Clones a contiguous storage that starts at offset 0 (the forward's pass-through).
fn pass_through<S: BackendStorage>(s: &S, l: &Layout) -> candle_core::Result<(S, Shape)> {
    if !l.is_contiguous() || l.start_offset() != 0 {
        candle_core::bail!("kp conv2d: the convolution's result must be contiguous")
    }
    Ok((s.try_clone(l)?, l.shape().clone()))
}

impl CustomOp3 for ConvBackward {
    fn name(&self) -> &'static str {
        "kp-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        pass_through(s1, l1)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        pass_through(s1, l1)
    }

    fn bwd(
        &self,
        _y: &Tensor,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = if self.input_grad {
            Some(input_gradient(
                grad,
                w,
                x.dims4()?,
                self.stride,
                self.padding,
            )?)
        } else {
            None
        };
        let dw = weight_gradient(x, grad, w.dims4()?, self.stride, self.padding)?;
        Ok((None, dx, Some(dw)))
    }
}

/// candle's weight gradient: the input (channels as batch) convolved with the output gradient
/// (batch as channels), dilated by the stride, cropped to the kernel.
fn weight_gradient(
    x: &Tensor,
    grad: &Tensor,
    wdims: (usize, usize, usize, usize),
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, k, _) = wdims;
    let dw = x
        .transpose(0, 1)?
        .conv2d(&grad.transpose(0, 1)?, padding, 1, stride, 1)?
        .transpose(0, 1)?;
    let (_, _, gh, gw) = dw.dims4()?;
    if gh != k || gw != k {
        dw.narrow(2, 0, k)?.narrow(3, 0, k)?.contiguous()
    } else {
        dw.contiguous()
    }
}

/// The input gradient as a stride-1 convolution: the output gradient with `stride - 1` zeros
/// between neighbours, padded by `k - 1 - padding` (plus the input's rows and columns that no
/// window reached, at the end), correlated with the kernel flipped in space and transposed in
/// channels.
pub fn input_gradient(
    grad: &Tensor,
    w: &Tensor,
    xdims: (usize, usize, usize, usize),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, _, h, wd) = xdims;
    let (_, _, k, _) = w.dims4()?;
    let (_, _, oh, ow) = grad.dims4()?;
    let q = k - 1 - padding;
    // Rows/columns the transposed convolution yields, and what is left of the input after them.
    let full_h = (oh - 1) * stride + k - 2 * padding;
    let full_w = (ow - 1) * stride + k - 2 * padding;
    if full_h > h || full_w > wd {
        return Err(Error::Msg(format!(
            "conv2d gradient {:?} does not fit an input of {h}x{wd}",
            grad.dims()
        )));
    }
    let (extra_h, extra_w) = (h - full_h, wd - full_w);
    let g = if stride > 1 {
        dilate(grad, stride)?
    } else {
        grad.clone()
    };
    let wt = flip_spatial(w)?.transpose(0, 1)?.contiguous()?;
    if extra_h == 0 && extra_w == 0 {
        return g.conv2d(&wt, q, 1, 1, 1);
    }
    let g = g
        .pad_with_zeros(2, q, q + extra_h)?
        .pad_with_zeros(3, q, q + extra_w)?;
    g.conv2d(&wt, 0, 1, 1, 1)
}

/// `(n, c, h, w)` → `(n, c, (h-1)s+1, (w-1)s+1)` with the input at every `s`-th row and column
/// and zeros between.
fn dilate(g: &Tensor, s: usize) -> Result<Tensor> {
    let (n, c, h, w) = g.dims4()?;
    let g = g
        .contiguous()?
        .reshape((n, c, h, 1, w, 1))?
        .pad_with_zeros(5, 0, s - 1)?
        .pad_with_zeros(3, 0, s - 1)?
        .reshape((n, c, h * s, w * s))?;
    g.narrow(2, 0, (h - 1) * s + 1)?
        .narrow(3, 0, (w - 1) * s + 1)
}

/// Reverses a kernel's rows and columns.
fn flip_spatial(w: &Tensor) -> Result<Tensor> {
    let (_, _, kh, kw) = w.dims4()?;
    let rev = |n: usize| {
        let ix: Vec<u32> = (0..n as u32).rev().collect();
        Tensor::from_vec(ix, n, w.device())
    };
    w.index_select(&rev(kh)?, 2)?.index_select(&rev(kw)?, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        f32s(a)
            .iter()
            .zip(f32s(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Gradients of `sum(conv(x, w) * r)` through this module and through candle's own conv2d.
    fn both_ways(
        n: usize,
        cin: usize,
        cout: usize,
        (h, w): (usize, usize),
        k: usize,
        s: usize,
        p: usize,
    ) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (n, cin, h, w), &dev).unwrap()).unwrap();
        let wt =
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (cout, cin, k, k), &dev).unwrap()).unwrap();
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), s, p).unwrap();
        // candle's reference: pad explicitly so its own backward never needs an output padding
        // that differs between the axes.
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let xp = x
            .as_tensor()
            .pad_with_zeros(2, p, p)
            .unwrap()
            .pad_with_zeros(3, p, p)
            .unwrap()
            .narrow(2, 0, (oh - 1) * s + k)
            .unwrap()
            .narrow(3, 0, (ow - 1) * s + k)
            .unwrap();
        let reference = xp.conv2d(wt.as_tensor(), 0, s, 1, 1).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        assert!(max_abs_diff(&ours, &reference) < 1e-9);
        let r = Tensor::randn(0f64, 1.0, ours.dims(), &dev).unwrap();
        let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &wt] {
            let a = g1.get(v).unwrap();
            let b = g2.get(v).unwrap();
            assert_eq!(a.dims(), b.dims());
            let d = max_abs_diff(a, b);
            assert!(
                d < 1e-6,
                "{n}x{cin}x{h}x{w} k{k} s{s} p{p}: gradient differs by {d}"
            );
        }
    }

    #[test]
    fn gradients_match_candles_conv2d() {
        // ResNet's layers (7x7/2 p3, 3x3/1 p1, 3x3/2 p1, 1x1/2 p0), the seed nets' (no
        // padding), and sizes that leave rows or columns that no window reaches.
        both_ways(2, 1, 3, (16, 16), 7, 2, 3);
        both_ways(2, 3, 4, (9, 9), 3, 1, 1);
        both_ways(2, 3, 4, (9, 8), 3, 2, 1);
        both_ways(2, 3, 4, (7, 10), 1, 2, 0);
        both_ways(1, 2, 3, (11, 13), 5, 1, 0);
        both_ways(1, 2, 2, (12, 9), 3, 3, 2);
        both_ways(3, 4, 2, (6, 6), 3, 1, 0);
    }

    #[test]
    fn no_input_gradient_for_a_constant_input() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 1, 8, 8), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 1, 3, 3), &dev).unwrap()).unwrap();
        let y = conv2d(&x, w.as_tensor(), 1, 1).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        assert_eq!(grads.get(&w).unwrap().dims(), [2, 1, 3, 3]);
    }

    #[test]
    fn inference_needs_no_graph() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 5, 5), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let y = conv2d(&x, &w, 2, 1).unwrap();
        assert_eq!(y.dims(), [1, 3, 3, 3]);
        assert!(!y.track_op());
    }

    #[test]
    fn the_gpu_backward_choice() {
        // Nothing in this test binary runs on a GPU, so switching is harmless here.
        let default = GpuBackward::default_for_build();
        assert_eq!(
            default,
            if cfg!(feature = "cudnn") {
                GpuBackward::Cudnn
            } else {
                GpuBackward::Convolutions
            }
        );
        for kind in [
            GpuBackward::Candle,
            GpuBackward::Cudnn,
            GpuBackward::Convolutions,
        ] {
            set_gpu_backward(kind);
            assert_eq!(gpu_backward(), kind);
        }
        set_gpu_backward(default);
    }

    #[test]
    fn bad_kernels_are_refused() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 1, 8, 8), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((1, 1, 3, 2), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, 1, 0).is_err());
        let w = Tensor::zeros((1, 1, 3, 3), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, 1, 3).is_err());
    }
}
