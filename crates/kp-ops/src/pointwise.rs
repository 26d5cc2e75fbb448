//! Pointwise (1x1, stride 1) convolution for inference: `relu?(W · x + b)` per image, straight
//! on the input.
//!
//! A 1x1 convolution's column matrix is its input: image `n` is already a `(C_in, H·W)`
//! row-major matrix. The general CPU convolution ([`crate::conv_cpu`]) still unfolds it into
//! blocks (a copy of every activation) because it serves training and every kernel size; this
//! op skips the copy. On CPUs with AVX-512 it is [`crate::direct`]'s register-tiled kernel on
//! the flattened image (`1 x H·W`, kernel 1): the threads split the pixels and the bias and
//! ReLU are fused into the single store (the whole YuNet detector on a 640x480 photo, 2
//! threads: 11.1 ms with the GEMM path below, 9.0 ms with it, OpenCV 10.2 ms in the same runs);
//! elsewhere each thread takes a band of output channels as one GEMM and adds the bias and the
//! optional ReLU in place. Forward only (no backward): compact networks' inference (the YuNet
//! detector). Other dtypes and devices take candle's `conv2d`.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::depthwise::{add_bias_relu, apply_fused};
use crate::im2col::contiguous;

/// `relu?(conv1x1(x, w) + b)` for `x (N, C_in, H, W)`, `w (C_out, C_in, 1, 1)`, `b (C_out)`.
pub fn pointwise_conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    let (_, cin, _, _) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if wcin != cin || (kh, kw) != (1, 1) || bias.dims() != [cout] {
        candle_core::bail!(
            "pointwise conv2d: input has {cin} channels, weight {:?}, bias {:?} (expected ({cout}, {cin}, 1, 1) and ({cout}))",
            weight.dims(),
            bias.dims()
        );
    }
    if crate::dispatch::uses_cpu_kernels(x.device()) && x.dtype() == candle_core::DType::F32 {
        return apply_fused(x, weight, bias, &Pointwise { relu });
    }
    add_bias_relu(x.conv2d(weight, 0, 1, 1, 1)?, bias, relu)
}

struct Pointwise {
    relu: bool,
}

impl CustomOp3 for Pointwise {
    fn name(&self) -> &'static str {
        "kp-pointwise"
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
            contiguous(xs.as_slice::<f32>()?, xl, "pointwise conv2d input")?,
            contiguous(ws.as_slice::<f32>()?, wl, "pointwise conv2d weight")?,
            contiguous(bs.as_slice::<f32>()?, bl, "pointwise conv2d bias")?,
        );
        let (n, cin, h, wd) = xl.shape().dims4()?;
        let cout = b.len();
        let out = forward(x, w, b, (n, cin, h * wd, cout), self.relu);
        Ok((CpuStorage::F32(out), Shape::from((n, cout, h, wd))))
    }
}

/// `relu?(W · x + b)` for each of `n` images `x (cin, hw)`, `W (cout, cin)`: the output
/// `(n, cout, hw)`, through the direct kernel where the CPU has AVX-512, else the GEMM.
fn forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dims: (usize, usize, usize, usize),
    relu: bool,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        // A 1x1 convolution of a (cin, H, W) image is one of the flattened (cin, 1, H·W) image.
        let (n, cin, hw, cout) = dims;
        let direct = crate::direct::Direct {
            cin,
            h: 1,
            w: hw,
            cout,
            k: 1,
            pad: 0,
            relu,
        };
        if direct.applies() {
            return direct.forward(x, w, Some(b), n);
        }
    }
    forward_gemm(x, w, b, dims, relu)
}

/// Output floats per GEMM block when a bias or ReLU pass follows (256 KB: inside the L2 cache
/// of current x86 cores, with room for the block's input).
const BLOCK_FLOATS: usize = 64 * 1024;

/// The portable path: GEMMs of weight rows by an image, then the bias and ReLU over each
/// GEMM's rows while they are in cache (skipped when the bias is zero and there is no ReLU,
/// as in the compact model's units, whose batch norm lives in the depthwise filter after).
///
/// A batch of at least as many images as threads runs whole images per task: one fork-join
/// per layer. Fewer images split each image's output channels into bands, one or more per
/// thread (a fork-join per image, which at batch 64 was most of the threads' idle time).
/// Either way each output is one GEMM dot product over the input channels.
fn forward_gemm(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (n, cin, hw, cout): (usize, usize, usize, usize),
    relu: bool,
) -> Vec<f32> {
    if hw == 0 || cout == 0 {
        return vec![0f32; n * cout * hw];
    }
    let epilogue = relu || b.iter().any(|&v| v != 0.0);
    // Rows r0.. of image `img`'s output, `ob` (rows x hw, uninitialised).
    // Rows r0.. of image `img`'s output, `ob` (rows x hw, uninitialised), in blocks of pixels
    // small enough that the epilogue finds the block in the L2 cache (YuNet's 64-channel
    // layers at 160x120 are 4.9 MB per image; as one GEMM the bias pass read them back from
    // memory: 6% of the detector).
    let rows_of_image = |img: usize, r0: usize, ob: &mut [MaybeUninit<f32>]| {
        let rows = ob.len() / hw;
        let xi = &x[img * cin * hw..(img + 1) * cin * hw];
        let wb = &w[r0 * cin..(r0 + rows) * cin];
        let block = if epilogue {
            (BLOCK_FLOATS / rows).max(256).min(hw)
        } else {
            hw
        };
        for p0 in (0..hw).step_by(block) {
            let cols = block.min(hw - p0);
            // SAFETY: the destination block is rows x cols at `ob[p0..]` with row stride hw,
            // `wb` rows x cin, the input block cin x cols at `xi[p0..]` with row stride hw, all
            // in bounds; the destination is not read (beta = 0 with read_dst false), so it may
            // be uninitialised, and gemm writes all of it.
            unsafe {
                gemm::gemm(
                    rows,
                    cols,
                    cin,
                    ob.as_mut_ptr().add(p0) as *mut f32,
                    1,
                    hw as isize,
                    false,
                    wb.as_ptr(),
                    1,
                    cin as isize,
                    xi.as_ptr().add(p0),
                    1,
                    hw as isize,
                    0f32,
                    1f32,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            for r in 0..rows {
                let at = r * hw + p0;
                // SAFETY: the GEMM above wrote this block's row.
                let row = unsafe { crate::outbuf::written::<f32>(&mut ob[at..at + cols]) };
                if epilogue {
                    let bias = b[r0 + r];
                    for v in row.iter_mut() {
                        let y = *v + bias;
                        *v = if relu { y.max(0.0) } else { y };
                    }
                }
            }
        }
    };
    let threads = rayon::current_num_threads().max(1);
    crate::outbuf::filled(n * cout * hw, |out| {
        if n >= threads {
            out.par_chunks_mut(cout * hw)
                .enumerate()
                .for_each(|(img, o)| rows_of_image(img, 0, o));
            return;
        }
        // Bands of output channels, one or more per thread (at least 8 rows each).
        let band = cout.div_ceil(threads).max(8).min(cout);
        for (img, o) in out.chunks_mut(cout * hw).enumerate() {
            o.par_chunks_mut(band * hw)
                .enumerate()
                .for_each(|(bi, ob)| rows_of_image(img, bi * band, ob));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_gemm_path_equals_candles_1x1_convolution_with_bias_and_relu() {
        for (n, cin, cout, h, w) in [
            (2, 3, 5, 4, 7),
            (1, 64, 64, 12, 16),
            (1, 64, 1, 3, 3),
            (3, 16, 10, 1, 9),
            (2, 1, 13, 13, 11),
            (1, 24, 17, 10, 13),
        ] {
            let x = ramp(&[n, cin, h, w], 0.01);
            let k = ramp(&[cout, cin, 1, 1], 0.003);
            let b = ramp(&[cout], 0.02);
            for relu in [false, true] {
                let got: Vec<f32> = pointwise_conv2d(&x, &k, &b, relu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want = x
                    .conv2d(&k, 0, 1, 1, 1)
                    .unwrap()
                    .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                    .unwrap();
                let want = if relu { want.relu().unwrap() } else { want };
                let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
                for (g, r) in got.iter().zip(&want) {
                    assert!(
                        (g - r).abs() <= 1e-5 * (1.0 + r.abs()),
                        "{n}x{cin}->{cout} {h}x{w} relu={relu}: {g} vs {r}"
                    );
                }
            }
        }
    }

    /// Varied images `(n, cin, hw)` and weights `(cout, cin)` for the kernel tests.
    fn operands(n: usize, cin: usize, hw: usize, cout: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..n * cin * hw)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01)
            .collect();
        let w = (0..cout * cin)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.02)
            .collect();
        (x, w)
    }

    #[test]
    fn the_gemm_path_gives_the_plain_sums_whether_it_splits_images_or_channel_bands() {
        // 1 and 3 threads; 1, 2 and 5 images: whole images per task when there are at least
        // as many images as threads, else bands of channels; zero bias without ReLU skips the
        // epilogue.
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // The last: 70 rows by 1,000 pixels, GEMM blocks of 936 pixels and a ragged one.
            for (n, cin, hw, cout) in [
                (1, 5, 37, 20),
                (2, 8, 16, 9),
                (5, 3, 70, 33),
                (1, 4, 1000, 70),
            ] {
                let (x, w) = operands(n, cin, hw, cout);
                for (bias, relu) in [(0.0, false), (0.0, true), (0.3, false), (-0.2, true)] {
                    let b: Vec<f32> = (0..cout).map(|i| bias * i as f32).collect();
                    let got = pool.install(|| forward_gemm(&x, &w, &b, (n, cin, hw, cout), relu));
                    for img in 0..n {
                        for r in 0..cout {
                            for p in 0..hw {
                                let s: f32 = (0..cin)
                                    .map(|c| w[r * cin + c] * x[(img * cin + c) * hw + p])
                                    .sum::<f32>()
                                    + b[r];
                                let want = if relu { s.max(0.0) } else { s };
                                let g = got[(img * cout + r) * hw + p];
                                assert!(
                                    (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "{threads} threads, {n}x{cin}x{hw}->{cout} bias {bias} \
                                     relu {relu} @({img},{r},{p}): {g} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_gemm_fallback_and_the_dispatched_kernel_agree() {
        // On an AVX-512 CPU `forward` takes the direct kernel, so this checks the GEMM path
        // other CPUs take (and elsewhere the GEMM against itself, still against candle above).
        for (n, cin, hw, cout) in [
            (1, 64, 19200, 64),
            (2, 7, 65, 11),
            (3, 3, 1, 6),
            (1, 16, 300, 32),
        ] {
            let (x, w) = operands(n, cin, hw, cout);
            let b: Vec<f32> = (0..cout).map(|i| i as f32 * 0.1 - 1.0).collect();
            for relu in [false, true] {
                let got = forward(&x, &w, &b, (n, cin, hw, cout), relu);
                let want = forward_gemm(&x, &w, &b, (n, cin, hw, cout), relu);
                assert_eq!(got.len(), want.len());
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                        "{n}x{cin}x{hw}->{cout} @{i}: {g} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_weight_that_is_not_1x1_is_an_error() {
        let e = pointwise_conv2d(
            &ramp(&[1, 2, 3, 3], 1.0),
            &ramp(&[2, 2, 3, 3], 1.0),
            &ramp(&[2], 1.0),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected (2, 2, 1, 1)"), "{e}");
    }
}
