//! Direct convolution (stride 1, any padding below the kernel size) with AVX-512: no column
//! matrix, no packing of activations.
//!
//! The blocked im2col + GEMM path ([`crate::conv_cpu`]) copies every input value `k²` times
//! into column blocks and the GEMM packs them again; for the seed's small-channel networks
//! (FaceKeypointNet's 16-32-channel 5x5 and 3x3 layers) those copies took as long as the
//! multiply-adds (perf: packing 15%, im2col copies 17%, the GEMM's microkernel 33%). Here each
//! task computes one output row of one image for every output channel: six output channels by
//! up to 64 pixels of sums in 24 of the 32 vector registers, and for each input channel and
//! kernel tap four loads of the (shifted) input row, six broadcast weights and 24 fused
//! multiply-adds. Padding is handled by masked loads (columns outside the image read as zero)
//! and by skipping input rows outside it. The sums start at the bias and the ReLU is applied
//! at the single store.
//!
//! The same kernel runs 1x1 convolutions ([`crate::pointwise`], YuNet's and the compact model's
//! pointwise layers) on the image flattened to one row, so there the threads split the pixels.
//!
//! Every output adds its products in the same order (input channel, then kernel row, then
//! column), whatever the thread count. CPUs without AVX-512 keep the GEMM path.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::outbuf::SyncPtr;

/// Largest kernel the direct path takes.
pub(crate) const MAX_KERNEL: usize = 7;

/// Output channels per register tile.
const ROWS: usize = 6;

/// Pixels of an output row per register tile (four 16-float vectors).
const SEGMENT: usize = 64;

/// A stride-1 convolution's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub pad: usize,
    pub relu: bool,
}

impl Direct {
    /// Whether this CPU and this shape take the direct path.
    pub(crate) fn applies(&self) -> bool {
        self.k >= 1
            && self.k <= MAX_KERNEL
            && self.pad < self.k
            && self.h + 2 * self.pad >= self.k
            && self.w + 2 * self.pad >= self.k
            && std::arch::is_x86_feature_detected!("avx512f")
    }

    fn out_size(&self) -> (usize, usize) {
        (
            self.h + 2 * self.pad + 1 - self.k,
            self.w + 2 * self.pad + 1 - self.k,
        )
    }

    /// `relu?(conv(x, w) + b)` for `n` images `x (cin, h, w)` and weights `(cout, cin, k, k)`.
    /// The caller checks [`Self::applies`].
    pub(crate) fn forward(&self, x: &[f32], wt: &[f32], b: Option<&[f32]>, n: usize) -> Vec<f32> {
        let (oh, ow) = self.out_size();
        let (cin, cout, kk) = (self.cin, self.cout, self.k * self.k);
        assert!(
            self.applies()
                && x.len() == n * cin * self.h * self.w
                && wt.len() == cout * cin * kk
                && b.is_none_or(|b| b.len() == cout),
            "direct convolution: operands do not match {self:?}"
        );
        let len = n * cout * oh * ow;
        if len == 0 {
            return Vec::new();
        }
        // Weights regrouped per tile of output channels: [ci][tap][r] within each tile, so a
        // tap's broadcasts read one cache line.
        let mut packed = vec![0f32; wt.len()];
        let mut r0 = 0;
        while r0 < cout {
            let rg = ROWS.min(cout - r0);
            let block = &mut packed[r0 * cin * kk..(r0 + rg) * cin * kk];
            for r in 0..rg {
                for ci in 0..cin {
                    for t in 0..kk {
                        block[(ci * kk + t) * rg + r] = wt[((r0 + r) * cin + ci) * kk + t];
                    }
                }
            }
            r0 += rg;
        }
        let bias = b.map_or_else(|| vec![0f32; cout], <[f32]>::to_vec);
        // Work units are segments of up to 64 pixels of one output row, every channel; a task
        // takes a run of them, about four tasks per thread (a 1x1 convolution over a flattened
        // image, the pointwise layers, is one long row).
        let segs = ow.div_ceil(SEGMENT);
        let units = n * oh * segs;
        let per_task = units
            .div_ceil(4 * rayon::current_num_threads().max(1))
            .max(1);
        crate::outbuf::filled(len, |out| {
            let o = SyncPtr(out.as_mut_ptr() as *mut f32);
            (0..units.div_ceil(per_task))
                .into_par_iter()
                .for_each(|task| {
                    for unit in task * per_task..((task + 1) * per_task).min(units) {
                        let (img, y, x0) =
                            (unit / (oh * segs), unit / segs % oh, unit % segs * SEGMENT);
                        // SAFETY: AVX-512F is present (`applies`); the segment's reads stay in
                        // image `img`'s input (masked outside it), its writes in its own
                        // pixels of output row `y` of image `img`, which no other unit writes.
                        unsafe {
                            self.segment(
                                x.as_ptr().add(img * cin * self.h * self.w),
                                &packed,
                                &bias,
                                o.get().add(img * cout * oh * ow + y * ow),
                                y,
                                x0,
                            )
                        };
                    }
                });
        })
    }

    /// Pixels `x0..x0 + 64` (or to the row's end) of output row `y` of one image, all channels;
    /// `o` points at channel 0's row.
    #[target_feature(enable = "avx512f")]
    unsafe fn segment(
        &self,
        x: *const f32,
        packed: &[f32],
        bias: &[f32],
        o: *mut f32,
        y: usize,
        x0: usize,
    ) {
        let (_, ow) = self.out_size();
        let len = (ow - x0).min(SEGMENT);
        // Input masks per kernel column: lane l of vector v reads column
        // x0 + 16v + l + kx - pad, inside the image and inside this segment.
        let mut masks = [[0u16; 4]; MAX_KERNEL];
        for (kx, m) in masks.iter_mut().enumerate().take(self.k) {
            for (v, mv) in m.iter_mut().enumerate() {
                let first = (x0 + 16 * v + kx) as isize - self.pad as isize;
                let lo = (-first).clamp(0, 16);
                let hi = (self.w as isize - first)
                    .min(len as isize - 16 * v as isize)
                    .clamp(0, 16);
                *mv = if hi > lo {
                    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
                } else {
                    0
                };
            }
        }
        let store: [u16; 4] = std::array::from_fn(|v| {
            let have = len.saturating_sub(16 * v).min(16);
            ((1u32 << have) - 1) as u16
        });
        let seg = Segment {
            x0,
            y,
            masks,
            store,
        };
        let mut r0 = 0;
        // SAFETY (all calls): the caller's contract; rows r0..r0 + R are below cout.
        unsafe {
            macro_rules! tiles {
                ($nv:literal, $k:literal) => {{
                    while r0 + ROWS <= self.cout {
                        self.tile::<ROWS, $nv, $k>(x, packed, bias, o, &seg, r0);
                        r0 += ROWS;
                    }
                    match self.cout - r0 {
                        0 => {}
                        1 => self.tile::<1, $nv, $k>(x, packed, bias, o, &seg, r0),
                        2 => self.tile::<2, $nv, $k>(x, packed, bias, o, &seg, r0),
                        3 => self.tile::<3, $nv, $k>(x, packed, bias, o, &seg, r0),
                        4 => self.tile::<4, $nv, $k>(x, packed, bias, o, &seg, r0),
                        _ => self.tile::<5, $nv, $k>(x, packed, bias, o, &seg, r0),
                    }
                }};
            }
            // Kernel size 1 (the pointwise layers) as a constant: its loops vanish and the
            // masks stay in registers (YuNet 7% faster than with the size read at run time).
            match (len.div_ceil(16), self.k == 1) {
                (1, true) => tiles!(1, 1),
                (2, true) => tiles!(2, 1),
                (3, true) => tiles!(3, 1),
                (_, true) => tiles!(4, 1),
                (1, false) => tiles!(1, 0),
                (2, false) => tiles!(2, 0),
                (3, false) => tiles!(3, 0),
                (_, false) => tiles!(4, 0),
            }
        }
    }

    /// Channels `r0..r0 + R` of one segment of up to `16 NV` pixels; kernel size `K` (0: the
    /// convolution's own).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const NV: usize, const K: usize>(
        &self,
        x: *const f32,
        packed: &[f32],
        bias: &[f32],
        o: *mut f32,
        seg: &Segment,
        r0: usize,
    ) {
        // K is the kernel size when known at compile time (1), else 0 and the size is read.
        let k = if K == 0 { self.k } else { K };
        let (kk, cin, h, w) = (k * k, self.cin, self.h, self.w);
        let (oh, ow) = self.out_size();
        let wp = packed[r0 * cin * kk..(r0 + R) * cin * kk].as_ptr();
        // SAFETY (block): masked-off lanes are neither read nor written and their addresses
        // are formed with wrapping arithmetic; the rest is the caller's contract.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for (r, a) in acc.iter_mut().enumerate() {
                *a = [_mm512_set1_ps(bias[r0 + r]); NV];
            }
            for ci in 0..cin {
                for ky in 0..k {
                    let iy = (seg.y + ky) as isize - self.pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let row = x.wrapping_add((ci * h + iy as usize) * w);
                    for kx in 0..k {
                        let start = row.wrapping_offset((seg.x0 + kx) as isize - self.pad as isize);
                        let xv: [__m512; NV] = std::array::from_fn(|v| {
                            _mm512_maskz_loadu_ps(seg.masks[kx][v], start.wrapping_add(16 * v))
                        });
                        let wt = wp.add((ci * kk + ky * k + kx) * R);
                        for (r, a) in acc.iter_mut().enumerate() {
                            let wv = _mm512_set1_ps(*wt.add(r));
                            for v in 0..NV {
                                a[v] = _mm512_fmadd_ps(wv, xv[v], a[v]);
                            }
                        }
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            for (r, a) in acc.iter().enumerate() {
                let dst = o.add((r0 + r) * oh * ow + seg.x0);
                for (v, &av) in a.iter().enumerate() {
                    let y = if self.relu {
                        _mm512_max_ps(av, zero)
                    } else {
                        av
                    };
                    _mm512_mask_storeu_ps(dst.wrapping_add(16 * v), seg.store[v], y);
                }
            }
        }
    }
}

/// One segment of an output row: its first column, the row, the input masks per kernel
/// column and the store masks.
struct Segment {
    x0: usize,
    y: usize,
    masks: [[u16; 4]; MAX_KERNEL],
    store: [u16; 4],
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn the_direct_convolution_equals_candles_for_paddings_kernels_and_ragged_widths() {
        for (n, cin, h, w, cout, k, pad, relu) in [
            (2, 1, 12, 20, 16, 5, 0, true),
            (1, 16, 10, 70, 32, 5, 0, false),
            (2, 3, 9, 7, 13, 3, 1, true),
            (1, 5, 6, 131, 7, 3, 2, false),
            (1, 4, 5, 5, 3, 5, 4, true),
            (3, 2, 4, 17, 2, 1, 0, false),
            (1, 8, 7, 7, 6, 7, 3, true),
        ] {
            let g = Direct {
                cin,
                h,
                w,
                cout,
                k,
                pad,
                relu,
            };
            if !g.applies() {
                continue; // no AVX-512 on this CPU: the GEMM path is what runs
            }
            let xs: Vec<f32> = (0..n * cin * h * w)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
                .collect();
            let ws: Vec<f32> = (0..cout * cin * k * k)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.02)
                .collect();
            let bs: Vec<f32> = (0..cout).map(|i| i as f32 * 0.1 - 0.5).collect();
            let got = g.forward(&xs, &ws, Some(&bs), n);
            let d = Device::Cpu;
            let want = Tensor::from_vec(xs, (n, cin, h, w), &d)
                .unwrap()
                .conv2d(
                    &Tensor::from_vec(ws, (cout, cin, k, k), &d).unwrap(),
                    pad,
                    1,
                    1,
                    1,
                )
                .unwrap()
                .broadcast_add(&Tensor::from_vec(bs, (1, cout, 1, 1), &d).unwrap())
                .unwrap();
            let want = if relu { want.relu().unwrap() } else { want };
            let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{n}x{cin}x{h}x{w} -> {cout}, k{k} p{pad} @{i}: {a} vs {b}"
                );
            }
        }
    }
}
