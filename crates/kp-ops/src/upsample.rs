//! Nearest-neighbour upsampling by an integer factor for prediction, in one pass.
//!
//! `kp_models::Upsample` is a reshape, a broadcast and a reshape: exact, with a cheap backward,
//! but candle materialises the broadcast through its generic strided copy, an index computation
//! per element (6% of a compact-model face on the CPU). This kernel writes each output row once
//! from its input row and copies it `s - 1` times. Forward only: training keeps the broadcast.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
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

struct UpsampleNearest {
    scale: usize,
}

impl CustomOp1 for UpsampleNearest {
    fn name(&self) -> &'static str {
        "kp-upsample-nearest"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = contiguous(s.as_slice::<f32>()?, l, "upsample input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let sc = self.scale;
        let (oh, ow) = (h * sc, w * sc);
        let mut out = vec![0f32; n * c * oh * ow];
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow)
                .zip(v.par_chunks(h * w))
                .for_each(|(o, plane)| {
                    for (rows, line) in o.chunks_exact_mut(sc * ow).zip(plane.chunks_exact(w)) {
                        let (first, rest) = rows.split_at_mut(ow);
                        for (cell, &x) in first.chunks_exact_mut(sc).zip(line) {
                            cell.fill(x);
                        }
                        for copy in rest.chunks_exact_mut(ow) {
                            copy.copy_from_slice(first);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_output_pixel_copies_the_input_pixel_it_falls_in() {
        let (n, c, h, w) = (2, 3, 3, 5);
        let x = Tensor::arange(0f32, (n * c * h * w) as f32, &Device::Cpu)
            .unwrap()
            .reshape((n, c, h, w))
            .unwrap();
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
}
