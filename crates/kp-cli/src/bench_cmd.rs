//! `kp bench`: times training steps (or inference) of a model on random batches, on the CPU or a
//! GPU, and prints milliseconds per step and images per second.

use anyhow::{Context, Result};
use clap::Args;
use kp_ops::conv_device::GpuBackward;
use kp_train::bench::{StepBench, StepKind};

/// `--conv-backward` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ConvBackward {
    Cudnn,
    Convolutions,
    Candle,
}

impl ConvBackward {
    fn kind(self) -> GpuBackward {
        match self {
            ConvBackward::Cudnn => GpuBackward::Cudnn,
            ConvBackward::Convolutions => GpuBackward::Convolutions,
            ConvBackward::Candle => GpuBackward::Candle,
        }
    }
}

/// Arguments of `kp bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The registry model to time.
    #[arg(long, value_enum, default_value_t = kp_models::ModelKind::ResNet18)]
    model: kp_models::ModelKind,
    /// The compact model's width multiplier (every channel count times this, rounded to a
    /// multiple of 8), as `kp train --channel-multiplier`.
    #[arg(long, default_value_t = 1.0)]
    channel_multiplier: f64,
    /// Input size WIDTHxHEIGHT instead of the model's default, e.g. `160x160` for the compact
    /// model as a `width = height = 160` training configuration runs it.
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    /// Batch sizes to time (repeat or comma separate).
    #[arg(long = "batch-size", value_delimiter = ',', default_values_t = [16usize, 64, 256])]
    batch_sizes: Vec<usize>,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t)]
    device: kp_train::config::DeviceKind,
    /// Time inference (a forward pass in eval mode) instead of training steps.
    #[arg(long)]
    pub infer: bool,
    /// Untimed iterations before the timed ones.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed iterations per batch size.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    iters: u64,
    /// CPU threads (default: RAYON_NUM_THREADS or every core).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: Option<usize>,
    /// How convolutions on a GPU run: `cudnn` (cuDNN's forward and backward kernels; the
    /// default in a build with the `cudnn` feature), `convolutions` (candle's forward, kp's
    /// backward of convolutions of the output gradient; the default otherwise) or `candle`
    /// (candle's own forward and backward).
    #[arg(long, value_enum)]
    conv_backward: Option<ConvBackward>,
    /// On CUDA, let f32 matrix products (and so kp's convolutions) use TF32 tensor cores, as
    /// PyTorch's cuDNN convolutions do by default.
    #[arg(long)]
    tf32: bool,
    /// Print one JSON object per batch size.
    #[arg(long)]
    json: bool,
}

/// `WIDTHxHEIGHT`, each 1-4096 pixels.
fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad =
        || format!("input size {s:?} is not WIDTHxHEIGHT with each side 1-4096, e.g. 160x160");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |v: &str| match v.trim().parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(bad()),
    };
    Ok((side(w)?, side(h)?))
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let device = kp_train::model::device(args.device)?;
    let backward = args
        .conv_backward
        .map(ConvBackward::kind)
        .unwrap_or(GpuBackward::default_for_build());
    kp_ops::conv_device::set_gpu_backward(backward);
    candle_core::cuda::set_gemm_reduced_precision_f32(args.tf32);
    if !args.json {
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            "case", "median ms", "min ms", "img/s"
        );
    }
    for &batch in &args.batch_sizes {
        let bench = StepBench {
            model: args.model,
            channel_multiplier: args.channel_multiplier,
            batch,
            kind: if args.infer {
                StepKind::Infer
            } else {
                StepKind::Train
            },
            warmup: args.warmup,
            iters: args.iters as usize,
            threads: args.threads,
            input_size: args.size,
        };
        let times = bench
            .run(&device)
            .with_context(|| format!("timing {}", bench.name()))?;
        let median = times.median_ms();
        let min = times.ms.iter().copied().fold(f64::INFINITY, f64::min);
        let img_s = batch as f64 / (median / 1e3);
        if args.json {
            let line = serde_json::json!({
                "case": times.case,
                "device": args.device.name(),
                "conv_backward": format!("{backward:?}").to_lowercase(),
                "tf32": args.tf32,
                "batch": batch,
                "median_ms": median,
                "min_ms": min,
                "images_per_second": img_s,
                "ms": times.ms,
            });
            println!("{line}");
        } else {
            println!(
                "{:<28} {median:>10.2} {min:>10.2} {img_s:>10.1}",
                times.case
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn an_input_size_is_width_x_height_and_anything_else_is_refused_with_the_value() {
        assert_eq!(parse_size("160x160"), Ok((160, 160)));
        assert_eq!(parse_size("128X96"), Ok((128, 96)));
        for bad in ["160", "0x160", "160x", "x160", "-1x3", "160x99999", "axb"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
