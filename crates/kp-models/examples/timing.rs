//! Rough forward+backward timings of the registered models on the CPU.
//!
//! `cargo run -p kp-models --release --example timing [-- ITERS [MODEL]]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use kp_models::{build_model, seeded_var_builder, ModelConfig, ModelKind};

fn main() -> kp_models::Result<()> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let only = std::env::args().nth(2);
    let dev = Device::Cpu;
    let runs: [(&str, usize, DType); 5] = [
        ("nosetipnet", 1, DType::F32),
        ("nosetipnet", 2, DType::F64),
        ("facekeypointnet", 2, DType::F32),
        ("resnet18", 16, DType::F32),
        ("heatmap-resnet18", 16, DType::F32),
    ];
    for (name, batch, dtype) in runs {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let kind: ModelKind = name.parse()?;
        let cfg = ModelConfig::for_model(kind);
        let vm = VarMap::new();
        let model = build_model(kind, seeded_var_builder(&vm, 0, dtype, &dev), &cfg)?;
        let (w, h) = model.input_size();
        let x = Tensor::randn(0f32, 1.0, (batch, cfg.in_channels, h, w), &dev)?.to_dtype(dtype)?;
        let mut fwd = Vec::new();
        let mut total = Vec::new();
        for _ in 0..iters {
            let t0 = Instant::now();
            let y = model.forward(&x, true)?;
            let loss = y.sqr()?.mean_all()?;
            let t1 = Instant::now();
            let grads = loss.backward()?;
            let t2 = Instant::now();
            drop(grads);
            fwd.push((t1 - t0).as_secs_f64());
            total.push((t2 - t0).as_secs_f64());
        }
        let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{name:>17} b={batch:<2} {dtype:?}: forward {:8.1} ms, forward+backward {:8.1} ms (best of {iters})",
            best(&fwd) * 1e3,
            best(&total) * 1e3
        );
    }
    if only.as_deref().is_none_or(|o| o == "layers") {
        layers(iters)?;
    }
    Ok(())
}

/// Forward+backward of single layers at ResNet18 (b=16, 224x224) sizes.
fn layers(iters: usize) -> kp_models::Result<()> {
    use candle_core::Var;
    use kp_models::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, ConvInit, MaxPool2d};
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 0, DType::F32, &dev);
    let bn = BatchNorm2d::new(vb.pp("bn"), 64, BatchNormConfig::default())?;
    let conv_cfg = Conv2dConfig {
        stride: 1,
        padding: 1,
        bias: false,
    };
    let conv = Conv2d::new(vb.pp("c"), 64, 64, 3, conv_cfg, ConvInit::TorchDefault)?;
    let pool = MaxPool2d::new(3, 2, 1);
    let x112 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (16, 64, 112, 112), &dev)?)?;
    let x56 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (16, 64, 56, 56), &dev)?)?;
    let cases: [(&str, &dyn Fn() -> kp_models::Result<Tensor>); 5] = [
        ("batchnorm2d(64) train, 16x64x112x112", &|| {
            bn.forward(x112.as_tensor(), true)
        }),
        ("batchnorm2d(64) composite, 16x64x112x112", &|| {
            bn.forward_composite(x112.as_tensor(), true)
        }),
        ("maxpool 3/2/1, 16x64x112x112", &|| {
            pool.forward(x112.as_tensor())
        }),
        ("candle max_pool2d 2/2 (wrong grad), 16x64x112x112", &|| {
            Ok(x112.as_tensor().max_pool2d(2)?)
        }),
        ("conv 3x3 64->64, 16x64x56x56", &|| {
            conv.forward(x56.as_tensor())
        }),
    ];
    for (label, f) in cases {
        let mut best = (f64::INFINITY, f64::INFINITY);
        for _ in 0..iters {
            let t0 = Instant::now();
            let y = f()?;
            let t1 = Instant::now();
            y.sum_all()?.backward()?;
            let t2 = Instant::now();
            best.0 = best.0.min((t1 - t0).as_secs_f64());
            best.1 = best.1.min((t2 - t0).as_secs_f64());
        }
        println!(
            "{label:>50}: forward {:8.1} ms, forward+backward {:8.1} ms",
            best.0 * 1e3,
            best.1 * 1e3
        );
    }
    Ok(())
}
