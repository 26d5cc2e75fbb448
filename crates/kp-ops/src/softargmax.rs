//! Soft-argmax decoding for prediction in one pass per heatmap: `softmax(β · logits)` over each
//! map and the expected cell-centre coordinates, without materialising the probabilities.
//!
//! Written as candle ops the decoder is a max, a subtraction, an exponential, two sums, a
//! division and four products over every heatmap cell, each a pass over memory with its own
//! allocation; for a compact model's 68 maps of 32x32 that was a fifth of a face's time. This
//! kernel reads each map once (for its maximum) and once more (exponentials and the three sums),
//! maps in parallel. Forward only: training keeps the differentiable candle-op decoder, which
//! this equals within float rounding (the tests compare them).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::im2col::contiguous;

/// Normalised `(B, 2K)` coordinates `x0, y0, x1, y1, ...` of `heatmaps (B, K, h, w)`: for each
/// map, `Σ p · xs[col]` and `Σ p · ys[row]` with `p = softmax(beta · map)`. `xs` (w values) and
/// `ys` (h values) are the cell centres' coordinates. CPU f32 only.
pub fn soft_argmax(heatmaps: &Tensor, beta: f32, xs: &[f32], ys: &[f32]) -> Result<Tensor> {
    let (_, _, h, w) = heatmaps.dims4()?;
    if xs.len() != w || ys.len() != h {
        candle_core::bail!(
            "soft-argmax: {w}x{h} heatmaps with {} x and {} y cell centres",
            xs.len(),
            ys.len()
        );
    }
    heatmaps.contiguous()?.apply_op1_no_bwd(&SoftArgmax {
        beta,
        xs: xs.to_vec(),
        ys: ys.to_vec(),
    })
}

struct SoftArgmax {
    beta: f32,
    xs: Vec<f32>,
    ys: Vec<f32>,
}

impl CustomOp1 for SoftArgmax {
    fn name(&self) -> &'static str {
        "kp-soft-argmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = contiguous(s.as_slice::<f32>()?, l, "soft-argmax heatmaps")?;
        let (b, k, h, w) = l.shape().dims4()?;
        let plane = h * w;
        let mut out = vec![0f32; b * k * 2];
        if plane > 0 {
            out.par_chunks_mut(2)
                .zip(v.par_chunks(plane))
                .for_each(|(o, map)| {
                    let m = map.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) * self.beta;
                    let (mut sum, mut sx, mut sy) = (0f32, 0f32, 0f32);
                    for (row, line) in map.chunks_exact(w).enumerate() {
                        let mut rs = 0f32;
                        let mut rx = 0f32;
                        for (&l, &x) in line.iter().zip(&self.xs) {
                            let e = (self.beta * l - m).exp();
                            rs += e;
                            rx += e * x;
                        }
                        sum += rs;
                        sx += rx;
                        sy += rs * self.ys[row];
                    }
                    o[0] = sx / sum;
                    o[1] = sy / sum;
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, 2 * k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn equals_the_candle_op_decoder() {
        let dev = Device::Cpu;
        let (b, k, h, w) = (2, 3, 5, 7);
        let n = b * k * h * w;
        let vals: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 10.0) - 5.0)
            .collect();
        let hm = Tensor::from_vec(vals, (b, k, h, w), &dev).unwrap();
        let xs: Vec<f32> = (0..w).map(|j| (j as f32 + 0.5) / w as f32).collect();
        let ys: Vec<f32> = (0..h).map(|i| (i as f32 + 0.5) / h as f32).collect();
        for beta in [1.0f32, 2.5] {
            let got: Vec<f32> = soft_argmax(&hm, beta, &xs, &ys)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let p = candle_nn_free_softmax(
                &(hm.reshape((b, k, h * w)).unwrap() * beta as f64).unwrap(),
            )
            .reshape((b, k, h, w))
            .unwrap();
            let xt = Tensor::new(xs.as_slice(), &dev)
                .unwrap()
                .reshape((1, 1, 1, w))
                .unwrap();
            let yt = Tensor::new(ys.as_slice(), &dev)
                .unwrap()
                .reshape((1, 1, h, 1))
                .unwrap();
            let x = p.broadcast_mul(&xt).unwrap().sum((2, 3)).unwrap();
            let y = p.broadcast_mul(&yt).unwrap().sum((2, 3)).unwrap();
            let want: Vec<f32> = Tensor::stack(&[x, y], 2)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got.len(), b * k * 2);
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() < 1e-6, "beta {beta}: {g} vs {r}");
            }
        }
    }

    /// Softmax over the last axis from candle-core ops (kp-ops does not depend on candle-nn).
    fn candle_nn_free_softmax(x: &Tensor) -> Tensor {
        let m = x.max_keepdim(D::Minus1).unwrap();
        let e = x.broadcast_sub(&m).unwrap().exp().unwrap();
        let s = e.sum_keepdim(D::Minus1).unwrap();
        e.broadcast_div(&s).unwrap()
    }

    #[test]
    fn mismatched_cell_centres_are_an_error() {
        let hm = Tensor::zeros((1, 1, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = soft_argmax(&hm, 1.0, &[0.0; 2], &[0.0; 2]).unwrap_err();
        assert!(e.to_string().contains("3x2 heatmaps"), "{e}");
    }
}
