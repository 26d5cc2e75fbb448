//! Unfold (im2col) and fold (col2im) of NCHW images.
//!
//! [`unfold`] copies every kernel window of `x` into a column (`(N, C·k·k, OH·OW)`, Caffe's
//! im2col layout); [`fold`] adds columns back onto the pixels they came from (its adjoint). Both
//! are differentiable candle custom ops, each the other's backward, so gradients of any order
//! work. The per-plane kernels (any band of output rows, any column offset) are also the
//! building blocks of kp's CPU convolution, [`crate::conv_cpu`].

use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use candle_core::{Error, Result};

/// The geometry of a square-kernel unfold over NCHW images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnfoldGeometry {
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Append a row of ones to each image's columns, so that a bias column in the weight
    /// matrix adds the bias (and its gradient comes out of the same matrix product).
    pub ones_row: bool,
}

/// `dst[i] = src[i·stride]`. Strides 1 and 2 (every convolution and pool of the seed's
/// models) take paths the compiler vectorises; `step_by` is about 5x slower for stride 2.
#[inline]
fn gather_strided<T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            let pairs = dst.len().min(src.len() / 2);
            for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            // An odd-length source ends in a lone last element.
            if let Some(d) = dst.get_mut(pairs) {
                *d = src[2 * pairs];
            }
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *d = v;
            }
        }
    }
}

/// `dst[i·stride] += src[i]`, the adjoint of [`gather_strided`].
#[inline]
fn scatter_add_strided<T: WithDType>(dst: &mut [T], src: &[T], stride: usize) {
    match stride {
        1 => {
            for (d, &g) in dst[..src.len()].iter_mut().zip(src) {
                *d += g;
            }
        }
        2 => {
            let pairs = src.len().min(dst.len() / 2);
            for (pair, &g) in dst.chunks_exact_mut(2).zip(src) {
                pair[0] += g;
            }
            if let Some(&g) = src.get(pairs) {
                dst[2 * pairs] += g;
            }
        }
        _ => {
            for (d, &g) in dst.iter_mut().step_by(stride).zip(src) {
                *d += g;
            }
        }
    }
}

/// Sets `dst` to zeros. The unfold calls this per output row on the 0-3 padding columns at its
/// edges; a `fill` of a runtime length is a call to `memset`, which cost more than the stores
/// (memset calls from the unfold were 1.3% of ResNet18's training step at batch 16).
#[inline]
fn zero_edge<T: WithDType>(dst: &mut [T]) {
    match dst {
        [] => {}
        [a] => *a = T::zero(),
        [a, b] => (*a, *b) = (T::zero(), T::zero()),
        [a, b, c] => (*a, *b, *c) = (T::zero(), T::zero(), T::zero()),
        _ => dst.fill(T::zero()),
    }
}

impl UnfoldGeometry {
    /// Output `(height, width)`; an error when the padded input is smaller than the kernel.
    pub fn output_size(&self) -> Result<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if k == 0 || s == 0 {
            return Err(Error::Msg("unfold needs kernel and stride >= 1".into()));
        }
        if self.height + 2 * p < k || self.width + 2 * p < k {
            return Err(Error::Msg(format!(
                "unfold input {}x{} (+2x{p} padding) is smaller than the kernel {k}",
                self.height, self.width
            )));
        }
        Ok((
            (self.height + 2 * p - k) / s + 1,
            (self.width + 2 * p - k) / s + 1,
        ))
    }

    /// Rows of one image's column matrix: `C·k·k` (plus one with [`Self::ones_row`]).
    pub fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel + usize::from(self.ones_row)
    }

    /// For output index `o` along an axis and kernel offset `kk`, the input index (if inside).
    #[inline]
    fn source(&self, o: usize, kk: usize, len: usize) -> Option<usize> {
        let i = (o * self.stride + kk) as isize - self.padding as isize;
        (i >= 0 && (i as usize) < len).then_some(i as usize)
    }

    /// The output columns `lo..hi` whose source `ox·stride + kx - padding` is in `0..len`.
    #[inline]
    fn inside(&self, kx: usize, out_len: usize, len: usize) -> (usize, usize) {
        let (p, s) = (self.padding as isize, self.stride as isize);
        let ceil_div = |a: isize| if a <= 0 { 0 } else { (a + s - 1) / s };
        let lo = ceil_div(p - kx as isize).min(out_len as isize) as usize;
        let hi = ceil_div(len as isize + p - kx as isize).min(out_len as isize) as usize;
        (lo, hi.max(lo))
    }

    /// Unfolds the output rows `oys` of one channel plane (`H·W`) into its `k·k` rows of
    /// `dst` (row stride `ld`), starting at column `col0`; padding becomes zeros.
    pub(crate) fn unfold_plane<T: WithDType>(
        &self,
        plane: &[T],
        dst: &mut [T],
        ld: usize,
        col0: usize,
        oys: Range<usize>,
        ow: usize,
    ) {
        if self.stride == 1 && ow == self.width {
            self.unfold_plane_same(plane, dst, ld, col0, oys);
        } else {
            self.unfold_plane_rows(plane, dst, ld, col0, oys, ow);
        }
    }

    /// [`Self::unfold_plane`] for any geometry, one output row at a time.
    fn unfold_plane_rows<T: WithDType>(
        &self,
        plane: &[T],
        dst: &mut [T],
        ld: usize,
        col0: usize,
        oys: Range<usize>,
        ow: usize,
    ) {
        let (h, w, k) = (self.height, self.width, self.kernel);
        let span = oys.len() * ow;
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut dst[(ky * k + kx) * ld + col0..][..span];
                for (r, oy) in oys.clone().enumerate() {
                    let dst = &mut row[r * ow..(r + 1) * ow];
                    let Some(iy) = self.source(oy, ky, h) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    let src = &plane[iy * w..(iy + 1) * w];
                    let (lo, hi) = self.inside(kx, ow, w);
                    zero_edge(&mut dst[..lo]);
                    zero_edge(&mut dst[hi..]);
                    if lo < hi {
                        // The first inside column reads `a`, the next ones every `stride`.
                        let a = lo * self.stride + kx - self.padding;
                        gather_strided(&mut dst[lo..hi], &src[a..], self.stride);
                    }
                }
            }
        }
    }

    /// [`Self::unfold_plane`] of a stride-1 convolution whose output is as wide as its input
    /// (`2·padding = kernel - 1`, ResNet's 3x3 convolutions): output row `oy` of kernel offset
    /// `(ky, kx)` reads input row `oy + ky - p` shifted by `kx - p`, so all the inside rows of
    /// a band are one contiguous run of the plane. One copy per run (rows of a small plane are
    /// a few elements long, and copying them one by one cost more than the data), then the
    /// `|kx - p|` edge columns per row that the run wrapped into the neighbouring row are zeroed.
    fn unfold_plane_same<T: WithDType>(
        &self,
        plane: &[T],
        dst: &mut [T],
        ld: usize,
        col0: usize,
        oys: Range<usize>,
    ) {
        let (h, w, k, p) = (self.height, self.width, self.kernel, self.padding);
        for ky in 0..k {
            // Output rows whose input row oy + ky - p is inside the image.
            let first = oys.start.max(p.saturating_sub(ky)).min(oys.end);
            let end = oys.end.min((h + p).saturating_sub(ky)).max(first);
            for kx in 0..k {
                let row = &mut dst[(ky * k + kx) * ld + col0..][..oys.len() * w];
                let (d0, d1) = ((first - oys.start) * w, (end - oys.start) * w);
                row[..d0].fill(T::zero());
                row[d1..].fill(T::zero());
                if d0 == d1 {
                    continue;
                }
                // Source index of the run's first element (negative before the plane).
                let s0 = ((first + ky - p) * w + kx) as isize - p as isize;
                let lead = (-s0).max(0) as usize;
                let len = (d1 - d0).min((plane.len() as isize - s0).max(0) as usize);
                let run = &mut row[d0..d1];
                run[..lead.min(len)].fill(T::zero());
                if lead < len {
                    let from = (s0 + lead as isize) as usize;
                    run[lead..len].copy_from_slice(&plane[from..from + (len - lead)]);
                }
                run[len.max(lead)..].fill(T::zero());
                // Columns whose source column ox + kx - p is outside 0..w.
                for r in run.chunks_exact_mut(w) {
                    if kx < p {
                        zero_edge(&mut r[..p - kx]);
                    } else if kx > p {
                        zero_edge(&mut r[w - (kx - p)..]);
                    }
                }
            }
        }
    }

    /// The input rows that output rows `oys` read: `[first, end)`, clipped to the image.
    pub(crate) fn input_rows(&self, oys: &Range<usize>) -> Range<usize> {
        if oys.is_empty() {
            return 0..0;
        }
        let first = (oys.start * self.stride).saturating_sub(self.padding);
        let end = ((oys.end - 1) * self.stride + self.kernel)
            .saturating_sub(self.padding)
            .min(self.height);
        first.min(end)..end
    }

    /// Adds the `k·k` rows of `src` (row stride `ld`, from column `col0`, output rows `oys`)
    /// back onto a channel's input rows [`Self::input_rows`]`(oys)`, held in `plane` (the
    /// adjoint of [`Self::unfold_plane`]).
    pub(crate) fn fold_plane<T: WithDType>(
        &self,
        src: &[T],
        ld: usize,
        col0: usize,
        oys: Range<usize>,
        ow: usize,
        plane: &mut [T],
    ) {
        let (h, w, k) = (self.height, self.width, self.kernel);
        let row0 = self.input_rows(&oys).start;
        let span = oys.len() * ow;
        for ky in 0..k {
            for kx in 0..k {
                let row = &src[(ky * k + kx) * ld + col0..][..span];
                for (r, oy) in oys.clone().enumerate() {
                    let Some(iy) = self.source(oy, ky, h) else {
                        continue;
                    };
                    let src = &row[r * ow..(r + 1) * ow];
                    let dst = &mut plane[(iy - row0) * w..(iy - row0 + 1) * w];
                    let (lo, hi) = self.inside(kx, ow, w);
                    if lo < hi {
                        let a = lo * self.stride + kx - self.padding;
                        scatter_add_strided(&mut dst[a..], &src[lo..hi], self.stride);
                    }
                }
            }
        }
    }

    fn unfold_all<T: WithDType>(&self, x: &[T], n: usize) -> Result<Vec<T>> {
        let (oh, ow) = self.output_size()?;
        let (plane, cols) = (self.height * self.width, oh * ow);
        let block = self.kernel * self.kernel * cols;
        let per_image = self.rows() * cols;
        let mut out = vec![T::zero(); n * per_image];
        for (dst, src) in out
            .chunks_mut(per_image)
            .zip(x.chunks(plane * self.channels))
        {
            let (windows, ones) = dst.split_at_mut(self.channels * block);
            ones.fill(T::one());
            windows
                .par_chunks_mut(block)
                .zip(src.par_chunks(plane))
                .for_each(|(rows, src)| self.unfold_plane(src, rows, cols, 0, 0..oh, ow));
        }
        Ok(out)
    }

    fn fold_all<T: WithDType>(&self, cols: &[T], n: usize) -> Result<Vec<T>> {
        let (oh, ow) = self.output_size()?;
        let plane = self.height * self.width;
        let block = self.kernel * self.kernel * oh * ow;
        let per_image = self.rows() * oh * ow;
        let mut out = vec![T::zero(); n * self.channels * plane];
        for (dst, src) in out
            .chunks_mut(plane * self.channels)
            .zip(cols.chunks(per_image))
        {
            // The ones row (if any) is constant: its gradient goes nowhere.
            dst.par_chunks_mut(plane)
                .zip(src[..self.channels * block].par_chunks(block))
                .for_each(|(dst, rows)| self.fold_plane(rows, oh * ow, 0, 0..oh, ow, dst));
        }
        Ok(out)
    }
}

/// `(N, C, H, W)` → `(N, C·k·k, OH·OW)`: every kernel window as a column (differentiable);
/// `geometry` must match `x` (its `ones_row` adds a last row of ones).
pub fn unfold(x: &Tensor, geometry: UnfoldGeometry) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    if (c, h, w) != (geometry.channels, geometry.height, geometry.width) {
        return Err(Error::Msg(format!(
            "unfold geometry is for {}x{}x{} inputs, got {:?}",
            geometry.channels,
            geometry.height,
            geometry.width,
            x.dims()
        )));
    }
    geometry.output_size()?;
    x.contiguous()?.apply_op1(Unfold(geometry))
}

/// `(N, C·k·k, OH·OW)` → `(N, C, H, W)`: adds columns back onto pixels (the adjoint of [`unfold`]).
pub fn fold(cols: &Tensor, geometry: UnfoldGeometry) -> Result<Tensor> {
    let (_, rows, _) = cols.dims3()?;
    let (oh, ow) = geometry.output_size()?;
    if rows != geometry.rows() || cols.dim(2)? != oh * ow {
        return Err(Error::Msg(format!(
            "fold expects (N, {}, {}) columns, got {:?}",
            geometry.rows(),
            oh * ow,
            cols.dims()
        )));
    }
    cols.contiguous()?.apply_op1(Fold(geometry))
}

pub(crate) fn contiguous<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

struct Unfold(UnfoldGeometry);

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "kp-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let n = l.shape().dims4()?.0;
        let (oh, ow) = g.output_size()?;
        let shape = Shape::from((n, g.rows(), oh * ow));
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(g.unfold_all(contiguous(v, l, "unfold")?, n)?),
            CpuStorage::F64(v) => CpuStorage::F64(g.unfold_all(contiguous(v, l, "unfold")?, n)?),
            other => candle_core::bail!("unfold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(Fold(self.0))?))
    }
}

struct Fold(UnfoldGeometry);

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "kp-fold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let n = l.shape().dims3()?.0;
        let shape = Shape::from((n, g.channels, g.height, g.width));
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(g.fold_all(contiguous(v, l, "fold")?, n)?),
            CpuStorage::F64(v) => CpuStorage::F64(g.fold_all(contiguous(v, l, "fold")?, n)?),
            other => candle_core::bail!("fold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(Unfold(self.0))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The strided copies equal the plain index loops for every stride and length, including
    /// sources that end right at the last element read.
    #[test]
    fn strided_gather_and_scatter_match_index_loops() {
        for stride in 1..=3 {
            for n in 0..7 {
                let need = if n == 0 { 0 } else { (n - 1) * stride + 1 };
                for len in need..need + 3 {
                    let src: Vec<f64> = (0..len).map(|i| i as f64 + 0.5).collect();
                    let mut dst = vec![-1.0; n];
                    gather_strided(&mut dst, &src, stride);
                    let expected: Vec<f64> = (0..n).map(|i| src[i * stride]).collect();
                    assert_eq!(dst, expected, "gather stride {stride} n {n} len {len}");

                    let grads: Vec<f64> = (0..n).map(|i| i as f64 * 2.0 + 1.0).collect();
                    let mut acc = vec![1.0; len];
                    scatter_add_strided(&mut acc, &grads, stride);
                    let mut expected = vec![1.0; len];
                    for (i, g) in grads.iter().enumerate() {
                        expected[i * stride] += g;
                    }
                    assert_eq!(acc, expected, "scatter stride {stride} n {n} len {len}");
                }
            }
        }
    }

    /// The same-size fast path writes exactly what the row-by-row path writes.
    #[test]
    fn same_size_unfold_matches_the_row_by_row_one() {
        for (h, w, k) in [
            (1, 1, 3),
            (2, 3, 5),
            (7, 5, 3),
            (6, 9, 5),
            (4, 4, 7),
            (9, 2, 3),
        ] {
            let g = UnfoldGeometry {
                channels: 1,
                height: h,
                width: w,
                kernel: k,
                stride: 1,
                padding: (k - 1) / 2,
                ones_row: false,
            };
            assert_eq!(g.output_size().unwrap(), (h, w));
            let plane: Vec<f64> = (0..h * w).map(|i| i as f64 + 1.0).collect();
            for (oys, col0) in [(0..h, 0), (h / 2..h, 3), (0..h.div_ceil(2), 1)] {
                let ld = col0 + oys.len() * w + 2;
                let mut fast = vec![f64::NAN; k * k * ld];
                let mut rows = fast.clone();
                g.unfold_plane_same(&plane, &mut fast, ld, col0, oys.clone());
                g.unfold_plane_rows(&plane, &mut rows, ld, col0, oys.clone(), w);
                let same = fast
                    .iter()
                    .zip(&rows)
                    .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                assert!(same, "{h}x{w} k{k} rows {oys:?}: {fast:?} vs {rows:?}");
            }
        }
    }

    /// `fold` is the adjoint of `unfold`: <unfold(x), y> = <x, fold(y)>.
    #[test]
    fn fold_is_the_adjoint_of_unfold() {
        let dev = Device::Cpu;
        let g = UnfoldGeometry {
            channels: 2,
            height: 7,
            width: 8,
            kernel: 3,
            stride: 2,
            padding: 1,
            ones_row: false,
        };
        let (oh, ow) = g.output_size().unwrap();
        let x = Tensor::randn(0f64, 1.0, (2, 2, 7, 8), &dev).unwrap();
        let y = Tensor::randn(0f64, 1.0, (2, g.rows(), oh * ow), &dev).unwrap();
        let lhs = (unfold(&x, g).unwrap() * &y).unwrap().sum_all().unwrap();
        let rhs = (x * fold(&y, g).unwrap()).unwrap().sum_all().unwrap();
        let (a, b) = (
            lhs.to_scalar::<f64>().unwrap(),
            rhs.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn rejects_too_small_inputs() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let g = |kernel, stride| UnfoldGeometry {
            channels: 1,
            height: 2,
            width: 2,
            kernel,
            stride,
            padding: 0,
            ones_row: false,
        };
        assert!(unfold(&x, g(5, 1)).is_err());
        assert!(unfold(&x, g(1, 0)).is_err());
        let wrong = UnfoldGeometry {
            channels: 2,
            ..g(1, 1)
        };
        assert!(unfold(&x, wrong).is_err());
    }
}
