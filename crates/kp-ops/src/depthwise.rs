//! Depthwise convolution: one 3x3 filter per channel (groups = channels), the building block of
//! compact networks (YuNet's detector, MobileNet-style landmark models).
//!
//! candle's `conv2d` with `groups = C` runs one convolution per group, each through im2col and
//! a GEMM with a single output row: for YuNet's 64-channel layers that is 64 tiny GEMMs per
//! layer. A depthwise filter has 9 weights per channel, so the direct loop is both simpler and
//! faster: per output row, three shifted multiply-adds of each of the three input rows, written
//! as slice zips the compiler vectorises, with the bias and an optional ReLU fused in. Planes
//! (image, channel) run in parallel on rayon's pool; each output value sums its nine products
//! in the same order whatever the thread count.
//!
//! The fast path covers 3x3, stride 1, padding 1 on f32 CPU tensors (every depthwise layer of
//! YuNet); any other shape or device goes to candle's grouped `conv2d`, which is also the
//! reference the fast path is tested against.
//!
//! The fast path is differentiable, so compact landmark models train through it: the input's
//! gradient is the same 3x3 kernel run on the output's gradient with each filter turned by 180°
//! (stride 1, padding 1 make the transposed convolution a plain one), and one more pass per
//! channel gives the filter's nine gradients and the bias's, summed over images in a fixed
//! order (channels run in parallel), so gradients too do not depend on the thread count. A
//! fused ReLU masks the output's gradient where the output is zero first.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::im2col::contiguous;

/// `relu?(depthwise_conv(x, w) + b)` for `x (N, C, H, W)`, `w (C, 1, k, k)`, `b (C)`.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 || bias.dims() != [c] {
        candle_core::bail!(
            "depthwise conv2d: input has {c} channels, weight {:?}, bias {:?} (expected ({c}, 1, k, k) and ({c}))",
            weight.dims(),
            bias.dims()
        );
    }
    let fast = crate::dispatch::uses_cpu_kernels(x.device())
        && x.dtype() == candle_core::DType::F32
        && (kh, kw, stride, padding) == (3, 3, 1, 1);
    if fast {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Depthwise3x3 { relu },
        );
    }
    add_bias_relu(x.conv2d(weight, padding, stride, 1, c)?, bias, relu)
}

/// Runs a fused `(input, weight, bias)` CPU op on contiguous copies of its operands.
pub(crate) fn apply_fused(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    op: &impl CustomOp3,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, op)
}

/// `relu?(y + b)` with the bias over `y`'s channels: the candle-op path of the fused ops.
pub(crate) fn add_bias_relu(y: Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    let y = y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// The CPU kernel: 3x3, stride 1, padding 1, bias and optional ReLU fused.
struct Depthwise3x3 {
    relu: bool,
}

impl CustomOp3 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "kp-depthwise3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            contiguous(xs.as_slice::<f32>()?, xl, "depthwise conv2d input")?,
            contiguous(ws.as_slice::<f32>()?, wl, "depthwise conv2d weight")?,
            contiguous(bs.as_slice::<f32>()?, bl, "depthwise conv2d bias")?,
        );
        let (_, c, h, wd) = xl.shape().dims4()?;
        let plane = h * wd;
        // One row of zeros for the rows above and below every plane (allocated per plane, it
        // was a malloc, a memset and a free per channel of every image).
        let zeros = vec![0f32; wd];
        let out = crate::outbuf::filled(x.len(), |out| {
            if plane > 0 {
                out.par_chunks_mut(plane)
                    .zip(x.par_chunks(plane))
                    .enumerate()
                    .for_each(|(i, (o, inp))| {
                        let ch = i % c;
                        let o = crate::outbuf::zeroed(o);
                        let k = &w[ch * 9..ch * 9 + 9];
                        plane_3x3(inp, o, (h, wd), &zeros, k, b[ch], self.relu);
                    });
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        candle_core::bail!("kp-depthwise3x3 runs on the CPU only (GPUs take candle's conv2d)")
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = if self.relu {
            (grad_res * res.gt(0f32)?.to_dtype(grad_res.dtype())?)?
        } else {
            grad_res.clone()
        };
        let g = g.contiguous()?;
        let c = weight.dim(0)?;
        // The transposed 3x3 convolution (stride 1, padding 1) is the convolution with each
        // filter turned by 180°: its nine weights in reverse order.
        let turned = weight
            .reshape((c, 9))?
            .index_select(&Tensor::arange_step(8i64, -1, -1, weight.device())?, 1)?
            .reshape((c, 1, 3, 3))?
            .contiguous()?;
        let zeros = Tensor::zeros(c, g.dtype(), g.device())?;
        let dx = g.apply_op3_no_bwd(&turned, &zeros, &Depthwise3x3 { relu: false })?;
        let dwb = x.contiguous()?.apply_op2_no_bwd(&g, &FilterGrad)?; // (C, 10)
        let dw = dwb.narrow(1, 0, 9)?.reshape((c, 1, 3, 3))?;
        let db = dwb.narrow(1, 9, 1)?.reshape(c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The filter and bias gradients of [`Depthwise3x3`]: for `(x, g)` both `(N, C, H, W)`, a
/// `(C, 10)` tensor holding per channel `Σ g[y][x] · in[y + ky - 1][x + kx - 1]` for the nine
/// `(ky, kx)` and `Σ g` last, summed over images in order.
struct FilterGrad;

impl CustomOp2 for FilterGrad {
    fn name(&self) -> &'static str {
        "kp-depthwise3x3-filter-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(xs.as_slice::<f32>()?, xl, "depthwise conv2d input")?;
        let g = contiguous(
            gs.as_slice::<f32>()?,
            gl,
            "depthwise conv2d output gradient",
        )?;
        let (n, c, h, w) = xl.shape().dims4()?;
        if gl.shape() != xl.shape() {
            candle_core::bail!(
                "depthwise filter gradient: input {:?} and gradient {:?} differ",
                xl.shape(),
                gl.shape()
            );
        }
        let plane = h * w;
        let mut out = vec![0f32; c * 10];
        out.par_chunks_mut(10).enumerate().for_each(|(ch, acc)| {
            for img in 0..n {
                let at = (img * c + ch) * plane;
                let sums = plane_filter_grad(&x[at..at + plane], &g[at..at + plane], h, w);
                for (a, s) in acc.iter_mut().zip(sums) {
                    *a += s;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c, 10))))
    }
}

/// One plane's `[Σ g · shifted input for the nine taps..., Σ g]`.
///
/// Tap `(ky, kx)` pairs output `(y, x)` with input `(y + ky - 1, x + kx - 1)`: over the output
/// rows whose input row exists, a dot product of the output row's valid columns with the input
/// row shifted by `kx - 1`.
fn plane_filter_grad(inp: &[f32], g: &[f32], h: usize, w: usize) -> [f32; 10] {
    let mut sums = [0f32; 10];
    for ky in 0..3 {
        for kx in 0..3 {
            let mut acc = 0f32;
            for y in 0..h {
                let Some(iy) = (y + ky).checked_sub(1).filter(|&iy| iy < h) else {
                    continue;
                };
                let grow = &g[y * w..(y + 1) * w];
                let irow = &inp[iy * w..(iy + 1) * w];
                // Output columns x with input column x + kx - 1 inside the row.
                let (g_part, i_part) = match kx {
                    0 if w > 1 => (&grow[1..], &irow[..w - 1]),
                    1 => (grow, irow),
                    2 if w > 1 => (&grow[..w - 1], &irow[1..]),
                    _ => continue,
                };
                acc += dot(g_part, i_part);
            }
            sums[ky * 3 + kx] = acc;
        }
    }
    sums[9] = g.iter().sum();
    sums
}

/// A dot product in eight fixed lanes (vectorisable, and the same order on every CPU).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += xa[i] * xb[i];
        }
    }
    let mut s = lanes.iter().sum::<f32>();
    for (p, q) in ra.iter().zip(rb) {
        s += p * q;
    }
    s
}

crate::vector::widest_vectors! {
    /// [`plane_3x3_body`] compiled for the widest vector unit the CPU has
    /// ([`crate::vector`]): the same results on every CPU.
    fn plane_3x3(
        inp: &[f32],
        out: &mut [f32],
        hw: (usize, usize),
        zeros: &[f32],
        k: &[f32],
        b: f32,
        relu: bool,
    ) = plane_3x3_body;
}

/// One plane: `out = relu?(b + Σ_ky Σ_kx k[ky][kx] · in[y + ky - 1][x + kx - 1])`, zero outside;
/// `zeros` (at least `w` zeros) stands for the rows above and below the plane.
///
/// Each output row is one pass over the three input rows (rows outside the plane read as
/// zeros): the interior columns as nine equal-length slice streams the compiler vectorises,
/// the two edge columns apart.
#[inline(always)]
fn plane_3x3_body(
    inp: &[f32],
    out: &mut [f32],
    (h, w): (usize, usize),
    zeros: &[f32],
    k: &[f32],
    b: f32,
    relu: bool,
) {
    let zeros = &zeros[..w];
    let row = |y: Option<usize>| match y {
        Some(y) if y < h => &inp[y * w..(y + 1) * w],
        _ => zeros,
    };
    let act = |v: f32| if relu { v.max(0.0) } else { v };
    for y in 0..h {
        let rows = [row(y.checked_sub(1)), row(Some(y)), row(Some(y + 1))];
        let o = &mut out[y * w..(y + 1) * w];
        // Edge columns: the neighbours outside the plane are zero.
        let at = |x: usize| -> f32 {
            let mut acc = b;
            for (r, kr) in rows.iter().zip(k.chunks_exact(3)) {
                for (dx, &kv) in kr.iter().enumerate() {
                    if let Some(xx) = (x + dx).checked_sub(1).filter(|&xx| xx < w) {
                        acc += kv * r[xx];
                    }
                }
            }
            act(acc)
        };
        o[0] = at(0);
        if w == 1 {
            continue;
        }
        o[w - 1] = at(w - 1);
        if w == 2 {
            continue;
        }
        let n = w - 2;
        let [r0, r1, r2] = rows;
        let (a0, a1, a2) = (&r0[..n], &r0[1..n + 1], &r0[2..n + 2]);
        let (b0, b1, b2) = (&r1[..n], &r1[1..n + 1], &r1[2..n + 2]);
        let (c0, c1, c2) = (&r2[..n], &r2[1..n + 1], &r2[2..n + 2]);
        let oi = &mut o[1..n + 1];
        let [k0, k1, k2, k3, k4, k5, k6, k7, k8]: [f32; 9] =
            k.try_into().expect("a 3x3 filter has 9 weights");
        for i in 0..n {
            let v = b
                + k0 * a0[i]
                + k1 * a1[i]
                + k2 * a2[i]
                + k3 * b0[i]
                + k4 * b1[i]
                + k5 * b2[i]
                + k6 * c0[i]
                + k7 * c1[i]
                + k8 * c2[i];
            oi[i] = if relu { v.max(0.0) } else { v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        // A small deterministic generator: the test needs varied values, not a distribution.
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Vec<f32> {
        let c = x.dims()[1];
        let y = x
            .conv2d(w, 1, 1, 1, c)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        let y = if relu { y.relu().unwrap() } else { y };
        y.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn the_3x3_kernel_equals_candles_grouped_convolution_on_odd_sizes_and_edges() {
        for (n, c, h, w) in [
            (2, 5, 7, 9),
            (1, 3, 1, 1),
            (1, 2, 1, 6),
            (1, 4, 6, 1),
            (3, 16, 12, 20),
        ] {
            let x = random(&[n, c, h, w], 1);
            let k = random(&[c, 1, 3, 3], 2);
            let b = random(&[c], 3);
            for relu in [false, true] {
                let got: Vec<f32> = depthwise_conv2d(&x, &k, &b, 1, 1, relu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want = reference(&x, &k, &b, relu);
                assert_eq!(got.len(), want.len());
                for (g, r) in got.iter().zip(&want) {
                    assert!(
                        (g - r).abs() <= 1e-5,
                        "{n}x{c}x{h}x{w} relu={relu}: {g} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_3x3_kernels_gradients_equal_candles_grouped_convolution() {
        use candle_core::Var;
        for (n, c, h, w, relu) in [
            (2, 5, 7, 9, false),
            (3, 4, 6, 11, true),
            (1, 3, 1, 1, false),
            (2, 2, 1, 5, true),
            (1, 16, 20, 12, true),
        ] {
            let x = Var::from_tensor(&random(&[n, c, h, w], 11)).unwrap();
            let k = Var::from_tensor(&random(&[c, 1, 3, 3], 12)).unwrap();
            let b = Var::from_tensor(&random(&[c], 13)).unwrap();
            // A weighted sum, so each output's gradient differs.
            let mix = random(&[n, c, h, w], 14);
            let ours = depthwise_conv2d(&x, &k, &b, 1, 1, relu).unwrap();
            let g1 = (ours * &mix)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let theirs = x
                .conv2d(&k, 1, 1, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            let theirs = if relu { theirs.relu().unwrap() } else { theirs };
            let g2 = (theirs * &mix)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in [("input", &x), ("filter", &k), ("bias", &b)] {
                let a: Vec<f32> = g1.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let r: Vec<f32> = g2.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (p, q) in a.iter().zip(&r) {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                        "{n}x{c}x{h}x{w} relu={relu} {name}: {p} vs {q}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_strides_take_candles_path_with_the_same_bias_and_relu() {
        let x = random(&[1, 3, 8, 8], 4);
        let k = random(&[3, 1, 3, 3], 5);
        let b = random(&[3], 6);
        let y = depthwise_conv2d(&x, &k, &b, 2, 1, true).unwrap();
        assert_eq!(y.dims(), [1, 3, 4, 4]);
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn a_weight_for_other_channels_is_an_error() {
        let x = random(&[1, 3, 4, 4], 7);
        let e = depthwise_conv2d(&x, &random(&[4, 1, 3, 3], 8), &random(&[4], 9), 1, 1, false)
            .unwrap_err();
        assert!(e.to_string().contains("input has 3 channels"), "{e}");
    }
}
