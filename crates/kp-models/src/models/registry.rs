//! Models by name: the [`KeypointModel`] trait, [`ModelConfig`], [`ModelKind`] (the registered
//! names as a type: configurations and flags hold one, so a misspelt name is refused where it is
//! read, not deep inside training), and one table of the registered models (kind, default sizes,
//! builder) behind [`build_model`].

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::compact::{CompactConfig, CompactNet};
use crate::models::convmlp::{ConvMlpFamily, ConvMlpNet};
use crate::models::face::FaceKeypointNetConfig;
use crate::models::heatmap::{DecodedHeatmaps, HeatmapConfig, HeatmapNet};
use crate::models::nose::NoseTipNetConfig;
use crate::models::resnet::{ResNet18, ResNet18Config};
use crate::onnx::graph::OnnxGraph;
use crate::summary::{Describe, ModuleNode};

/// A network mapping a `(B, C, H, W)` batch to keypoint coordinates `(B, 2K)` ordered
/// `x0, y0, x1, y1, ...`.
pub trait KeypointModel: Send + Sync {
    /// Predicts coordinates; `train` selects batch statistics (and updates running statistics)
    /// in batch-norm layers.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// [`Self::forward`] and, for a network that decodes heatmaps by soft-argmax, the heatmaps
    /// it decoded (for a loss on their shape: kp-train's heatmap regulariser); `None` for a
    /// network regressing coordinates directly. [`ModelKind::decodes_heatmaps`] says which.
    fn forward_decoded(
        &self,
        x: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Option<DecodedHeatmaps>)> {
        Ok((self.forward(x, train)?, None))
    }
    /// Keypoints `K` predicted.
    fn num_keypoints(&self) -> usize;
    /// Expected input `(width, height)`.
    fn input_size(&self) -> (usize, usize);
    /// The registry name (`"resnet18"`, ...).
    fn name(&self) -> &str;
    /// The module tree, for printing.
    fn describe(&self) -> ModuleNode;
    /// A copy of the network for prediction only, faster than `forward(x, false)` and equal to
    /// it within float rounding (e.g. batch norm folded into the convolutions, weights fixed
    /// as they are now), or `None` when the network has none.
    fn for_inference(&self) -> Result<Option<Box<dyn KeypointModel>>> {
        Ok(None)
    }
    /// Writes what `forward(x, false)` computes into an ONNX graph reading the `(N, C, H, W)`
    /// value `x` and returns the name of the `(N, 2K)` normalised coordinates
    /// ([`crate::onnx::export_keypoint_model`] wraps it). Every registered model has one; the
    /// default refuses, naming the model.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let _ = (g, x);
        Err(Error::Onnx(format!(
            "the model {} cannot be exported to ONNX",
            self.name()
        )))
    }
}

/// The generic sizes every registered model is built from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Keypoints predicted.
    pub num_keypoints: usize,
    /// Input width in pixels.
    pub width: usize,
    /// Input height in pixels.
    pub height: usize,
    /// MobileNet's width multiplier: the compact family's channel counts times this
    /// ([`CompactConfig::with_channel_multiplier`]); every other model takes only 1.
    pub channel_multiplier: f64,
}

impl Default for ModelConfig {
    /// The ResNet18 setting: 1 channel, 68 keypoints, 224x224, channel multiplier 1.
    fn default() -> Self {
        Self {
            in_channels: 1,
            num_keypoints: 68,
            width: 224,
            height: 224,
            channel_multiplier: 1.0,
        }
    }
}

impl ModelConfig {
    /// The channel multipliers the compact model accepts.
    pub const CHANNEL_MULTIPLIERS: std::ops::RangeInclusive<f64> = 0.25..=4.0;

    /// Checks that the model `kind` takes [`Self::channel_multiplier`]: 1 for every model, or
    /// within [`Self::CHANNEL_MULTIPLIERS`] for the compact one ([`build_model`] checks it;
    /// so does a training configuration before a run starts).
    pub fn check_channel_multiplier(&self, kind: ModelKind) -> Result<()> {
        let m = self.channel_multiplier;
        if !Self::CHANNEL_MULTIPLIERS.contains(&m) {
            return Err(Error::Config(format!(
                "channel multiplier {m} is not in {:?}",
                Self::CHANNEL_MULTIPLIERS
            )));
        }
        if m != 1.0 && kind != ModelKind::Compact {
            return Err(Error::Config(format!(
                "only the compact model takes a channel multiplier; {kind} takes 1, got {m}"
            )));
        }
        Ok(())
    }
}

impl ModelConfig {
    /// The seed's sizes for a registered model (`nosetipnet`: 1 keypoint at 80x60,
    /// `facekeypointnet`: 58 at 160x120, the ResNets: 68 at 224x224).
    pub fn for_model(kind: ModelKind) -> Self {
        (kind.entry().default_config)()
    }
}

/// A registered model. Written (serde, `Display`) as its registry name (`nosetipnet`,
/// `facekeypointnet`, `resnet18`, `heatmap-resnet18`, `compact`) and parsed from it in any
/// case; an unknown name is an error listing the known ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// The seed's nose-tip network (conv + MLP, 1 point at 80x60).
    NoseTipNet,
    /// The seed's full-face network (conv + MLP, 58 points at 160x120).
    FaceKeypointNet,
    /// ResNet18 regressing coordinates (the seed's 300-W model).
    ResNet18,
    /// ResNet18 with a heatmap head decoded by soft-argmax (kp's tuned model).
    HeatmapResNet18,
    /// The depthwise-separable real-time network ([`CompactNet`]).
    Compact,
}

impl ModelKind {
    /// Every registered model, in the registry's order.
    pub const ALL: [ModelKind; 5] = [
        Self::NoseTipNet,
        Self::FaceKeypointNet,
        Self::ResNet18,
        Self::HeatmapResNet18,
        Self::Compact,
    ];

    /// The registry name, as configurations and flags write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoseTipNet => NoseTipNetConfig::NAME,
            Self::FaceKeypointNet => FaceKeypointNetConfig::NAME,
            Self::ResNet18 => "resnet18",
            Self::HeatmapResNet18 => "heatmap-resnet18",
            Self::Compact => "compact",
        }
    }

    /// Whether the network decodes heatmaps by soft-argmax (its
    /// [`KeypointModel::forward_decoded`] returns them): the heatmap ResNet18 and the compact
    /// family.
    pub fn decodes_heatmaps(self) -> bool {
        matches!(self, Self::HeatmapResNet18 | Self::Compact)
    }

    /// The registered names, comma separated (for messages).
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// The table entry of this model.
    fn entry(self) -> &'static Entry {
        MODELS
            .iter()
            .find(|e| e.kind == self)
            .expect("every ModelKind has an entry in MODELS (test builds_every_registered_model)")
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = Error;

    /// The model called `s` (case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| Error::UnknownModel {
                name: s.to_string(),
                known: Self::names(),
            })
    }
}

impl Serialize for ModelKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ModelKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "clap")]
impl clap::ValueEnum for ModelKind {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// One registered model: its kind, its default sizes and its builder.
struct Entry {
    kind: ModelKind,
    default_config: fn() -> ModelConfig,
    build: fn(VarBuilder, &ModelConfig) -> Result<Box<dyn KeypointModel>>,
}

/// A conv + MLP family member by its config type.
const fn conv_mlp<C: ConvMlpFamily>(kind: ModelKind) -> Entry {
    Entry {
        kind,
        default_config: || C::default().model_config(),
        build: |vb, cfg| Ok(Box::new(ConvMlpNet::new(vb, C::from_model_config(cfg))?)),
    }
}

/// Every registered model; [`build_model`] and [`ModelConfig::for_model`] look kinds up here.
const MODELS: [Entry; 5] = [
    conv_mlp::<NoseTipNetConfig>(ModelKind::NoseTipNet),
    conv_mlp::<FaceKeypointNetConfig>(ModelKind::FaceKeypointNet),
    Entry {
        kind: ModelKind::ResNet18,
        default_config: ModelConfig::default,
        build: |vb, cfg| {
            let c = ResNet18Config {
                in_channels: cfg.in_channels,
                num_outputs: 2 * cfg.num_keypoints,
                ..Default::default()
            };
            Ok(Box::new(SizedResNet18 {
                net: ResNet18::new(vb, c)?,
                input: (cfg.width, cfg.height),
            }))
        },
    },
    Entry {
        kind: ModelKind::HeatmapResNet18,
        default_config: ModelConfig::default,
        build: |vb, cfg| {
            let c = HeatmapConfig {
                in_channels: cfg.in_channels,
                num_keypoints: cfg.num_keypoints,
                width: cfg.width,
                height: cfg.height,
                ..Default::default()
            };
            Ok(Box::new(HeatmapNet::new(vb, c)?))
        },
    },
    Entry {
        kind: ModelKind::Compact,
        default_config: || {
            let c = CompactConfig::default();
            ModelConfig {
                in_channels: c.in_channels,
                num_keypoints: c.num_keypoints,
                width: c.width,
                height: c.height,
                channel_multiplier: 1.0,
            }
        },
        build: |vb, cfg| {
            let c = CompactConfig {
                in_channels: cfg.in_channels,
                num_keypoints: cfg.num_keypoints,
                width: cfg.width,
                height: cfg.height,
                ..Default::default()
            }
            .with_channel_multiplier(cfg.channel_multiplier);
            Ok(Box::new(CompactNet::new(vb, c)?))
        },
    },
];

/// Builds the model `kind` with its variables under `vb`.
pub fn build_model(
    kind: ModelKind,
    vb: VarBuilder,
    cfg: &ModelConfig,
) -> Result<Box<dyn KeypointModel>> {
    if cfg.in_channels == 0 || cfg.num_keypoints == 0 || cfg.width == 0 || cfg.height == 0 {
        return Err(Error::Config(format!(
            "model config has a zero size: {cfg:?}"
        )));
    }
    cfg.check_channel_multiplier(kind)?;
    (kind.entry().build)(vb, cfg)
}

/// A ResNet18 with the input size it is meant for (the network itself accepts any size).
struct SizedResNet18 {
    net: ResNet18,
    input: (usize, usize),
}

impl KeypointModel for SizedResNet18 {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.net.forward(x, train)
    }
    fn num_keypoints(&self) -> usize {
        self.net.config().num_outputs / 2
    }
    fn input_size(&self) -> (usize, usize) {
        self.input
    }
    fn name(&self) -> &str {
        ModelKind::ResNet18.name()
    }
    fn describe(&self) -> ModuleNode {
        self.net.describe()
    }
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        self.net.to_onnx(g, x)
    }
}

impl KeypointModel for HeatmapNet {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        HeatmapNet::forward(self, x, train)
    }
    fn forward_decoded(
        &self,
        x: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Option<DecodedHeatmaps>)> {
        let (y, hm) = HeatmapNet::forward_decoded(self, x, train)?;
        Ok((y, Some(hm)))
    }
    fn num_keypoints(&self) -> usize {
        self.config().num_keypoints
    }
    fn input_size(&self) -> (usize, usize) {
        (self.config().width, self.config().height)
    }
    fn name(&self) -> &str {
        ModelKind::HeatmapResNet18.name()
    }
    fn describe(&self) -> ModuleNode {
        Describe::describe(self)
    }
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        HeatmapNet::to_onnx(self, g, x)
    }
}

impl KeypointModel for CompactNet {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && self.is_folded() {
            return Err(Error::Config(
                "a folded compact model is for prediction only".into(),
            ));
        }
        CompactNet::forward(self, x, train)
    }
    fn forward_decoded(
        &self,
        x: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Option<DecodedHeatmaps>)> {
        if self.is_folded() {
            return Ok((KeypointModel::forward(self, x, train)?, None));
        }
        let (y, hm) = CompactNet::forward_decoded(self, x, train)?;
        Ok((y, Some(hm)))
    }
    fn num_keypoints(&self) -> usize {
        self.config().num_keypoints
    }
    fn input_size(&self) -> (usize, usize) {
        (self.config().width, self.config().height)
    }
    fn name(&self) -> &str {
        ModelKind::Compact.name()
    }
    fn describe(&self) -> ModuleNode {
        Describe::describe(self)
    }
    fn for_inference(&self) -> Result<Option<Box<dyn KeypointModel>>> {
        Ok(Some(Box::new(self.folded()?)))
    }
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        CompactNet::to_onnx(self, g, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn builds_every_registered_model() {
        assert_eq!(MODELS.len(), ModelKind::ALL.len());
        for kind in ModelKind::ALL {
            let name = kind.name();
            let mut cfg = ModelConfig::for_model(kind);
            if name.contains("resnet") {
                // Keep the test fast: a smaller input (the ResNets accept any multiple of 32).
                cfg.width = 32;
                cfg.height = 32;
            }
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let model = build_model(kind, vb, &cfg).unwrap();
            assert_eq!(model.name(), name);
            assert_eq!(name.parse::<ModelKind>().unwrap(), kind);
            assert_eq!(model.input_size(), (cfg.width, cfg.height));
            assert_eq!(model.num_keypoints(), cfg.num_keypoints);
            let (w, h) = model.input_size();
            let x = Tensor::zeros((2, cfg.in_channels, h, w), DType::F32, &Device::Cpu).unwrap();
            let y = model.forward(&x, false).unwrap();
            assert_eq!(y.dims(), [2, 2 * cfg.num_keypoints], "{name}");
            assert!(model.describe().total_params() > 0);
        }
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_names_fail() {
        let kind: ModelKind = " NoseTipNet".parse().unwrap();
        assert_eq!(kind, ModelKind::NoseTipNet);
        let cfg = ModelConfig::for_model(kind);
        assert_eq!((cfg.width, cfg.height, cfg.num_keypoints), (80, 60, 1));
        let err = "vgg16".parse::<ModelKind>().unwrap_err();
        assert!(err.to_string().contains("heatmap-resnet18"), "{err}");
        let json: std::result::Result<ModelKind, _> = serde_json::from_str(r#""vgg16""#);
        assert!(json.unwrap_err().to_string().contains("vgg16"));
        assert_eq!(
            serde_json::to_string(&ModelKind::HeatmapResNet18).unwrap(),
            r#""heatmap-resnet18""#
        );
    }

    #[test]
    fn config_serde_round_trip_and_defaults() {
        let cfg = ModelConfig::for_model(ModelKind::FaceKeypointNet);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), cfg);
        let partial: ModelConfig = serde_json::from_str(r#"{"num_keypoints": 5}"#).unwrap();
        assert_eq!(partial.num_keypoints, 5);
        assert_eq!(partial.width, 224);
    }

    #[test]
    fn a_channel_multiplier_widens_the_compact_model_and_is_refused_elsewhere() {
        let build = |kind, m| {
            let cfg = ModelConfig {
                channel_multiplier: m,
                ..ModelConfig::for_model(kind)
            };
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            build_model(kind, vb, &cfg).map(|m| m.describe().total_params())
        };
        let base = build(ModelKind::Compact, 1.0).unwrap();
        let wide = build(ModelKind::Compact, 1.5).unwrap();
        assert!(wide > 2 * base, "{base} → {wide} parameters");
        let e = build(ModelKind::NoseTipNet, 1.5).unwrap_err().to_string();
        assert!(e.contains("nosetipnet") && e.contains("1.5"), "{e}");
        let e = build(ModelKind::Compact, 0.0).unwrap_err().to_string();
        assert!(e.contains("channel multiplier 0"), "{e}");
        let e = build(ModelKind::Compact, f64::NAN).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
    }
}
