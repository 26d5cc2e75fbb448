//! An ordered container of layers, like PyTorch's `nn.Sequential`.
//!
//! Children are named by their index, so a layer pushed third is built under `vb.pp("2")` and
//! its parameters are saved as `<prefix>.2.weight`, as in a PyTorch state dict.

use candle_core::Tensor;

use crate::error::Result;
use crate::nn::batchnorm::BatchNorm2d;
use crate::nn::conv::Conv2d;
use crate::nn::linear::Linear;
use crate::nn::maxpool::MaxPool2d;
use crate::nn::upsample::Upsample;
use crate::onnx::graph::OnnxGraph;
use crate::summary::{py_bool, Describe, ModuleNode};

/// One layer of a [`Sequential`].
#[derive(Debug, Clone)]
pub enum Layer {
    /// A convolution.
    Conv2d(Conv2d),
    /// A fully connected layer.
    Linear(Linear),
    /// Batch normalisation.
    BatchNorm2d(BatchNorm2d),
    /// Max pooling (with the correct backward).
    MaxPool2d(MaxPool2d),
    /// Nearest-neighbour upsampling.
    Upsample(Upsample),
    /// Rectified linear unit; `inplace` only affects the printed repr.
    ReLU {
        /// Printed as `ReLU(inplace=True)` when set.
        inplace: bool,
    },
}

impl Layer {
    /// Applies the layer; `train` matters for batch norm only.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Layer::Conv2d(l) => l.forward(x),
            Layer::Linear(l) => l.forward(x),
            Layer::BatchNorm2d(l) => l.forward(x, train),
            Layer::MaxPool2d(l) => l.forward(x),
            Layer::Upsample(l) => l.forward(x),
            Layer::ReLU { .. } => Ok(kp_ops::relu::relu(x)?),
        }
    }
}

impl Layer {
    /// Writes the layer (in evaluation mode) into an ONNX graph.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        match self {
            Layer::Conv2d(l) => l.to_onnx(g, x),
            Layer::Linear(l) => l.to_onnx(g, x),
            Layer::BatchNorm2d(l) => l.to_onnx(g, x),
            Layer::MaxPool2d(l) => l.to_onnx(g, x),
            Layer::Upsample(l) => l.to_onnx(g, x),
            Layer::ReLU { .. } => Ok(g.relu(x)),
        }
    }
}

impl Describe for Layer {
    fn describe(&self) -> ModuleNode {
        match self {
            Layer::Conv2d(l) => l.describe(),
            Layer::Linear(l) => l.describe(),
            Layer::BatchNorm2d(l) => l.describe(),
            Layer::MaxPool2d(l) => l.describe(),
            Layer::Upsample(l) => l.describe(),
            Layer::ReLU { inplace } => relu_node(*inplace),
        }
    }
}

/// The repr node of a ReLU.
pub fn relu_node(inplace: bool) -> ModuleNode {
    let extra = if inplace {
        format!("inplace={}", py_bool(true))
    } else {
        String::new()
    };
    ModuleNode::leaf("ReLU", extra, 0)
}

impl From<Conv2d> for Layer {
    fn from(l: Conv2d) -> Self {
        Layer::Conv2d(l)
    }
}

impl From<Linear> for Layer {
    fn from(l: Linear) -> Self {
        Layer::Linear(l)
    }
}

impl From<BatchNorm2d> for Layer {
    fn from(l: BatchNorm2d) -> Self {
        Layer::BatchNorm2d(l)
    }
}

impl From<MaxPool2d> for Layer {
    fn from(l: MaxPool2d) -> Self {
        Layer::MaxPool2d(l)
    }
}

impl From<Upsample> for Layer {
    fn from(l: Upsample) -> Self {
        Layer::Upsample(l)
    }
}

/// Layers applied in order.
#[derive(Debug, Clone, Default)]
pub struct Sequential {
    layers: Vec<Layer>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index (and so the state-dict name) the next pushed layer will get.
    pub fn next_index(&self) -> String {
        self.layers.len().to_string()
    }

    /// Appends a layer.
    pub fn push(&mut self, layer: impl Into<Layer>) {
        self.layers.push(layer.into());
    }

    /// Appends a ReLU.
    pub fn push_relu(&mut self, inplace: bool) {
        self.layers.push(Layer::ReLU { inplace });
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Applies every layer in order; a convolution followed by a ReLU runs as one fused op.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let mut layers = self.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            x = match (layer, layers.peek()) {
                (Layer::Conv2d(conv), Some(Layer::ReLU { .. })) => {
                    layers.next();
                    conv.forward_relu(&x)?
                }
                _ => layer.forward(&x, train)?,
            };
        }
        Ok(x)
    }
}

impl Sequential {
    /// Writes every layer (in evaluation mode) into an ONNX graph, in order.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let mut y = x.to_string();
        for layer in &self.layers {
            y = layer.to_onnx(g, &y)?;
        }
        Ok(y)
    }
}

impl Describe for Sequential {
    fn describe(&self) -> ModuleNode {
        ModuleNode::sequential(self.layers.iter().map(|l| l.describe()).collect())
    }
}
