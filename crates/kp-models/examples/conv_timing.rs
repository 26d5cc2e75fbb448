//! Per-layer CPU timings of kp's fused convolution for the layers of FaceKeypointNet (batch 2)
//! and ResNet18 (batch 16): forward, backward, and the weight-gradient part of the backward
//! (input not requiring a gradient), best of 9, with the GFLOP/s they reach.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p kp-models --example conv_timing`
//! (`KP_LAYERS_UPTO=6`: only the first 6 layers, FaceKeypointNet's).

use std::time::Instant;

use candle_core::{Device, Var};

fn main() {
    let dev = Device::Cpu;
    // (n, c, h, w, o, k, s, p)
    let layers = [
        (2, 1, 120, 160, 16, 5, 1, 0),
        (2, 16, 116, 156, 32, 5, 1, 0),
        (2, 32, 56, 76, 32, 3, 1, 0),
        (2, 32, 54, 74, 32, 3, 1, 0),
        (2, 32, 26, 36, 24, 3, 1, 0),
        (2, 24, 24, 34, 24, 3, 1, 0),
        (16, 1, 224, 224, 64, 7, 2, 3),
        (16, 64, 56, 56, 64, 3, 1, 1),
        (16, 128, 28, 28, 128, 3, 1, 1),
        (16, 256, 14, 14, 256, 3, 1, 1),
        (16, 512, 7, 7, 512, 3, 1, 1),
    ];
    let only: Option<usize> = std::env::var("KP_LAYERS_UPTO")
        .ok()
        .and_then(|v| v.parse().ok());
    for &(n, c, h, w, o, k, s, p) in &layers[..only.unwrap_or(layers.len())] {
        let x = Var::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
        let wt = Var::randn(0f32, 0.1, (o, c, k, k), &dev).unwrap();
        let b = Var::randn(0f32, 0.1, o, &dev).unwrap();
        let mut tf = vec![];
        let mut tb = vec![];
        let mut tw = vec![];
        for _ in 0..9 {
            let t0 = Instant::now();
            let y = kp_ops::conv_cpu::conv2d(
                &x.as_tensor().detach(),
                wt.as_tensor(),
                Some(b.as_tensor()),
                s,
                p,
                true,
            )
            .unwrap();
            let t1 = Instant::now();
            let g = y.sum_all().unwrap().backward().unwrap();
            std::hint::black_box(g.get(wt.as_tensor()).is_some());
            tw.push((Instant::now() - t1).as_secs_f64() * 1e3);
            let _ = t0;
            let t0 = Instant::now();
            let y = kp_ops::conv_cpu::conv2d(
                x.as_tensor(),
                wt.as_tensor(),
                Some(b.as_tensor()),
                s,
                p,
                true,
            )
            .unwrap();
            let t1 = Instant::now();
            let g = y.sum_all().unwrap().backward().unwrap();
            std::hint::black_box(g.get(x.as_tensor()).is_some());
            let t2 = Instant::now();
            tf.push((t1 - t0).as_secs_f64() * 1e3);
            tb.push((t2 - t1).as_secs_f64() * 1e3);
        }
        tf.sort_by(f64::total_cmp);
        tb.sort_by(f64::total_cmp);
        tw.sort_by(f64::total_cmp);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let gflop = 2.0 * (n * o * c * k * k * oh * ow) as f64 / 1e9;
        println!(
            "{:?} fwd {:.2} ms ({:.0} GF/s) bwd {:.2} ms ({:.0} GF/s) of which dW {:.2}",
            (n, c, h, w, o, k, s, p),
            tf[0],
            gflop / tf[0] * 1e3,
            tb[0],
            2.0 * gflop / tb[0] * 1e3,
            tw[0]
        );
    }
}
