//! Times the bundled YuNet's forward pass on a 640x480 input (random pixels), for profiling:
//! `cargo run --release -p kp-models --example yunet_timing -- [ITERS]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use kp_models::yunet::YuNet;

fn main() -> kp_models::Result<()> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let net = YuNet::bundled(&Device::Cpu)?;
    let x = (Tensor::rand(0f32, 255f32, (1, 3, 480, 640), &Device::Cpu)?).to_dtype(DType::F32)?;
    let mut times = Vec::new();
    for _ in 0..iters + 3 {
        let t0 = Instant::now();
        let levels = net.forward(&x)?;
        std::hint::black_box(levels[0].cls.dims());
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut t = times[3..].to_vec();
    t.sort_by(f64::total_cmp);
    println!(
        "YuNet 640x480 forward: median {:.2} ms over {iters}",
        t[t.len() / 2]
    );
    Ok(())
}
