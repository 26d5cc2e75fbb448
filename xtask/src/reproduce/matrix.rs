//! The study's experiment matrix: which runs `cargo xtask reproduce` trains.

use std::path::Path;

use kp_train::augment::AugmentPreset;
use kp_train::config::{Task, TrainConfig};

/// One training run of the study.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Folder name under `runs/` and row name in the results.
    pub name: String,
    /// Experiment: `nose`, `face` or `ibug`.
    pub experiment: &'static str,
    /// Short human label (e.g. `bs 1, lr 1e-3`).
    pub label: String,
    /// The configuration trained.
    pub config: TrainConfig,
    /// kp's tuned recipe rather than one of the seed study's own runs.
    pub tuned: bool,
}

impl RunSpec {
    /// The label for a chart's legend: a tuned run's full recipe does not fit there (the
    /// table beside the chart gives it).
    pub fn short_label(&self) -> String {
        if self.tuned {
            format!(
                "kp tuned ({}, {} epochs)",
                self.config.model, self.config.epochs
            )
        } else {
            self.label.clone()
        }
    }
}

fn lr_label(lr: f64) -> String {
    format!("{lr:.0e}")
}

/// Every run of the study, with quick-mode reductions when `quick` is set.
///
/// 1. Nose tip, Table 1: bs 1/4/32 at lr 1e-3; lr 1e-4 and 1e-2 at bs 1 (25 epochs).
/// 2. Full face: the seed recipe (±10 px shift) and an augmentation ablation (none / shift /
///    shift+rotation / shift+rotation+jitter), 30 epochs, bs 2, lr 3e-4.
/// 3. ResNet18 on the 300-W training faces (80/20 split), 10 epochs, bs 16, lr 3e-4.
///
/// Each experiment ends with kp's tuned recipe ([`TrainConfig::tuned`]; on 300-W the recipe
/// of the ready ResNet18 model, `models/landmarks/ibug68`).
pub fn study(data: &Path, quick: bool) -> Vec<RunSpec> {
    let mut runs = Vec::new();
    for (bs, lr) in [(1, 1e-3), (4, 1e-3), (32, 1e-3), (1, 1e-4), (1, 1e-2)] {
        let mut c = TrainConfig::recipe(Task::Nose, data);
        c.batch_size = bs;
        c.lr = lr;
        if quick {
            shrink_for_quick(&mut c);
        }
        runs.push(RunSpec {
            name: format!("nose-bs{bs}-lr{}", lr_label(lr)),
            experiment: "nose",
            label: format!("bs {bs}, lr {}", lr_label(lr)),
            config: c,
            tuned: false,
        });
    }
    runs.push(tuned(Task::Nose, data, quick));
    for (aug, label) in [
        (AugmentPreset::SeedShift, "shift ±10 px (seed recipe)"),
        (AugmentPreset::None, "no augmentation"),
        (AugmentPreset::ShiftRotate, "shift + rotation"),
        (
            AugmentPreset::ShiftRotateJitter,
            "shift + rotation + jitter",
        ),
    ] {
        let mut c = TrainConfig::recipe(Task::Face, data);
        c.augment = aug.into();
        if quick {
            shrink_for_quick(&mut c);
        }
        runs.push(RunSpec {
            name: format!("face-{}", aug.name()),
            experiment: "face",
            label: label.into(),
            config: c,
            tuned: false,
        });
    }
    runs.push(tuned(Task::Face, data, quick));
    let mut c = TrainConfig::recipe(Task::Ibug, data);
    if quick {
        shrink_for_quick(&mut c);
    }
    runs.push(RunSpec {
        name: "ibug-resnet18".into(),
        experiment: "ibug",
        label: "ResNet18 regression".into(),
        config: c,
        tuned: false,
    });
    runs.push(tuned(Task::Ibug, data, quick));
    runs
}

/// Quick mode's reductions: a small but real run of every experiment (about 3 minutes of
/// training on 2 cores), whose errors a person can read and the CI gate can check: fewer
/// epochs everywhere (IMM: every face, the task's own split), and 300 of the 300-W faces.
fn shrink_for_quick(c: &mut TrainConfig) {
    match c.task {
        Task::Nose => c.epochs = 10,
        Task::Face => c.epochs = 6,
        Task::Ibug => {
            c.epochs = 3;
            c.limit = Some(300);
            c.batch_size = 8;
        }
    }
}

/// kp's tuned recipe for a task, as a run of the study.
fn tuned(task: Task, data: &Path, quick: bool) -> RunSpec {
    let mut c = TrainConfig::tuned(task, data);
    // The label says what ran: quick mode's epochs, not the recipe's.
    if quick {
        shrink_for_quick(&mut c);
    }
    let mut label = format!(
        "kp tuned: {}, {} epochs, {} lr, {} augmentation",
        c.model,
        c.epochs,
        c.lr_schedule.name(),
        c.augment
    );
    if c.weight_decay > 0.0 {
        label.push_str(&format!(", weight decay {}", c.weight_decay));
    }
    if c.test_time_mirror {
        label.push_str(", test-time mirroring");
    }
    RunSpec {
        name: format!("{}-tuned", task.name()),
        experiment: task.name(),
        label,
        config: c,
        tuned: true,
    }
}

/// Keeps the runs named by `only` (an experiment name or a run name; all when empty), without
/// kp's tuned runs when `no_tuned` is set.
pub fn select(runs: Vec<RunSpec>, only: &[String], no_tuned: bool) -> Vec<RunSpec> {
    runs.into_iter()
        .filter(|r| only.is_empty() || only.iter().any(|o| o == r.experiment || *o == r.name))
        .filter(|r| !(no_tuned && r.tuned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_the_studys_runs() {
        let runs = study(Path::new("/nonexistent"), false);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nose-bs1-lr1e-3",
                "nose-bs4-lr1e-3",
                "nose-bs32-lr1e-3",
                "nose-bs1-lr1e-4",
                "nose-bs1-lr1e-2",
                "nose-tuned",
                "face-seed-shift",
                "face-none",
                "face-shift-rotate",
                "face-shift-rotate-jitter",
                "face-tuned",
                "ibug-resnet18",
                "ibug-tuned"
            ]
        );
        assert!(runs.iter().all(|r| r.config.validate().is_ok()));
        assert_eq!(select(runs.clone(), &["nose".into()], false).len(), 6);
        assert_eq!(select(runs.clone(), &["face-none".into()], false).len(), 1);
        let imm_seed = select(runs.clone(), &["nose".into(), "face".into()], true);
        assert_eq!(imm_seed.len(), 9, "the nose sweep and the four face runs");
        assert!(imm_seed.iter().all(|r| !r.name.ends_with("-tuned")));
        assert_eq!(select(runs.clone(), &["ibug".into()], false).len(), 2);
        assert_eq!(select(runs, &[], true).len(), 10);
    }
}
