//! The seed networks' family: a `conv` stack (Conv2d + ReLU, 2x2 max-pools), a flatten, and an
//! `mlp` (Linear, ReLU, Linear). [`ConvMlpNet`] is the network; a member of the family is a
//! config type implementing [`ConvMlpFamily`] ([`NoseTipNetConfig`](super::nose::NoseTipNetConfig),
//! [`FaceKeypointNetConfig`](super::face::FaceKeypointNetConfig)), which names its layers.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::models::registry::{KeypointModel, ModelConfig};
use crate::nn::conv::{Conv2d, Conv2dConfig, ConvInit};
use crate::nn::linear::Linear;
use crate::nn::maxpool::MaxPool2d;
use crate::nn::sequential::Sequential;
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{Describe, ModuleNode};

/// One step of the convolutional stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A stride-1, unpadded convolution followed by a ReLU.
    Conv {
        /// Output channels.
        out: usize,
        /// Kernel size.
        kernel: usize,
    },
    /// A 2x2, stride-2 max-pool.
    Pool,
}

/// Input size and layer sizes of a conv + MLP network.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvMlpSpec {
    /// Printed class name (`NoseTipNet`, ...).
    pub type_name: &'static str,
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// The convolutional stack.
    pub stages: Vec<Stage>,
    /// Hidden units of the MLP.
    pub hidden: usize,
    /// Outputs (2 per keypoint).
    pub outputs: usize,
}

impl ConvMlpSpec {
    /// `(channels, height, width)` after the convolutional stack.
    pub fn feature_shape(&self) -> Result<(usize, usize, usize)> {
        let pool = MaxPool2d::default();
        let (mut c, mut h, mut w) = (self.in_channels, self.height, self.width);
        for stage in &self.stages {
            match *stage {
                Stage::Conv { out, kernel } => {
                    if h < kernel || w < kernel {
                        return Err(Error::Config(format!(
                            "{}: a {h}x{w} feature map is too small for a {kernel}x{kernel} conv \
                             (input {}x{})",
                            self.type_name, self.height, self.width
                        )));
                    }
                    (c, h, w) = (out, h - kernel + 1, w - kernel + 1);
                }
                Stage::Pool => {
                    (h, w) = pool.output_size(h, w).map_err(|e| {
                        Error::Config(format!(
                            "{}: {e} (input {}x{})",
                            self.type_name, self.height, self.width
                        ))
                    })?;
                }
            }
        }
        Ok((c, h, w))
    }

    /// Number of features entering the MLP.
    pub fn flatten_size(&self) -> Result<usize> {
        let (c, h, w) = self.feature_shape()?;
        Ok(c * h * w)
    }
}

/// A conv stack, a flatten and an MLP.
#[derive(Debug, Clone)]
pub struct ConvMlp {
    spec: ConvMlpSpec,
    conv: Sequential,
    mlp: Sequential,
}

impl ConvMlp {
    /// Builds the layers under `vb.pp("conv")` and `vb.pp("mlp")`.
    pub fn new(vb: VarBuilder, spec: ConvMlpSpec) -> Result<Self> {
        if spec.in_channels == 0 || spec.hidden == 0 || spec.outputs == 0 {
            return Err(Error::Config(format!(
                "{}: channels, hidden units and outputs must be positive",
                spec.type_name
            )));
        }
        let flatten = spec.flatten_size()?;
        let vb_conv = vb.pp("conv");
        let mut conv = Sequential::new();
        let mut c = spec.in_channels;
        for stage in &spec.stages {
            match *stage {
                Stage::Conv { out, kernel } => {
                    let layer = Conv2d::new(
                        vb_conv.pp(conv.next_index()),
                        c,
                        out,
                        kernel,
                        Conv2dConfig::default(),
                        ConvInit::TorchDefault,
                    )?;
                    conv.push(layer);
                    conv.push_relu(false);
                    c = out;
                }
                Stage::Pool => conv.push(MaxPool2d::default()),
            }
        }
        let vb_mlp = vb.pp("mlp");
        let mut mlp = Sequential::new();
        mlp.push(Linear::new(
            vb_mlp.pp(mlp.next_index()),
            flatten,
            spec.hidden,
            true,
        )?);
        mlp.push_relu(false);
        mlp.push(Linear::new(
            vb_mlp.pp(mlp.next_index()),
            spec.hidden,
            spec.outputs,
            true,
        )?);
        Ok(Self { spec, conv, mlp })
    }

    /// The sizes.
    pub fn spec(&self) -> &ConvMlpSpec {
        &self.spec
    }

    /// The convolutional feature map `(B, C, h, w)` of an NCHW batch.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let s = &self.spec;
        if (c, h, w) != (s.in_channels, s.height, s.width) {
            return Err(Error::Shape(format!(
                "{} expects input (B, {}, {}, {}), got {:?}",
                s.type_name,
                s.in_channels,
                s.height,
                s.width,
                x.dims()
            )));
        }
        self.conv.forward(x, false)
    }

    /// `(B, outputs)` for an NCHW batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.features(x)?.flatten_from(1)?;
        self.mlp.forward(&f, false)
    }

    /// [`Self::forward`] as ONNX nodes reading `x`.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let f = self.conv.to_onnx(g, x)?;
        let f = g.node("Flatten", &[&f], vec![Attr::Int("axis", 1)]);
        self.mlp.to_onnx(g, &f)
    }
}

impl Describe for ConvMlp {
    fn describe(&self) -> ModuleNode {
        ModuleNode::container(
            self.spec.type_name,
            vec![
                ("conv".into(), self.conv.describe()),
                ("mlp".into(), self.mlp.describe()),
            ],
        )
    }
}

/// A member of the conv + MLP family: a config with the family's sizes (input channels, width,
/// height, keypoints, hidden units) that names its layers.
pub trait ConvMlpFamily: Copy + std::fmt::Debug + Default + Send + Sync + 'static {
    /// The registry name (`"nosetipnet"`, ...).
    const NAME: &'static str;
    /// The layer specification.
    fn spec(&self) -> ConvMlpSpec;
    /// The registry's sizes of this config.
    fn model_config(&self) -> ModelConfig;
    /// The default config with the registry's sizes `cfg` (the hidden units stay the default).
    fn from_model_config(cfg: &ModelConfig) -> Self;
}

/// Implements [`ConvMlpFamily`]'s size conversions for a config struct with the family's
/// fields (`in_channels`, `width`, `height`, `num_keypoints`, `hidden`).
macro_rules! conv_mlp_sizes {
    () => {
        fn model_config(&self) -> $crate::models::registry::ModelConfig {
            $crate::models::registry::ModelConfig {
                in_channels: self.in_channels,
                num_keypoints: self.num_keypoints,
                width: self.width,
                height: self.height,
                channel_multiplier: 1.0,
            }
        }

        fn from_model_config(cfg: &$crate::models::registry::ModelConfig) -> Self {
            Self {
                in_channels: cfg.in_channels,
                width: cfg.width,
                height: cfg.height,
                num_keypoints: cfg.num_keypoints,
                ..Default::default()
            }
        }
    };
}
pub(crate) use conv_mlp_sizes;

/// A network of the conv + MLP family with its config `C`.
#[derive(Debug, Clone)]
pub struct ConvMlpNet<C> {
    config: C,
    net: ConvMlp,
}

impl<C: ConvMlpFamily> ConvMlpNet<C> {
    /// Builds the network under `vb` (`conv.0.weight`, ..., `mlp.2.bias`).
    pub fn new(vb: VarBuilder, config: C) -> Result<Self> {
        Ok(Self {
            config,
            net: ConvMlp::new(vb, config.spec())?,
        })
    }

    /// The sizes.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// Features entering the MLP.
    pub fn flatten_size(&self) -> usize {
        self.config.spec().flatten_size().unwrap_or(0)
    }

    /// `(B, 2 * num_keypoints)` for a `(B, C, H, W)` batch. The network has no batch norm or
    /// dropout, so `train` does not change the result.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _ = train;
        self.net.forward(x)
    }
}

impl<C> Describe for ConvMlpNet<C> {
    fn describe(&self) -> ModuleNode {
        self.net.describe()
    }
}

impl<C: ConvMlpFamily> KeypointModel for ConvMlpNet<C> {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        ConvMlpNet::forward(self, x, train)
    }
    fn num_keypoints(&self) -> usize {
        self.config.model_config().num_keypoints
    }
    fn input_size(&self) -> (usize, usize) {
        let cfg = self.config.model_config();
        (cfg.width, cfg.height)
    }
    fn name(&self) -> &str {
        C::NAME
    }
    fn describe(&self) -> ModuleNode {
        Describe::describe(self)
    }
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        self.net.to_onnx(g, x)
    }
}
