//! The code a GPU runs (candle's device ops, kp's convolution with a backward of convolutions,
//! composite max-pool and batch norm, Adam on device tensors) trains like kp's CPU kernels.
//!
//! `kp_ops::dispatch::use_device_ops_on_cpu` is process-wide, so this file is its own test
//! binary with one test: nothing else runs beside the switch.

use kp_tests::data_dir;
use kp_train::config::{Task, TrainConfig};
use kp_train::run::RunDir;
use kp_train::trainer::{train, TrainOptions};

fn losses(out: &std::path::Path) -> Vec<(String, f64)> {
    RunDir::open(out)
        .unwrap()
        .read_metrics()
        .unwrap()
        .into_iter()
        .map(|r| (r.split, r.loss))
        .collect()
}

/// The first step's loss (same weights, same batch) agrees to `1e-5`, later ones to `tol`.
fn assert_close(a: &[(String, f64)], b: &[(String, f64)], what: &str, tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: metric rows");
    for (i, ((sa, la), (sb, lb))) in a.iter().zip(b).enumerate() {
        assert_eq!(sa, sb);
        let rel = (la - lb).abs() / la.abs().max(1e-12);
        let tol = if i == 0 { 1e-5 } else { tol };
        assert!(rel < tol, "{what}: row {i} ({sa}) {la} vs {lb}");
    }
}

#[test]
fn the_device_path_trains_like_the_cpu_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nose = TrainConfig::recipe(Task::Nose, data_dir());
    nose.limit = Some(12);
    nose.epochs = 2;
    nose.batch_size = 4;
    // ResNet18 with batch norm, strided and padded convolutions, the 3x3/2 max-pool; a small
    // input keeps the candle ops' CPU time short.
    let mut ibug = TrainConfig::recipe(Task::Ibug, data_dir());
    ibug.limit = Some(10);
    ibug.epochs = 2;
    ibug.batch_size = 4;
    ibug.width = 64;
    ibug.height = 64;

    let mut runs = Vec::new();
    for (name, cfg) in [("nose", nose), ("ibug", ibug)] {
        let cpu = tmp.path().join(format!("{name}-cpu"));
        let dev = tmp.path().join(format!("{name}-device"));
        kp_ops::dispatch::use_device_ops_on_cpu(false);
        train(cfg.clone(), &cpu, &TrainOptions::default()).unwrap();
        kp_ops::dispatch::use_device_ops_on_cpu(true);
        // Stop after one epoch and resume: the optimizer's device-tensor moments are saved and
        // loaded too.
        let first = TrainOptions {
            stop_after_epochs: Some(1),
            ..Default::default()
        };
        assert!(train(cfg.clone(), &dev, &first).is_err());
        let resume = TrainOptions {
            resume: true,
            ..Default::default()
        };
        train(cfg.clone(), &dev, &resume).unwrap();
        kp_ops::dispatch::use_device_ops_on_cpu(false);
        runs.push((name, cpu, dev));
    }
    for (name, cpu, dev) in runs {
        let (a, b) = (losses(&cpu), losses(&dev));
        // Not bit for bit (other summation orders), but the same training. Adam's first steps
        // move every weight by about the learning rate whatever its gradient's size, so the
        // rounding noise in ResNet's near-zero gradients (the directions batch norm removes)
        // grows faster than in the plain network: 0.4% after three steps.
        assert!(
            a.iter().zip(&b).any(|(x, y)| x.1 != y.1),
            "{name}: same path twice?"
        );
        let tol = if name == "nose" { 1e-3 } else { 2e-2 };
        assert_close(&a, &b, name, tol);
    }
}
