//! Depthwise 3x3 convolution layer (PyTorch `nn.Conv2d(c, c, 3, padding=1, groups=c)`): one
//! filter per channel, the spatial half of a depthwise-separable unit.
//!
//! The layer only chooses the kernel: kp-ops' direct 3x3 loop (with its backward) on the CPU,
//! candle's grouped `conv2d` elsewhere ([`kp_ops::depthwise::depthwise_conv2d`]). A layer
//! without a bias (followed by batch norm) passes a zero bias to the kernel.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::nn::init::torch_default;
use crate::onnx::graph::OnnxGraph;
use crate::summary::{py_bool, Describe, ModuleNode};

/// `Conv2d(c, c, kernel_size=3, padding=1, groups=c)`, stride 1.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    zeros: Tensor,
}

impl DepthwiseConv2d {
    /// Creates (or loads) `weight` `(c, 1, 3, 3)` and, with `bias`, `bias` `(c)` under `vb`
    /// (PyTorch's default initialisation, fan-in 9).
    pub fn new(vb: VarBuilder, channels: usize, bias: bool) -> Result<Self> {
        if channels == 0 {
            return Err(Error::Config("depthwise conv2d needs channels > 0".into()));
        }
        let weight = vb.get_with_hints((channels, 1, 3, 3), "weight", torch_default(9))?;
        let bias = bias
            .then(|| vb.get_with_hints(channels, "bias", torch_default(9)))
            .transpose()?;
        let zeros = Tensor::zeros(channels, weight.dtype(), weight.device())?;
        Ok(Self {
            weight,
            bias,
            zeros,
        })
    }

    /// A layer from tensors: `weight (c, 1, 3, 3)`, `bias (c)` (e.g. batch norm folded in).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (c, one, kh, kw) = weight.dims4()?;
        if (one, kh, kw) != (1, 3, 3) || bias.as_ref().is_some_and(|b| b.dims() != [c]) {
            return Err(Error::Shape(format!(
                "depthwise conv2d wants weight (c, 1, 3, 3) and bias (c), got {:?} and {:?}",
                weight.dims(),
                bias.as_ref().map(|b| b.dims().to_vec())
            )));
        }
        let zeros = Tensor::zeros(c, weight.dtype(), weight.device())?;
        Ok(Self {
            weight,
            bias,
            zeros,
        })
    }

    /// The filters `(c, 1, 3, 3)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Channels in (and out).
    pub fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `relu?(conv(x) + b)`, bias and ReLU fused on the CPU.
    pub fn forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let b = self.bias.as_ref().unwrap_or(&self.zeros);
        Ok(kp_ops::depthwise::depthwise_conv2d(
            x,
            &self.weight,
            b,
            1,
            1,
            relu,
        )?)
    }

    /// `relu?(conv(x) + b) + residual`: for prediction on the CPU one fused pass
    /// ([`kp_ops::depthwise::depthwise_conv2d_add`]); while anything tracks gradients, the
    /// differentiable [`Self::forward`] and an add.
    pub fn forward_add(&self, x: &Tensor, relu: bool, residual: &Tensor) -> Result<Tensor> {
        let tracked = [x, residual, &self.weight]
            .into_iter()
            .chain(self.bias.as_ref())
            .any(Tensor::track_op);
        if tracked {
            return Ok((self.forward(x, relu)? + residual)?);
        }
        let b = self.bias.as_ref().unwrap_or(&self.zeros);
        Ok(kp_ops::depthwise::depthwise_conv2d_add(
            x,
            &self.weight,
            b,
            relu,
            residual,
        )?)
    }

    /// Writes `relu?(conv(x) + b)` into an ONNX graph: a `Conv` with one group per channel.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str, relu: bool) -> Result<String> {
        let y = g.conv(x, &self.weight, self.bias.as_ref(), 1, 1, self.channels())?;
        Ok(if relu { g.relu(&y) } else { y })
    }

    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }
}

impl Describe for DepthwiseConv2d {
    fn describe(&self) -> ModuleNode {
        let c = self.channels();
        let mut extra =
            format!("{c}, {c}, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups={c}");
        if self.bias.is_none() {
            extra.push_str(&format!(", bias={}", py_bool(false)));
        }
        ModuleNode::leaf("Conv2d", extra, self.num_params())
    }
}
