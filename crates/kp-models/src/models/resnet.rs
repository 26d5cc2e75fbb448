//! ResNet18 in torchvision's layout, with a configurable number of input channels and outputs.
//!
//! Parameter names match `torchvision.models.resnet18` (`conv1.weight`, `bn1.running_mean`,
//! `layer2.0.downsample.0.weight`, `fc.bias`, ...), so a saved `model.safetensors` loads into
//! `resnet18(num_classes=136)` with `conv1` replaced by a 1-channel conv. Initialisation follows
//! torchvision: Kaiming-normal (fan-out) convs, BN weight 1 and bias 0, PyTorch-default `fc`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::batchnorm::{BatchNorm2d, BatchNormConfig};
use crate::nn::conv::{Conv2d, Conv2dConfig, ConvInit};
use crate::nn::linear::Linear;
use crate::nn::maxpool::MaxPool2d;
use crate::nn::sequential::relu_node;
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{Describe, ModuleNode};
use kp_ops::relu::relu;

/// Sizes of a [`ResNet18`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResNet18Config {
    /// Input channels (1, grayscale).
    pub in_channels: usize,
    /// Outputs of `fc` (136 = 68 keypoints x 2).
    pub num_outputs: usize,
    /// Residual stages built (1 to 4; 4 is the full network).
    pub stages: usize,
    /// Whether to build the average pool and `fc` (false for a feature backbone).
    pub head: bool,
}

impl Default for ResNet18Config {
    fn default() -> Self {
        Self {
            in_channels: 1,
            num_outputs: 136,
            stages: 4,
            head: true,
        }
    }
}

impl ResNet18Config {
    /// Channels of the last built stage (64, 128, 256 or 512).
    pub fn feature_channels(&self) -> usize {
        64 << (self.stages.clamp(1, 4) - 1)
    }

    /// Total downsampling of the last built stage (4, 8, 16 or 32).
    pub fn feature_stride(&self) -> usize {
        2 << self.stages.clamp(1, 4)
    }
}

fn conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<Conv2d> {
    Conv2d::new(
        vb,
        cin,
        cout,
        k,
        Conv2dConfig {
            stride,
            padding: pad,
            bias: false,
        },
        ConvInit::KaimingNormalFanOut,
    )
}

fn bn(vb: VarBuilder, c: usize) -> Result<BatchNorm2d> {
    BatchNorm2d::new(vb, c, BatchNormConfig::default())
}

/// torchvision's `BasicBlock`: two 3x3 conv + BN, a shortcut (1x1 conv + BN when the shape
/// changes) and ReLUs.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    /// Builds a block under `vb` (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.0/1`).
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        let downsample = if stride != 1 || cin != cout {
            let vd = vb.pp("downsample");
            Some((
                conv(vd.pp("0"), cin, cout, 1, stride, 0)?,
                bn(vd.pp("1"), cout)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(vb.pp("conv1"), cin, cout, 3, stride, 1)?,
            bn1: bn(vb.pp("bn1"), cout)?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            bn2: bn(vb.pp("bn2"), cout)?,
            downsample,
        })
    }

    /// Applies the block.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let out = relu(&self.bn1.forward(&self.conv1.forward(x)?, train)?)?;
        let out = self.bn2.forward(&self.conv2.forward(&out)?, train)?;
        let identity = match &self.downsample {
            Some((c, b)) => b.forward(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        Ok(relu(&(out + identity)?)?)
    }

    /// [`Self::forward`] in evaluation mode as ONNX nodes.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let out = self.conv1.to_onnx(g, x)?;
        let out = self.bn1.to_onnx(g, &out)?;
        let out = g.relu(&out);
        let out = self.conv2.to_onnx(g, &out)?;
        let out = self.bn2.to_onnx(g, &out)?;
        let identity = match &self.downsample {
            Some((c, b)) => {
                let y = c.to_onnx(g, x)?;
                b.to_onnx(g, &y)?
            }
            None => x.to_string(),
        };
        let sum = g.add(&out, &identity);
        Ok(g.relu(&sum))
    }
}

impl Describe for BasicBlock {
    fn describe(&self) -> ModuleNode {
        let mut children = vec![
            ("conv1".to_string(), self.conv1.describe()),
            ("bn1".to_string(), self.bn1.describe()),
            ("relu".to_string(), relu_node(true)),
            ("conv2".to_string(), self.conv2.describe()),
            ("bn2".to_string(), self.bn2.describe()),
        ];
        if let Some((c, b)) = &self.downsample {
            children.push((
                "downsample".into(),
                ModuleNode::sequential(vec![c.describe(), b.describe()]),
            ));
        }
        ModuleNode::container("BasicBlock", children)
    }
}

/// torchvision's ResNet18 (optionally truncated after a stage and without the head).
#[derive(Debug, Clone)]
pub struct ResNet18 {
    config: ResNet18Config,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    maxpool: MaxPool2d,
    layers: Vec<Vec<BasicBlock>>,
    fc: Option<Linear>,
}

impl ResNet18 {
    /// Builds the network under `vb`.
    pub fn new(vb: VarBuilder, config: ResNet18Config) -> Result<Self> {
        if config.in_channels == 0 || !(1..=4).contains(&config.stages) {
            return Err(Error::Config(format!(
                "resnet18 needs in_channels > 0 and 1..=4 stages ({config:?})"
            )));
        }
        if config.head && config.num_outputs == 0 {
            return Err(Error::Config("resnet18 needs num_outputs > 0".into()));
        }
        let conv1 = conv(vb.pp("conv1"), config.in_channels, 64, 7, 2, 3)?;
        let bn1 = bn(vb.pp("bn1"), 64)?;
        let mut layers = Vec::with_capacity(config.stages);
        let mut cin = 64;
        for stage in 0..config.stages {
            let cout = 64 << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let vl = vb.pp(format!("layer{}", stage + 1));
            layers.push(vec![
                BasicBlock::new(vl.pp("0"), cin, cout, stride)?,
                BasicBlock::new(vl.pp("1"), cout, cout, 1)?,
            ]);
            cin = cout;
        }
        let fc = if config.head {
            Some(Linear::new(vb.pp("fc"), cin, config.num_outputs, true)?)
        } else {
            None
        };
        Ok(Self {
            config,
            conv1,
            bn1,
            maxpool: MaxPool2d::new(3, 2, 1),
            layers,
            fc,
        })
    }

    /// The sizes.
    pub fn config(&self) -> &ResNet18Config {
        &self.config
    }

    /// The feature map after stage `stage` (1..=built stages), `(B, 64 * 2^(stage-1), H/2^(stage+1), W/2^(stage+1))`.
    pub fn features_at(&self, x: &Tensor, train: bool, stage: usize) -> Result<Tensor> {
        if !(1..=self.layers.len()).contains(&stage) {
            return Err(Error::Config(format!(
                "resnet18 has stages 1..={}, asked for {stage}",
                self.layers.len()
            )));
        }
        let c = x.dim(1)?;
        if x.rank() != 4 || c != self.config.in_channels {
            return Err(Error::Shape(format!(
                "resnet18 expects (B, {}, H, W), got {:?}",
                self.config.in_channels,
                x.dims()
            )));
        }
        let mut x = relu(&self.bn1.forward(&self.conv1.forward(x)?, train)?)?;
        x = self.maxpool.forward(&x)?;
        for blocks in &self.layers[..stage] {
            for block in blocks {
                x = block.forward(&x, train)?;
            }
        }
        Ok(x)
    }

    /// The feature map of the last built stage (layer4 for the full network).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.features_at(x, train, self.layers.len())
    }

    /// [`Self::features`] in evaluation mode as ONNX nodes reading `x`.
    pub fn features_to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let y = self.conv1.to_onnx(g, x)?;
        let y = self.bn1.to_onnx(g, &y)?;
        let y = g.relu(&y);
        let mut y = self.maxpool.to_onnx(g, &y)?;
        for block in self.layers.iter().flatten() {
            y = block.to_onnx(g, &y)?;
        }
        Ok(y)
    }

    /// [`Self::forward`] in evaluation mode as ONNX nodes: features, `GlobalAveragePool`,
    /// `Flatten`, `fc`.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let fc = self
            .fc
            .as_ref()
            .ok_or_else(|| Error::Config("this resnet18 was built without a head".into()))?;
        let f = self.features_to_onnx(g, x)?;
        let pooled = g.node("GlobalAveragePool", &[&f], Vec::new());
        let flat = g.node("Flatten", &[&pooled], vec![Attr::Int("axis", 1)]);
        fc.to_onnx(g, &flat)
    }

    /// `(B, num_outputs)`: features, global average pool, `fc`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let fc = self
            .fc
            .as_ref()
            .ok_or_else(|| Error::Config("this resnet18 was built without a head".into()))?;
        let f = self.features(x, train)?;
        let pooled = f.mean((2, 3))?;
        fc.forward(&pooled)
    }
}

impl Describe for ResNet18 {
    fn describe(&self) -> ModuleNode {
        let mut children = vec![
            ("conv1".to_string(), self.conv1.describe()),
            ("bn1".to_string(), self.bn1.describe()),
            ("relu".to_string(), relu_node(true)),
            ("maxpool".to_string(), self.maxpool.describe()),
        ];
        for (i, blocks) in self.layers.iter().enumerate() {
            children.push((
                format!("layer{}", i + 1),
                ModuleNode::sequential(blocks.iter().map(|b| b.describe()).collect()),
            ));
        }
        if let Some(fc) = &self.fc {
            children.push((
                "avgpool".into(),
                ModuleNode::leaf("AdaptiveAvgPool2d", "output_size=(1, 1)", 0),
            ));
            children.push(("fc".into(), fc.describe()));
        }
        ModuleNode::container("ResNet", children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn torchvision_names_and_counts() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = ResNet18::new(vb, ResNet18Config::default()).unwrap();
        let data = vm.data().lock().unwrap();
        for name in [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.running_var",
            "layer1.1.conv2.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_mean",
            "layer4.1.bn2.bias",
            "fc.weight",
            "fc.bias",
        ] {
            assert!(data.contains_key(name), "{name}");
        }
        assert!(!data.contains_key("layer1.0.downsample.0.weight"));
        assert!(!data.contains_key("conv1.bias"));
        // torchvision resnet18 state dict: 62 parameters + 20 BNs x 3 buffers = 122 entries.
        assert_eq!(data.len(), 122);
        assert_eq!(data["conv1.weight"].dims(), [64, 1, 7, 7]);
        assert_eq!(data["fc.weight"].dims(), [136, 512]);
        // 11,689,512 for 3 channels / 1000 classes, minus 64*2*49 and 512*864 + 864.
        assert_eq!(net.describe().total_params(), 11_240_008);
        let repr = net.describe().torch_repr();
        assert!(repr.starts_with("ResNet(\n  (conv1): Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)\n"));
        assert!(repr.contains(
            "(maxpool): MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"
        ));
        assert!(
            repr.contains("(0): Conv2d(256, 512, kernel_size=(1, 1), stride=(2, 2), bias=False)")
        );
        assert!(repr.contains("(avgpool): AdaptiveAvgPool2d(output_size=(1, 1))"));
        assert!(repr.contains("(fc): Linear(in_features=512, out_features=136, bias=True)"));
    }

    #[test]
    fn feature_shapes_and_outputs() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = ResNet18::new(vb, ResNet18Config::default()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 48, 32), &Device::Cpu).unwrap();
        assert_eq!(net.features(&x, false).unwrap().dims(), [2, 512, 2, 1]);
        assert_eq!(
            net.features_at(&x, false, 1).unwrap().dims(),
            [2, 64, 12, 8]
        );
        assert_eq!(
            net.features_at(&x, false, 3).unwrap().dims(),
            [2, 256, 3, 2]
        );
        assert!(net.features_at(&x, false, 5).is_err());
        assert_eq!(net.forward(&x, true).unwrap().dims(), [2, 136]);
        assert_eq!(
            vm.data().lock().unwrap()["layer3.1.bn2.num_batches_tracked"]
                .as_tensor()
                .to_scalar::<i64>()
                .unwrap(),
            1
        );
        assert!(net
            .forward(&x.repeat((1, 3, 1, 1)).unwrap(), false)
            .is_err());
    }

    #[test]
    fn truncated_backbone() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = ResNet18Config {
            stages: 3,
            head: false,
            ..Default::default()
        };
        let net = ResNet18::new(vb, cfg).unwrap();
        assert_eq!(cfg.feature_channels(), 256);
        assert_eq!(cfg.feature_stride(), 16);
        let data = vm.data().lock().unwrap();
        assert!(!data
            .keys()
            .any(|k| k.starts_with("layer4") || k.starts_with("fc")));
        drop(data);
        let x = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.features(&x, false).unwrap().dims(), [1, 256, 2, 2]);
        assert!(net.forward(&x, false).is_err());
    }
}
