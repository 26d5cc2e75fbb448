//! A keypoint model as a self-contained ONNX file: the network ([`KeypointModel::to_onnx`]),
//! then what kp does with its output, so that the file's output is what kp predicts.
//!
//! * input `image`: `(N, C, H, W)` float, dynamic batch `N`, the network's input size;
//! * output `keypoints`: `(N, K, 2)` float, `(x, y)` in input pixels (pixel centres at
//!   integers), the network's normalised `(x / W, y / H)` scaled back;
//! * with test-time mirroring, the graph also runs the mirrored images (`Gather` of the columns
//!   in reverse order, in the same batch), mirrors their points back (`W - 1 - x`), reorders
//!   them by the scheme's mirror permutation and averages, in the order of operations of kp's
//!   evaluation (`kp_train::eval`), so that step rounds as kp does.
//!
//! The preprocessing that makes `image` from a photo and a face box (kp's crop rule and pixel
//! normalisation) is not in the graph: the caller states it in the metadata
//! (`kp_train::export` does).

use crate::error::{Error, Result};
use crate::models::registry::KeypointModel;
use crate::onnx::graph::{Attr, Dim, OnnxGraph};
use crate::onnx::ModelProto;

/// What [`export_keypoint_model`] writes beside the network.
#[derive(Debug, Clone)]
pub struct KeypointExport {
    /// Graph name.
    pub name: String,
    /// What the model is, for people (the model's and the graph's `doc_string`).
    pub doc: String,
    /// Input channels (1: kp's grayscale models).
    pub channels: usize,
    /// Test-time mirroring: mirrored point `perm[i]` is the mirror of point `i`.
    pub mirror: Option<Vec<usize>>,
    /// `metadata_props`, in order.
    pub metadata: Vec<(String, String)>,
}

impl Default for KeypointExport {
    fn default() -> Self {
        Self {
            name: "kp".into(),
            doc: String::new(),
            channels: 1,
            mirror: None,
            metadata: Vec::new(),
        }
    }
}

/// The ONNX model of `model` (see the module docs); `prost::Message::encode_to_vec` gives the
/// file's bytes.
pub fn export_keypoint_model(
    model: &dyn KeypointModel,
    options: &KeypointExport,
) -> Result<ModelProto> {
    let (w, h) = model.input_size();
    let k = model.num_keypoints();
    if let Some(perm) = &options.mirror {
        let mut seen = vec![false; k];
        if perm.len() != k
            || !perm
                .iter()
                .all(|&j| j < k && !std::mem::replace(&mut seen[j], true))
        {
            return Err(Error::Onnx(format!(
                "the mirror order must be a permutation of the model's {k} points, got {} entries",
                perm.len()
            )));
        }
    }
    let mut g = OnnxGraph::new();
    let image = g.input(
        "image",
        &[
            Dim::Named("N"),
            Dim::Fixed(options.channels),
            Dim::Fixed(h),
            Dim::Fixed(w),
        ],
        "face crops, (N, C, H, W): see the metadata kp.preprocessing",
    );
    let size = g.floats("input_size", &[2], &[w as f32, h as f32])?;
    // The network's (M, 2K) normalised coordinates as (M, K, 2) input pixels.
    let pixels = |g: &mut OnnxGraph, x: &str| -> Result<String> {
        let y = model.to_onnx(g, x)?;
        let y = g.reshape(&y, &[-1, k as i64, 2]);
        Ok(g.mul(&y, &size))
    };
    let keypoints = match &options.mirror {
        None => pixels(&mut g, &image)?,
        Some(perm) => {
            let columns: Vec<i64> = (0..w as i64).rev().collect();
            let columns = g.ints("mirror.columns", &columns);
            let flipped = g.node("Gather", &[&image, &columns], vec![Attr::Int("axis", 3)]);
            let both = g.node("Concat", &[&image, &flipped], vec![Attr::Int("axis", 0)]);
            let points = pixels(&mut g, &both)?;
            let halves = g.node_n("Split", &[&points], 2, vec![Attr::Int("axis", 0)]);
            let order: Vec<i64> = perm.iter().map(|&j| j as i64).collect();
            let order = g.ints("mirror.order", &order);
            let mirrored = g.node("Gather", &[&halves[1], &order], vec![Attr::Int("axis", 1)]);
            // kp's order of operations, so the rounding is the same: x = ((p.x + (W - 1)) -
            // m.x) / 2, y = ((p.y + 0) + m.y) / 2 (a sign flip and a halving are exact).
            let right = g.floats("mirror.right", &[2], &[w as f32 - 1.0, 0.0])?;
            let flip = g.floats("mirror.flip", &[2], &[-1.0, 1.0])?;
            let shifted = g.add(&halves[0], &right);
            let flipped = g.mul(&mirrored, &flip);
            let sum = g.add(&shifted, &flipped);
            let half = g.floats("mirror.half", &[1], &[0.5])?;
            g.mul(&sum, &half)
        }
    };
    g.output(
        &keypoints,
        "keypoints",
        &[Dim::Named("N"), Dim::Fixed(k), Dim::Fixed(2)],
        "(x, y) of each keypoint in input pixels, pixel centres at integers",
    );
    Ok(g.into_model(&options.name, &options.doc, &options.metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::registry::{build_model, ModelConfig, ModelKind};
    use crate::onnx::ModelProto;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use prost::Message;
    use std::collections::HashSet;

    /// Every node reads only the graph input, initializers or earlier nodes' outputs, and the
    /// graph output is produced: the graph is well formed and in execution order.
    fn check_topology(model: &ModelProto) {
        let g = model.graph.as_ref().unwrap();
        let mut known: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
        known.extend(g.initializer.iter().map(|t| t.name.as_str()));
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names.len(),
            names.iter().collect::<HashSet<_>>().len(),
            "duplicate weights"
        );
        for n in &g.node {
            for i in &n.input {
                assert!(known.contains(i.as_str()), "{} reads undefined {i}", n.name);
            }
            for o in &n.output {
                assert!(known.insert(o.as_str()), "{o} written twice");
            }
        }
        assert!(known.contains("keypoints"));
    }

    #[test]
    fn every_registered_model_exports_a_well_formed_graph() {
        for kind in ModelKind::ALL {
            let mut cfg = ModelConfig::for_model(kind);
            if kind.name().contains("resnet") {
                (cfg.width, cfg.height) = (64, 64);
            }
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let model = build_model(kind, vb, &cfg).unwrap();
            let k = cfg.num_keypoints;
            for mirror in [None, Some((0..k).rev().collect::<Vec<_>>())] {
                let options = KeypointExport {
                    mirror,
                    ..Default::default()
                };
                let onnx = export_keypoint_model(model.as_ref(), &options).unwrap();
                let back = ModelProto::decode_file(&onnx.encode_to_vec(), kind.name()).unwrap();
                assert_eq!(back, onnx);
                check_topology(&back);
                // Every trainable weight is in the file (batch norms folded or not).
                let stored: usize = back
                    .graph
                    .as_ref()
                    .unwrap()
                    .initializer
                    .iter()
                    .map(|t| t.dims.iter().product::<i64>() as usize)
                    .sum();
                assert!(stored >= model.describe().total_params() * 9 / 10, "{kind}");
            }
        }
    }

    #[test]
    fn a_mirror_order_that_is_not_a_permutation_is_refused() {
        let cfg = ModelConfig::for_model(ModelKind::NoseTipNet);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let model = build_model(ModelKind::NoseTipNet, vb, &cfg).unwrap();
        let options = KeypointExport {
            mirror: Some(vec![0, 0]),
            ..Default::default()
        };
        let e = export_keypoint_model(model.as_ref(), &options).unwrap_err();
        assert!(
            e.to_string()
                .contains("permutation of the model's 1 points"),
            "{e}"
        );
    }
}
