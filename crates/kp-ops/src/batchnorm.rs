//! Fused CPU kernels for batch normalisation (f32/f64, NCHW, contiguous).
//!
//! * [`batch_stats`]: per-channel mean and biased variance (f64 accumulation, two passes).
//! * [`normalize`]: `y = (x - mean) * invstd * gamma + beta` as one custom op whose backward
//!   computes `dx`, `dgamma`, `dbeta` in two passes, either through the batch statistics
//!   (training) or with fixed statistics (evaluation).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::reduce::{lane_sum, lane_sum2};
use candle_core::Result;

/// Floats the kernels run on.
trait Float:
    Copy + Send + Sync + 'static + std::ops::Mul<Output = Self> + std::ops::Add<Output = Self>
{
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

fn slice<'a, T>(data: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("batch-norm kernel: input must be contiguous"),
    }
}

/// `(N, C, H*W)` of an NCHW layout.
fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n, c, h * w))
}

/// Per-channel `(sum of f(plane element))` over all planes of channel `c`, for each channel.
fn per_channel<T: Float>(
    x: &[T],
    (n, c, hw): (usize, usize, usize),
    f: impl Fn(usize, usize, &[T]) -> f64 + Sync,
) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|b| {
                    let start = (b * c + ch) * hw;
                    f(ch, start, &x[start..start + hw])
                })
                .sum()
        })
        .collect()
}

fn stats<T: Float>(x: &[T], d: (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let count = (d.0 * d.2) as f64;
    let mean: Vec<f64> = per_channel(x, d, |_, _, p| lane_sum(p, 0.0, T::to_f64))
        .into_iter()
        .map(|s| s / count)
        .collect();
    let var: Vec<f64> = per_channel(x, d, |ch, _, p| {
        let m = mean[ch];
        lane_sum(p, 0.0, |v| {
            let z = v.to_f64() - m;
            z * z
        })
    })
    .into_iter()
    .map(|s| s / count)
    .collect();
    (mean, var)
}

/// Per-channel mean and biased variance of an NCHW tensor, as `(2, C)` in the input's dtype.
struct StatsOp;

impl CustomOp1 for StatsOp {
    fn name(&self) -> &'static str {
        "kp-batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(l)?;
        let pack = |(m, v): (Vec<f64>, Vec<f64>)| -> Vec<f64> { m.into_iter().chain(v).collect() };
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(
                pack(stats(slice(x, l)?, d))
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
            ),
            CpuStorage::F64(x) => CpuStorage::F64(pack(stats(slice(x, l)?, d))),
            other => candle_core::bail!("batch-norm stats: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, Shape::from((2, d.1))))
    }
}

/// Per-channel `(mean, biased variance)` of a contiguous NCHW CPU tensor (no gradient).
pub fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = x.apply_op1_no_bwd(&StatsOp)?;
    Ok((s.get(0)?, s.get(1)?))
}

/// Normalisation constants shared by the forward op and its backward.
#[derive(Debug, Clone)]
struct Norm {
    mean: Arc<Vec<f64>>,
    invstd: Arc<Vec<f64>>,
    /// True when `mean`/`invstd` are the batch's own statistics (training mode): the backward
    /// then differentiates through them.
    batch_stats: bool,
}

fn normalize_fwd<T: Float>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    norm: &Norm,
    (n, c, hw): (usize, usize, usize),
) -> Vec<T> {
    if hw == 0 {
        return Vec::new();
    }
    // Soundness of the unzeroed output: the planes of `x` cover it.
    assert_eq!(x.len(), n * c * hw, "batch norm input length");
    // Each plane writes all of its values: no clearing first (outbuf's note).
    crate::outbuf::filled(n * c * hw, |y| {
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(plane, (yp, xp))| {
                let ch = plane % c;
                let scale = norm.invstd[ch] * gamma[ch].to_f64();
                let shift = beta[ch].to_f64() - norm.mean[ch] * scale;
                let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                for (o, &v) in yp.iter_mut().zip(xp) {
                    o.write(v * scale + shift);
                }
            })
    })
}

/// `y = (x - mean) * invstd * gamma + beta` on `(x, gamma, beta)`.
struct NormalizeOp {
    norm: Norm,
}

impl CustomOp3 for NormalizeOp {
    fn name(&self) -> &'static str {
        "kp-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(l1)?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(b)) => CpuStorage::F32(
                normalize_fwd(slice(x, l1)?, slice(g, l2)?, slice(b, l3)?, &self.norm, d),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(b)) => CpuStorage::F64(
                normalize_fwd(slice(x, l1)?, slice(g, l2)?, slice(b, l3)?, &self.norm, d),
            ),
            (a, _, _) => candle_core::bail!("batch-norm: unsupported dtype {:?}", a.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        // (2, C): sum(dy), sum(dy * xhat).
        let sums = x.apply_op2_no_bwd(
            &grad,
            &SumsOp {
                norm: self.norm.clone(),
            },
        )?;
        let host = sums.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let gamma_host = gamma.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let dx = x.apply_op2_no_bwd(
            &grad,
            &InputGradOp {
                norm: self.norm.clone(),
                gamma: gamma_host,
                sum_dy: host[0].clone(),
                sum_dy_xhat: host[1].clone(),
            },
        )?;
        let dgamma = sums.get(1)?.to_dtype(gamma.dtype())?;
        let dbeta = sums.get(0)?.to_dtype(gamma.dtype())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

fn sums<T: Float>(x: &[T], dy: &[T], norm: &Norm, d: (usize, usize, usize)) -> Vec<f64> {
    let sum_dy = per_channel(dy, d, |_, _, p| lane_sum(p, 0.0, T::to_f64));
    let sum_dy_xhat = per_channel(x, d, |ch, start, p| {
        let (m, inv) = (norm.mean[ch], norm.invstd[ch]);
        lane_sum2(p, &dy[start..start + p.len()], 0.0, |v, g| {
            (v.to_f64() - m) * inv * g.to_f64()
        })
    });
    sum_dy.into_iter().chain(sum_dy_xhat).collect()
}

/// `(2, C)`: per-channel `sum(dy)` and `sum(dy * xhat)` on `(x, dy)`.
struct SumsOp {
    norm: Norm,
}

impl CustomOp2 for SumsOp {
    fn name(&self) -> &'static str {
        "kp-batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(l1)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(
                sums(slice(x, l1)?, slice(g, l2)?, &self.norm, d)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(sums(slice(x, l1)?, slice(g, l2)?, &self.norm, d))
            }
            (a, _) => candle_core::bail!("batch-norm grad: unsupported dtype {:?}", a.dtype()),
        };
        Ok((out, Shape::from((2, d.1))))
    }
}

/// `dx` on `(x, dy)`:
/// training `gamma * invstd / M * (M dy - sum(dy) - xhat sum(dy xhat))`, evaluation
/// `gamma * invstd * dy`.
struct InputGradOp {
    norm: Norm,
    gamma: Vec<f64>,
    sum_dy: Vec<f64>,
    sum_dy_xhat: Vec<f64>,
}

impl InputGradOp {
    fn run<T: Float>(&self, x: &[T], dy: &[T], (n, c, hw): (usize, usize, usize)) -> Vec<T> {
        let m = (n * hw) as f64;
        if hw == 0 {
            return Vec::new();
        }
        // Soundness of the unzeroed output: the planes of `x` and `dy` cover it.
        assert!(
            x.len() == n * c * hw && dy.len() == n * c * hw,
            "batch norm gradient length"
        );
        // Each plane writes all of its values: no clearing first (outbuf's note).
        crate::outbuf::filled(n * c * hw, |dx| {
            dx.par_chunks_mut(hw)
                .zip(x.par_chunks(hw).zip(dy.par_chunks(hw)))
                .enumerate()
                .for_each(|(plane, (out, (xp, gp)))| {
                    let ch = plane % c;
                    let (mean, inv) = (self.norm.mean[ch], self.norm.invstd[ch]);
                    let k = self.gamma[ch] * inv;
                    if self.norm.batch_stats {
                        let a = self.sum_dy[ch] / m;
                        let b = self.sum_dy_xhat[ch] / m;
                        for ((o, &v), &g) in out.iter_mut().zip(xp).zip(gp) {
                            let xhat = (v.to_f64() - mean) * inv;
                            o.write(T::from_f64(k * (g.to_f64() - a - xhat * b)));
                        }
                    } else {
                        for (o, &g) in out.iter_mut().zip(gp) {
                            o.write(T::from_f64(k * g.to_f64()));
                        }
                    }
                })
        })
    }
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "kp-batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(l1)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(self.run(slice(x, l1)?, slice(g, l2)?, d))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(self.run(slice(x, l1)?, slice(g, l2)?, d))
            }
            (a, _) => candle_core::bail!("batch-norm grad: unsupported dtype {:?}", a.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Normalises a contiguous NCHW CPU tensor with per-channel `mean` and `var` (host values),
/// then scales by `gamma` and shifts by `beta`. When `batch_stats`, `mean`/`var` must be the
/// statistics of `x` itself and the gradient flows through them (training mode).
pub fn normalize(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: Vec<f64>,
    var: Vec<f64>,
    eps: f64,
    batch_stats: bool,
) -> Result<Tensor> {
    let invstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let op = NormalizeOp {
        norm: Norm {
            mean: Arc::new(mean),
            invstd: Arc::new(invstd),
            batch_stats,
        },
    };
    x.apply_op3(gamma, beta, op)
}
