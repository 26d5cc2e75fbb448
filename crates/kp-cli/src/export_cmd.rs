//! `kp export`: a trained run (default: the ready model) as an ONNX file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::args::{MirrorArgs, ModelArgs};

/// Arguments of `kp export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// The ONNX file to write (opset 13; input `image` (N, 1, H, W), output `keypoints`
    /// (N, K, 2) in input pixels; the crop rule and normalisation in its metadata).
    #[arg(long)]
    pub onnx: PathBuf,
}

/// Runs `kp export`.
pub fn export(args: ExportArgs) -> Result<()> {
    let predictor = args.mirror.apply(args.model.predictor()?)?;
    let label = args.model.label();
    let bytes = kp_train::export::write_onnx(&predictor, &label, &args.onnx)
        .with_context(|| format!("exporting {label} to {}", args.onnx.display()))?;
    println!(
        "{}: {} ({} points, {}x{} input{}), {:.1} KB",
        args.onnx.display(),
        predictor.config.model,
        predictor.model.model.num_keypoints(),
        predictor.model.width,
        predictor.model.height,
        if predictor.model.mirror.is_some() {
            ", test-time mirroring in the graph"
        } else {
            ""
        },
        bytes as f64 / 1e3
    );
    Ok(())
}
