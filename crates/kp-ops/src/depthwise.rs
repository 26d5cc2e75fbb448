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

use std::mem::MaybeUninit;

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
    let (c, kh, kw) = check_operands(x, weight, bias)?;
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

/// `relu?(depthwise_conv(x, w) + b) + residual` for prediction: a depthwise-separable unit's
/// filter and its skip connection in one pass (the residual is added as each output row is
/// finished, instead of a separate pass over a fresh tensor: the compact model's residual adds
/// were 6% of its batch-64 inference). Forward only; 3x3, stride 1, padding 1; other devices
/// and dtypes take [`depthwise_conv2d`] and an add.
pub fn depthwise_conv2d_add(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    relu: bool,
    residual: &Tensor,
) -> Result<Tensor> {
    if residual.dims() != x.dims() {
        candle_core::bail!(
            "depthwise conv2d + residual: input {:?} and residual {:?} differ",
            x.dims(),
            residual.dims()
        );
    }
    let (c, kh, kw) = check_operands(x, weight, bias)?;
    let fast = crate::dispatch::uses_cpu_kernels(x.device())
        && x.dtype() == candle_core::DType::F32
        && residual.dtype() == candle_core::DType::F32
        && (kh, kw) == (3, 3);
    if !fast {
        return depthwise_conv2d(x, weight, bias, 1, 1, relu)? + residual;
    }
    // The filters and biases as one (C, 10) operand, so the op's three inputs are the image,
    // the residual and the parameters.
    let params = Tensor::cat(
        &[
            weight.reshape((c, 9))?.to_dtype(candle_core::DType::F32)?,
            bias.reshape((c, 1))?.to_dtype(candle_core::DType::F32)?,
        ],
        1,
    )?;
    x.contiguous()?
        .apply_op3_no_bwd(&residual.contiguous()?, &params, &Depthwise3x3Add { relu })
}

/// The channels and kernel size of a depthwise convolution's operands, `x (N, C, H, W)`,
/// `weight (C, 1, kh, kw)`, `bias (C)`, or an error naming the mismatch.
fn check_operands(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<(usize, usize, usize)> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 || bias.dims() != [c] {
        candle_core::bail!(
            "depthwise conv2d: input has {c} channels, weight {:?}, bias {:?} (expected ({c}, 1, k, k) and ({c}))",
            weight.dims(),
            bias.dims()
        );
    }
    Ok((c, kh, kw))
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
        let out = forward_cpu(x, xl.shape().dims4()?, w, b, None, self.relu);
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

/// [`depthwise_conv2d_add`]'s CPU kernel: operands `(x, residual, params (C, 10))`.
struct Depthwise3x3Add {
    relu: bool,
}

impl CustomOp3 for Depthwise3x3Add {
    fn name(&self) -> &'static str {
        "kp-depthwise3x3-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r, p) = (
            contiguous(xs.as_slice::<f32>()?, xl, "depthwise conv2d input")?,
            contiguous(rs.as_slice::<f32>()?, rl, "depthwise conv2d residual")?,
            contiguous(ps.as_slice::<f32>()?, pl, "depthwise conv2d parameters")?,
        );
        let (n, c, h, wd) = xl.shape().dims4()?;
        if r.len() != x.len() || p.len() != c * 10 {
            candle_core::bail!(
                "depthwise conv2d + residual: input {:?}, residual {:?}, parameters {:?}",
                xl.shape(),
                rl.shape(),
                pl.shape()
            );
        }
        let (w, b): (Vec<f32>, Vec<f32>) = (
            p.chunks_exact(10).flat_map(|q| q[..9].to_vec()).collect(),
            p.chunks_exact(10).map(|q| q[9]).collect(),
        );
        let out = forward_cpu(x, (n, c, h, wd), &w, &b, Some(r), self.relu);
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// The forward pass over every plane `(image, channel)` in parallel: `x (N, C, H, W)`, filters
/// `w (C, 9)`, bias `b (C)`, an optional residual shaped as `x`.
fn forward_cpu(
    x: &[f32],
    (_, c, h, wd): (usize, usize, usize, usize),
    w: &[f32],
    b: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let plane = h * wd;
    crate::outbuf::filled(x.len(), |out| {
        if plane > 0 {
            out.par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each_init(Vec::new, |padded, (i, (o, inp))| {
                    let ch = i % c;
                    let k: &[f32; 9] = w[ch * 9..ch * 9 + 9].try_into().expect("9 weights");
                    let res = residual.map(|r| &r[i * plane..(i + 1) * plane]);
                    pad_plane(inp, (h, wd), padded);
                    plane_3x3(padded, o, (h, wd), k, b[ch], relu, res);
                });
        }
    })
}

/// `plane (h, w)` with a border of zeros, `(h + 2, w + 2)`, into `padded` (a scratch buffer
/// each worker reuses): the filter then reads every tap of every output without edge cases.
fn pad_plane(plane: &[f32], (h, w): (usize, usize), padded: &mut Vec<f32>) {
    let pw = w + 2;
    padded.clear();
    padded.resize(pw, 0.0);
    for row in plane.chunks_exact(w) {
        padded.push(0.0);
        padded.extend_from_slice(row);
        padded.push(0.0);
    }
    padded.resize((h + 2) * pw, 0.0);
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
        padded: &[f32],
        out: &mut [MaybeUninit<f32>],
        hw: (usize, usize),
        k: &[f32; 9],
        b: f32,
        relu: bool,
        residual: Option<&[f32]>,
    ) = plane_3x3_body;
}

/// One plane: `out = relu?(b + Σ_ky Σ_kx k[ky][kx] · in[y + ky - 1][x + kx - 1]) (+ residual)`
/// from the plane zero-padded by one ([`pad_plane`]). Every output is written (the plane may
/// arrive uninitialised: no memset first).
///
/// Each output row reads three padded rows as nine shifted streams, in runs of 16 and 8
/// outputs the compiler keeps in vector registers; a row's last outputs are one more run
/// ending at the row's end (overlapping the previous one, which writes the same values), so
/// only rows narrower than 8 run lane by lane. Every output sums `b` and its nine products in
/// the same order whichever run computes it. The residual's row is added while the row is in
/// cache.
#[inline(always)]
fn plane_3x3_body(
    padded: &[f32],
    out: &mut [MaybeUninit<f32>],
    (h, w): (usize, usize),
    k: &[f32; 9],
    b: f32,
    relu: bool,
    residual: Option<&[f32]>,
) {
    let pw = w + 2;
    for y in 0..h {
        let rows: [&[f32]; 3] = std::array::from_fn(|r| &padded[(y + r) * pw..(y + r + 1) * pw]);
        let o = &mut out[y * w..(y + 1) * w];
        let mut x = 0;
        while x + 16 <= w {
            run::<16>(&rows, k, b, relu, x, o);
            x += 16;
        }
        if x + 8 <= w {
            run::<8>(&rows, k, b, relu, x, o);
            x += 8;
        }
        if x < w {
            if w >= 8 {
                run::<8>(&rows, k, b, relu, w - 8, o);
            } else {
                for xx in x..w {
                    run::<1>(&rows, k, b, relu, xx, o);
                }
            }
        }
        if let Some(res) = residual {
            // SAFETY: the runs above wrote every element of the row (columns 0..w).
            let o = unsafe { crate::outbuf::written(o) };
            for (v, r) in o.iter_mut().zip(&res[y * w..(y + 1) * w]) {
                *v += r;
            }
        }
    }
}

/// Outputs `x..x + L` of one row from its three padded input rows: `b`, plus the nine taps in
/// order, then the ReLU.
#[inline(always)]
fn run<const L: usize>(
    rows: &[&[f32]; 3],
    k: &[f32; 9],
    b: f32,
    relu: bool,
    x: usize,
    o: &mut [MaybeUninit<f32>],
) {
    let mut v = [b; L];
    for (t, &kt) in k.iter().enumerate() {
        let src: &[f32; L] = rows[t / 3][x + t % 3..x + t % 3 + L]
            .try_into()
            .expect("L values");
        for l in 0..L {
            v[l] += kt * src[l];
        }
    }
    for (dst, &val) in o[x..x + L].iter_mut().zip(&v) {
        dst.write(if relu { val.max(0.0) } else { val });
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
            // Rows of 16 + 8, 16 + 16 + 8 and 32 + an overlapping run of 8 outputs.
            (1, 2, 3, 24),
            (1, 2, 3, 40),
            (2, 3, 4, 33),
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
    fn the_fused_residual_add_equals_the_filter_then_an_add() {
        for (n, c, h, w) in [
            (2, 5, 7, 9),
            (1, 3, 1, 1),
            (1, 2, 2, 2),
            (1, 4, 6, 1),
            (3, 16, 12, 20),
        ] {
            let x = random(&[n, c, h, w], 21);
            let k = random(&[c, 1, 3, 3], 22);
            let b = random(&[c], 23);
            let r = random(&[n, c, h, w], 24);
            for relu in [false, true] {
                let got: Vec<f32> = depthwise_conv2d_add(&x, &k, &b, relu, &r)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want: Vec<f32> = (depthwise_conv2d(&x, &k, &b, 1, 1, relu).unwrap() + &r)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                // The same operations in the same order: the same bits.
                assert_eq!(got, want, "{n}x{c}x{h}x{w} relu={relu}");
            }
        }
        let x = random(&[1, 3, 4, 4], 25);
        let e = depthwise_conv2d_add(
            &x,
            &random(&[3, 1, 3, 3], 26),
            &random(&[3], 27),
            false,
            &random(&[1, 3, 4, 5], 28),
        )
        .unwrap_err();
        assert!(e.to_string().contains("residual [1, 3, 4, 5]"), "{e}");
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
