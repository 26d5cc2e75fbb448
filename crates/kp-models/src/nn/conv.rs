//! 2-D convolution layer (PyTorch `nn.Conv2d` semantics, square kernels, no groups/dilation).
//!
//! On the CPU the convolution runs as kp's fused op ([`kp_ops::conv_cpu`]: blocked im2col + GEMM
//! with bias and ReLU fused, and a hand-written backward), much faster than candle's; on other
//! devices it uses candle's `conv2d`.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::init::torch_default;
use crate::onnx::graph::OnnxGraph;
use crate::summary::{py_bool, Describe, ModuleNode};

/// When set, CPU convolutions use candle's own `conv2d` (the slower path kp replaced), for
/// before/after benchmarks and cross-checks.
static CANDLE_CONV_ON_CPU: AtomicBool = AtomicBool::new(false);

/// Makes every [`Conv2d`] on the CPU use candle's `conv2d` (`true`) or kp's unfold + GEMM path
/// (`false`, the default). Process-wide; meant for benchmarks.
pub fn use_candle_conv_on_cpu(on: bool) {
    CANDLE_CONV_ON_CPU.store(on, Ordering::Relaxed);
}

/// Stride, padding and bias of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dConfig {
    /// Step between output positions.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Default for Conv2dConfig {
    /// Stride 1, no padding, with bias (PyTorch's defaults).
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            bias: true,
        }
    }
}

/// How a convolution's weight is initialised (the bias always uses PyTorch's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvInit {
    /// PyTorch's default, `U(±1/sqrt(fan_in))`.
    #[default]
    TorchDefault,
    /// torchvision ResNet: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
    KaimingNormalFanOut,
}

/// A 2-D convolution over NCHW tensors; weight `(out, in, k, k)`, bias `(out)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    config: Conv2dConfig,
}

impl Conv2d {
    /// Creates (or loads) `weight` and `bias` under `vb`.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        init: ConvInit,
    ) -> Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 || config.stride == 0 {
            return Err(Error::Config(format!(
                "conv2d needs positive channels, kernel and stride ({in_channels}, {out_channels}, \
                 {kernel}, {config:?})"
            )));
        }
        let fan_in = in_channels * kernel * kernel;
        let w_init = match init {
            ConvInit::TorchDefault => torch_default(fan_in),
            ConvInit::KaimingNormalFanOut => crate::nn::init::kaiming_normal_fan_out(),
        };
        let weight = vb.get_with_hints(
            (out_channels, in_channels, kernel, kernel),
            "weight",
            w_init,
        )?;
        let bias = if config.bias {
            Some(vb.get_with_hints(out_channels, "bias", torch_default(fan_in))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            config,
        })
    }

    /// Builds a layer from existing tensors (weight `(out, in, k, k)`).
    pub fn from_tensors(
        weight: Tensor,
        bias: Option<Tensor>,
        config: Conv2dConfig,
    ) -> Result<Self> {
        let (out_channels, in_channels, kh, kw) = weight.dims4()?;
        if kh != kw {
            return Err(Error::Shape(format!(
                "conv2d kernel must be square, got {kh}x{kw}"
            )));
        }
        if let Some(b) = &bias {
            if b.dims() != [out_channels] {
                return Err(Error::Shape(format!(
                    "conv2d bias shape {:?}, expected [{out_channels}]",
                    b.dims()
                )));
            }
        }
        Ok(Self {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel: kh,
            config,
        })
    }

    /// The weight `(out, in, k, k)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding and bias.
    pub fn config(&self) -> Conv2dConfig {
        self.config
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Kernel size.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Output `(height, width)` for an input of `(height, width)`.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.config.stride, self.config.padding);
        if h + 2 * p < k || w + 2 * p < k {
            return Err(Error::Shape(format!(
                "conv2d input {h}x{w} (+2x{p} padding) is smaller than the kernel {k}"
            )));
        }
        Ok(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
    }

    /// Convolves an NCHW tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, false)
    }

    /// `relu(conv(x))`, fused into one op on the CPU (the activation of the seed networks).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, true)
    }

    fn forward_fused(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.in_channels {
            return Err(Error::Shape(format!(
                "conv2d expects {} input channels, got {c}",
                self.in_channels
            )));
        }
        let (s, p) = (self.config.stride, self.config.padding);
        let y = if kp_ops::dispatch::uses_cpu_kernels(x.device()) {
            if !CANDLE_CONV_ON_CPU.load(Ordering::Relaxed) {
                return Ok(kp_ops::conv_cpu::conv2d(
                    x,
                    &self.weight,
                    self.bias.as_ref(),
                    s,
                    p,
                    relu,
                )?);
            }
            self.forward_candle(x)?
        } else if kp_ops::conv_device::gpu_backward() == kp_ops::conv_device::GpuBackward::Candle {
            self.forward_candle(x)?
        } else {
            kp_ops::conv_device::conv2d(x, &self.weight, s, p)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, self.out_channels, 1, 1))?)?,
            None => y,
        };
        Ok(if relu { y.relu()? } else { y })
    }

    /// The convolution (without bias) through candle's own `conv2d`: the path on GPUs, and the
    /// reference the CPU path is tested against.
    pub fn forward_candle(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (s, p) = (self.config.stride, self.config.padding);
        // candle's conv2d backward derives one `output_padding` from the height and applies it
        // to both axes; when the leftover rows and columns differ (stride > 1), pad explicitly
        // and crop so that the convolution covers its input exactly.
        let rem_h = (h + 2 * p - self.kernel) % s;
        let rem_w = (w + 2 * p - self.kernel) % s;
        let y = if rem_h != rem_w {
            let (oh, ow) = self.output_size(h, w)?;
            let used_h = (oh - 1) * s + self.kernel;
            let used_w = (ow - 1) * s + self.kernel;
            let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
            let xp = xp.narrow(2, 0, used_h)?.narrow(3, 0, used_w)?;
            xp.conv2d(&self.weight, 0, s, 1, 1)?
        } else {
            x.conv2d(&self.weight, p, s, 1, 1)?
        };
        Ok(y)
    }

    /// Writes the layer into an ONNX graph reading `x` ([`crate::onnx::graph`]); returns its
    /// output.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let c = self.config;
        g.conv(x, &self.weight, self.bias.as_ref(), c.stride, c.padding, 1)
    }

    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }
}

impl Describe for Conv2d {
    fn describe(&self) -> ModuleNode {
        let k = self.kernel;
        let s = self.config.stride;
        let mut extra = format!(
            "{}, {}, kernel_size=({k}, {k}), stride=({s}, {s})",
            self.in_channels, self.out_channels
        );
        if self.config.padding > 0 {
            let p = self.config.padding;
            extra.push_str(&format!(", padding=({p}, {p})"));
        }
        if !self.config.bias {
            extra.push_str(&format!(", bias={}", py_bool(false)));
        }
        ModuleNode::leaf("Conv2d", extra, self.num_params())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn names_shapes_and_repr() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = Conv2d::new(
            vb.pp("c"),
            3,
            8,
            3,
            Conv2dConfig {
                stride: 2,
                padding: 1,
                bias: false,
            },
            ConvInit::TorchDefault,
        )
        .unwrap();
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert_eq!(names, ["c.weight"]);
        assert_eq!(
            conv.describe().torch_repr(),
            "Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"
        );
        let x = Tensor::zeros((2, 3, 9, 10), DType::F32, &Device::Cpu).unwrap();
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims(), [2, 8, 5, 5]);
        assert_eq!(conv.output_size(9, 10).unwrap(), (5, 5));
    }

    #[test]
    fn mixed_parity_stride_two_backward() {
        // 7 rows and 8 columns with a 3x3/2/1 conv leave 0 rows but 1 column over; candle's
        // own backward derives one output padding from the height and fails here.
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (1, 2, 7, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let direct = x.as_tensor().conv2d(&w, 1, 2, 1, 1).unwrap();
        let direct_grad = direct.sum_all().unwrap().backward();
        assert!(
            direct_grad.is_err()
                || direct_grad.unwrap().get(x.as_tensor()).unwrap().dims() != [1, 2, 7, 8]
        );
        let conv = Conv2d::from_tensors(
            w,
            None,
            Conv2dConfig {
                stride: 2,
                padding: 1,
                bias: false,
            },
        )
        .unwrap();
        let y = conv.forward(x.as_tensor()).unwrap();
        let a = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = direct.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().dims(), [1, 2, 7, 8]);
    }

    #[test]
    fn bias_bound_uses_full_fan_in() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = Conv2d::new(
            vb,
            16,
            512,
            5,
            Conv2dConfig::default(),
            ConvInit::TorchDefault,
        )
        .unwrap();
        let bound = 1.0 / (16.0f32 * 25.0).sqrt();
        for t in [conv.weight(), conv.bias().unwrap()] {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max <= bound && max > 0.8 * bound, "max {max} bound {bound}");
        }
    }
}
