//! The shape shared by the seed networks: a `conv` stack (Conv2d + ReLU, 2x2 max-pools), a
//! flatten, and an `mlp` (Linear, ReLU, Linear).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::conv::{Conv2d, Conv2dConfig, ConvInit};
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::maxpool::MaxPool2d;
use crate::sequential::Sequential;
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
