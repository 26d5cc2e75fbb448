//! `kp train`: train a model into a run folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kp_train::config::{Recipe, Task, TrainConfig, TrainOverrides};
use kp_train::distributed::World;
use kp_train::trainer::{train as run_training, TrainOptions};

/// Arguments of `kp train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Which experiment: nose, face or ibug (its recipe, see `--recipe`, gives the defaults).
    #[arg(long, value_enum, required_unless_present_any = ["config", "resume"])]
    task: Option<Task>,
    /// Start from this configuration instead of a recipe: a run's config.json, or the same
    /// fields in a .toml file (see `--print-config`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["task", "recipe"])]
    config: Option<PathBuf>,
    /// Dataset (IMM folder, dlib XML, .pts folder) or a datasets folder holding the task's
    /// one (with `--config`: replaces the file's).
    #[arg(long, env = "KP_DATA_DIR")]
    data: Option<PathBuf>,
    /// Run folder to write.
    #[arg(long, required_unless_present = "print_config")]
    out: Option<PathBuf>,
    /// Defaults to start from: `seed` (the study's recipe for the task) or `tuned` (kp's: the
    /// heatmap ResNet18 at the task's input size, batch 8, lr 1e-3 cosine, test-time mirroring;
    /// nose/face: 100 epochs, milder, richer augmentation; ibug: 20 epochs, the Wing loss).
    #[arg(long, value_enum)]
    recipe: Option<Recipe>,
    #[command(flatten)]
    overrides: TrainOverrides,
    /// Print the resolved configuration (JSON, as the run's config.json will hold it) and
    /// exit without training.
    #[arg(long)]
    print_config: bool,
    /// Continue a stopped run from its last checkpoint, with the configuration it was started
    /// with (`--task`, `--config` and flags may be given; a value that differs from the run's
    /// is refused, naming both).
    #[arg(long)]
    resume: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Data-parallel training: one process per entry, each on its part of every batch,
    /// gradients summed before each step (NCCL between GPUs in builds with `--features nccl`,
    /// TCP otherwise). GPU ordinals (`0,1,2,3`, with `--device cuda`) or `cpu` entries
    /// (`cpu,cpu`). `--batch-size` stays the global batch. Jobs over several machines are
    /// started by torchrun or by hand with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
    /// MASTER_PORT (docs/distributed.md).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    devices: Option<Vec<String>>,
}

/// The configuration `kp train` runs: the recipe or `--config` file, `--data`, then the
/// overrides.
fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match (&a.config, a.task) {
        (Some(file), _) => {
            let mut cfg = TrainConfig::from_file(file)?;
            cfg.num_keypoints = None;
            if let Some(d) = &a.data {
                cfg.data = d.clone();
            }
            cfg
        }
        // No --data: training reads the datasets folder found beside the checkout (or fails
        // saying how to name one).
        (None, Some(task)) => TrainConfig::from_recipe(
            a.recipe.unwrap_or_default(),
            task,
            a.data.clone().unwrap_or_default(),
        ),
        // `--resume` alone: the run's own configuration, with the flags given (the trainer
        // refuses any that differ from it).
        (None, None) => {
            let out = a.out.as_ref().context("--resume needs --out")?;
            // The dataset it was started on (`--data`, which KP_DATA_DIR also fills, does not
            // move a run to another one).
            kp_train::trainer::resume_config(out)?
        }
    };
    a.overrides.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// Prints how many faces `--skip-bad` left out, and why, on stderr.
pub fn report_skipped(skipped: &[String]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("skipped {} bad faces:", skipped.len());
    for m in skipped {
        eprintln!("  {m}");
    }
}

pub fn train(a: TrainArgs) -> Result<()> {
    let cfg = resolve(&a)?;
    if a.print_config {
        println!("{}", serde_json::to_string_pretty(&cfg)?);
        return Ok(());
    }
    let world = World::from_env()?;
    if let Some(devices) = &a.devices {
        if world.is_some() {
            anyhow::bail!(
                "--devices starts the ranks itself; WORLD_SIZE is already set (a launcher such \
                 as torchrun started this process): drop one of them"
            );
        }
        return crate::launch::launch(devices, cfg.device);
    }
    let out = a.out.clone().expect("clap requires --out");
    let main_rank = world.as_ref().is_none_or(|w| w.is_main());
    let opts = TrainOptions {
        resume: a.resume,
        progress: !a.quiet && main_rank,
        world,
        ..Default::default()
    };
    let summary = run_training(cfg, &out, &opts)
        .with_context(|| format!("training into {}", out.display()))?;
    if !main_rank {
        // Rank 0 reports the run.
        return Ok(());
    }
    report_skipped(&summary.skipped);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if let Some(m) = &summary.val {
        println!(
            "{}: {} epochs, val mean error {:.3} px (input) / {:.3} px (original), MAE {:.3} px{}",
            out.display(),
            summary.epochs,
            m.mean_px_error_input,
            m.mean_px_error,
            m.mae,
            m.nme
                .map(|n| format!(", NME {:.2}%", n * 100.0))
                .unwrap_or_default()
        );
    }
    Ok(())
}
