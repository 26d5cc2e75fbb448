//! Forward times of compact-family sizes on the CPU, batch 1 and 64, folded for prediction:
//! the measurements behind `CompactConfig::default()`.
//!
//! `RAYON_NUM_THREADS=1 cargo run -p kp-models --release --example compact_timing [-- ITERS [BATCH [VARIANT]]]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use kp_models::{seeded_var_builder, CompactConfig, CompactNet};

fn main() -> kp_models::Result<()> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let batches: Vec<usize> = match std::env::args().nth(2).and_then(|s| s.parse().ok()) {
        Some(b) => vec![b],
        None => vec![1, 64],
    };
    let only = std::env::args().nth(3);
    let d = CompactConfig::default();
    let variants = [
        ("default", d.clone()),
        (
            "head 32",
            CompactConfig {
                head_channels: 32,
                ..d.clone()
            },
        ),
        (
            "head 32, channels 24-192",
            CompactConfig {
                head_channels: 32,
                channels: [24, 48, 96, 192],
                ..d.clone()
            },
        ),
        (
            "head 48, units 1-2-2-1",
            CompactConfig {
                head_channels: 48,
                units: [1, 2, 2, 1],
                ..d.clone()
            },
        ),
        (
            "112 px, head 32",
            CompactConfig {
                head_channels: 32,
                width: 96,
                height: 96,
                ..d.clone()
            },
        ),
    ];
    let dev = Device::Cpu;
    for (name, cfg) in variants {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let vm = VarMap::new();
        let net = CompactNet::new(seeded_var_builder(&vm, 0, DType::F32, &dev), cfg.clone())?;
        let folded = net.folded()?;
        for &batch in &batches {
            let x = Tensor::randn(0f32, 1.0, (batch, 1, cfg.height, cfg.width), &dev)?;
            let n = if batch == 1 {
                iters
            } else {
                iters.div_ceil(20)
            };
            let mut ms = Vec::new();
            for i in 0..n + 3 {
                let t0 = Instant::now();
                // On a pool thread, as kp-train's predictor runs (no hand-off per kernel).
                let y = rayon::scope(|_| folded.forward(&x, false))?;
                std::hint::black_box(y.dims());
                if i >= 3 {
                    ms.push(t0.elapsed().as_secs_f64() * 1e3 / batch as f64);
                }
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "{name:<28} b={batch:<3} {:>7.3} ms/face (median), {} params",
                ms[ms.len() / 2],
                net.num_params()
            );
        }
    }
    Ok(())
}
