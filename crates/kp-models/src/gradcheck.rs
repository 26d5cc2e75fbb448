//! Finite-difference gradient checking.
//!
//! [`check_gradients`] compares candle's autograd gradients of a scalar loss with central
//! differences `(L(v + eps) - L(v - eps)) / (2 eps)`, perturbing one entry at a time.
//! [`check_directional`] perturbs a whole variable along random unit directions `d` and compares
//! `<grad, d>` with `(L(v + eps d) - L(v - eps d)) / (2 eps)`: two evaluations test every
//! entry at once (a wrong entry changes the dot product almost surely), which makes checks of
//! whole networks cheap. Run them in `f64` on small inputs; a comparison fails when
//! `|analytic - numeric| > atol + rtol * max(|analytic|, |numeric|)`, so a gradient scaled by
//! 1/4 (or routed to the wrong element) fails by a wide margin.

use candle_core::{DType, Tensor, Var};

use crate::error::Result;
use crate::nn::init::SplitMix64;

/// Settings of a gradient check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheckConfig {
    /// Perturbation of each entry.
    pub eps: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Entries checked per variable at most (evenly spread, first and last included).
    pub max_entries: usize,
}

impl Default for GradCheckConfig {
    /// `eps = 1e-6`, `rtol = 1e-5`, `atol = 1e-8`, 24 entries per variable (for f64).
    fn default() -> Self {
        Self {
            eps: 1e-6,
            rtol: 1e-5,
            atol: 1e-8,
            max_entries: 24,
        }
    }
}

/// One comparison (an entry, or a direction for [`check_directional`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GradEntry {
    /// Variable label.
    pub var: String,
    /// Flat index within the variable (the direction number for directional checks).
    pub index: usize,
    /// Autograd gradient.
    pub analytic: f64,
    /// Central-difference gradient.
    pub numeric: f64,
}

impl GradEntry {
    /// `|a - n| / max(|a|, |n|, tiny)`.
    pub fn rel_err(&self) -> f64 {
        (self.analytic - self.numeric).abs()
            / self.analytic.abs().max(self.numeric.abs()).max(1e-300)
    }
}

/// The outcome of a gradient check.
#[derive(Debug, Clone, Default)]
pub struct GradCheckReport {
    /// Entries compared.
    pub checked: usize,
    /// Entries outside the tolerance.
    pub failures: Vec<GradEntry>,
    /// Largest relative error among entries whose gradient is above `atol`.
    pub max_rel_err: f64,
    /// Largest gradient magnitude seen (to spot an all-zero check).
    pub max_abs_grad: f64,
}

impl GradCheckReport {
    /// True when every entry is within tolerance.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// A one-paragraph description (the first failures, if any).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} entries, {} failures, max rel err {:.3e}, max |grad| {:.3e}",
            self.checked,
            self.failures.len(),
            self.max_rel_err,
            self.max_abs_grad
        );
        for f in self.failures.iter().take(5) {
            s.push_str(&format!(
                "\n  {}[{}]: analytic {:.6e} numeric {:.6e}",
                f.var, f.index, f.analytic, f.numeric
            ));
        }
        s
    }
}

fn read(var: &Var) -> Result<Vec<f64>> {
    Ok(var
        .as_tensor()
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?)
}

fn write(var: &Var, values: &[f64]) -> Result<()> {
    let t = Tensor::from_slice(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
    var.set(&t)?;
    Ok(())
}

/// Indices to check: all when few, otherwise `max` spread evenly.
fn sample_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    if max < 2 {
        return (0..max).collect();
    }
    let mut v: Vec<usize> = (0..max).map(|i| i * (n - 1) / (max - 1)).collect();
    v.dedup();
    v
}

/// Compares autograd and central-difference gradients of the scalar `loss()` with respect to
/// each `(label, var)`. `loss` must recompute from the variables' current values each call.
pub fn check_gradients<F>(
    vars: &[(&str, &Var)],
    loss: F,
    config: &GradCheckConfig,
) -> Result<GradCheckReport>
where
    F: Fn() -> Result<Tensor>,
{
    let scalar = |t: Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let l = loss()?;
    let grads = l.backward()?;
    let mut report = GradCheckReport::default();
    for (label, var) in vars {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        };
        let base = read(var)?;
        let mut values = base.clone();
        for idx in sample_indices(base.len(), config.max_entries) {
            values[idx] = base[idx] + config.eps;
            write(var, &values)?;
            let plus = scalar(loss()?)?;
            values[idx] = base[idx] - config.eps;
            write(var, &values)?;
            let minus = scalar(loss()?)?;
            values[idx] = base[idx];
            report.add(
                GradEntry {
                    var: label.to_string(),
                    index: idx,
                    analytic: analytic[idx],
                    numeric: (plus - minus) / (2.0 * config.eps),
                },
                config,
            );
        }
        write(var, &base)?;
    }
    Ok(report)
}

/// Compares `<grad, d>` with a central difference along `directions` random unit directions
/// `d` (from a generator seeded with `seed`) for each `(label, var)`.
pub fn check_directional<F>(
    vars: &[(&str, &Var)],
    loss: F,
    directions: usize,
    seed: u64,
    config: &GradCheckConfig,
) -> Result<GradCheckReport>
where
    F: Fn() -> Result<Tensor>,
{
    let scalar = |t: Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let l = loss()?;
    let grads = l.backward()?;
    let mut rng = SplitMix64::new(seed);
    let mut report = GradCheckReport::default();
    for (label, var) in vars {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        };
        let base = read(var)?;
        for dir in 0..directions {
            // A unit-length direction: the step moves the variable by `eps` in L2 norm, so
            // no more activations cross a ReLU/max-pool kink than in an entry-wise check.
            let mut d: Vec<f64> = (0..base.len()).map(|_| rng.next_normal()).collect();
            let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
            d.iter_mut().for_each(|v| *v /= norm);
            let shifted = |sign: f64| -> Vec<f64> {
                base.iter()
                    .zip(&d)
                    .map(|(b, d)| b + sign * config.eps * d)
                    .collect()
            };
            write(var, &shifted(1.0))?;
            let plus = scalar(loss()?)?;
            write(var, &shifted(-1.0))?;
            let minus = scalar(loss()?)?;
            report.add(
                GradEntry {
                    var: label.to_string(),
                    index: dir,
                    analytic: analytic.iter().zip(&d).map(|(g, d)| g * d).sum(),
                    numeric: (plus - minus) / (2.0 * config.eps),
                },
                config,
            );
        }
        write(var, &base)?;
    }
    Ok(report)
}

impl GradCheckReport {
    fn add(&mut self, entry: GradEntry, config: &GradCheckConfig) {
        let diff = (entry.analytic - entry.numeric).abs();
        let scale = entry.analytic.abs().max(entry.numeric.abs());
        self.checked += 1;
        self.max_abs_grad = self.max_abs_grad.max(scale);
        if scale > config.atol {
            self.max_rel_err = self.max_rel_err.max(entry.rel_err());
        }
        if diff > config.atol + config.rtol * scale {
            self.failures.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sampling_covers_ends() {
        assert_eq!(sample_indices(5, 24), [0, 1, 2, 3, 4]);
        let s = sample_indices(1000, 5);
        assert_eq!(s, [0, 249, 499, 749, 999]);
    }

    #[test]
    fn accepts_a_correct_gradient_and_rejects_a_scaled_one() {
        let x =
            Var::from_tensor(&Tensor::new(&[0.3f64, -1.2, 2.0], &Device::Cpu).unwrap()).unwrap();
        let cfg = GradCheckConfig::default();
        // d/dx sum(x^3) = 3x^2.
        let ok = check_gradients(
            &[("x", &x)],
            || Ok(x.as_tensor().powf(3.0)?.sum_all()?),
            &cfg,
        )
        .unwrap();
        assert!(ok.passed(), "{}", ok.describe());
        assert_eq!(ok.checked, 3);
        // A custom graph whose backward is a quarter of the truth must fail: detach 3/4 of it.
        let bad = check_gradients(
            &[("x", &x)],
            || {
                let t = x.as_tensor();
                let y = ((t * 0.25)? + (t.detach() * 0.75)?)?;
                Ok(y.powf(3.0)?.sum_all()?)
            },
            &cfg,
        )
        .unwrap();
        assert_eq!(bad.failures.len(), 3, "{}", bad.describe());
        let ok = check_directional(
            &[("x", &x)],
            || Ok(x.as_tensor().powf(3.0)?.sum_all()?),
            3,
            1,
            &cfg,
        )
        .unwrap();
        assert!(ok.passed() && ok.checked == 3, "{}", ok.describe());
    }

    #[test]
    fn directional_check_catches_one_wrong_entry() {
        // The gradient of entry 1 is dropped (detached): every random direction sees it.
        let x = Var::from_tensor(&Tensor::new(&[0.3f64, -1.2, 2.0, 0.7], &Device::Cpu).unwrap())
            .unwrap();
        let bad = check_directional(
            &[("x", &x)],
            || {
                let t = x.as_tensor();
                let mask = Tensor::new(&[1f64, 0., 1., 1.], &Device::Cpu)?;
                let y = ((t * &mask)? + (t.detach() * (1.0 - &mask)?)?)?;
                Ok(y.sqr()?.sum_all()?)
            },
            4,
            2,
            &GradCheckConfig::default(),
        )
        .unwrap();
        assert_eq!(bad.failures.len(), 4, "{}", bad.describe());
    }
}
