//! The training loop: data, model, Adam, per-step train loss, per-epoch validation loss,
//! checkpoints after every epoch, resume, divergence detection, final evaluation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use kp_data::Dataset;

use crate::atomic::write_json;
use crate::config::{SplitKind, TrainConfig};
use crate::distributed::{self, DataParallel, World};
use crate::error::{Error, Result};
use crate::eval::{evaluate, Evaluation};
use crate::loader::{epoch_order, for_each_chunk};
use crate::loss::{self, Loss};
use crate::model::{device_on, LoadedModel};
use crate::optim::{Adam, AdamConfig};
use crate::prep::{cache_faces, CachedFace};
use crate::run::{
    peak_rss_mib, write_metrics_csv, MetricRow, RunDir, RunState, RunStatus, Summary, Timing,
};

/// Batches prepared ahead of the model.
const PREFETCH: usize = 4;
/// Batch size for validation and evaluation.
pub const EVAL_BATCH: usize = 32;

/// How to run the training (what does not change the numbers).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue a stopped run from its last checkpoint.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop after this many epochs in this session (for tests of resume); `None` = all.
    pub stop_after_epochs: Option<usize>,
    /// Draw the progress bar in this group, beside other runs' bars (runs trained at once).
    pub progress_group: Option<indicatif::MultiProgress>,
    /// This process's place in a data-parallel job ([`World::from_env`]); `None` trains alone.
    /// Rank 0 writes the run folder, the other ranks only train. A world of one goes through
    /// the data-parallel path with the numbers of training alone.
    pub world: Option<World>,
}

/// A dataset split into cached training and validation faces.
pub struct PreparedData {
    /// The dataset (after `--limit`).
    pub dataset: Dataset,
    /// Training face indices.
    pub train: Vec<usize>,
    /// Validation face indices.
    pub val: Vec<usize>,
    /// Every face, decoded and pre-scaled.
    pub cache: Vec<CachedFace>,
    /// Points per face the model predicts.
    pub num_keypoints: usize,
    /// Outer eye corners for NME, when the full scheme is predicted.
    pub eye_corners: Option<(usize, usize)>,
    /// Faces left out by `skip_bad` (annotation or image errors), one message each.
    pub skipped: kp_data::SkipReport,
}

impl PreparedData {
    /// Scores `model` on the validation faces, preprocessed by `pipeline` (random steps drawn
    /// per face from `seed`).
    pub fn evaluate_val(
        &self,
        model: &LoadedModel,
        pipeline: &kp_augment::Pipeline,
        seed: u64,
    ) -> Result<Evaluation> {
        evaluate(
            model,
            &self.cache,
            &self.val,
            pipeline,
            self.eye_corners,
            seed,
        )
    }
}

/// Loads, limits, splits and caches the dataset of `cfg`.
///
/// With `cfg.skip_bad`, faces whose annotation or image cannot be read are left out and
/// listed in [`PreparedData::skipped`]; otherwise the first such face fails the run.
pub fn prepare_data(cfg: &TrainConfig) -> Result<PreparedData> {
    let path = cfg.dataset()?;
    let (mut dataset, mut skipped) = kp_data::format::load_dataset_with(&path, cfg.skip_bad)?;
    dataset.faces.retain(|f| f.is_labelled() && !f.ignore);
    if let Some(n) = cfg.limit {
        dataset.truncate(n);
    }
    // Decode before the split, so that with `skip_bad` an unreadable image leaves its face out.
    let subset = cfg.keypoints.as_deref();
    let results = cache_faces(&dataset.faces, subset, cfg.width, cfg.height);
    let mut cache = Vec::with_capacity(results.len());
    let mut kept_faces = Vec::with_capacity(results.len());
    for (face, r) in std::mem::take(&mut dataset.faces).into_iter().zip(results) {
        match r {
            Ok(c) => {
                kept_faces.push(face);
                cache.push(c);
            }
            Err(Error::Data(e)) if cfg.skip_bad => skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    dataset.faces = kept_faces;
    let skipped = kp_data::SkipReport::new(&skipped);
    if skipped.total() > 0 {
        for m in &skipped.messages {
            tracing::warn!("skipped: {m}");
        }
        tracing::warn!("{}: {skipped}", path.display());
    }
    if dataset.is_empty() {
        return Err(Error::Config(format!(
            "no labelled faces in {}",
            path.display()
        )));
    }
    let split = match cfg.split {
        SplitKind::ImmStandard => kp_data::split::Split::imm_standard(&dataset)?,
        SplitKind::Random { val_fraction } => {
            let seed = cfg.split_seed.unwrap_or(cfg.seed);
            kp_data::split::Split::random(dataset.len(), val_fraction, seed)?
        }
    };
    let (train, mut val) = (split.train, split.val);
    if train.is_empty() {
        return Err(Error::Config(
            "the split left no training faces (raise --limit?)".into(),
        ));
    }
    if val.is_empty() {
        // Tiny smoke runs and models trained on every face (--val-fraction 0): validate on
        // the training faces rather than on nothing, and say so, since those numbers are not
        // held out.
        tracing::warn!(
            "the split left no validation faces ({} faces{}): validating on the training \
             faces, so the validation numbers are not held out",
            train.len(),
            cfg.limit
                .map(|l| format!(", --limit {l}"))
                .unwrap_or_default()
        );
        val = train.clone();
    }
    let num_keypoints = cache[0].keypoints.len();
    if let Some(bad) = cache
        .iter()
        .position(|c| c.keypoints.len() != num_keypoints)
    {
        return Err(Error::Config(format!(
            "{}: {} points, expected {num_keypoints}",
            dataset.faces[bad].image.display(),
            cache[bad].keypoints.len()
        )));
    }
    let eye_corners = match (&cfg.keypoints, dataset.scheme) {
        (None, Some(s)) => Some(s.outer_eye_corners),
        _ => None,
    };
    Ok(PreparedData {
        dataset,
        train,
        val,
        cache,
        num_keypoints,
        eye_corners,
        skipped,
    })
}

/// The configuration the run in folder `out` was started with, which `--resume` continues;
/// "nothing to resume" when the folder holds none.
pub fn resume_config(out: &Path) -> Result<TrainConfig> {
    let path = out.join("config.json");
    if !path.exists() {
        return Err(Error::Run {
            path: out.to_path_buf(),
            msg: "nothing to resume: no config.json (a run writes it when it starts); start a \
                  new run without --resume"
                .into(),
        });
    }
    TrainConfig::load(&path)
}

/// What `train` checks and loads before it writes anything: the configuration (the saved one
/// with `--resume`), the run's state, the device and the data; `config.json` written last.
fn start(
    cfg: TrainConfig,
    out: &Path,
    run: &RunDir,
    opts: &TrainOptions,
) -> Result<(
    TrainConfig,
    Option<RunState>,
    candle_core::Device,
    PreparedData,
)> {
    let state = run.read_state()?;
    let mut cfg = cfg;
    if opts.resume {
        let saved = resume_config(out)?;
        let conflicts = saved.conflicts(&cfg);
        if !conflicts.is_empty() {
            return Err(Error::Run {
                path: out.to_path_buf(),
                msg: format!(
                    "--resume continues the run as it was configured, but was given {}",
                    conflicts.join(", ")
                ),
            });
        }
        cfg = saved;
    } else if state.is_some() {
        return Err(Error::Run {
            path: out.to_path_buf(),
            msg: "already holds a run; pass --resume to continue it or choose another folder"
                .into(),
        });
    }
    if let Some(st) = &state {
        st.validate(cfg.epochs).map_err(|msg| Error::Run {
            path: run.state_path(),
            msg,
        })?;
    }
    let (cfg, dev, data) = load(cfg, opts.world.as_ref().map_or(0, |w| w.local_rank))?;
    write_json(&run.config_path(), &cfg)?;
    Ok((cfg, state, dev, data))
}

/// What every rank does with its configuration before training: checks it, names the dataset
/// read, opens the device (CUDA ordinal `ordinal`) and loads the data.
fn load(
    mut cfg: TrainConfig,
    ordinal: usize,
) -> Result<(TrainConfig, candle_core::Device, PreparedData)> {
    cfg.validate()?;
    // config.json names the dataset read, not the datasets folder it was found in.
    cfg.data = cfg.dataset()?;
    let dev = device_on(cfg.device, ordinal)?;
    let data = prepare_data(&cfg)?;
    cfg.num_keypoints = Some(data.num_keypoints);
    Ok((cfg, dev, data))
}

/// The model of `cfg` and its optimizer, both restored from `checkpoint` when given.
fn model_and_optimizer(
    cfg: &TrainConfig,
    data: &PreparedData,
    dev: &candle_core::Device,
    checkpoint: Option<&Path>,
) -> Result<(LoadedModel, Adam)> {
    let mut model = LoadedModel::build(cfg, data.num_keypoints, dev)?;
    let mut opt = Adam::new(
        model.named_vars(),
        AdamConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    if let Some(ck) = checkpoint {
        model.load(&ck.join("model.safetensors"))?;
        opt.load(&ck.join("optimizer.safetensors"))?;
    }
    Ok((model, opt))
}

/// The optimizer steps of the whole run (the learning-rate schedule's length).
fn total_steps(cfg: &TrainConfig, data: &PreparedData) -> usize {
    data.train.len().div_ceil(cfg.batch_size) * cfg.epochs
}

/// The last epoch this session trains: all, or `stop_after_epochs` more than `epoch0`.
fn last_epoch(opts: &TrainOptions, epoch0: usize, epochs: usize) -> usize {
    match opts.stop_after_epochs {
        Some(n) => (epoch0 + n).min(epochs),
        None => epochs,
    }
}

/// The error of a session that stopped before the run's last epoch, as it was asked to.
fn stopped_as_asked(out: &Path, last_epoch: usize, epochs: usize) -> Error {
    Error::Run {
        path: out.to_path_buf(),
        msg: format!("stopped after epoch {last_epoch} of {epochs} as asked"),
    }
}

/// Trains `cfg` into the run folder `out` and returns the summary.
///
/// A finished run folder is left with `config.json`, `metrics.csv`, `summary.json`,
/// `timing.json`, `model.safetensors` and the last checkpoint. When the loss becomes NaN/inf the
/// run stops with [`Error::Diverged`] after writing a summary with status `diverged` computed
/// from the last good checkpoint.
///
/// In a data-parallel job (`opts.world` of several ranks) every rank calls `train` with the same
/// configuration and `out`: rank 0 writes the run folder and returns the full summary, the
/// others train their parts of each batch and return a summary without validation metrics.
pub fn train(cfg: TrainConfig, out: &Path, opts: &TrainOptions) -> Result<Summary> {
    // A world of one still runs the data-parallel path (as DDP does under torchrun): its sums
    // are of one rank, so the numbers are plain training's, and NCCL can be checked on one GPU.
    let world = opts.world.clone();
    if let Some(w) = world.as_ref().filter(|w| !w.is_main()) {
        return train_worker(cfg, out, opts, w);
    }
    let existed = out.exists();
    let run = RunDir::create(out)?;
    let lock = run.lock()?;
    let setup = start(cfg, out, &run, opts);
    let (cfg, state, dev, data) = match setup {
        Ok(v) => v,
        Err(e) => {
            if !existed {
                // Nothing was written: leave no empty run folder behind (`remove_dir` keeps a
                // folder something else put a file in).
                drop(lock);
                let _ = std::fs::remove_file(out.join(".lock"));
                let _ = std::fs::remove_dir(out);
            }
            return Err(e);
        }
    };
    let _lock = lock;
    let (w, h) = (cfg.width, cfg.height);
    let train_pipe = cfg.augment.pipeline(w, h)?;
    let eval_pipe = cfg.eval_augment.pipeline(w, h)?;

    let resumed = state.as_ref().filter(|_| opts.resume);
    let checkpoint = resumed.map(|st| run.path().join(&st.checkpoint));
    let (mut model, mut opt) = model_and_optimizer(&cfg, &data, &dev, checkpoint.as_deref())?;

    let mut rows: Vec<MetricRow> = Vec::new();
    let (mut epoch0, mut step, mut train_seconds) = (0usize, 0usize, 0.0f64);
    if let Some(st) = resumed {
        rows = run.read_metrics()?;
        rows.retain(|r| r.epoch <= st.epochs_done);
        epoch0 = st.epochs_done;
        step = st.steps_done;
        train_seconds = st.train_seconds;
        tracing::info!(epoch = epoch0, step, "resuming");
    }

    let total_steps = total_steps(&cfg, &data);
    let bar = progress_bar(opts.progress, total_steps as u64, step as u64).map(|bar| {
        let name = run.path().file_name().unwrap_or_default();
        bar.set_prefix(name.to_string_lossy().into_owned());
        match &opts.progress_group {
            Some(group) => group.add(bar),
            None => bar,
        }
    });
    let last_epoch = last_epoch(opts, epoch0, cfg.epochs);
    tracing::info!(
        task = cfg.task.name(),
        model = %cfg.model,
        train = data.train.len(),
        val = data.val.len(),
        epochs = cfg.epochs,
        "training"
    );

    // Data-parallel: join the other ranks, then start from rank 0's variables.
    let mut dp = match &world {
        Some(w) => Some(join_job(w, &cfg, &data, &model, epoch0, step)?),
        None => None,
    };

    let mut epoch_seconds = Vec::new();
    for epoch in epoch0 + 1..=last_epoch {
        let started = Instant::now();
        let diverged = run_epoch(
            &Epoch {
                cfg: &cfg,
                data: &data,
                pipeline: &train_pipe,
                device: &dev,
                epoch,
                total_steps,
            },
            &model,
            &mut opt,
            dp.as_mut(),
            &mut step,
            |step, value, mse| {
                // The metrics keep the normalised MSE whatever the objective, so train and
                // validation curves compare.
                rows.push(MetricRow {
                    step,
                    epoch,
                    split: "train".into(),
                    loss: mse as f64,
                });
                if let Some(bar) = &bar {
                    bar.inc(1);
                    bar.set_message(format!("epoch {epoch}/{} loss {value:.5}", cfg.epochs));
                }
            },
        )?;
        let seconds = started.elapsed().as_secs_f64();
        train_seconds += seconds;
        epoch_seconds.push(seconds);
        if let Some((at, loss)) = diverged {
            if let Some(bar) = &bar {
                bar.abandon_with_message(format!("diverged at step {at}"));
            }
            finish_diverged(&run, &cfg, &mut model, &data, &eval_pipe, epoch, at)?;
            return Err(Error::Diverged {
                step: at,
                epoch,
                loss,
            });
        }
        if let Some(dp) = dp.as_mut() {
            // BatchNorm's running statistics differ per rank: keep rank 0's everywhere.
            dp.broadcast_vars()?;
        }
        let ev = data.evaluate_val(&model, &eval_pipe, cfg.seed)?;
        rows.push(MetricRow {
            step,
            epoch,
            split: "val".into(),
            loss: ev.metrics.mse,
        });
        tracing::info!(
            epoch,
            train_s = seconds,
            images_per_s = data.train.len() as f64 / seconds,
            val_loss = ev.metrics.mse,
            val_px = ev.metrics.mean_px_error_input,
            "epoch done"
        );
        save_checkpoint(&run, &model, &opt, &rows, epoch, step, train_seconds)?;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if last_epoch < cfg.epochs {
        return Err(stopped_as_asked(out, last_epoch, cfg.epochs));
    }

    if epoch0 == cfg.epochs {
        // A finished run resumed: its final model is its last checkpoint's, loaded above
        // (checksum and finiteness checked). One that no longer reads back (flipped bytes,
        // removed, damaged) is written again from it; a good one is left as it is.
        let final_model = run.model_path();
        if let Err(e) = kp_models::io::read_weights(&final_model) {
            tracing::warn!(
                "{}: {e}; writing it again from {}",
                final_model.display(),
                state.as_ref().map_or("", |s| s.checkpoint.as_str())
            );
            model.save(&final_model)?;
        }
    }
    let ev = data.evaluate_val(&model, &eval_pipe, cfg.seed)?;
    let summary = make_summary(&cfg, &data, &rows, step, RunStatus::Finished, None, ev);
    write_json(&run.summary_path(), &summary)?;
    let images = rows.iter().filter(|r| r.split == "train").count() as f64 * cfg.batch_size as f64;
    write_json(
        &run.timing_path(),
        &Timing {
            train_seconds,
            images_per_second: if train_seconds > 0.0 {
                images.min((data.train.len() * cfg.epochs) as f64) / train_seconds
            } else {
                0.0
            },
            peak_rss_mib: peak_rss_mib(),
            device: cfg.device.name().to_string(),
            epoch_seconds,
        },
    )?;
    Ok(summary)
}

/// What one epoch of training reads.
struct Epoch<'a> {
    cfg: &'a TrainConfig,
    data: &'a PreparedData,
    pipeline: &'a kp_augment::Pipeline,
    device: &'a candle_core::Device,
    epoch: usize,
    total_steps: usize,
}

/// Trains one epoch: every batch of the epoch's order (this rank's part of it in a
/// data-parallel job), one optimizer step each, `on_step(step, loss, mse)` after each. Returns
/// the step and loss at which the loss stopped being finite (the rest of the epoch is skipped,
/// that step's update too).
fn run_epoch(
    e: &Epoch,
    model: &LoadedModel,
    opt: &mut Adam,
    mut dp: Option<&mut DataParallel>,
    step: &mut usize,
    mut on_step: impl FnMut(usize, f32, f32),
) -> Result<Option<(usize, f32)>> {
    let cfg = e.cfg;
    let (w, h) = (cfg.width, cfg.height);
    let order = epoch_order(&e.data.train, cfg.seed, e.epoch);
    let global: Vec<&[usize]> = order.chunks(cfg.batch_size.max(1)).collect();
    let parts: Vec<&[usize]> = match dp.as_deref() {
        Some(dp) => global
            .iter()
            .map(|c| &c[dp.world().shard(c.len())])
            .collect(),
        None => global.clone(),
    };
    let mut diverged: Option<(usize, f32)> = None;
    let mut k = 0;
    for_each_chunk(
        &e.data.cache,
        e.pipeline,
        &parts,
        cfg.seed,
        e.epoch,
        (w, h),
        PREFETCH,
        |batch| {
            let global_len = global[k].len();
            k += 1;
            if diverged.is_some() {
                return Ok(());
            }
            let b = batch.len();
            opt.set_lr(cfg.lr_schedule.lr_at(cfg.lr, *step, e.total_steps));
            *step += 1;
            // This rank's loss, its normalised MSE and (data-parallel) its gradients.
            let mut local = (0.0f32, 0.0f32, None);
            if b > 0 {
                let x = Tensor::from_slice(&batch.images, (b, 1, h, w), e.device)?;
                let t = Tensor::from_slice(&batch.targets, (b, batch.targets.len() / b), e.device)?;
                let (y, hm) = model.model.forward_decoded(&x, true)?;
                let objective =
                    loss::objective(cfg.loss, cfg.heatmap_reg, (&y, hm.as_ref()), &t, (w, h))?;
                let value = loss::scalar(&objective)?;
                if dp.is_none() && !value.is_finite() {
                    diverged = Some((*step, value));
                    return Ok(());
                }
                let mse = match cfg.loss {
                    Loss::Mse if cfg.heatmap_reg == 0.0 => value,
                    _ => loss::scalar(&Loss::Mse.compute(&y, &t, (w, h))?)?,
                };
                local = (value, mse, Some(objective));
            }
            let (value, mse) = match dp.as_deref_mut() {
                None => {
                    opt.backward_step(&local.2.expect("a non-empty batch"))?;
                    (local.0, local.1)
                }
                Some(dp) => {
                    // Every rank takes part in the sums, also with an empty part or a
                    // non-finite loss, so that all ranks stop (or step) together.
                    let grads = local.2.map(|o| o.backward()).transpose()?;
                    let weight = b as f64 / global_len as f64;
                    let r = dp.reduce(grads.as_ref(), weight, &[local.0, local.1])?;
                    let (value, mse) = (r.scalars[0], r.scalars[1]);
                    if !value.is_finite() {
                        diverged = Some((*step, value));
                        return Ok(());
                    }
                    opt.step(&r.grads)?;
                    (value, mse)
                }
            };
            on_step(*step, value, mse);
            Ok(())
        },
    )?;
    Ok(diverged)
}

/// What ranks compare at the rendezvous to know they train the same run from the same point:
/// the configuration (without the data's path, which may differ between machines), the split's
/// sizes and the epoch and step they start from.
fn run_fingerprint(cfg: &TrainConfig, data: &PreparedData, epoch0: usize, step: usize) -> u64 {
    let mut c = cfg.clone();
    c.data = Default::default();
    let mut bytes = serde_json::to_vec(&c).unwrap_or_default();
    for n in [data.train.len(), data.val.len(), epoch0, step] {
        bytes.extend_from_slice(&(n as u64).to_le_bytes());
    }
    distributed::fingerprint(&bytes)
}

/// Joins the data-parallel job of `world` and sets the model to rank 0's variables.
fn join_job(
    world: &World,
    cfg: &TrainConfig,
    data: &PreparedData,
    model: &LoadedModel,
    epoch0: usize,
    step: usize,
) -> Result<DataParallel> {
    let comm = distributed::connect(
        world,
        &model.device,
        run_fingerprint(cfg, data, epoch0, step),
    )?;
    let mut dp = DataParallel::new(comm, model.named_vars(), distributed::DEFAULT_BUCKET_BYTES)?;
    dp.broadcast_vars()?;
    tracing::info!(
        rank = world.rank,
        world = world.world_size,
        buckets = dp.plan().buckets().len(),
        "data-parallel job joined"
    );
    Ok(dp)
}

/// A rank other than 0 of a data-parallel job: trains its parts of the batches in step with
/// rank 0 and writes nothing (with `resume` it reads rank 0's last checkpoint).
fn train_worker(
    cfg: TrainConfig,
    out: &Path,
    opts: &TrainOptions,
    world: &World,
) -> Result<Summary> {
    let cfg = if opts.resume {
        resume_config(out)?
    } else {
        cfg
    };
    let (cfg, dev, data) = load(cfg, world.local_rank)?;
    let train_pipe = cfg.augment.pipeline(cfg.width, cfg.height)?;
    let state = if opts.resume {
        RunDir::open(out)?.read_state()?
    } else {
        None
    };
    let checkpoint = state.as_ref().map(|st| out.join(&st.checkpoint));
    let (model, mut opt) = model_and_optimizer(&cfg, &data, &dev, checkpoint.as_deref())?;
    let (epoch0, mut step) = state.map_or((0, 0), |st| (st.epochs_done, st.steps_done));
    let mut dp = join_job(world, &cfg, &data, &model, epoch0, step)?;
    let total_steps = total_steps(&cfg, &data);
    let last_epoch = last_epoch(opts, epoch0, cfg.epochs);
    for epoch in epoch0 + 1..=last_epoch {
        let e = Epoch {
            cfg: &cfg,
            data: &data,
            pipeline: &train_pipe,
            device: &dev,
            epoch,
            total_steps,
        };
        if let Some((at, loss)) =
            run_epoch(&e, &model, &mut opt, Some(&mut dp), &mut step, |_, _, _| {})?
        {
            return Err(Error::Diverged {
                step: at,
                epoch,
                loss,
            });
        }
        dp.broadcast_vars()?;
    }
    if last_epoch < cfg.epochs {
        return Err(stopped_as_asked(out, last_epoch, cfg.epochs));
    }
    Ok(Summary {
        status: RunStatus::Finished,
        task: cfg.task.name().into(),
        model: cfg.model,
        epochs: cfg.epochs,
        steps: step,
        train_faces: data.train.len(),
        val_faces: data.val.len(),
        final_train_loss: None,
        final_val_loss: None,
        diverged_at_step: None,
        skipped: data.skipped.messages.clone(),
        val: None,
        val_errors: None,
    })
}

fn progress_bar(show: bool, total: u64, done: u64) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(done);
    Some(bar)
}

fn save_checkpoint(
    run: &RunDir,
    model: &LoadedModel,
    opt: &Adam,
    rows: &[MetricRow],
    epoch: usize,
    step: usize,
    train_seconds: f64,
) -> Result<()> {
    let name = RunDir::checkpoint_name(epoch);
    let dir = run.path().join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    model.save(&dir.join("model.safetensors"))?;
    opt.save(&dir.join("optimizer.safetensors"))?;
    write_metrics_csv(&run.metrics_path(), rows)?;
    model.save(&run.model_path())?;
    write_json(
        &run.state_path(),
        &RunState {
            epochs_done: epoch,
            steps_done: step,
            checkpoint: name.clone(),
            train_seconds,
        },
    )?;
    // Older checkpoints are no longer needed once state.json points at the new one.
    if epoch > 1 {
        let old: PathBuf = run.path().join(RunDir::checkpoint_name(epoch - 1));
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

fn make_summary(
    cfg: &TrainConfig,
    data: &PreparedData,
    rows: &[MetricRow],
    step: usize,
    status: RunStatus,
    diverged_at_step: Option<usize>,
    ev: Evaluation,
) -> Summary {
    let epochs = rows.iter().filter(|r| r.split == "val").count();
    let last_train: Vec<f64> = rows
        .iter()
        .filter(|r| r.split == "train" && r.epoch == epochs)
        .map(|r| r.loss)
        .collect();
    Summary {
        status,
        task: cfg.task.name().into(),
        model: cfg.model,
        epochs,
        steps: step,
        train_faces: data.train.len(),
        val_faces: data.val.len(),
        final_train_loss: (!last_train.is_empty())
            .then(|| last_train.iter().sum::<f64>() / last_train.len() as f64),
        final_val_loss: rows.iter().rev().find(|r| r.split == "val").map(|r| r.loss),
        diverged_at_step,
        skipped: data.skipped.messages.clone(),
        val: Some(ev.metrics),
        val_errors: Some(ev.errors),
    }
}

fn finish_diverged(
    run: &RunDir,
    cfg: &TrainConfig,
    model: &mut LoadedModel,
    data: &PreparedData,
    eval_pipe: &kp_augment::Pipeline,
    epoch: usize,
    at: usize,
) -> Result<()> {
    tracing::warn!(step = at, epoch, "loss is not finite: stopping");
    let rows = if let Some(st) = run.read_state()? {
        model.load(&run.path().join(&st.checkpoint).join("model.safetensors"))?;
        run.read_metrics()?
    } else {
        // Diverged in the first epoch: the initial weights are the last good model.
        *model = LoadedModel::build(cfg, data.num_keypoints, &model.device.clone())?;
        Vec::new()
    };
    model.save(&run.model_path())?;
    let ev = data.evaluate_val(model, eval_pipe, cfg.seed)?;
    let summary = make_summary(cfg, data, &rows, at, RunStatus::Diverged, Some(at), ev);
    write_json(&run.summary_path(), &summary)
}
