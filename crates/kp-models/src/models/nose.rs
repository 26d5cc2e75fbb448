//! `NoseTipNet`: the seed's nose-tip regressor (1x60x80 input, 2 outputs).
//!
//! ```text
//! conv: Conv2d(1,16,3) ReLU MaxPool(2) Conv2d(16,32,3) ReLU MaxPool(2) Conv2d(32,32,3) ReLU MaxPool(2)
//! mlp:  Linear(1280,512) ReLU Linear(512,2)
//! ```

use serde::{Deserialize, Serialize};

use crate::models::convmlp::{conv_mlp_sizes, ConvMlpFamily, ConvMlpNet, ConvMlpSpec, Stage};

/// Sizes of a [`NoseTipNet`]; the defaults are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoseTipNetConfig {
    /// Input channels (1, grayscale).
    pub in_channels: usize,
    /// Input width (80).
    pub width: usize,
    /// Input height (60).
    pub height: usize,
    /// Keypoints predicted (1, the nose tip).
    pub num_keypoints: usize,
    /// Hidden units of the MLP (512).
    pub hidden: usize,
}

impl Default for NoseTipNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            width: 80,
            height: 60,
            num_keypoints: 1,
            hidden: 512,
        }
    }
}

impl ConvMlpFamily for NoseTipNetConfig {
    const NAME: &'static str = "nosetipnet";

    conv_mlp_sizes!();

    fn spec(&self) -> ConvMlpSpec {
        let conv = |out| Stage::Conv { out, kernel: 3 };
        ConvMlpSpec {
            type_name: "NoseTipNet",
            in_channels: self.in_channels,
            height: self.height,
            width: self.width,
            stages: vec![
                conv(16),
                Stage::Pool,
                conv(32),
                Stage::Pool,
                conv(32),
                Stage::Pool,
            ],
            hidden: self.hidden,
            outputs: 2 * self.num_keypoints,
        }
    }
}

/// The seed's nose-tip network.
pub type NoseTipNet = ConvMlpNet<NoseTipNetConfig>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::Describe;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_nn::VarMap;

    #[test]
    fn seed_sizes() {
        let spec = NoseTipNetConfig::default().spec();
        assert_eq!(spec.feature_shape().unwrap(), (32, 5, 8));
        assert_eq!(spec.flatten_size().unwrap(), 1280);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = NoseTipNet::new(vb, NoseTipNetConfig::default()).unwrap();
        assert_eq!(net.flatten_size(), 1280);
        let x = Tensor::zeros((3, 1, 60, 80), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x, true).unwrap().dims(), [3, 2]);
        assert!(net
            .forward(
                &Tensor::zeros((1, 1, 80, 60), DType::F32, &Device::Cpu).unwrap(),
                false
            )
            .is_err());
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "conv.0.bias",
                "conv.0.weight",
                "conv.3.bias",
                "conv.3.weight",
                "conv.6.bias",
                "conv.6.weight",
                "mlp.0.bias",
                "mlp.0.weight",
                "mlp.2.bias",
                "mlp.2.weight"
            ]
        );
        assert_eq!(net.describe().total_params(), 670_946);
    }

    #[test]
    fn too_small_input_is_a_config_error() {
        let cfg = NoseTipNetConfig {
            width: 10,
            height: 10,
            ..Default::default()
        };
        assert!(cfg.spec().flatten_size().is_err());
    }
}
