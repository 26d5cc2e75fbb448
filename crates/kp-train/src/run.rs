//! The run folder: configuration, metrics, summary, checkpoints and the final model.
//!
//! ```text
//! RUN_DIR/
//!   config.json          everything needed to rerun (TrainConfig)
//!   metrics.csv          step,epoch,split,loss (train loss per step, val loss per epoch)
//!   summary.json         final metrics (deterministic: same seed, same numbers)
//!   timing.json          wall time, images/s, peak memory (varies between runs)
//!   model.safetensors    the latest weights, PyTorch state_dict names
//!   state.json           which checkpoint a resume continues from
//!   checkpoint/epoch-N/  model + optimizer state after epoch N
//! ```
//! Every file is written atomically (temp file + rename); a checkpoint folder is complete before
//! `state.json` points at it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::read_json;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::metrics::{FaceErrors, Metrics};

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Global gradient step (1-based) at which the value was recorded.
    pub step: usize,
    /// Epoch (1-based).
    pub epoch: usize,
    /// `train` or `val`.
    pub split: String,
    /// MSE on normalised coordinates (whatever the run's training objective, [`crate::loss::Loss`]).
    pub loss: f64,
}

/// What a resume needs: the last complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Gradient steps done.
    pub steps_done: usize,
    /// Checkpoint folder, relative to the run folder.
    pub checkpoint: String,
    /// Training seconds spent so far (excluding evaluation).
    pub train_seconds: f64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// All epochs ran.
    Finished,
    /// The loss became NaN/inf; the last good checkpoint was kept.
    Diverged,
}

/// The final, deterministic results of a run (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How the run ended.
    pub status: RunStatus,
    /// Task name.
    pub task: String,
    /// The model.
    pub model: kp_models::ModelKind,
    /// Epochs finished.
    pub epochs: usize,
    /// Gradient steps done.
    pub steps: usize,
    /// Training faces.
    pub train_faces: usize,
    /// Validation faces.
    pub val_faces: usize,
    /// Mean training loss of the last epoch.
    pub final_train_loss: Option<f64>,
    /// Validation loss after the last epoch.
    pub final_val_loss: Option<f64>,
    /// Step at which the loss became non-finite, for diverged runs.
    pub diverged_at_step: Option<usize>,
    /// Faces left out by `skip_bad`, one message each (file and line or element first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Validation metrics of the final (or last good) model.
    pub val: Option<Metrics>,
    /// Per-face validation errors (for CED curves and worst-face grids).
    pub val_errors: Option<FaceErrors>,
}

/// Time and memory figures of a run (`timing.json`); they vary between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds spent in training epochs (all sessions of a resumed run).
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// Peak resident memory of the process in MiB (Linux `VmHWM`), when known.
    pub peak_rss_mib: Option<f64>,
    /// Device used.
    pub device: String,
    /// Seconds of each training epoch run by the last session (a resumed run lists only the
    /// epochs after the resume). The first includes warm-up (on a GPU: kernel loading, cuBLAS
    /// set-up), so the later ones give the steady speed.
    #[serde(default)]
    pub epoch_seconds: Vec<f64>,
}

/// An exclusive lock on a run folder, held while a process trains into it ([`RunDir::lock`]):
/// an advisory `flock` on the folder's `.lock` file, which the kernel releases when the guard is
/// dropped or the process ends, however it ends (a killed run leaves no stale lock).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunState {
    /// Checks the values against the run's configuration: the checkpoint is a relative path
    /// inside the run (`checkpoint/epoch-3`; no `..`, no absolute path), the counts are within the
    /// run's epochs, the time is finite. A damaged or hostile `state.json` is refused, not
    /// followed.
    pub fn validate(&self, epochs: usize) -> std::result::Result<(), String> {
        let c = std::path::Path::new(&self.checkpoint);
        let inside = c.components().next().is_some()
            && c.components()
                .all(|p| matches!(p, std::path::Component::Normal(_)));
        if !inside {
            return Err(format!(
                "checkpoint `{}` is not a folder inside the run",
                kp_fs::shown(&self.checkpoint)
            ));
        }
        if self.epochs_done > epochs {
            return Err(format!(
                "epochs_done = {} is more than the run's {epochs} epochs",
                self.epochs_done
            ));
        }
        if !(self.train_seconds.is_finite() && self.train_seconds >= 0.0) {
            return Err(format!(
                "train_seconds = {} is not a time",
                self.train_seconds
            ));
        }
        Ok(())
    }
}

/// A run folder on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates (or reuses) a run folder and checks it is writable.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let probe = root.join(".write-test");
        std::fs::write(&probe, b"ok").map_err(|e| Error::Run {
            path: root.clone(),
            msg: format!("not writable: {e}"),
        })?;
        let _ = std::fs::remove_file(probe);
        Ok(Self { root })
    }

    /// Opens an existing run folder (it must hold `config.json`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join("config.json").is_file() {
            return Err(Error::Run {
                path: root,
                msg: "no config.json (not a kp run folder?)".into(),
            });
        }
        Ok(Self { root })
    }

    /// Takes the folder's lock ([`RunLock`]), or fails in one line when another process holds
    /// it (two `kp train` into one `--out` would leave one run's config beside the other's
    /// weights). The holder's process id is written into `.lock` for that message.
    pub fn lock(&self) -> Result<RunLock> {
        use std::io::Write;
        let path = self.root.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                // Best effort: the pid only makes the other process's message clearer.
                let _ = file
                    .set_len(0)
                    .and_then(|()| writeln!(file, "{}", std::process::id()));
                // Holding the lock, no other kp writes here: a temporary file left is a killed
                // run's unfinished write (the old file beside it is intact).
                let stale =
                    kp_fs::remove_stale_temps(&self.root).map_err(|e| Error::io(&self.root, e))?;
                if stale > 0 {
                    tracing::info!(files = stale, "removed unfinished writes of a stopped run");
                }
                Ok(RunLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = kp_fs::read_limited(&path, 64)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                Err(Error::Run {
                    path: self.root.clone(),
                    msg: format!(
                        "in use by another kp process{holder}: one training per run folder; \
                         wait for it to end or choose another folder"
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `metrics.csv`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }

    /// `summary.json`.
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// `timing.json`.
    pub fn timing_path(&self) -> PathBuf {
        self.root.join("timing.json")
    }

    /// `model.safetensors`.
    pub fn model_path(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }

    /// The run's configuration and weights file, once training has written both: an error
    /// naming the file when `config.json` has no `num_keypoints` (training never started) or
    /// `model.safetensors` is missing.
    pub fn trained(&self) -> Result<(TrainConfig, PathBuf)> {
        let config = TrainConfig::load(&self.config_path())?;
        if config.num_keypoints.is_none() {
            return Err(Error::Run {
                path: self.config_path(),
                msg: "no num_keypoints (training never started?)".into(),
            });
        }
        let weights = self.model_path();
        match kp_fs::regular_file_len(&weights) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Run {
                    path: weights,
                    msg: "no trained weights yet".into(),
                })
            }
            Err(e) => return Err(Error::io(&weights, e)),
        }
        Ok((config, weights))
    }

    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// The checkpoint folder name for an epoch (relative).
    pub fn checkpoint_name(epoch: usize) -> String {
        format!("checkpoint/epoch-{epoch}")
    }

    /// Reads `state.json`, if present.
    pub fn read_state(&self) -> Result<Option<RunState>> {
        let p = self.state_path();
        if !p.exists() {
            return Ok(None);
        }
        read_json(&p).map(Some)
    }

    /// Reads `summary.json`.
    pub fn read_summary(&self) -> Result<Summary> {
        read_json(&self.summary_path())
    }

    /// Reads `timing.json`.
    pub fn read_timing(&self) -> Result<Timing> {
        read_json(&self.timing_path())
    }

    /// Reads `metrics.csv`.
    pub fn read_metrics(&self) -> Result<Vec<MetricRow>> {
        read_metrics_csv(&self.metrics_path())
    }
}

/// Writes `metrics.csv` atomically.
pub fn write_metrics_csv(path: &Path, rows: &[MetricRow]) -> Result<()> {
    let mut s = String::from("step,epoch,split,loss\n");
    for r in rows {
        // `{:?}` on f64 prints the shortest string that parses back to the same value.
        s.push_str(&format!(
            "{},{},{},{:?}\n",
            r.step, r.epoch, r.split, r.loss
        ));
    }
    Ok(kp_fs::write_atomic(path, s.as_bytes())?)
}

/// Reads a `metrics.csv` written by [`write_metrics_csv`].
pub fn read_metrics_csv(path: &Path) -> Result<Vec<MetricRow>> {
    let text = kp_fs::read_text(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, msg: &str| Error::Run {
        path: path.to_path_buf(),
        msg: format!("line {line}: {msg}"),
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 4 {
            return Err(bad(i + 1, "expected 4 fields: step,epoch,split,loss"));
        }
        rows.push(MetricRow {
            step: f[0].parse().map_err(|_| bad(i + 1, "bad step"))?,
            epoch: f[1].parse().map_err(|_| bad(i + 1, "bad epoch"))?,
            split: f[2].to_string(),
            loss: f[3].parse().map_err(|_| bad(i + 1, "bad loss"))?,
        });
    }
    Ok(rows)
}

/// Peak resident memory of this process in MiB (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_csv_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let rows = vec![
            MetricRow {
                step: 1,
                epoch: 1,
                split: "train".into(),
                loss: 0.1 + 0.2,
            },
            MetricRow {
                step: 1,
                epoch: 1,
                split: "val".into(),
                loss: 1e-7 / 3.0,
            },
        ];
        write_metrics_csv(&p, &rows).unwrap();
        assert_eq!(read_metrics_csv(&p).unwrap(), rows);
    }

    #[test]
    fn bad_metrics_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        std::fs::write(&p, "step,epoch,split,loss\n1,1,train,abc\n").unwrap();
        let e = read_metrics_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("metrics.csv"), "{e}");
    }

    #[test]
    fn taking_the_lock_removes_a_killed_runs_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("run")).unwrap();
        let model = run.path().join("model.safetensors");
        std::fs::write(&model, b"whole").unwrap();
        let stale = kp_fs::temp_path(&model);
        std::fs::write(&stale, b"half").unwrap();
        let _lock = run.lock().unwrap();
        assert!(!stale.exists());
        assert_eq!(std::fs::read(&model).unwrap(), b"whole");
    }

    #[test]
    fn open_requires_config() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunDir::open(dir.path()).is_err());
        let r = RunDir::create(dir.path().join("run")).unwrap();
        assert!(r.path().is_dir());
    }
}
