//! `FaceKeypointNet`: the seed's 58-landmark regressor (1x120x160 input, 116 outputs).
//!
//! ```text
//! conv: Conv2d(1,16,5) ReLU Conv2d(16,32,5) ReLU MaxPool(2)
//!       Conv2d(32,32,3) ReLU Conv2d(32,32,3) ReLU MaxPool(2)
//!       Conv2d(32,24,3) ReLU Conv2d(24,24,3) ReLU MaxPool(2)
//! mlp:  Linear(4224,512) ReLU Linear(512,116)
//! ```

use serde::{Deserialize, Serialize};

use crate::models::convmlp::{conv_mlp_sizes, ConvMlpFamily, ConvMlpNet, ConvMlpSpec, Stage};

/// Sizes of a [`FaceKeypointNet`]; the defaults are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaceKeypointNetConfig {
    /// Input channels (1, grayscale).
    pub in_channels: usize,
    /// Input width (160).
    pub width: usize,
    /// Input height (120).
    pub height: usize,
    /// Keypoints predicted (58).
    pub num_keypoints: usize,
    /// Hidden units of the MLP (512).
    pub hidden: usize,
}

impl Default for FaceKeypointNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            width: 160,
            height: 120,
            num_keypoints: 58,
            hidden: 512,
        }
    }
}

impl ConvMlpFamily for FaceKeypointNetConfig {
    const NAME: &'static str = "facekeypointnet";

    conv_mlp_sizes!();

    fn spec(&self) -> ConvMlpSpec {
        let conv = |out, kernel| Stage::Conv { out, kernel };
        ConvMlpSpec {
            type_name: "FaceKeypointNet",
            in_channels: self.in_channels,
            height: self.height,
            width: self.width,
            stages: vec![
                conv(16, 5),
                conv(32, 5),
                Stage::Pool,
                conv(32, 3),
                conv(32, 3),
                Stage::Pool,
                conv(24, 3),
                conv(24, 3),
                Stage::Pool,
            ],
            hidden: self.hidden,
            outputs: 2 * self.num_keypoints,
        }
    }
}

/// The seed's full-face keypoint network.
pub type FaceKeypointNet = ConvMlpNet<FaceKeypointNetConfig>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::Describe;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_nn::VarMap;

    #[test]
    fn seed_sizes() {
        let spec = FaceKeypointNetConfig::default().spec();
        assert_eq!(spec.feature_shape().unwrap(), (24, 11, 16));
        assert_eq!(spec.flatten_size().unwrap(), 4224);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = FaceKeypointNet::new(vb, FaceKeypointNetConfig::default()).unwrap();
        assert_eq!(net.flatten_size(), 4224);
        let x = Tensor::zeros((2, 1, 120, 160), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x, true).unwrap().dims(), [2, 116]);
        let data = vm.data().lock().unwrap();
        for name in [
            "conv.0.weight",
            "conv.2.weight",
            "conv.12.bias",
            "mlp.0.weight",
            "mlp.2.bias",
        ] {
            assert!(data.contains_key(name), "{name}");
        }
        assert_eq!(data["mlp.0.weight"].dims(), [512, 4224]);
        assert_eq!(net.describe().total_params(), 2_266_596);
    }
}
