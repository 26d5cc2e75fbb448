//! The compact landmark family: depthwise-separable units at 1/4 to 1/32 of the input, a
//! top-down head back to 1/4, one heatmap per keypoint decoded by soft-argmax, sized to run a
//! face in about a millisecond on one CPU thread.
//!
//! Why this shape: the heatmap ResNet18 spends 1.8 GFLOPs per 224x224 face; dlib's shape
//! predictor, the speed users compare with, takes 1-2 ms. A depthwise-separable unit (a 1x1
//! convolution mixing channels, then a 3x3 filter per channel, YuNet's `ConvDPUnit`) costs
//! about a ninth of a full 3x3 convolution, and kp already has fast CPU kernels for both halves
//! ([`kp_ops::pointwise`], [`kp_ops::depthwise`], the latter with a backward so the family
//! trains on them). Downsampling is a 2x2 max-pool between stages, as in YuNet, so every
//! depthwise filter has stride 1. Landmarks need both fine detail (the eye corners) and the
//! whole face's shape (the jaw line of a turned face): each stage feeds a lateral unit and the
//! coarse maps are upsampled and added into the finer ones (a feature pyramid), so the 1/4
//! heatmaps see the 1/32 context.
//!
//! ```text
//! input 128 ─ stem 3x3/2 ─ pool ─ stage 1/4 ─ pool ─ stage 1/8 ─ pool ─ stage 1/16 ─ pool ─ stage 1/32
//!                                    │               │                │                 │
//!                                 lateral         lateral          lateral           lateral
//!                                    └──+── up ──────+─── up ─────────+──── up ─────────┘
//!                                    fuse unit ─ 1x1 ─ heatmaps 32x32 ─ soft-argmax ─ (x, y) x K
//! ```
//!
//! For prediction, [`CompactNet::folded`] folds every batch norm into the convolution before
//! it, so a unit is two fused kernels (1x1, then 3x3 + bias + ReLU) instead of four ops.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::heatmap::{
    heatmap_layer, soft_argmax, soft_argmax_predict, soft_argmax_to_onnx, DecodedHeatmaps,
    HeatmapGrid,
};
use crate::nn::batchnorm::{BatchNorm2d, BatchNormConfig};
use crate::nn::conv::{Conv2d, Conv2dConfig, ConvInit};
use crate::nn::depthwise::DepthwiseConv2d;
use crate::onnx::graph::OnnxGraph;
use crate::summary::{Describe, ModuleNode};
use crate::{MaxPool2d, Upsample};

/// Sizes of a [`CompactNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompactConfig {
    /// Input channels (1).
    pub in_channels: usize,
    /// Keypoints, one heatmap each (68).
    pub num_keypoints: usize,
    /// Input width (128), a multiple of 32.
    pub width: usize,
    /// Input height (128), a multiple of 32.
    pub height: usize,
    /// Channels of the stride-2 stem convolution (16).
    pub stem_channels: usize,
    /// Channels of the stages at strides 4, 8, 16 and 32 (32, 64, 128, 256).
    pub channels: [usize; 4],
    /// Depthwise-separable units per stage (2, 2, 3, 2).
    pub units: [usize; 4],
    /// Channels of the top-down head (32; 64 costs half as much time again at batch 1).
    pub head_channels: usize,
    /// Softmax sharpness of the soft-argmax decoder (1).
    pub beta: f64,
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            num_keypoints: 68,
            width: 128,
            height: 128,
            stem_channels: 16,
            channels: [32, 64, 128, 256],
            units: [2, 2, 3, 2],
            head_channels: 32,
            beta: 1.0,
        }
    }
}

impl CompactConfig {
    /// The input sides must be multiples of this (the coarsest stage's stride).
    pub const DIVISOR: usize = 32;

    /// These sizes with every channel count (stem, stages, head) times `m`, MobileNet's width
    /// multiplier, each rounded to the nearest multiple of 8 (at least 8) so the depthwise
    /// and pointwise kernels keep whole vector runs: 1.5 gives a 24-channel stem, stages of
    /// 48, 96, 192 and 384 channels and a 48-channel head. 1 changes nothing.
    pub fn with_channel_multiplier(mut self, m: f64) -> Self {
        let scale = |c: usize| (((c as f64 * m) / 8.0).round() as usize).max(1) * 8;
        if m != 1.0 {
            self.stem_channels = scale(self.stem_channels);
            self.channels = self.channels.map(scale);
            self.head_channels = scale(self.head_channels);
        }
        self
    }

    /// Heatmap `(width, height)`: a quarter of the input.
    pub fn heatmap_size(&self) -> (usize, usize) {
        (self.width / 4, self.height / 4)
    }

    /// The grid decoding the heatmaps into input coordinates.
    pub fn grid(&self) -> HeatmapGrid {
        HeatmapGrid::new(self.heatmap_size(), (self.width, self.height))
    }

    fn validate(&self) -> Result<()> {
        let d = Self::DIVISOR;
        if self.width == 0
            || self.height == 0
            || !self.width.is_multiple_of(d)
            || !self.height.is_multiple_of(d)
        {
            return Err(Error::Config(format!(
                "the compact model's input must be a positive multiple of {d} on both sides, \
                 got {}x{}",
                self.width, self.height
            )));
        }
        let sizes = [
            self.in_channels,
            self.num_keypoints,
            self.stem_channels,
            self.head_channels,
        ];
        if sizes.contains(&0) || self.channels.contains(&0) || self.units.contains(&0) {
            return Err(Error::Config(format!(
                "the compact model needs positive channels, keypoints and units ({self:?})"
            )));
        }
        Ok(())
    }
}

/// A 1x1 convolution's settings: stride 1, no padding, no bias (batch norm follows).
const NO_BIAS: Conv2dConfig = Conv2dConfig {
    stride: 1,
    padding: 0,
    bias: false,
};

/// A depthwise-separable unit: 1x1 convolution `in → out`, 3x3 depthwise, batch norm, ReLU,
/// plus the input when `in == out`. Folded, the batch norm lives in the depthwise filter's
/// weights and bias.
#[derive(Debug, Clone)]
struct DpUnit {
    pw: Conv2d,
    dw: DepthwiseConv2d,
    bn: Option<BatchNorm2d>,
    residual: bool,
    zeros: Tensor,
}

impl DpUnit {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let pw = Conv2d::new(
            vb.pp("pw"),
            cin,
            cout,
            1,
            NO_BIAS,
            ConvInit::KaimingNormalFanOut,
        )?;
        let dw = DepthwiseConv2d::new(vb.pp("dw"), cout, false)?;
        let bn = BatchNorm2d::new(vb.pp("bn"), cout, BatchNormConfig::default())?;
        let zeros = Tensor::zeros(cout, pw.weight().dtype(), pw.weight().device())?;
        Ok(Self {
            pw,
            dw,
            bn: Some(bn),
            residual: cin == cout,
            zeros,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match &self.bn {
            Some(bn) => {
                let y = self.dw.forward(&self.pw.forward(x)?, false)?;
                kp_ops::relu::relu(&bn.forward(&y, train)?)?
            }
            None => {
                let y =
                    kp_ops::pointwise::pointwise_conv2d(x, self.pw.weight(), &self.zeros, false)?;
                if self.residual {
                    // The skip connection added in the filter's pass.
                    return self.dw.forward_add(&y, true, x);
                }
                self.dw.forward(&y, true)?
            }
        };
        Ok(if self.residual { (y + x)? } else { y })
    }

    /// The folded unit as ONNX nodes: 1x1 `Conv`, depthwise `Conv` with the batch norm in its
    /// weights and bias, `Relu`, and `Add` of the input when the unit is residual.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let folded = self.folded()?;
        let y = folded.pw.to_onnx(g, x)?;
        let y = folded.dw.to_onnx(g, &y, true)?;
        Ok(if self.residual { g.add(&y, x) } else { y })
    }

    fn folded(&self) -> Result<Self> {
        let Some(bn) = &self.bn else {
            return Ok(self.clone());
        };
        let (scale, shift) = bn.eval_affine()?;
        let c = self.dw.channels();
        let w = self
            .dw
            .weight()
            .detach()
            .broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
        let pw = Conv2d::from_tensors(self.pw.weight().detach(), None, NO_BIAS)?;
        Ok(Self {
            pw,
            dw: DepthwiseConv2d::from_tensors(w, Some(shift))?,
            bn: None,
            residual: self.residual,
            zeros: self.zeros.clone(),
        })
    }

    fn describe(&self) -> ModuleNode {
        let mut children = vec![
            ("pw".into(), self.pw.describe()),
            ("dw".into(), self.dw.describe()),
        ];
        if let Some(bn) = &self.bn {
            children.push(("bn".into(), bn.describe()));
        }
        ModuleNode::container("DpUnit", children)
    }
}

/// The compact landmark network (see the module docs). Parameters: `stem.conv`, `stem.bn`,
/// `stages.{s}.{u}.{pw,dw,bn}`, `lateral.{s}.*`, `fuse.*`, `final_layer`.
#[derive(Debug, Clone)]
pub struct CompactNet {
    config: CompactConfig,
    stem: Conv2d,
    stem_bn: Option<BatchNorm2d>,
    stages: Vec<Vec<DpUnit>>,
    lateral: Vec<DpUnit>,
    fuse: DpUnit,
    final_layer: Conv2d,
}

impl CompactNet {
    /// Builds the network under `vb`.
    pub fn new(vb: VarBuilder, config: CompactConfig) -> Result<Self> {
        config.validate()?;
        let stem = Conv2d::new(
            vb.pp("stem").pp("conv"),
            config.in_channels,
            config.stem_channels,
            3,
            Conv2dConfig {
                stride: 2,
                padding: 1,
                bias: false,
            },
            ConvInit::KaimingNormalFanOut,
        )?;
        let stem_bn = BatchNorm2d::new(
            vb.pp("stem").pp("bn"),
            config.stem_channels,
            BatchNormConfig::default(),
        )?;
        let mut stages = Vec::new();
        let mut lateral = Vec::new();
        let mut cin = config.stem_channels;
        for (s, (&c, &n)) in config.channels.iter().zip(&config.units).enumerate() {
            let vs = vb.pp("stages").pp(s);
            let mut units = Vec::new();
            for u in 0..n {
                units.push(DpUnit::new(vs.pp(u), if u == 0 { cin } else { c }, c)?);
            }
            stages.push(units);
            lateral.push(DpUnit::new(
                vb.pp("lateral").pp(s),
                c,
                config.head_channels,
            )?);
            cin = c;
        }
        let h = config.head_channels;
        let fuse = DpUnit::new(vb.pp("fuse"), h, h)?;
        let final_layer = heatmap_layer(vb.pp("final_layer"), h, config.num_keypoints)?;
        Ok(Self {
            config,
            stem,
            stem_bn: Some(stem_bn),
            stages,
            lateral,
            fuse,
            final_layer,
        })
    }

    /// The sizes.
    pub fn config(&self) -> &CompactConfig {
        &self.config
    }

    /// A copy for prediction: each batch norm folded (with its running statistics) into the
    /// convolution before it, weights detached. It computes what `forward(x, false)` does, in
    /// fewer and fused kernels; it cannot train.
    pub fn folded(&self) -> Result<Self> {
        let mut net = self.clone();
        if let Some(bn) = net.stem_bn.take() {
            let (scale, shift) = bn.eval_affine()?;
            let c = self.config.stem_channels;
            let w = self
                .stem
                .weight()
                .detach()
                .broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
            net.stem = Conv2d::from_tensors(w, Some(shift), self.stem.config())?;
        }
        for units in net.stages.iter_mut() {
            for u in units.iter_mut() {
                *u = u.folded()?;
            }
        }
        for u in net.lateral.iter_mut() {
            *u = u.folded()?;
        }
        net.fuse = net.fuse.folded()?;
        net.final_layer = Conv2d::from_tensors(
            self.final_layer.weight().detach(),
            self.final_layer.bias().map(Tensor::detach),
            self.final_layer.config(),
        )?;
        Ok(net)
    }

    /// Whether this is a [`Self::folded`] copy.
    pub fn is_folded(&self) -> bool {
        self.stem_bn.is_none()
    }

    /// Heatmap logits `(B, K, H/4, W/4)`.
    pub fn forward_heatmaps(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if (w, h) != (self.config.width, self.config.height) {
            return Err(Error::Shape(format!(
                "the compact model expects {}x{} inputs, got {w}x{h}",
                self.config.width, self.config.height
            )));
        }
        let pool = MaxPool2d::default();
        let mut y = match &self.stem_bn {
            Some(bn) => kp_ops::relu::relu(&bn.forward(&self.stem.forward(x)?, train)?)?,
            None => self.stem.forward_relu(x)?,
        };
        let mut levels = Vec::with_capacity(self.stages.len());
        for (units, lat) in self.stages.iter().zip(&self.lateral) {
            y = pool.forward(&y)?;
            for u in units {
                y = u.forward(&y, train)?;
            }
            levels.push(lat.forward(&y, train)?);
        }
        let up = Upsample { scale: 2 };
        let mut top = levels.pop().expect("four stages");
        while let Some(finer) = levels.pop() {
            top = up.forward_add(&top, &finer)?;
        }
        let y = self.fuse.forward(&top, train)?;
        match (self.is_folded(), self.final_layer.bias()) {
            (true, Some(b)) => Ok(kp_ops::pointwise::pointwise_conv2d(
                &y,
                self.final_layer.weight(),
                b,
                false,
            )?),
            _ => self.final_layer.forward(&y),
        }
    }

    /// Normalised coordinates `(B, 2K)` decoded by [`soft_argmax`] (folded: by its one-pass
    /// kernel, [`soft_argmax_predict`]).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let hm = self.forward_heatmaps(x, train)?;
        if self.is_folded() {
            return soft_argmax_predict(&hm, self.config.beta, self.config.grid());
        }
        soft_argmax(&hm, self.config.beta, self.config.grid())
    }

    /// [`Self::forward`] and the heatmaps it decoded (the training path: [`soft_argmax`]).
    pub fn forward_decoded(&self, x: &Tensor, train: bool) -> Result<(Tensor, DecodedHeatmaps)> {
        DecodedHeatmaps::decode(
            self.forward_heatmaps(x, train)?,
            self.config.beta,
            self.config.grid(),
        )
    }

    /// [`Self::forward`] in evaluation mode as ONNX nodes, from the [`Self::folded`] network
    /// (what kp predicts with).
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let net = self.folded()?;
        let stem = net.stem.to_onnx(g, x)?;
        let mut y = g.relu(&stem);
        let pool = MaxPool2d::default();
        let mut levels = Vec::with_capacity(net.stages.len());
        for (units, lat) in net.stages.iter().zip(&net.lateral) {
            y = pool.to_onnx(g, &y)?;
            for u in units {
                y = u.to_onnx(g, &y)?;
            }
            levels.push(lat.to_onnx(g, &y)?);
        }
        let up = Upsample { scale: 2 };
        let mut top = levels.pop().expect("four stages");
        while let Some(finer) = levels.pop() {
            let coarse = up.to_onnx(g, &top)?;
            top = g.add(&finer, &coarse);
        }
        let y = net.fuse.to_onnx(g, &top)?;
        let hm = net.final_layer.to_onnx(g, &y)?;
        let c = &self.config;
        soft_argmax_to_onnx(g, &hm, c.num_keypoints, c.beta, c.grid())
    }

    /// Trainable parameters (without batch-norm statistics).
    pub fn num_params(&self) -> usize {
        self.describe().total_params()
    }
}

impl Describe for CompactNet {
    fn describe(&self) -> ModuleNode {
        let mut stem = vec![("conv".into(), self.stem.describe())];
        if let Some(bn) = &self.stem_bn {
            stem.push(("bn".into(), bn.describe()));
        }
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(s, units)| {
                let children = units
                    .iter()
                    .enumerate()
                    .map(|(i, u)| (i.to_string(), u.describe()))
                    .collect();
                (s.to_string(), ModuleNode::container("Sequential", children))
            })
            .collect();
        let lateral = self
            .lateral
            .iter()
            .enumerate()
            .map(|(i, u)| (i.to_string(), u.describe()))
            .collect();
        ModuleNode::container(
            "CompactNet",
            vec![
                ("stem".into(), ModuleNode::container("Sequential", stem)),
                ("stages".into(), ModuleNode::container("ModuleList", stages)),
                (
                    "lateral".into(),
                    ModuleNode::container("ModuleList", lateral),
                ),
                ("fuse".into(), self.fuse.describe()),
                ("final_layer".into(), self.final_layer.describe()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn small() -> CompactConfig {
        CompactConfig {
            num_keypoints: 5,
            width: 64,
            height: 32,
            stem_channels: 8,
            channels: [8, 16, 16, 24],
            units: [1, 2, 1, 1],
            head_channels: 8,
            ..Default::default()
        }
    }

    fn net(vm: &VarMap, cfg: CompactConfig) -> CompactNet {
        let vb = crate::seeded_var_builder(vm, 3, DType::F32, &Device::Cpu);
        CompactNet::new(vb, cfg).unwrap()
    }

    fn input(cfg: &CompactConfig, n: usize, seed: u64) -> Tensor {
        let mut rng = crate::nn::init::SplitMix64::new(seed);
        let len = n * cfg.in_channels * cfg.width * cfg.height;
        let v: Vec<f32> = (0..len).map(|_| rng.next_f64() as f32).collect();
        Tensor::from_vec(v, (n, cfg.in_channels, cfg.height, cfg.width), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_folded_copy_predicts_what_the_evaluation_mode_network_does() {
        let vm = VarMap::new();
        let cfg = small();
        let m = net(&vm, cfg.clone());
        // Training-mode passes move every running statistic away from (0, 1).
        for seed in 0..3 {
            m.forward(&input(&cfg, 4, seed), true).unwrap();
        }
        let x = input(&cfg, 3, 9);
        let want: Vec<f32> = m
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let folded = m.folded().unwrap();
        assert!(folded.is_folded() && !m.is_folded());
        let got: Vec<f32> = folded
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.len(), 3 * 2 * cfg.num_keypoints);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_through_the_depthwise_kernels() {
        let vm = VarMap::new();
        let cfg = small();
        let m = net(&vm, cfg.clone());
        let y = m.forward(&input(&cfg, 2, 1), true).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vm.data().lock().unwrap();
        let mut trainable = 0;
        for (name, var) in data.iter() {
            if crate::is_buffer(name) {
                continue;
            }
            trainable += 1;
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{name}");
            assert!(v.iter().any(|&x| x != 0.0), "{name}: all zero");
        }
        assert!(trainable > 20);
        assert!(
            data.contains_key("stages.1.1.dw.weight") && data.contains_key("lateral.3.pw.weight")
        );
    }

    #[test]
    fn an_input_side_that_is_not_a_multiple_of_32_is_refused_by_name() {
        let vm = VarMap::new();
        let cfg = CompactConfig {
            width: 100,
            ..small()
        };
        let vb = crate::seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        let e = CompactNet::new(vb, cfg).unwrap_err().to_string();
        assert!(e.contains("multiple of 32") && e.contains("100x32"), "{e}");
    }

    #[test]
    fn the_default_family_member_is_small() {
        let vm = VarMap::new();
        let m = net(&vm, CompactConfig::default());
        let params = m.num_params();
        // ≤ 5 MB of f32 weights is the goal; the default is far below it.
        assert!(params * 4 < 5_000_000, "{params} parameters");
        assert!(params > 100_000, "{params} parameters");
    }

    #[test]
    fn a_channel_multiplier_scales_every_width_to_multiples_of_8() {
        let d = CompactConfig::default();
        assert_eq!(d.clone().with_channel_multiplier(1.0), d);
        let wide = d.clone().with_channel_multiplier(1.5);
        assert_eq!(
            (wide.stem_channels, wide.channels, wide.head_channels),
            (24, [48, 96, 192, 384], 48)
        );
        let narrow = d.with_channel_multiplier(0.25);
        assert_eq!(
            (narrow.stem_channels, narrow.channels, narrow.head_channels),
            (8, [8, 16, 32, 64], 8)
        );
        // The wider network builds and runs.
        let vm = VarMap::new();
        let cfg = small().with_channel_multiplier(1.5);
        let m = net(&vm, cfg.clone());
        let out = m.forward(&input(&cfg, 2, 0), false).unwrap();
        assert_eq!(out.dims(), &[2, cfg.num_keypoints * 2]);
    }
}
