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
                    let (sx, sy, sum) = decode(map, w, self.beta, &self.xs, &self.ys);
                    o[0] = sx / sum;
                    o[1] = sy / sum;
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, 2 * k))))
    }
}

/// Vector lanes of the per-row sums.
const LANES: usize = 8;

crate::vector::widest_vectors! {
    /// One map's `(Σ e·x, Σ e·y, Σ e)` with `e = exp(beta · l - beta · max)`: [`decode_body`]
    /// compiled for the widest vector unit the CPU has ([`crate::vector`]), the same results on
    /// every CPU.
    fn decode(map: &[f32], w: usize, beta: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) = decode_body;
}

/// [`decode`]: the maximum, then each row's exponentials in [`LANES`] lanes (vectorised, with
/// [`exp_le0`] instead of the C library's scalar `expf`, which was a third of the decoder's
/// time), the row's lanes added in order and the rows added in order.
#[inline(always)]
fn decode_body(map: &[f32], w: usize, beta: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) {
    let m = map.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) * beta;
    let (mut sum, mut sx, mut sy) = (0f32, 0f32, 0f32);
    for (row, line) in map.chunks_exact(w).enumerate() {
        let (mut rs, mut rx) = ([0f32; LANES], [0f32; LANES]);
        let (lc, xc) = (line.chunks_exact(LANES), xs.chunks_exact(LANES));
        let (lt, xt) = (lc.remainder(), xc.remainder());
        for (l, x) in lc.zip(xc) {
            for i in 0..LANES {
                let e = exp_le0(beta * l[i] - m);
                rs[i] += e;
                rx[i] += e * x[i];
            }
        }
        for (i, (&l, &x)) in lt.iter().zip(xt).enumerate() {
            let e = exp_le0(beta * l - m);
            rs[i] += e;
            rx[i] += e * x;
        }
        let rs = rs.iter().fold(0f32, |a, &v| a + v);
        let rx = rx.iter().fold(0f32, |a, &v| a + v);
        sum += rs;
        sx += rx;
        sy += rs * ys[row];
    }
    (sx, sy, sum)
}

/// `e^x` for `x <= 0` (the soft-max's shifted logits) without branches, so that a loop of it
/// vectorises: `x = n·ln 2 + r` with `|r| <= ln 2 / 2` (ln 2 in two parts), Cephes' degree-6
/// polynomial for `e^r` (about 1 ulp) and `2^n` built in the exponent bits. Below -87 the result
/// is `e^-87` (1.6e-38, nothing against the maximum's 1); NaN stays NaN.
#[inline(always)]
fn exp_le0(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = x.clamp(-87.0, 0.0);
    let n = (c * LOG2E + 0.5).floor();
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from n + 127 in 1..=127: added to 2^23, the integer is the float's low mantissa bits
    // (a float-to-int `as` cast saturates lane by lane and kept the loop scalar).
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() - 8_388_608f32.to_bits();
    let e = y * f32::from_bits(biased << 23);
    if x.is_nan() {
        x
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn equals_the_candle_op_decoder() {
        let dev = Device::Cpu;
        let (b, k, h, w) = (2, 3, 5, 19);
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
    fn the_vector_exponential_is_within_two_ulp_of_the_c_library() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_le0(x), x.exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_le0(0.0), 1.0);
        assert!(exp_le0(-1000.0) < 2e-38 && exp_le0(f32::NEG_INFINITY) >= 0.0);
        assert!(exp_le0(f32::NAN).is_nan());
    }

    #[test]
    fn a_nan_in_a_map_gives_nan_coordinates() {
        let mut vals = vec![0.5f32; 2 * 4 * 4];
        vals[5] = f32::NAN;
        let hm = Tensor::from_vec(vals, (1, 2, 4, 4), &Device::Cpu).unwrap();
        let c = [0.125f32, 0.375, 0.625, 0.875];
        let got: Vec<f32> = soft_argmax(&hm, 1.0, &c, &c)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(got[0].is_nan() && got[1].is_nan(), "{got:?}");
        assert!(
            (got[2] - 0.5).abs() < 1e-6 && (got[3] - 0.5).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn mismatched_cell_centres_are_an_error() {
        let hm = Tensor::zeros((1, 1, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = soft_argmax(&hm, 1.0, &[0.0; 2], &[0.0; 2]).unwrap_err();
        assert!(e.to_string().contains("3x2 heatmaps"), "{e}");
    }
}
