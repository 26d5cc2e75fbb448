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
//! reference the fast path is tested against. Forward only: no backward is defined yet.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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
        let x = x.contiguous()?;
        let weight = weight.contiguous()?;
        let bias = bias.contiguous()?;
        return x.apply_op3_no_bwd(&weight, &bias, &Depthwise3x3 { relu });
    }
    let y = x
        .conv2d(weight, padding, stride, 1, c)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
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

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("depthwise conv2d: {what} is not contiguous"),
    }
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
            slice(xs, xl, "input")?,
            slice(ws, wl, "weight")?,
            slice(bs, bl, "bias")?,
        );
        let (_, c, h, wd) = xl.shape().dims4()?;
        let plane = h * wd;
        let mut out = vec![0f32; x.len()];
        if plane > 0 {
            out.par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each(|(i, (o, inp))| {
                    let ch = i % c;
                    plane_3x3(inp, o, h, wd, &w[ch * 9..ch * 9 + 9], b[ch], self.relu);
                });
        }
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
}

/// One plane: `out = relu?(b + Σ_ky Σ_kx k[ky][kx] · in[y + ky - 1][x + kx - 1])`, zero outside.
fn plane_3x3(inp: &[f32], out: &mut [f32], h: usize, w: usize, k: &[f32], b: f32, relu: bool) {
    for y in 0..h {
        let o = &mut out[y * w..(y + 1) * w];
        o.fill(b);
        for ky in 0..3 {
            let Some(iy) = (y + ky).checked_sub(1).filter(|&iy| iy < h) else {
                continue;
            };
            let r = &inp[iy * w..(iy + 1) * w];
            let (k0, k1, k2) = (k[ky * 3], k[ky * 3 + 1], k[ky * 3 + 2]);
            // Left neighbour, centre, right neighbour: each a shifted, vectorisable zip.
            for (o, &v) in o[1..].iter_mut().zip(&r[..w - 1]) {
                *o += k0 * v;
            }
            for (o, &v) in o.iter_mut().zip(r) {
                *o += k1 * v;
            }
            for (o, &v) in o[..w - 1].iter_mut().zip(&r[1..]) {
                *o += k2 * v;
            }
        }
        if relu {
            for v in o.iter_mut() {
                *v = v.max(0.0);
            }
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
