//! Convolution as unfold + matrix product, with a fast backward pass on the CPU.
//!
//! candle 0.11's CPU convolution backward computes the input gradient with a naive
//! `conv_transpose2d` and the weight gradient with a second convolution over transposed
//! tensors; both dominate the training step of the seed networks. Here a convolution is
//! `y[n] = W · unfold(x[n])`: [`unfold`] is a candle [`CustomOp1`] that copies every kernel
//! window of `x` into a column (`(N, C·k·k, OH·OW)`, Caffe's im2col layout), and the product runs
//! through candle's `matmul` (the `gemm` crate, multithreaded). Autograd then gives
//! `dW = Σ_n dy[n] · unfold(x[n])ᵀ` and `dx = fold(Wᵀ · dy)`, where `fold` (col2im, the adjoint
//! of `unfold`, also a custom op) adds every column back onto the pixels it came from.
//! `unfold` and `fold` are each other's backward, so gradients of any order work.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::{Error, Result};

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

impl UnfoldGeometry {
    /// Output `(height, width)`; an error when the padded input is smaller than the kernel.
    pub fn output_size(&self) -> Result<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if k == 0 || s == 0 {
            return Err(Error::Shape("unfold needs kernel and stride >= 1".into()));
        }
        if self.height + 2 * p < k || self.width + 2 * p < k {
            return Err(Error::Shape(format!(
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

    /// Stride 1: the output columns `lo..hi` whose source `ox + kx - padding` is in `0..len`.
    #[inline]
    fn inside(&self, kx: usize, out_len: usize, len: usize) -> (usize, usize) {
        let p = self.padding as isize;
        let lo = (p - kx as isize).clamp(0, out_len as isize) as usize;
        let hi = (len as isize + p - kx as isize).clamp(0, out_len as isize) as usize;
        (lo, hi.max(lo))
    }

    /// Unfolds one channel plane (`H·W`) into its `k·k` rows of `OH·OW` columns.
    fn unfold_plane<T: WithDType>(&self, plane: &[T], rows: &mut [T], oh: usize, ow: usize) {
        let (h, w, k) = (self.height, self.width, self.kernel);
        let cols = oh * ow;
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut rows[(ky * k + kx) * cols..(ky * k + kx + 1) * cols];
                for oy in 0..oh {
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    let Some(iy) = self.source(oy, ky, h) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    let src = &plane[iy * w..(iy + 1) * w];
                    if self.stride == 1 {
                        // Stride 1: the inside columns are one contiguous run of the row.
                        let (lo, hi) = self.inside(kx, ow, w);
                        dst[..lo].fill(T::zero());
                        dst[hi..].fill(T::zero());
                        if lo < hi {
                            let shift = kx as isize - self.padding as isize;
                            let a = (lo as isize + shift) as usize;
                            dst[lo..hi].copy_from_slice(&src[a..a + (hi - lo)]);
                        }
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            *d = match self.source(ox, kx, w) {
                                Some(ix) => src[ix],
                                None => T::zero(),
                            };
                        }
                    }
                }
            }
        }
    }

    /// Adds one channel's `k·k` rows back onto its plane (the adjoint of `unfold_plane`).
    fn fold_plane<T: WithDType>(&self, rows: &[T], plane: &mut [T], oh: usize, ow: usize) {
        let (h, w, k) = (self.height, self.width, self.kernel);
        let cols = oh * ow;
        plane.fill(T::zero());
        for ky in 0..k {
            for kx in 0..k {
                let row = &rows[(ky * k + kx) * cols..(ky * k + kx + 1) * cols];
                for oy in 0..oh {
                    let Some(iy) = self.source(oy, ky, h) else {
                        continue;
                    };
                    let src = &row[oy * ow..(oy + 1) * ow];
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    if self.stride == 1 {
                        let (lo, hi) = self.inside(kx, ow, w);
                        if lo < hi {
                            let shift = kx as isize - self.padding as isize;
                            let a = (lo as isize + shift) as usize;
                            for (d, &g) in dst[a..a + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                                *d += g;
                            }
                        }
                    } else {
                        for (ox, &g) in src.iter().enumerate() {
                            if let Some(ix) = self.source(ox, kx, w) {
                                dst[ix] += g;
                            }
                        }
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
                .for_each(|(rows, src)| self.unfold_plane(src, rows, oh, ow));
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
                .for_each(|(dst, rows)| self.fold_plane(rows, dst, oh, ow));
        }
        Ok(out)
    }
}

/// `(N, C, H, W)` → `(N, C·k·k, OH·OW)`: every kernel window as a column (differentiable);
/// `geometry` must match `x` (its `ones_row` adds a last row of ones).
pub fn unfold(x: &Tensor, geometry: UnfoldGeometry) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    if (c, h, w) != (geometry.channels, geometry.height, geometry.width) {
        return Err(Error::Shape(format!(
            "unfold geometry is for {}x{}x{} inputs, got {:?}",
            geometry.channels,
            geometry.height,
            geometry.width,
            x.dims()
        )));
    }
    geometry.output_size()?;
    Ok(x.contiguous()?.apply_op1(Unfold(geometry))?)
}

/// `(N, C·k·k, OH·OW)` → `(N, C, H, W)`: adds columns back onto pixels (the adjoint of [`unfold`]).
pub fn fold(cols: &Tensor, geometry: UnfoldGeometry) -> Result<Tensor> {
    let (_, rows, _) = cols.dims3()?;
    let (oh, ow) = geometry.output_size()?;
    if rows != geometry.rows() || cols.dim(2)? != oh * ow {
        return Err(Error::Shape(format!(
            "fold expects (N, {}, {}) columns, got {:?}",
            geometry.rows(),
            oh * ow,
            cols.dims()
        )));
    }
    Ok(cols.contiguous()?.apply_op1(Fold(geometry))?)
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

fn to_candle<T>(r: Result<T>) -> candle_core::Result<T> {
    r.map_err(|e| candle_core::Error::Msg(e.to_string()))
}

struct Unfold(UnfoldGeometry);

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "kp-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let n = l.shape().dims4()?.0;
        let (oh, ow) = to_candle(g.output_size())?;
        let shape = Shape::from((n, g.rows(), oh * ow));
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(to_candle(g.unfold_all(contiguous(v, l, "unfold")?, n))?)
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(to_candle(g.unfold_all(contiguous(v, l, "unfold")?, n))?)
            }
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
            CpuStorage::F32(v) => {
                CpuStorage::F32(to_candle(g.fold_all(contiguous(v, l, "fold")?, n))?)
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(to_candle(g.fold_all(contiguous(v, l, "fold")?, n))?)
            }
            other => candle_core::bail!("fold: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(Unfold(self.0))?))
    }
}

/// Column matrices larger than this many elements are built a few images at a time, so a
/// large evaluation batch does not hold every image's columns at once (64 MiB in f32).
pub const MAX_COLUMN_ELEMENTS: usize = 16 << 20;

/// Convolution `(N, C, H, W) ⊛ (O, C, k, k) + bias` as `[W | b] · [unfold(x); 1]`; CPU only.
///
/// Batches whose columns would exceed [`MAX_COLUMN_ELEMENTS`] run in slices along the batch.
pub fn conv2d_unfold(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_unfold_budget(x, weight, bias, stride, padding, MAX_COLUMN_ELEMENTS)
}

fn conv2d_unfold_budget(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    budget: usize,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let geometry = UnfoldGeometry {
        channels: c,
        height: h,
        width: w,
        kernel: k,
        stride,
        padding,
        ones_row: bias.is_some(),
    };
    let (oh, ow) = geometry.output_size()?;
    let per_image = geometry.rows() * oh * ow;
    let slice = (budget / per_image.max(1)).max(1);
    if n <= slice {
        return conv2d_unfold_whole(x, weight, bias, stride, padding);
    }
    let mut parts = Vec::with_capacity(n.div_ceil(slice));
    for start in (0..n).step_by(slice) {
        let xs = x.narrow(0, start, slice.min(n - start))?;
        parts.push(conv2d_unfold_whole(&xs, weight, bias, stride, padding)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

fn conv2d_unfold_whole(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let (o, c, k, _) = weight.dims4()?;
    let geometry = UnfoldGeometry {
        channels: c,
        height: h,
        width: w,
        kernel: k,
        stride,
        padding,
        ones_row: bias.is_some(),
    };
    let (oh, ow) = geometry.output_size()?;
    let cols = unfold(x, geometry)?;
    let mut w2 = weight.reshape((o, c * k * k))?;
    if let Some(b) = bias {
        w2 = Tensor::cat(&[&w2, &b.reshape((o, 1))?], 1)?;
    }
    let y = w2.broadcast_left(n)?.matmul(&cols)?;
    Ok(y.reshape((n, o, oh, ow))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn close(a: &Tensor, b: &Tensor, tol: f64) {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d <= tol, "max difference {d} > {tol}");
    }

    /// Forward and all gradients equal candle's reference convolution (+ broadcast bias).
    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        for &(n, c, h, w, o, k, s, p, with_bias) in &[
            (2, 1, 12, 9, 4, 5, 1, 0, true),
            (3, 3, 11, 11, 5, 3, 1, 1, false),
            (2, 4, 10, 10, 6, 3, 2, 1, true),
            (1, 2, 15, 15, 3, 7, 2, 3, false),
            (2, 3, 8, 8, 4, 1, 2, 0, true),
            (1, 2, 5, 6, 3, 3, 1, 2, true),
        ] {
            let x = Var::randn(0f64, 1.0, (n, c, h, w), &dev).unwrap();
            let wt = Var::randn(0f64, 1.0, (o, c, k, k), &dev).unwrap();
            let b = Var::randn(0f64, 1.0, o, &dev).unwrap();
            let bias = with_bias.then(|| b.as_tensor());
            let ours = conv2d_unfold(x.as_tensor(), wt.as_tensor(), bias, s, p).unwrap();
            let mut reference = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
            if with_bias {
                reference = reference
                    .broadcast_add(&b.as_tensor().reshape((1, o, 1, 1)).unwrap())
                    .unwrap();
            }
            close(&ours, &reference, 1e-10);
            // Weighted sum so every output position has a distinct gradient.
            let r = Tensor::randn(0f64, 1.0, ours.dims(), &dev).unwrap();
            let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&reference * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut vars = vec![x.as_tensor(), wt.as_tensor()];
            if with_bias {
                vars.push(b.as_tensor());
            }
            for v in vars {
                close(g1.get(v).unwrap(), g2.get(v).unwrap(), 1e-9);
            }
        }
    }

    /// A batch too large for one column matrix runs in slices with the same result and gradients.
    #[test]
    fn sliced_batches_match() {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 1.0, (7, 2, 9, 8), &dev).unwrap();
        let wt = Var::randn(0f64, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let b = Var::randn(0f64, 1.0, 3, &dev).unwrap();
        let run = |budget| {
            let y = conv2d_unfold_budget(
                x.as_tensor(),
                wt.as_tensor(),
                Some(b.as_tensor()),
                2,
                1,
                budget,
            )
            .unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let grads = [&x, &wt, &b].map(|v| g.get(v.as_tensor()).unwrap().clone());
            (y, grads)
        };
        // 19 rows x 20 columns = 380 elements per image: 1000 allows slices of 2 images.
        let (whole, gw) = run(usize::MAX);
        let (sliced, gs) = run(1000);
        close(&whole, &sliced, 1e-12);
        for (a, b) in gw.iter().zip(&gs) {
            close(a, b, 1e-10);
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

    /// Finite differences through the whole unfold + matmul path, in f64.
    #[test]
    fn finite_differences() {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 1.0, (1, 2, 6, 5), &dev).unwrap();
        let wt = Tensor::randn(0f64, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, 3, &dev).unwrap();
        let f = |x: &Tensor| -> f64 {
            conv2d_unfold(x, &wt, Some(&b), 2, 1)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let y = conv2d_unfold(x.as_tensor(), &wt, Some(&b), 2, 1).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let analytic = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let eps = 1e-6;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += eps;
            let mut minus = base.clone();
            minus[i] -= eps;
            let tp = Tensor::from_vec(plus, (1, 2, 6, 5), &dev).unwrap();
            let tm = Tensor::from_vec(minus, (1, 2, 6, 5), &dev).unwrap();
            let numeric = (f(&tp) - f(&tm)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < 1e-5 * numeric.abs().max(1.0),
                "x[{i}]: numeric {numeric} analytic {}",
                analytic[i]
            );
        }
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
