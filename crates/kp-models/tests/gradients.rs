//! Autograd gradients of every layer type (and whole networks) against central finite
//! differences, in f64.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use kp_models::gradcheck::check_directional;
use kp_models::nn::init::SplitMix64;
use kp_models::{
    check_gradients, soft_argmax, BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, ConvInit,
    GradCheckConfig, HeatmapGrid, Linear, MaxPool2d, NoseTipNet, NoseTipNetConfig, ResNet18,
    ResNet18Config, Result,
};

const DEV: Device = Device::Cpu;

/// Reproducible N(0, 1) values.
fn randn(seed: u64, shape: &[usize]) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

fn var(seed: u64, shape: &[usize]) -> Var {
    Var::from_tensor(&randn(seed, shape)).unwrap()
}

/// `sum(y * r)` with a fixed random `r`, so every output matters differently.
fn projected(y: &Tensor, seed: u64) -> Result<Tensor> {
    let r = randn(seed, y.dims());
    Ok((y * r)?.sum_all()?)
}

fn varmap_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, v)| !kp_models::is_buffer(n) && v.dtype().is_float())
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_grads(vars: &[(&str, &Var)], loss: impl Fn() -> Result<Tensor>, cfg: GradCheckConfig) {
    let report = check_gradients(vars, loss, &cfg).unwrap();
    assert!(report.passed(), "{}", report.describe());
    assert!(report.checked > 0);
    assert!(
        report.max_abs_grad > 1e-3,
        "gradients vanish: {}",
        report.describe()
    );
}

fn assert_directional(vars: &[(&str, &Var)], loss: impl Fn() -> Result<Tensor>, directions: usize) {
    let cfg = GradCheckConfig {
        rtol: 1e-5,
        ..Default::default()
    };
    let report = check_directional(vars, loss, directions, 99, &cfg).unwrap();
    assert!(report.passed(), "{}", report.describe());
    assert_eq!(report.checked, vars.len() * directions);
    assert!(
        report.max_abs_grad > 1e-3,
        "gradients vanish: {}",
        report.describe()
    );
}

fn f64_vb(vm: &VarMap) -> VarBuilder<'static> {
    kp_models::seeded_var_builder(vm, 11, DType::F64, &DEV)
}

#[test]
fn conv2d_gradients() {
    // (stride, padding, H, W): same-parity and mixed-parity leftovers, ResNet's 7x7/2/3.
    for (k, stride, padding, h, w) in [
        (3, 1, 0, 7, 6),
        (3, 2, 1, 9, 9),
        (3, 2, 1, 7, 8),
        (1, 2, 0, 6, 7),
        (7, 2, 3, 11, 12),
    ] {
        let vm = VarMap::new();
        let cfg = Conv2dConfig {
            stride,
            padding,
            bias: true,
        };
        let conv = Conv2d::new(f64_vb(&vm).pp("c"), 3, 4, k, cfg, ConvInit::TorchDefault).unwrap();
        let x = var(1, &[2, 3, h, w]);
        let vars = varmap_vars(&vm);
        let mut all: Vec<(&str, &Var)> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
        all.push(("x", &x));
        let loss = || projected(&conv.forward(x.as_tensor())?, 2);
        assert_eq!(
            conv.forward(x.as_tensor()).unwrap().dims()[2..],
            [
                (h + 2 * padding - k) / stride + 1,
                (w + 2 * padding - k) / stride + 1
            ]
        );
        assert_grads(&all, loss, GradCheckConfig::default());
    }
}

#[test]
fn linear_gradients() {
    let vm = VarMap::new();
    let lin = Linear::new(f64_vb(&vm).pp("fc"), 7, 5, true).unwrap();
    let x = var(3, &[4, 7]);
    let vars = varmap_vars(&vm);
    let mut all: Vec<(&str, &Var)> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    all.push(("x", &x));
    assert_grads(
        &all,
        || projected(&lin.forward(x.as_tensor())?, 4),
        GradCheckConfig {
            max_entries: 64,
            ..Default::default()
        },
    );
}

#[test]
fn maxpool_gradients() {
    for (pool, h, w) in [
        (MaxPool2d::new(2, 2, 0), 5, 7),
        (MaxPool2d::new(3, 2, 1), 7, 6),
        (MaxPool2d::new(3, 1, 1), 4, 5),
        (MaxPool2d::new(2, 1, 0), 5, 4),
        (
            MaxPool2d {
                kernel: 2,
                stride: 2,
                padding: 0,
                ceil_mode: true,
            },
            5,
            7,
        ),
    ] {
        let x = var(5, &[2, 2, h, w]); // continuous values: unique arg-max a.s.
        assert_grads(
            &[("x", &x)],
            || projected(&pool.forward(x.as_tensor())?, 6),
            GradCheckConfig {
                max_entries: 1000,
                ..Default::default()
            },
        );
        // The composite fallback differentiates identically.
        assert_grads(
            &[("x", &x)],
            || projected(&pool.forward_composite(x.as_tensor())?, 6),
            GradCheckConfig {
                max_entries: 1000,
                ..Default::default()
            },
        );
    }
}

#[test]
fn the_checker_catches_candles_maxpool_gradient() {
    // candle's built-in max_pool2d backward scales gradients by 1/(k*k); the check must fail.
    let x = var(7, &[1, 1, 4, 4]);
    let report = check_gradients(
        &[("x", &x)],
        || projected(&x.as_tensor().max_pool2d(2)?, 8),
        &GradCheckConfig::default(),
    )
    .unwrap();
    assert!(!report.passed(), "{}", report.describe());
    assert!(report.failures.len() >= 4);
}

#[test]
fn batchnorm_gradients_train_and_eval() {
    let vm = VarMap::new();
    let bn = BatchNorm2d::new(f64_vb(&vm).pp("bn"), 3, BatchNormConfig::default()).unwrap();
    // Non-trivial affine parameters.
    {
        let data = vm.data().lock().unwrap();
        data["bn.weight"].set(&randn(20, &[3])).unwrap();
        data["bn.bias"].set(&randn(21, &[3])).unwrap();
    }
    let x = var(9, &[3, 3, 4, 5]);
    let vars = varmap_vars(&vm);
    let mut all: Vec<(&str, &Var)> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    all.push(("x", &x));
    let cfg = GradCheckConfig {
        max_entries: 200,
        ..Default::default()
    };
    assert_grads(
        &all,
        || projected(&bn.forward(x.as_tensor(), true)?, 10),
        cfg,
    );
    assert_grads(
        &all,
        || projected(&bn.forward(x.as_tensor(), false)?, 10),
        cfg,
    );
}

#[test]
fn nosetipnet_gradients() {
    let vm = VarMap::new();
    let net = NoseTipNet::new(f64_vb(&vm), NoseTipNetConfig::default()).unwrap();
    let x = var(12, &[1, 1, 60, 80]);
    let vars = varmap_vars(&vm);
    assert_eq!(vars.len(), 10);
    let mut all: Vec<(&str, &Var)> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    all.push(("x", &x));
    let loss = || projected(&net.forward(x.as_tensor(), true)?, 13);
    // Every parameter along random directions, plus single entries of the small ones.
    assert_directional(&all, loss, 2);
    let small: Vec<(&str, &Var)> = all
        .iter()
        .copied()
        .filter(|(n, _)| ["conv.0.weight", "conv.6.bias", "mlp.2.weight"].contains(n))
        .collect();
    assert_grads(
        &small,
        loss,
        GradCheckConfig {
            max_entries: 6,
            ..Default::default()
        },
    );
}

#[test]
fn resnet18_gradients_in_train_mode() {
    let vm = VarMap::new();
    let cfg = ResNet18Config {
        num_outputs: 6,
        ..Default::default()
    };
    let net = ResNet18::new(f64_vb(&vm), cfg).unwrap();
    // 32x32: layer4 is 1x1, so its batch norms see 4 values per channel.
    let x = var(14, &[4, 1, 32, 32]);
    let vars = varmap_vars(&vm);
    assert_eq!(vars.len(), 62);
    // One of each kind of layer at different depths (the stem, a block, a shortcut, the head).
    let pick = [
        "conv1.weight",
        "bn1.weight",
        "layer1.1.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer3.1.bn1.bias",
        "layer4.0.conv2.weight",
        "fc.weight",
    ];
    let mut chosen: Vec<(&str, &Var)> = vars
        .iter()
        .filter(|(n, _)| pick.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str(), v))
        .collect();
    assert_eq!(chosen.len(), pick.len());
    chosen.push(("x", &x));
    assert_directional(
        &chosen,
        || projected(&net.forward(x.as_tensor(), true)?, 15),
        1,
    );
}

#[test]
fn soft_argmax_gradients() {
    let hm = var(16, &[2, 3, 6, 5]);
    let grid = HeatmapGrid::new((5, 6), (20, 24));
    assert_grads(
        &[("heatmaps", &hm)],
        || projected(&soft_argmax(hm.as_tensor(), 1.5, grid)?, 17),
        GradCheckConfig {
            max_entries: 180,
            ..Default::default()
        },
    );
}
