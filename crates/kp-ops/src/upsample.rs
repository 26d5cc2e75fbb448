//! Nearest-neighbour upsampling by an integer factor for prediction, in one pass.
//!
//! `kp_models::Upsample` is a reshape, a broadcast and a reshape: exact, with a cheap backward,
//! but candle materialises the broadcast through its generic strided copy, an index computation
//! per element (6% of a compact-model face on the CPU). This kernel writes each output row once
//! from its input row and copies it `s - 1` times; [`upsample_nearest_add`] adds another tensor
//! in the same pass (a feature pyramid's top-down sum). Forward only: training keeps the
//! broadcast.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::im2col::contiguous;

/// `x (N, C, H, W)` repeated `scale` times along both spatial axes, `(N, C, H s, W s)`. CPU
/// f32, no gradient.
pub fn upsample_nearest(x: &Tensor, scale: usize) -> Result<Tensor> {
    if scale == 0 {
        candle_core::bail!("upsample scale must be positive");
    }
    x.contiguous()?.apply_op1_no_bwd(&UpsampleNearest { scale })
}

/// `addend + upsample_nearest(x, scale)` in the same pass (a feature pyramid's top-down step:
/// the coarse level upsampled into the finer one), without the upsampled tensor in between.
/// CPU f32, no gradient; `addend` must be `(N, C, H s, W s)`.
pub fn upsample_nearest_add(x: &Tensor, scale: usize, addend: &Tensor) -> Result<Tensor> {
    if scale == 0 {
        candle_core::bail!("upsample scale must be positive");
    }
    let (n, c, h, w) = x.dims4()?;
    if addend.dims() != [n, c, h * scale, w * scale] {
        candle_core::bail!(
            "upsample-add: {:?} upsampled by {scale} does not match the addend {:?}",
            x.dims(),
            addend.dims()
        );
    }
    x.contiguous()?
        .apply_op2_no_bwd(&addend.contiguous()?, &UpsampleNearest { scale })
}

struct UpsampleNearest {
    scale: usize,
}

impl UpsampleNearest {
    /// Every plane of `v (N, C, H, W)` upsampled, plus the addend's plane when there is one.
    fn run(
        &self,
        v: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        addend: Option<&[f32]>,
    ) -> Vec<f32> {
        let sc = self.scale;
        let (oh, ow) = (h * sc, w * sc);
        crate::outbuf::filled(n * c * oh * ow, |out| {
            if out.is_empty() {
                return;
            }
            out.par_chunks_mut(oh * ow)
                .zip(v.par_chunks(h * w))
                .enumerate()
                .for_each(|(p, (o, plane))| {
                    let o = crate::outbuf::zeroed(o);
                    for (rows, line) in o.chunks_exact_mut(sc * ow).zip(plane.chunks_exact(w)) {
                        let (first, rest) = rows.split_at_mut(ow);
                        for (cell, &x) in first.chunks_exact_mut(sc).zip(line) {
                            cell.fill(x);
                        }
                        for copy in rest.chunks_exact_mut(ow) {
                            copy.copy_from_slice(first);
                        }
                    }
                    if let Some(a) = addend {
                        for (y, a) in o.iter_mut().zip(&a[p * oh * ow..(p + 1) * oh * ow]) {
                            *y += *a;
                        }
                    }
                });
        })
    }
}

impl CustomOp1 for UpsampleNearest {
    fn name(&self) -> &'static str {
        "kp-upsample-nearest"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = contiguous(s.as_slice::<f32>()?, l, "upsample input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let out = self.run(v, (n, c, h, w), None);
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, c, h * self.scale, w * self.scale)),
        ))
    }
}

impl CustomOp2 for UpsampleNearest {
    fn name(&self) -> &'static str {
        "kp-upsample-nearest-add"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        a: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let v = contiguous(s.as_slice::<f32>()?, l, "upsample input")?;
        let a = contiguous(a.as_slice::<f32>()?, al, "upsample addend")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let shape = Shape::from((n, c, h * self.scale, w * self.scale));
        if a.len() != shape.elem_count() {
            candle_core::bail!("upsample-add: addend {:?}, output {shape:?}", al.shape());
        }
        Ok((CpuStorage::F32(self.run(v, (n, c, h, w), Some(a))), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `(n, c, h, w)` holding 0, 1, 2, ... in order.
    fn counting((n, c, h, w): (usize, usize, usize, usize)) -> Tensor {
        Tensor::arange(0f32, (n * c * h * w) as f32, &Device::Cpu)
            .unwrap()
            .reshape((n, c, h, w))
            .unwrap()
    }

    #[test]
    fn every_output_pixel_copies_the_input_pixel_it_falls_in() {
        let (n, c, h, w) = (2, 3, 3, 5);
        let x = counting((n, c, h, w));
        for s in [1, 2, 3] {
            let y = upsample_nearest(&x, s).unwrap();
            assert_eq!(y.dims(), [n, c, h * s, w * s]);
            let (xv, yv) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            for p in 0..n * c {
                for oy in 0..h * s {
                    for ox in 0..w * s {
                        let got = yv[p * h * w * s * s + oy * w * s + ox];
                        assert_eq!(got, xv[p * h * w + (oy / s) * w + ox / s]);
                    }
                }
            }
        }
        assert!(upsample_nearest(&x, 0).is_err());
    }

    #[test]
    fn the_fused_add_equals_the_upsampled_tensor_plus_the_addend() {
        let (n, c, h, w) = (2, 3, 3, 5);
        let x = counting((n, c, h, w));
        for s in [1, 2, 3] {
            let a = (counting((n, c, h * s, w * s)) * 0.37)
                .unwrap()
                .sin()
                .unwrap();
            let got = upsample_nearest_add(&x, s, &a).unwrap();
            let want = (&a + upsample_nearest(&x, s).unwrap()).unwrap();
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "scale {s}"
            );
        }
        let wrong = Tensor::zeros(
            (n, c, h * 2, w * 2 + 1),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let e = upsample_nearest_add(&x, 2, &wrong).unwrap_err();
        assert!(e.to_string().contains("does not match the addend"), "{e}");
    }
}
