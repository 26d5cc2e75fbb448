//! kp's kernels as [candle](https://github.com/huggingface/candle) custom ops: CPU kernels with
//! hand-written backwards, kp's own CUDA kernels (feature `cuda`) and cuDNN calls (feature
//! `cudnn`). Every function returns candle's [`Result`](candle_core::Result), as custom ops do,
//! so the ops compose with candle's autograd like its own.
//!
//! This crate is the "ops" layer of kp, as candle-core is candle's: the layers that choose
//! between these ops and hold their parameters live in `kp-models` (`kp_models::nn`), the
//! architectures in `kp_models::models`.
//!
//! * [`conv_cpu::conv2d`]: blocked im2col + GEMM convolution with bias and ReLU fused and a
//!   hand-written backward; [`im2col`] its unfold/fold building blocks.
//! * [`conv_device::conv2d`]: candle's forward on any device with a backward made of
//!   convolutions (instead of candle's slow `conv_transpose2d`); cuDNN's with `cudnn`.
//! * [`relu::relu`]: a ReLU whose backward is one pass (one CUDA kernel with `cuda`).
//! * [`batchnorm`]: fused batch-normalisation kernels (statistics, normalise and its backward).
//! * [`maxpool`]: a max-pool whose gradient goes to the arg-max, as PyTorch's (candle's own
//!   `max_pool2d` backward is wrong).
//! * [`depthwise`] and [`pointwise`]: the two halves of a depthwise-separable unit (the
//!   direct 3x3 per channel, with its backward; the 1x1 as one GEMM on the input, no unfold).
//! * `winograd` (inside [`conv_cpu`], CPUs with AVX-512): 3x3 stride-1 convolutions of 64
//!   channels and more as Winograd F(2x2, 3x3), 2.25x fewer multiply-adds.
//! * [`softargmax`]: soft-argmax decoding in one pass per heatmap, for prediction.
//! * [`reduce`]: the fixed-order lane sums every kernel accumulates with (results do not depend
//!   on the number of threads).
//! * [`dispatch`]: which path the layers take (CPU kernels or device ops).
//! * `cuda_kernels` (feature `cuda`): the PTX kernels (`kernels.cu`, compiled by `build.rs` with
//!   `nvcc`) and a fused Adam step; `cudnn` (feature `cudnn`): cuDNN convolution, batch norm and
//!   max-pool.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//!
//! # fn main() -> candle_core::Result<()> {
//! // A 2x2 max-pool: the gradient goes to the window's maximum only.
//! let x = Var::from_tensor(&Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?)?;
//! let geometry = kp_ops::maxpool::Geometry { planes: 1, h: 2, w: 2, oh: 1, ow: 1, k: 2, s: 2, p: 0 };
//! let y = kp_ops::maxpool::max_pool2d(x.as_tensor(), geometry)?;
//! let grads = y.sum_all()?.backward()?;
//! let g = grads.get(x.as_tensor()).expect("x has a gradient");
//! assert_eq!(g.flatten_all()?.to_vec1::<f32>()?, [0., 0., 0., 1.]);
//!
//! // Convolution with bias and ReLU fused (the CPU kernel), then its gradients.
//! let w = Var::from_tensor(&Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?)?;
//! let img = Tensor::arange(0f32, 25., &Device::Cpu)?.reshape((1, 1, 5, 5))?;
//! let y = kp_ops::conv_cpu::conv2d(&img, w.as_tensor(), None, 1, 1, true)?;
//! assert_eq!(y.dims(), [1, 2, 5, 5]);
//! let grads = y.sum_all()?.backward()?;
//! assert_eq!(grads.get(w.as_tensor()).expect("w has a gradient").dims(), [2, 1, 3, 3]);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod batchnorm;
pub mod conv_cpu;
pub mod conv_device;
#[cfg(feature = "cuda")]
pub mod cuda_kernels;
#[cfg(feature = "cudnn")]
pub mod cudnn;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
mod direct;
pub mod dispatch;
pub mod im2col;
pub mod maxpool;
#[cfg(feature = "nccl")]
pub mod nccl;
mod outbuf;
pub mod pointwise;
pub mod reduce;
pub mod relu;
pub mod softargmax;
pub mod upsample;
mod vector;
mod winograd;
