//! Data-parallel training on real faces, two ranks in one test process (threads joined over
//! loopback TCP, the transport CPU jobs use): the trajectory matches one process with the same
//! global batch to float rounding, only rank 0 writes, and a stopped job resumes exactly.

use std::path::Path;

use candle_core::{Device, Tensor};
use kp_tests::{assert_same_files, data_dir, train_losses};
use kp_train::config::{Task, TrainConfig};
use kp_train::distributed::World;
use kp_train::run::Summary;
use kp_train::trainer::{train, TrainOptions};

/// NoseTipNet (no BatchNorm, so the ranks' parts of a batch do not change its numbers) on 23
/// faces in batches of 5: parts of 3 and 2 faces, and a short last batch.
fn config() -> TrainConfig {
    let mut cfg = TrainConfig::recipe(Task::Nose, data_dir());
    cfg.limit = Some(23);
    cfg.epochs = 2;
    cfg.batch_size = 5;
    cfg.seed = 11;
    cfg
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `train` of `cfg` on two ranks (threads) into `out`; returns each rank's result.
fn two_ranks(cfg: &TrainConfig, out: &Path, base: TrainOptions) -> Vec<kp_train::Result<Summary>> {
    let master = format!("127.0.0.1:{}", free_port());
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|rank| {
                let opts = TrainOptions {
                    world: Some(World {
                        rank,
                        world_size: 2,
                        local_rank: rank,
                        master: master.clone(),
                    }),
                    ..base.clone()
                };
                let cfg = cfg.clone();
                s.spawn(move || train(cfg, out, &opts))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t): (String, Tensor)| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap();
            (k, t.flatten_all().unwrap().to_vec1().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn two_ranks_follow_one_process_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let single = train(config(), &one, &TrainOptions::default()).unwrap();
    let ranks = two_ranks(&config(), &two, TrainOptions::default());
    let main = ranks[0].as_ref().unwrap();
    let worker = ranks[1].as_ref().unwrap();
    assert_eq!(main.steps, single.steps);
    assert_eq!((worker.steps, worker.val.is_none()), (single.steps, true));

    // Same weights to float rounding (the sums are taken in another order).
    let (a, b) = (weights(&one), weights(&two));
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let scale = va.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs() / scale);
        }
    }
    assert!(worst < 1e-4, "weights differ by {worst} of their scale");
    // And the logged losses are the global batch's.
    let (la, lb) = (train_losses(&one), train_losses(&two));
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1e-6), "{x} vs {y}");
    }
    let (va, vb) = (single.val.unwrap(), main.val.clone().unwrap());
    assert!(
        (va.mean_px_error_input - vb.mean_px_error_input).abs() < 1e-3 * va.mean_px_error_input
    );
}

#[test]
fn a_network_with_batch_norm_trains_on_two_ranks() {
    // The compact model: BatchNorm (float statistics broadcast from rank 0 after each epoch,
    // an integer batch counter left to each rank).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("compact");
    let mut cfg = config();
    cfg.model = "compact".parse().unwrap();
    (cfg.width, cfg.height) = (64, 64);
    let ranks = two_ranks(&cfg, &out, TrainOptions::default());
    let main = ranks[0].as_ref().unwrap();
    assert_eq!(ranks[1].as_ref().unwrap().steps, main.steps);
    assert!(main.val.as_ref().unwrap().mean_px_error_input.is_finite());
    let bn = weights(&out);
    assert!(
        bn.iter().any(|(k, _)| k.ends_with("running_var")),
        "a BatchNorm network"
    );
}

#[test]
fn a_world_of_one_goes_through_the_sums_and_gives_plain_trainings_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, one) = (tmp.path().join("plain"), tmp.path().join("one"));
    train(config(), &plain, &TrainOptions::default()).unwrap();
    let opts = TrainOptions {
        world: Some(World::single()),
        ..Default::default()
    };
    train(config(), &one, &opts).unwrap();
    assert_same_files(
        &plain,
        &one,
        &["model.safetensors", "metrics.csv", "summary.json"],
    );
}

#[test]
fn a_stopped_two_rank_job_resumes_to_the_unbroken_jobs_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, broken) = (tmp.path().join("whole"), tmp.path().join("broken"));
    two_ranks(&config(), &whole, TrainOptions::default())
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let stop = TrainOptions {
        stop_after_epochs: Some(1),
        ..Default::default()
    };
    for r in two_ranks(&config(), &broken, stop) {
        assert!(r.unwrap_err().to_string().contains("stopped after epoch 1"));
    }
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let ranks = two_ranks(&config(), &broken, resume);
    let (a, b) = (ranks[0].as_ref().unwrap(), ranks[1].as_ref().unwrap());
    assert_eq!(a.steps, b.steps);
    assert_eq!(weights(&whole), weights(&broken));
    assert_eq!(train_losses(&whole), train_losses(&broken));
}
