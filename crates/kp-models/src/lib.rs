//! Facial keypoint networks on [candle](https://github.com/huggingface/candle).
//!
//! * [`NoseTipNet`] and [`FaceKeypointNet`]: the small regressors of the seed study, layer for
//!   layer (Conv2d, ReLU, max-pool, Linear), PyTorch-default initialisation.
//! * [`ResNet18`]: torchvision's layout with a configurable number of input channels and
//!   outputs, trainable [`BatchNorm2d`] (running statistics saved with the weights), and
//!   [`ResNet18::features`] for dense heads.
//! * [`HeatmapNet`]: ResNet18 backbone + upsampling head to per-keypoint heatmaps, decoded by a
//!   differentiable [`soft_argmax`]; [`gaussian_heatmaps`] makes targets. Any input size (the
//!   input is zero-padded to a multiple of the backbone's stride).
//! * [`MaxPool2d`]: a max-pool with the correct gradient (candle's own `max_pool2d` backward is
//!   wrong), padding and PyTorch's output sizes.
//! * On the CPU, [`Conv2d`] runs as [`kp_ops::conv_cpu::conv2d`] (blocked im2col + GEMM with
//!   bias and ReLU fused, hand-written backward) and [`kp_ops::relu::relu`] has a one-pass
//!   backward; on other devices the convolution is [`kp_ops::conv_device::conv2d`] (candle's
//!   forward, a backward of convolutions instead of candle's slow `conv_transpose2d`) and ReLU
//!   is candle's.
//!
//! The crate has candle's layering: kernels in the `kp-ops` crate (as candle-core's ops),
//! layers in [`nn`] (as candle-nn), architectures in [`models`] (as candle-transformers).
//! * [`build_model`] / [`ModelKind`]: the registered models behind the [`KeypointModel`] trait.
//! * [`summary`] prints a module tree like PyTorch's `repr` with parameter counts;
//!   [`save_varmap`] / [`load_varmap`] store variables as safetensors under PyTorch's
//!   state-dict names; [`check_gradients`] verifies autograd against finite differences.
//!
//! Coordinates predicted by every model are `(B, 2K)`, ordered `x0, y0, x1, y1, ...`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use kp_models::{build_model, seeded_var_builder, ModelConfig, ModelKind};
//!
//! # fn main() -> kp_models::Result<()> {
//! let kind: ModelKind = "nosetipnet".parse()?;
//! let cfg = ModelConfig::for_model(kind); // 1 channel, 80x60, 1 keypoint
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 42, DType::F32, &Device::Cpu);
//! let model = build_model(kind, vb, &cfg)?;
//!
//! let (w, h) = model.input_size();
//! let x = Tensor::zeros((4, 1, h, w), DType::F32, &Device::Cpu)?;
//! let y = model.forward(&x, true)?;
//! assert_eq!(y.dims(), [4, 2]);
//!
//! let tree = model.describe();
//! assert!(tree.torch_repr().contains("Linear(in_features=1280, out_features=512, bias=True)"));
//! assert_eq!(tree.total_params(), 670_946);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod gradcheck;
pub mod io;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod params;
pub mod summary;

pub use error::{Error, Result};
pub use gradcheck::{check_gradients, GradCheckConfig, GradCheckReport};
pub use io::{convert_floats, load_model, load_varmap, load_varmap_bytes, save_varmap, LoadReport};
pub use models::compact::{CompactConfig, CompactNet};
pub use models::convmlp::{ConvMlpFamily, ConvMlpNet};
pub use models::face::{FaceKeypointNet, FaceKeypointNetConfig};
pub use models::heatmap::{
    gaussian_heatmaps, soft_argmax, soft_argmax_predict, DecodedHeatmaps, HeatmapConfig,
    HeatmapGrid, HeatmapNet,
};
pub use models::nose::{NoseTipNet, NoseTipNetConfig};
pub use models::registry::{build_model, KeypointModel, ModelConfig, ModelKind};
pub use models::resnet::{BasicBlock, ResNet18, ResNet18Config};
pub use models::yunet;
pub use nn::batchnorm::{BatchNorm2d, BatchNormConfig};
pub use nn::conv::{Conv2d, Conv2dConfig, ConvInit};
pub use nn::depthwise::DepthwiseConv2d;
pub use nn::init::{seeded_var_builder, torch_default};
pub use nn::linear::Linear;
pub use nn::maxpool::MaxPool2d;
pub use nn::sequential::{Layer, Sequential};
pub use nn::upsample::Upsample;
pub use params::{count_trainable, is_buffer, trainable_vars};
pub use summary::{summary, Describe, ModuleNode};
