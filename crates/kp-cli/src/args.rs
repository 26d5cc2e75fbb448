//! Arguments and helpers several commands share: which model (`--run` or the ready one),
//! test-time mirroring flags, face boxes on the command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kp_data::BBox;
use kp_train::config::DeviceKind;
use kp_train::predict::Predictor;
use kp_train::pretrained::ReadyModel;

/// `--mirror` / `--no-mirror`: test-time mirroring regardless of the run's own setting.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Average each prediction with the mirrored image's (mirrored back): test-time mirroring.
    #[arg(long, overrides_with = "no_mirror")]
    mirror: bool,
    /// No test-time mirroring, even if the run was trained with it.
    #[arg(long)]
    no_mirror: bool,
}

impl MirrorArgs {
    /// Applies the flags to `predictor` (neither flag: the run's own setting).
    pub fn apply(&self, predictor: Predictor) -> Result<Predictor> {
        match (self.mirror, self.no_mirror) {
            (true, _) => Ok(predictor.with_test_time_mirror(true)?),
            (_, true) => Ok(predictor.with_test_time_mirror(false)?),
            _ => Ok(predictor),
        }
    }
}

/// `--run`, `--ready`, `--device`: which model a command predicts with (`kp eval`, `kp predict`,
/// `kp submit`).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Run folder written by `kp train` (default: a ready 68-point model kp ships, --ready).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Which ready model runs when no --run is given (`--help` describes each; their model
    /// cards are under models/landmarks/).
    #[arg(long, value_enum, default_value_t, conflicts_with = "run")]
    pub ready: ReadyModel,
    /// cpu or cuda (default: the run's device; the CPU for the ready model).
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
}

impl ModelArgs {
    /// The model of the run folder, or the ready model kp ships when there is none.
    pub fn predictor(&self) -> Result<Predictor> {
        match &self.run {
            Some(run) => Predictor::open(run, self.device)
                .with_context(|| format!("opening run {}", run.display())),
            None => {
                tracing::info!(model = self.ready.name(), "using the ready model");
                self.ready
                    .predictor(self.device)
                    .with_context(|| format!("loading the ready model {}", self.ready.name()))
            }
        }
    }

    /// The model as outputs name it: the run folder, or `ready:NAME`.
    pub fn label(&self) -> String {
        match &self.run {
            Some(run) => run.display().to_string(),
            None => format!("ready:{}", self.ready.name()),
        }
    }
}

/// Parses `--box LEFT,TOP,WIDTH,HEIGHT`.
pub fn parse_box(s: &str) -> std::result::Result<BBox, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("`{s}`: expected LEFT,TOP,WIDTH,HEIGHT numbers"))?;
    match v[..] {
        [l, t, w, h] if w > 0.0 && h > 0.0 && v.iter().all(|x| x.is_finite()) => {
            Ok(BBox::new(l, t, w, h))
        }
        _ => Err(format!(
            "`{s}`: expected LEFT,TOP,WIDTH,HEIGHT with positive width and height"
        )),
    }
}
