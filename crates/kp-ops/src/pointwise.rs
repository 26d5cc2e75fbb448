//! Pointwise (1x1, stride 1) convolution for inference: `relu?(W · x + b)` per image, one GEMM
//! straight on the input.
//!
//! A 1x1 convolution's column matrix is its input: image `n` is already a `(C_in, H·W)`
//! row-major matrix. The general CPU convolution ([`crate::conv_cpu`]) still unfolds it into
//! blocks (a copy of every activation) because it serves training and every kernel size; this
//! op skips the copy and writes `W (C_out × C_in) · X (C_in × H·W)` into the output, each
//! thread taking a band of output channels (rows), then adds the bias and the optional ReLU in
//! place. Forward only (no backward): compact networks' inference (the YuNet detector). Other
//! dtypes and devices take candle's `conv2d`.

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
        let hw = h * wd;
        if hw == 0 || cout == 0 {
            let out = vec![0f32; n * cout * hw];
            return Ok((CpuStorage::F32(out), Shape::from((n, cout, h, wd))));
        }
        // Bands of output channels, one or more per thread (at least 8 rows each).
        let threads = rayon::current_num_threads().max(1);
        let band = cout.div_ceil(threads).max(8).min(cout);
        let out = crate::outbuf::filled(n * cout * hw, |out| {
            for (img, o) in out.chunks_mut(cout * hw).enumerate() {
                let xi = &x[img * cin * hw..(img + 1) * cin * hw];
                o.par_chunks_mut(band * hw)
                    .enumerate()
                    .for_each(|(bi, ob)| {
                        let r0 = bi * band;
                        let rows = ob.len() / hw;
                        let wb = &w[r0 * cin..(r0 + rows) * cin];
                        // SAFETY: `ob` is rows x hw, `wb` rows x cin, `xi` cin x hw, all row-major
                        // and in bounds; the destination is not read (beta = 0 with read_dst false),
                        // so it may be uninitialised, and gemm writes all of it.
                        let ob = unsafe {
                            gemm::gemm(
                                rows,
                                hw,
                                cin,
                                ob.as_mut_ptr() as *mut f32,
                                1,
                                hw as isize,
                                false,
                                wb.as_ptr(),
                                1,
                                cin as isize,
                                xi.as_ptr(),
                                1,
                                hw as isize,
                                0f32,
                                1f32,
                                false,
                                false,
                                false,
                                Parallelism::None,
                            );
                            crate::outbuf::written(ob)
                        };
                        for (r, row) in ob.chunks_mut(hw).enumerate() {
                            let bias = b[r0 + r];
                            for v in row.iter_mut() {
                                let y = *v + bias;
                                *v = if self.relu { y.max(0.0) } else { y };
                            }
                        }
                    });
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, cout, h, wd))))
    }
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
