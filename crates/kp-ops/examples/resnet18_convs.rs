//! Times each of ResNet18's convolution shapes (batch 16, 224x224, one input channel) in kp's
//! CPU convolution: forward, and forward + backward (input and weight gradients; none for the
//! stem's input, as in training). `xtask/bench/torch_convs.py` times the same shapes in PyTorch,
//! so a gap in `cargo xtask bench`'s ResNet18 case can be traced to layers. Median milliseconds
//! over ROUNDS after two warm-up rounds; run the two alternately and compare the same layer.
//!
//! ```text
//! cargo run --release -p kp-ops --example resnet18_convs [ROUNDS]
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor, Var};

/// (name, input channels, output channels, input size, kernel, stride, padding, count in the net).
type Layer = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const LAYERS: [Layer; 11] = [
    ("conv1", 1, 64, 224, 7, 2, 3, 1),
    ("l1", 64, 64, 56, 3, 1, 1, 4),
    ("l2a", 64, 128, 56, 3, 2, 1, 1),
    ("l2ds", 64, 128, 56, 1, 2, 0, 1),
    ("l2", 128, 128, 28, 3, 1, 1, 3),
    ("l3a", 128, 256, 28, 3, 2, 1, 1),
    ("l3ds", 128, 256, 28, 1, 2, 0, 1),
    ("l3", 256, 256, 14, 3, 1, 1, 3),
    ("l4a", 256, 512, 14, 3, 2, 1, 1),
    ("l4ds", 256, 512, 14, 1, 2, 0, 1),
    ("l4", 512, 512, 7, 3, 1, 1, 3),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let dev = Device::Cpu;
    let n = 16;
    println!("layer,count,fwd_ms,fwd_bwd_ms");
    let (mut tf, mut tb) = (0.0, 0.0);
    for (name, cin, cout, h, k, s, p, count) in LAYERS {
        let x = Tensor::randn(0f32, 1., (n, cin, h, h), &dev)?;
        let x = if name == "conv1" {
            x
        } else {
            Var::from_tensor(&x)?.as_tensor().clone()
        };
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1., (cout, cin, k, k), &dev)? * 0.05)?)?;
        let (mut fwd, mut both) = (Vec::new(), Vec::new());
        for r in 0..rounds + 2 {
            let t0 = Instant::now();
            let y = kp_ops::conv_cpu::conv2d(&x, w.as_tensor(), None, s, p, false)?;
            let t1 = Instant::now();
            // The output gradient is ones (`backward` seeds it): no extra op to time.
            let grads = y.backward()?;
            std::hint::black_box(grads.get(w.as_tensor()).map(|t| t.dims().len()));
            let t2 = Instant::now();
            if r >= 2 {
                fwd.push((t1 - t0).as_secs_f64() * 1e3);
                both.push((t2 - t0).as_secs_f64() * 1e3);
            }
        }
        let (f, b) = (median(fwd), median(both));
        tf += f * count as f64;
        tb += b * count as f64;
        println!("{name},{count},{f:.2},{b:.2}");
    }
    println!("total,,{tf:.1},{tb:.1}");
    Ok(())
}
