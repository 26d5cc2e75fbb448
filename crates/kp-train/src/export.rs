//! A trained model as an ONNX file that carries what a deployer needs: the network and kp's
//! decoding ([`kp_models::onnx::export_keypoint_model`]: input `image (N, C, H, W)`, output
//! `keypoints (N, K, 2)` in input pixels, test-time mirroring inside the graph when the model
//! uses it) and, in `metadata_props`, how a face crop is made:
//!
//! | key | value |
//! |---|---|
//! | `kp.model` | registry name (`compact`, `heatmap-resnet18`, ...) |
//! | `kp.source` | the run folder or `ready:NAME` |
//! | `kp.scheme` | landmark scheme (`ibug68`, `imm58`) |
//! | `kp.keypoints` | `K` |
//! | `kp.keypoint_indices` | the scheme's points the model predicts, JSON list (`all`: every one) |
//! | `kp.input` | `CxHxW` |
//! | `kp.normalisation` | how pixels become input values |
//! | `kp.box_to_crop` | how the crop is taken from a face box, in words |
//! | `kp.preprocessing` | the same as kp-augment's pipeline JSON (`kp_augment::PipelineConfig`) |
//! | `kp.detector_box` | 300-W models: the map from a YuNet box to the model's box (JSON, [`BoxCalibration`]) |
//! | `kp.test_time_mirror` | `true` when the graph averages each crop with its mirror image |
//! | `kp.output` | what `keypoints` holds |
//!
//! The file is encoded in memory first and written to a temporary file that is renamed, so a
//! failed export leaves no file behind and never a truncated one.

use std::path::Path;

use kp_augment::{PipelineConfig, StepConfig};
use kp_models::onnx::{export_keypoint_model, KeypointExport, ModelProto};
use prost::Message;

use crate::config::Task;
use crate::detect::BoxCalibration;
use crate::error::Result;
use crate::predict::Predictor;

/// How kp turns a photo's pixels into network input (`kp_data::gray_from_u8`).
pub const NORMALISATION: &str = "one channel: the 8-bit BT.601 luma of the RGB photo \
    (0.299 R + 0.587 G + 0.114 B, rounded, as the image crate's to_luma8), then v / 255 - 0.5 \
    (so 0 is mid gray); pixels from outside the photo are 0";

/// The ONNX model of `predictor` with the metadata of the module docs; `source` names the model
/// in `kp.source`.
pub fn onnx_model(predictor: &Predictor, source: &str) -> Result<ModelProto> {
    let cfg = &predictor.config;
    let loaded = &predictor.model;
    let k = loaded.model.num_keypoints();
    let (w, h) = (loaded.width, loaded.height);
    let pipeline = cfg.eval_augment.pipeline_config(w, h)?;
    let scheme = cfg.scheme();
    let indices = match &cfg.keypoints {
        Some(subset) => serde_json::to_string(subset).expect("a list of numbers"),
        None => "all".into(),
    };
    let mut metadata = vec![
        ("kp.model", cfg.model.to_string()),
        ("kp.source", source.to_string()),
        ("kp.scheme", scheme.name.to_string()),
        ("kp.keypoints", k.to_string()),
        ("kp.keypoint_indices", indices),
        ("kp.input", format!("1x{h}x{w}")),
        ("kp.normalisation", NORMALISATION.to_string()),
        ("kp.box_to_crop", box_to_crop(&pipeline)),
        (
            "kp.preprocessing",
            serde_json::to_string(&pipeline).expect("a pipeline serialises"),
        ),
    ];
    if cfg.task == Task::Ibug {
        let calibration = serde_json::to_string(&BoxCalibration::ibug()).expect("plain numbers");
        metadata.push(("kp.detector_box", calibration));
    }
    metadata.push(("kp.test_time_mirror", loaded.mirror.is_some().to_string()));
    metadata.push((
        "kp.output",
        format!(
            "keypoints (N, {k}, 2): x, y of each point in input pixels (pixel centres at \
             integers); map back to the photo with the inverse of the crop"
        ),
    ));
    let options = KeypointExport {
        name: format!("kp-{}", cfg.model),
        doc: format!(
            "kp {} landmark model ({k} {} points) from {source}; input {w}x{h} crops, see \
             metadata kp.box_to_crop and kp.normalisation",
            cfg.model, scheme.name
        ),
        channels: 1,
        mirror: loaded.mirror.clone(),
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    Ok(export_keypoint_model(loaded.model.as_ref(), &options)?)
}

/// The crop rule of an evaluation pipeline, in words.
fn box_to_crop(p: &PipelineConfig) -> String {
    let fill = "pixels outside the photo filled with 0";
    let resize = if p.antialias {
        "resampled bilinearly with box-filter antialiasing"
    } else {
        "resampled bilinearly"
    };
    for step in &p.steps {
        if let StepConfig::CropBox(c) = step {
            let margin = if c.margin.min == c.margin.max {
                format!("{}", c.margin.min)
            } else {
                format!("{}-{}", c.margin.min, c.margin.max)
            };
            let shape = if c.square {
                format!("the square of side {margin} x max(width, height) of the face box")
            } else {
                format!("the face box enlarged {margin} x on each axis")
            };
            return format!(
                "{shape}, centred on the box's centre, {resize} to {w}x{h} ({fill}); the face \
                 box is (left, top, width, height) in photo pixels. With the crop's sides \
                 (cw, ch), left edge x0 = cx - cw / 2 and top y0 = cy - ch / 2, photo pixel \
                 (x, y) (pixel centres at integers) lands on input pixel (u, v) = ({w} / cw \
                 (x - x0) - 0.5, {h} / ch (y - y0) - 0.5), so a keypoint maps back as \
                 x = (u + 0.5) cw / {w} + x0, y = (v + 0.5) ch / {h} + y0",
                w = p.width,
                h = p.height
            );
        }
    }
    format!(
        "the whole photo {resize} to {}x{} (no face box)",
        p.width, p.height
    )
}

/// Encodes [`onnx_model`] and writes it to `path` atomically; returns the file's size.
pub fn write_onnx(predictor: &Predictor, source: &str, path: &Path) -> Result<u64> {
    let bytes = onnx_model(predictor, source)?.encode_to_vec();
    kp_fs::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}
