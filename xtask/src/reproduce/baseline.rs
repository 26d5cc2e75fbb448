//! The regression gate: `cargo xtask reproduce --quick --baseline FILE` compares this
//! invocation's results with a stored `results.json` and fails, naming every metric of every
//! run that got worse beyond its tolerance.
//!
//! Training is deterministic with its seed (same data, same device, same numbers on any number of
//! threads), so tolerances can be tight; they allow for a different CPU's floating-point
//! rounding, not for noise. They are read from a TOML file beside the baseline (`FILE` with the
//! extension `.toml`), when there is one:
//!
//! ```toml
//! # Relative tolerance of every metric (0.02 = 2% worse is still a pass).
//! default = 0.02
//! # Per metric, overriding the default.
//! [metrics]
//! val_nme = 0.01
//! ```
//!
//! Metrics compared: `val_px_input`, `val_px`, `val_mae`, `val_nme`, `val_failure_rate`,
//! `val_loss` (lower is better) and `val_auc` (higher is better). A run that finished in the
//! baseline must finish again, and every baseline run must be in the results; runs the baseline
//! does not have are new, not regressions. Speeds are not compared (they depend on the machine).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::ResultRow;

/// The default relative tolerance when the baseline has no TOML beside it.
pub const DEFAULT_TOLERANCE: f64 = 0.02;

/// Tolerances of the gate (the TOML file beside a baseline).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// Relative tolerance of every metric not named in `metrics`.
    #[serde(default = "default_tolerance")]
    pub default: f64,
    /// Relative tolerance per metric name.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            default: DEFAULT_TOLERANCE,
            metrics: BTreeMap::new(),
        }
    }
}

impl Tolerances {
    fn of(&self, metric: &str) -> f64 {
        self.metrics.get(metric).copied().unwrap_or(self.default)
    }
}

/// One row of a baseline `results.json` (the fields the gate reads).
#[derive(Debug, Clone, Deserialize)]
pub struct BaselineRow {
    run: String,
    status: String,
    #[serde(default)]
    val_px_input: Option<f64>,
    #[serde(default)]
    val_px: Option<f64>,
    #[serde(default)]
    val_mae: Option<f64>,
    #[serde(default)]
    val_nme: Option<f64>,
    #[serde(default)]
    val_failure_rate: Option<f64>,
    #[serde(default)]
    val_auc: Option<f64>,
    #[serde(default)]
    val_loss: Option<f64>,
}

/// A metric, the direction that is better, and how to read it from both rows.
struct Metric {
    name: &'static str,
    lower_is_better: bool,
    baseline: fn(&BaselineRow) -> Option<f64>,
    now: fn(&ResultRow) -> Option<f64>,
}

/// A [`Metric`] of the field `$f`, present in both rows under the same name.
macro_rules! metric {
    ($f:ident, $lower:expr) => {
        Metric {
            name: stringify!($f),
            lower_is_better: $lower,
            baseline: |b| b.$f,
            now: |r| r.$f,
        }
    };
}

const METRICS: [Metric; 7] = [
    metric!(val_px_input, true),
    metric!(val_px, true),
    metric!(val_mae, true),
    metric!(val_nme, true),
    metric!(val_failure_rate, true),
    metric!(val_auc, false),
    metric!(val_loss, true),
];

/// Reads a baseline `results.json` and the tolerances beside it.
pub fn load(path: &Path) -> Result<(Vec<BaselineRow>, Tolerances)> {
    let text = kp_fs::read_text(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<BaselineRow> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a results.json of cargo xtask reproduce",
            path.display()
        )
    })?;
    let toml_path = path.with_extension("toml");
    let tolerances = if toml_path.is_file() {
        let text = kp_fs::read_text(&toml_path)
            .with_context(|| format!("reading {}", toml_path.display()))?;
        let t: Tolerances =
            toml::from_str(&text).with_context(|| format!("{}", toml_path.display()))?;
        let bad = std::iter::once(t.default)
            .chain(t.metrics.values().copied())
            .find(|v| !(v.is_finite() && *v >= 0.0));
        if let Some(v) = bad {
            anyhow::bail!(
                "{}: tolerance {v} is not zero or positive",
                toml_path.display()
            );
        }
        if let Some(name) = t
            .metrics
            .keys()
            .find(|k| !METRICS.iter().any(|m| m.name == *k))
        {
            anyhow::bail!(
                "{}: unknown metric `{name}` (known: {})",
                toml_path.display(),
                METRICS.map(|m| m.name).join(", ")
            );
        }
        t
    } else {
        Tolerances::default()
    };
    Ok((rows, tolerances))
}

/// Every regression of `now` against `baseline`, one line each: `RUN METRIC: NOW vs BASELINE
/// (+X% worse, tolerance Y%)`.
pub fn regressions(baseline: &[BaselineRow], tol: &Tolerances, now: &[ResultRow]) -> Vec<String> {
    let mut out = Vec::new();
    for b in baseline {
        let Some(r) = now.iter().find(|r| r.run == b.run) else {
            out.push(format!(
                "{}: in the baseline but not in these results",
                b.run
            ));
            continue;
        };
        if b.status == "finished" && r.status != "finished" {
            out.push(format!(
                "{}: {} (the baseline's run finished)",
                b.run, r.status
            ));
            continue;
        }
        for m in &METRICS {
            let (Some(base), t) = ((m.baseline)(b), tol.of(m.name)) else {
                continue;
            };
            let worse = match (m.now)(r) {
                None => Some(f64::INFINITY),
                Some(v) if !v.is_finite() => Some(f64::INFINITY),
                Some(v) => {
                    let by = if m.lower_is_better {
                        v - base
                    } else {
                        base - v
                    };
                    (by > t * base.abs()).then_some(by / base.abs().max(f64::MIN_POSITIVE))
                }
            };
            if let Some(rel) = worse {
                out.push(format!(
                    "{} {}: {} vs {base} in the baseline ({:+.2}% worse, tolerance {:.2}%)",
                    b.run,
                    m.name,
                    (m.now)(r).map_or("none".to_string(), |v| v.to_string()),
                    rel * 100.0,
                    t * 100.0
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &str, status: &str, nme: Option<f64>, auc: Option<f64>) -> ResultRow {
        ResultRow {
            experiment: "ibug".into(),
            run: run.into(),
            label: String::new(),
            model: "compact".into(),
            epochs: 1,
            batch_size: 8,
            lr: 1e-3,
            lr_schedule: "cosine".into(),
            augment: "ibug".into(),
            status: status.into(),
            val_faces: 10,
            val_px_input: None,
            val_px: None,
            val_mae: None,
            val_nme: nme,
            val_failure_rate: None,
            val_auc: auc,
            val_loss: None,
            train_seconds: Some(1.0),
            images_per_second: Some(1.0),
            error: None,
        }
    }

    fn baseline(rows: &[ResultRow]) -> Vec<BaselineRow> {
        serde_json::from_value(serde_json::to_value(rows).unwrap()).unwrap()
    }

    #[test]
    fn the_gate_names_each_metric_worse_than_its_tolerance_and_passes_the_rest() {
        let base = baseline(&[
            row("a", "finished", Some(0.050), Some(0.40)),
            row("b", "finished", Some(0.050), None),
            row("c", "finished", Some(0.050), None),
            row("gone", "finished", Some(0.050), None),
        ]);
        let tol = Tolerances {
            default: 0.02,
            metrics: [("val_auc".to_string(), 0.0)].into(),
        };
        let now = [
            // 1% worse NME passes at 2%; a lower AUC fails at tolerance 0.
            row("a", "finished", Some(0.0505), Some(0.399)),
            // 10% worse NME fails.
            row("b", "finished", Some(0.055), None),
            row("c", "diverged", Some(0.01), None),
            row("new", "finished", Some(0.9), None),
        ];
        let r = regressions(&base, &tol, &now);
        assert_eq!(r.len(), 4, "{r:#?}");
        assert!(r[0].starts_with("a val_auc: 0.399 vs 0.4"), "{}", r[0]);
        assert!(r[1].starts_with("b val_nme: 0.055 vs 0.05") && r[1].contains("+10.00% worse"));
        assert!(r[2].starts_with("c: diverged"), "{}", r[2]);
        assert!(r[3].starts_with("gone: in the baseline"), "{}", r[3]);
        // Better and equal numbers pass.
        let same = [
            row("a", "finished", Some(0.04), Some(0.5)),
            row("b", "finished", Some(0.05), None),
            row("c", "finished", Some(0.05), None),
            row("gone", "finished", Some(0.05), None),
        ];
        assert!(regressions(&base, &tol, &same).is_empty());
    }

    #[test]
    fn tolerances_are_read_beside_the_baseline_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("quick.json");
        std::fs::write(&json, "[]").unwrap();
        assert_eq!(load(&json).unwrap().1, Tolerances::default());
        std::fs::write(
            dir.path().join("quick.toml"),
            "default = 0.5\n[metrics]\nval_nme = 0\n",
        )
        .unwrap();
        let t = load(&json).unwrap().1;
        assert_eq!(
            (t.default, t.of("val_nme"), t.of("val_px")),
            (0.5, 0.0, 0.5)
        );
        std::fs::write(dir.path().join("quick.toml"), "[metrics]\nval_nmee = 0.1\n").unwrap();
        let err = load(&json).unwrap_err().to_string();
        assert!(err.contains("unknown metric `val_nmee`"), "{err}");
        std::fs::write(&json, "{\"not\": \"rows\"}").unwrap();
        assert!(load(&json).is_err());
    }
}
