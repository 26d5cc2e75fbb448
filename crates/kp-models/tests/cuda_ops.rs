//! kp's CUDA layers (kp-models' layers and the kp-ops kernels they run) against the CPU's (feature `cuda`; each test passes with a note when the
//! machine has no CUDA device). Run on a GPU machine with
//! `cargo test --release -p kp-models --features cudnn --test cuda_ops`.
//!
//! Every layer's forward and its gradients (of `sum(y * r)` for a fixed random `r`) must match
//! the CPU's within a tolerance relative to the largest reference value: 1e-5 for the exact
//! element-wise kernels, 2e-2 for cuDNN's convolutions (TF32 tensor cores, as PyTorch's
//! default) and 1e-4 for batch norm and pooling.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use kp_models::MaxPool2d;
use kp_models::{BatchNorm2d, BatchNormConfig};

fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("no CUDA device ({e}); skipped");
            None
        }
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(dims: &[usize], seed: u64, dev: &Device) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(values(n, seed), dims, dev).unwrap()
}

/// Largest difference relative to the reference's largest magnitude.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let g = got.to_device(&Device::Cpu).unwrap().flatten_all().unwrap();
    let w = want.flatten_all().unwrap();
    let g = g.to_vec1::<f32>().unwrap();
    let w = w.to_vec1::<f32>().unwrap();
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    g.iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = rel_diff(got, want);
    println!("{what}: relative difference {d:.2e} (tolerance {tol:.0e})");
    assert!(d <= tol, "{what}: relative difference {d} > {tol}");
}

/// Runs `f` on an input of shape `dims` on `dev`; returns the output and the gradients of
/// `sum(y * r)` with respect to the input and to `params`.
fn run(
    dims: &[usize],
    dev: &Device,
    f: &dyn Fn(&Tensor) -> Tensor,
    params: &[Var],
) -> (Tensor, Tensor, Vec<Tensor>) {
    let x = Var::from_tensor(&tensor(dims, 7, dev)).unwrap();
    let y = f(x.as_tensor());
    let r = tensor(y.dims(), 11, dev);
    let loss = (&y * &r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let dx = grads.get(x.as_tensor()).unwrap().clone();
    let dp = params
        .iter()
        .map(|p| grads.get(p.as_tensor()).unwrap().clone())
        .collect();
    (y, dx, dp)
}

#[test]
fn relu_matches_the_cpu() {
    let Some(gpu) = cuda() else { return };
    let dims = [4, 8, 17, 13];
    let f = |x: &Tensor| kp_ops::relu::relu(x).unwrap();
    let (y0, dx0, _) = run(&dims, &Device::Cpu, &f, &[]);
    let (y1, dx1, _) = run(&dims, &gpu, &f, &[]);
    assert_close("relu y", &y1, &y0, 1e-6);
    assert_close("relu dx", &dx1, &dx0, 1e-6);
}

#[test]
fn convolutions_match_the_cpu() {
    let Some(gpu) = cuda() else { return };
    // ResNet18's geometries (stem, 3x3, strided 3x3, 1x1 downsample) and the seed nets' 5x5.
    for (x, w, stride, pad) in [
        ([2, 1, 64, 48], [8, 1, 7, 7], 2, 3),
        ([2, 8, 16, 16], [8, 8, 3, 3], 1, 1),
        ([2, 8, 15, 15], [16, 8, 3, 3], 2, 1),
        ([2, 8, 16, 16], [16, 8, 1, 1], 2, 0),
        ([3, 4, 20, 24], [6, 4, 5, 5], 1, 0),
    ] {
        let run_on = |dev: &Device| {
            let wv = Var::from_tensor(&tensor(&w, 3, dev)).unwrap();
            let wt = wv.as_tensor().clone();
            let f = move |x: &Tensor| kp_ops::conv_device::conv2d(x, &wt, stride, pad).unwrap();
            run(&x, dev, &f, &[wv])
        };
        let (y0, dx0, dw0) = run_on(&Device::Cpu);
        let (y1, dx1, dw1) = run_on(&gpu);
        let what = format!("conv {x:?} * {w:?} /{stride} pad {pad}");
        assert_close(&format!("{what} y"), &y1, &y0, 2e-2);
        assert_close(&format!("{what} dx"), &dx1, &dx0, 2e-2);
        assert_close(&format!("{what} dw"), &dw1[0], &dw0[0], 2e-2);
    }
}

#[test]
fn batch_norm_trains_like_the_cpu() {
    let Some(gpu) = cuda() else { return };
    let dims = [4, 6, 9, 7];
    let run_on = |dev: &Device| {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, dev);
        let bn = BatchNorm2d::new(vb, 6, BatchNormConfig::default()).unwrap();
        // Non-trivial scale and shift.
        let all = vm.all_vars();
        for v in &all {
            if v.dims() == [6] && v.dtype() == DType::F32 {
                let t = tensor(&[6], 5, dev).affine(1.0, 1.5).unwrap();
                v.set(&t).unwrap();
            }
        }
        let x = Var::from_tensor(&tensor(&dims, 7, dev).affine(3.0, 0.5).unwrap()).unwrap();
        let y = bn.forward(x.as_tensor(), true).unwrap();
        let r = tensor(y.dims(), 11, dev);
        let loss = (&y * &r).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let dx = grads.get(x.as_tensor()).unwrap().clone();
        let dg = grads.get(bn.weight()).unwrap().clone();
        let db = grads.get(bn.bias()).unwrap().clone();
        let eval = bn.forward(x.as_tensor(), false).unwrap();
        (
            (y, eval),
            dx,
            dg,
            db,
            bn.running_mean().clone(),
            bn.running_var().clone(),
            bn.num_batches_tracked().unwrap(),
        )
    };
    let cpu = run_on(&Device::Cpu);
    let gpu = run_on(&gpu);
    assert_close("batch norm y", &gpu.0 .0, &cpu.0 .0, 1e-4);
    assert_close("batch norm y (evaluation)", &gpu.0 .1, &cpu.0 .1, 1e-4);
    assert_close("batch norm dx", &gpu.1, &cpu.1, 1e-4);
    assert_close("batch norm dgamma", &gpu.2, &cpu.2, 1e-4);
    assert_close("batch norm dbeta", &gpu.3, &cpu.3, 1e-4);
    assert_close("batch norm running mean", &gpu.4, &cpu.4, 1e-5);
    assert_close("batch norm running var", &gpu.5, &cpu.5, 1e-5);
    assert_eq!(gpu.6, cpu.6);
}

#[test]
fn max_pool_matches_the_cpu() {
    let Some(gpu) = cuda() else { return };
    for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 3, 0)] {
        let pool = MaxPool2d::new(k, s, p);
        let f = move |x: &Tensor| pool.forward(x).unwrap();
        let dims = [3, 5, 14, 11];
        let (y0, dx0, _) = run(&dims, &Device::Cpu, &f, &[]);
        let (y1, dx1, _) = run(&dims, &gpu, &f, &[]);
        assert_close(&format!("max-pool {k}/{s}/{p} y"), &y1, &y0, 1e-6);
        assert_close(&format!("max-pool {k}/{s}/{p} dx"), &dx1, &dx0, 1e-6);
    }
}

#[test]
fn fused_adam_matches_the_formula() {
    let Some(gpu) = cuda() else { return };
    let n = 1000;
    let (p0, g0) = (values(n, 1), values(n, 2));
    let p = Tensor::from_vec(p0.clone(), n, &gpu).unwrap();
    let m = Tensor::zeros(n, DType::F32, &gpu).unwrap();
    let v = Tensor::zeros(n, DType::F32, &gpu).unwrap();
    let (lr, b1, b2, eps, wd) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 0.1f64);
    let (mut pr, mut mr, mut vr) = (
        p0.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        vec![0f64; n],
        vec![0f64; n],
    );
    for t in 1..=3 {
        let g =
            Tensor::from_vec(g0.iter().map(|v| v * t as f32).collect::<Vec<_>>(), n, &gpu).unwrap();
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        kp_ops::cuda_kernels::adam_step(
            &p,
            &m,
            &v,
            &g,
            kp_ops::cuda_kernels::AdamStep {
                beta1: b1,
                beta2: b2,
                step_size: lr / bc1,
                inv_sqrt_bc2: 1.0 / bc2.sqrt(),
                eps,
                decay: 1.0 - lr * wd,
            },
        )
        .unwrap();
        for i in 0..n {
            let gi = g0[i] as f64 * t as f64;
            mr[i] = b1 * mr[i] + (1.0 - b1) * gi;
            vr[i] = b2 * vr[i] + (1.0 - b2) * gi * gi;
            let denom = vr[i].sqrt() / bc2.sqrt() + eps;
            pr[i] = pr[i] * (1.0 - lr * wd) - lr / bc1 * mr[i] / denom;
        }
    }
    let want = Tensor::from_vec(
        pr.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    assert_close("adam parameters after 3 steps", &p, &want, 1e-5);
    let want_m = Tensor::from_vec(
        mr.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    assert_close("adam first moment", &m, &want_m, 1e-5);
}
