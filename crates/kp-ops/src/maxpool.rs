//! 2-D max pooling with a correct backward pass: the kernels behind `kp_models::MaxPool2d`.
//!
//! candle's built-in `max_pool2d` has a wrong gradient (it divides the gradient by the window
//! size and misaligns windows on odd sizes), has no padding and cannot differentiate when the
//! kernel and the stride differ. [`max_pool2d`] replaces it on the CPU as a candle
//! [`CustomOp1`] whose backward routes each output gradient to the arg-max of its window, exactly
//! like PyTorch (first maximum in scan order wins; NaN propagates): the forward records the
//! arg-max indices and the backward scatters the output gradient there.
//! [`max_pool2d_composite`] is the same pooling built from differentiable candle ops, for any
//! device; cuDNN's max-pool is `crate::cudnn::pool` (feature `cudnn`).
//!
//! Padding acts as `-inf`. The caller works out the [`Geometry`] (output sizes in PyTorch's
//! floor or ceil mode) and checks it.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Error, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Pools a contiguous-able f32/f64 NCHW tensor with the CPU custom op; its backward routes
/// gradients to the arg-max.
pub fn max_pool2d(x: &Tensor, geometry: Geometry) -> Result<Tensor> {
    if geometry.h * geometry.w > u32::MAX as usize {
        return Err(Error::Msg(format!(
            "max-pool plane {:?} is too large",
            x.dims()
        )));
    }
    let x = x.contiguous()?;
    if !x.track_op() {
        // Prediction (no gradient will be asked for): the values alone, no arg-max record.
        return x.apply_op1_no_bwd(&MaxPoolValuesOp { geometry });
    }
    x.apply_op1(MaxPoolOp {
        geometry,
        indices: Mutex::new(None),
    })
}

/// Pools with ordinary candle ops (pad with `-inf`, strided window views, element-wise
/// maximum), so it runs and differentiates on any device. Ties split the gradient, which
/// differs from PyTorch only when a window holds several equal maxima.
pub fn max_pool2d_composite(x: &Tensor, g: Geometry) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    // Enough rows/columns that every (offset, output) pair maps to a row of a
    // (out, stride) reshape: k - 1 + out * s.
    let need_h = g.k - 1 + g.oh * g.s;
    let need_w = g.k - 1 + g.ow * g.s;
    let xp = pad_neg_inf(x, 2, g.p, need_h)?;
    let xp = pad_neg_inf(&xp, 3, g.p, need_w)?;
    let mut acc: Option<Tensor> = None;
    for di in 0..g.k {
        let rows = xp
            .narrow(2, di, g.oh * g.s)?
            .reshape((n, c, g.oh, g.s, need_w))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dj in 0..g.k {
            let win = rows
                .narrow(3, dj, g.ow * g.s)?
                .reshape((n, c, g.oh, g.ow, g.s))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            acc = Some(match acc {
                None => win,
                Some(a) => a.maximum(&win)?,
            });
        }
    }
    acc.ok_or_else(|| Error::Msg("max-pool kernel must be positive".into()))
}

/// Pads `dim` with `before` rows of `-inf`, then pads or trims the end so the length is `total`.
fn pad_neg_inf(x: &Tensor, dim: usize, before: usize, total: usize) -> Result<Tensor> {
    let neg = |len: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = len;
        Tensor::full(f64::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())
    };
    let len = x.dim(dim)?;
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(neg(before)?);
    }
    let have = before + len;
    if have >= total {
        parts.push(x.narrow(dim, 0, total - before)?);
    } else {
        parts.push(x.clone());
        parts.push(neg(total - have)?);
    }
    Tensor::cat(&parts, dim)
}

/// Sizes of one pooling call (square window, stride and padding; NCHW planes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Planes pooled (batch times channels).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Window size.
    pub k: usize,
    /// Step between windows.
    pub s: usize,
    /// Implicit `-inf` border on each side.
    pub p: usize,
}

/// Element types of the CPU kernels.
trait PoolElem: Copy + PartialOrd + Send + Sync + std::ops::AddAssign {
    const ZERO: Self;
    fn is_nan(self) -> bool;

    /// [`update_run`], or a faster equivalent for this type on this CPU.
    fn update_run(v: &mut [Self], i: &mut [u32], c: &[Self], base: u32, step: u32) {
        update_run(v, i, c, base, step)
    }
}

impl PoolElem for f32 {
    const ZERO: Self = 0.0;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }

    fn update_run(v: &mut [f32], i: &mut [u32], c: &[f32], base: u32, step: u32) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { update_run_avx512(v, i, c, base, step) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { update_run_avx2(v, i, c, base, step) };
        }
        update_run(v, i, c, base, step)
    }
}

/// [`update_run`] on f32 with AVX-512: 16 outputs per step, the rule as mask operations
/// (`c > v`, or `c` NaN and `v` not) and the values and indices stored under the mask. (The
/// portable loop compiles to a branch and a scalar store per output, a coin flip each on
/// activations: ResNet18's max-pool was 12% of its inference at batch 16 with it, and the
/// inference 10% faster with this.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn update_run_avx512(v: &mut [f32], i: &mut [u32], c: &[f32], base: u32, step: u32) {
    use std::arch::x86_64::*;
    let n = v.len().min(i.len()).min(c.len());
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let stepv = _mm512_set1_epi32(step as i32);
    let mut j = 0;
    while j < n {
        let m: __mmask16 = if n - j >= 16 {
            0xffff
        } else {
            ((1u32 << (n - j)) - 1) as u16
        };
        // SAFETY: lanes j..j + 16 under the mask lie inside all three slices (j < n, masked
        // past n); masked-off lanes are neither read nor written.
        unsafe {
            let vv = _mm512_maskz_loadu_ps(m, v.as_ptr().add(j));
            let cv = _mm512_maskz_loadu_ps(m, c.as_ptr().add(j));
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(cv, vv);
            let c_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(cv, cv);
            let v_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(vv, vv);
            let take = (gt | (c_nan & !v_nan)) & m;
            let idx = _mm512_add_epi32(
                _mm512_set1_epi32((base + j as u32 * step) as i32),
                _mm512_mullo_epi32(lanes, stepv),
            );
            _mm512_mask_storeu_ps(v.as_mut_ptr().add(j), take, cv);
            _mm512_mask_storeu_epi32(i.as_mut_ptr().add(j) as *mut i32, take, idx);
        }
        j += 16;
    }
}

/// [`update_run`] on f32 with AVX2 (CPUs without AVX-512, e.g. AMD's Zen 2-3): 8 outputs per
/// step, the rule as compare masks and the values and indices blended under them; the tail
/// (fewer than 8 outputs) takes the portable loop. (With the portable loop ResNet18's max-pool
/// was 3.5% of its training step at batch 16 on a Zen 3 EPYC.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_run_avx2(v: &mut [f32], i: &mut [u32], c: &[f32], base: u32, step: u32) {
    use std::arch::x86_64::*;
    let n = v.len().min(i.len()).min(c.len());
    let lane_steps = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(step as i32),
    );
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY: lanes j..j + 8 lie inside all three slices (j + 8 <= n).
        unsafe {
            let vv = _mm256_loadu_ps(v.as_ptr().add(j));
            let cv = _mm256_loadu_ps(c.as_ptr().add(j));
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(cv, vv);
            let c_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(cv, cv);
            let v_num = _mm256_cmp_ps::<_CMP_ORD_Q>(vv, vv);
            let take = _mm256_or_ps(gt, _mm256_and_ps(c_nan, v_num));
            let idx = _mm256_add_epi32(
                _mm256_set1_epi32((base + j as u32 * step) as i32),
                lane_steps,
            );
            let iv = _mm256_loadu_si256(i.as_ptr().add(j) as *const __m256i);
            let iv = _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(iv),
                _mm256_castsi256_ps(idx),
                take,
            ));
            _mm256_storeu_ps(v.as_mut_ptr().add(j), _mm256_blendv_ps(vv, cv, take));
            _mm256_storeu_si256(i.as_mut_ptr().add(j) as *mut __m256i, iv);
        }
        j += 8;
    }
    update_run(
        &mut v[j..n],
        &mut i[j..n],
        &c[j..n],
        base + j as u32 * step,
        step,
    );
}

impl PoolElem for f64 {
    const ZERO: Self = 0.0;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// One candidate per output of a run: each output's best so far `v[j]` (at index `i[j]`)
/// becomes candidate `c[j]` (at `base + j·step`) where it [`beats`] it.
fn update_run<T: PoolElem>(v: &mut [T], i: &mut [u32], c: &[T], base: u32, step: u32) {
    for (j, ((v, i), &c)) in v.iter_mut().zip(i.iter_mut()).zip(c).enumerate() {
        if beats(c, *v) {
            *v = c;
            *i = base + j as u32 * step;
        }
    }
}

/// Whether candidate `v` replaces the window's best so far `best` (PyTorch's rule: a larger
/// value wins, NaN wins over numbers, so the first maximum or NaN in row-major order stays).
/// Branch-free: on activations the comparison is a coin flip for the branch predictor.
#[inline]
fn beats<T: PoolElem>(v: T, best: T) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

impl Geometry {
    /// Index (within the plane) of the maximum of window `(oy, ox)`.
    /// PyTorch's rule: the first maximum in row-major order wins, NaN wins over numbers.
    #[inline]
    fn argmax<T: PoolElem>(&self, plane: &[T], oy: usize, ox: usize) -> usize {
        let y0 = (oy * self.s).saturating_sub(self.p);
        let y1 = (oy * self.s + self.k - self.p).min(self.h);
        let x0 = (ox * self.s).saturating_sub(self.p);
        let x1 = (ox * self.s + self.k - self.p).min(self.w);
        let mut best = y0 * self.w + x0;
        let mut best_v = plane[best];
        for y in y0..y1 {
            let start = y * self.w + x0;
            for (i, &v) in plane[start..start + (x1 - x0)].iter().enumerate() {
                let take = beats(v, best_v);
                best = if take { start + i } else { best };
                best_v = if take { v } else { best_v };
            }
        }
        best
    }

    /// Pooled values and, for each output, the arg-max index within its input plane.
    fn forward<T: PoolElem>(&self, x: &[T]) -> (Vec<T>, Vec<u32>) {
        let (in_plane, out_plane) = (self.h * self.w, self.oh * self.ow);
        if out_plane == 0 || in_plane == 0 {
            let len = self.planes * out_plane;
            return (vec![T::ZERO; len], vec![0u32; len]);
        }
        // Each worker clears its own planes (outbuf's note): no serial memset of both arrays.
        // Soundness: the planes of `x` must cover both outputs.
        assert_eq!(x.len(), self.planes * in_plane, "max-pool input length");
        let len = self.planes * out_plane;
        let mut idx = Vec::with_capacity(len);
        let out = crate::outbuf::filled(len, |out| {
            let ix_all = &mut idx.spare_capacity_mut()[..len];
            out.par_chunks_mut(out_plane)
                .zip(ix_all.par_chunks_mut(out_plane))
                .zip(x.par_chunks(in_plane))
                .for_each(|((o, ix), plane)| {
                    let (o, ix) = (crate::outbuf::set(o, T::ZERO), crate::outbuf::set(ix, 0u32));
                    if (self.k, self.s, self.p) == (2, 2, 0)
                        && 2 * self.oh <= self.h
                        && 2 * self.ow <= self.w
                    {
                        self.forward_2x2(plane, o, ix);
                        return;
                    }
                    self.pool_plane(plane, o, ix);
                });
        });
        // SAFETY: every chunk of `idx` was set above (the planes of `x` cover it, asserted).
        unsafe { idx.set_len(len) };
        (out, idx)
    }

    /// [`Self::forward`] of one plane for the common 2x2 window, stride 2, no padding, every
    /// window inside the plane (floor mode): the same rule as [`Self::argmax`] (its four
    /// candidates in row-major order) without the general window's bounds arithmetic.
    fn forward_2x2<T: PoolElem>(&self, plane: &[T], o: &mut [T], ix: &mut [u32]) {
        let w = self.w;
        for oy in 0..self.oh {
            let top = 2 * oy * w;
            let rows = (&plane[top..top + w], &plane[top + w..top + 2 * w]);
            let outs = o[oy * self.ow..(oy + 1) * self.ow]
                .iter_mut()
                .zip(&mut ix[oy * self.ow..(oy + 1) * self.ow]);
            for (ox, (out, index)) in outs.enumerate() {
                let x = 2 * ox;
                // Candidates in row-major order, offsets from the window's corner.
                let (mut best_v, mut best) = (rows.0[x], 0);
                for (v, offset) in [(rows.0[x + 1], 1), (rows.1[x], w), (rows.1[x + 1], w + 1)] {
                    let take = beats(v, best_v);
                    best_v = if take { v } else { best_v };
                    best = if take { offset } else { best };
                }
                *out = best_v;
                *index = (top + x + best) as u32;
            }
        }
    }

    /// The pooled values alone, equal to [`Self::forward`]'s (the same rule, NaN kept), for
    /// prediction: no index array, and for the 2x2 window a loop over pairs of columns that
    /// the compiler vectorises.
    fn forward_values<T: PoolElem>(&self, x: &[T]) -> Vec<T> {
        let (in_plane, out_plane) = (self.h * self.w, self.oh * self.ow);
        let mut out = vec![T::ZERO; self.planes * out_plane];
        let pick = |best: T, v: T| if beats(v, best) { v } else { best };
        out.par_chunks_mut(out_plane)
            .zip(x.par_chunks(in_plane))
            .for_each(|(o, plane)| {
                let fits = 2 * self.oh <= self.h && 2 * self.ow <= self.w;
                if (self.k, self.s, self.p) == (2, 2, 0) && fits && self.ow > 0 {
                    let w = self.w;
                    for (oy, row) in o.chunks_exact_mut(self.ow).enumerate() {
                        let top = &plane[2 * oy * w..2 * oy * w + 2 * self.ow];
                        let bottom = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * self.ow];
                        for ((out, t), b) in row
                            .iter_mut()
                            .zip(top.chunks_exact(2))
                            .zip(bottom.chunks_exact(2))
                        {
                            // Row-major order of the window: top-left, top-right, bottom-left,
                            // bottom-right, as `forward_2x2`.
                            *out = pick(pick(pick(t[0], t[1]), b[0]), b[1]);
                        }
                    }
                    return;
                }
                let mut ix = vec![0u32; o.len()];
                self.pool_plane(plane, o, &mut ix);
            });
        out
    }

    /// One plane, any window, row by row: the windows inside the plane's columns take each
    /// candidate of the window (row-major) as one pass over the row's outputs, with no bounds
    /// work per window; the clipped windows at the left and right edges use [`Self::argmax`].
    /// The same rule in the same order as [`Self::argmax`], so the same values and indices
    /// (ResNet18's 3x3 stride-2 pool took 15% of its inference at batch 16 window by window).
    fn pool_plane<T: PoolElem>(&self, plane: &[T], o: &mut [T], ix: &mut [u32]) {
        let (k, s, p, w, ow) = (self.k, self.s, self.p, self.w, self.ow);
        // Columns whose windows lie inside the plane: ox·s ≥ p and ox·s - p + k ≤ w.
        let lo = p.div_ceil(s).min(ow);
        let hi = if w + p >= k {
            ((w + p - k) / s + 1).min(ow)
        } else {
            0
        }
        .max(lo);
        let mut phases = vec![T::ZERO; s * w.div_ceil(s)];
        for oy in 0..self.oh {
            let y0 = (oy * s).saturating_sub(p);
            let y1 = (oy * s + k - p).min(self.h);
            let (orow, irow) = (
                &mut o[oy * ow..(oy + 1) * ow],
                &mut ix[oy * ow..(oy + 1) * ow],
            );
            for ox in (0..lo).chain(hi..ow) {
                let i = self.argmax(plane, oy, ox);
                orow[ox] = plane[i];
                irow[ox] = i as u32;
            }
            if hi == lo {
                continue;
            }
            let n = hi - lo;
            let (ov, iv) = (&mut orow[lo..hi], &mut irow[lo..hi]);
            let mut started = false;
            for y in y0..y1 {
                // The row split into its `s` phases (columns r, r + s, r + 2s, ...), so each
                // candidate column of the window is a contiguous run of one phase.
                let row = &plane[y * w..(y + 1) * w];
                let per = w.div_ceil(s);
                for (r, ph) in phases.chunks_mut(per).enumerate() {
                    for (d, &v) in ph.iter_mut().zip(row.iter().skip(r).step_by(s)) {
                        *d = v;
                    }
                }
                for kx in 0..k {
                    let col = lo * s - p + kx;
                    let (r, m0) = (col % s, col / s);
                    let cand = &phases[r * per + m0..r * per + m0 + n];
                    let base = (y * w + col) as u32;
                    let step = s as u32;
                    if !started {
                        // The window's first candidate in row-major order.
                        for (j, ((v, i), &c)) in
                            ov.iter_mut().zip(iv.iter_mut()).zip(cand).enumerate()
                        {
                            *v = c;
                            *i = base + j as u32 * step;
                        }
                        started = true;
                        continue;
                    }
                    T::update_run(ov, iv, cand, base, step);
                }
            }
        }
    }

    /// Scatters output gradients to the recorded arg-max positions (summing overlaps).
    fn backward<T: PoolElem>(&self, grad_out: &[T], idx: &[u32]) -> Vec<T> {
        let (in_plane, out_plane) = (self.h * self.w, self.oh * self.ow);
        let mut grad = vec![T::ZERO; self.planes * in_plane];
        grad.par_chunks_mut(in_plane)
            .zip(
                grad_out
                    .par_chunks(out_plane)
                    .zip(idx.par_chunks(out_plane)),
            )
            .for_each(|(gi, (go, ix))| {
                for (&g, &i) in go.iter().zip(ix) {
                    gi[i as usize] += g;
                }
            });
        grad
    }
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("max_pool2d: {what} must be contiguous"),
    }
}

/// The forward custom op; it records the arg-max of every window for its backward.
struct MaxPoolOp {
    geometry: Geometry,
    indices: Mutex<Option<Arc<Vec<u32>>>>,
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "kp-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (n, c, _, _) = l.shape().dims4()?;
        let shape = Shape::from((n, c, g.oh, g.ow));
        let (out, idx) = match s {
            CpuStorage::F32(v) => {
                let (o, i) = g.forward(contiguous(v, l, "input")?);
                (CpuStorage::F32(o), i)
            }
            CpuStorage::F64(v) => {
                let (o, i) = g.forward(contiguous(v, l, "input")?);
                (CpuStorage::F64(o), i)
            }
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?}", other.dtype()),
        };
        *self.indices.lock().expect("max-pool index lock poisoned") = Some(Arc::new(idx));
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let indices = self
            .indices
            .lock()
            .expect("max-pool index lock poisoned")
            .clone();
        let Some(indices) = indices else {
            candle_core::bail!("max_pool2d backward: the forward pass recorded no indices")
        };
        let grad_res = grad_res.contiguous()?;
        let grad = grad_res.apply_op1_no_bwd(&MaxPoolScatterOp {
            geometry: self.geometry,
            indices,
        })?;
        Ok(Some(grad))
    }
}

/// The forward of prediction: values only ([`Geometry::forward_values`]).
struct MaxPoolValuesOp {
    geometry: Geometry,
}

impl CustomOp1 for MaxPoolValuesOp {
    fn name(&self) -> &'static str {
        "kp-max-pool2d-values"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (n, c, _, _) = l.shape().dims4()?;
        let shape = Shape::from((n, c, g.oh, g.ow));
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(g.forward_values(contiguous(v, l, "input")?)),
            CpuStorage::F64(v) => CpuStorage::F64(g.forward_values(contiguous(v, l, "input")?)),
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }
}

/// The backward custom op on `grad_output`: adds each output gradient at its window's arg-max.
struct MaxPoolScatterOp {
    geometry: Geometry,
    indices: Arc<Vec<u32>>,
}

impl CustomOp1 for MaxPoolScatterOp {
    fn name(&self) -> &'static str {
        "kp-max-pool2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (n, c, _, _) = l.shape().dims4()?;
        let shape = Shape::from((n, c, g.h, g.w));
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(g.backward(contiguous(v, l, "gradient")?, &self.indices))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(g.backward(contiguous(v, l, "gradient")?, &self.indices))
            }
            other => {
                candle_core::bail!("max_pool2d backward: unsupported dtype {:?}", other.dtype())
            }
        };
        Ok((out, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(data: &[f32], shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn candle_builtin_is_still_wrong() {
        // Documents why this module exists; if candle fixes it this test tells us.
        let x = Var::from_tensor(&t(&[1., 2., 3., 4.], (1, 1, 2, 2))).unwrap();
        let y = x.as_tensor().max_pool2d(2).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(g, [0., 0., 0., 1.]);
    }

    #[test]
    fn prediction_values_equal_the_recording_forwards_nan_and_ties_included() {
        for (h, w, k, st, p) in [
            (6, 8, 2, 2, 0),
            (5, 7, 2, 2, 0),
            (9, 9, 3, 2, 1),
            (4, 6, 2, 1, 0),
        ] {
            let x: Vec<f32> = (0..3 * h * w)
                .map(|i| match (i * 7919) % 13 {
                    0 => f32::NAN,
                    r => (r % 4) as f32 - 1.5,
                })
                .collect();
            let out_len = |n: usize| (n + 2 * p - k) / st + 1;
            let g = Geometry {
                planes: 3,
                h,
                w,
                oh: out_len(h),
                ow: out_len(w),
                k,
                s: st,
                p,
            };
            let (want, _) = g.forward(&x);
            let got = g.forward_values(&x);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{h}x{w} k{k}: {a} vs {b}"
                );
            }
        }
        // Through the op: a tensor that tracks no gradient takes the values-only path.
        let t = Tensor::from_vec(
            (0..2 * 16)
                .map(|i| ((i * 37) % 11) as f32)
                .collect::<Vec<_>>(),
            (1, 2, 4, 4),
            &Device::Cpu,
        )
        .unwrap();
        assert!(!t.track_op());
        let g = Geometry {
            planes: 2,
            h: 4,
            w: 4,
            oh: 2,
            ow: 2,
            k: 2,
            s: 2,
            p: 0,
        };
        let fast = max_pool2d(&t, g)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let v = Var::from_tensor(&t).unwrap();
        let slow = max_pool2d(v.as_tensor(), g)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(fast, slow);
    }

    /// A run update's signature (the portable loop's and its vector versions').
    type RunUpdate = fn(&mut [f32], &mut [u32], &[f32], u32, u32);

    #[test]
    fn the_cpus_f32_run_updates_equal_the_portable_one() {
        // Every vector version this CPU can run (AVX-512 and AVX2 where present), and the one
        // `PoolElem` picks.
        let mut versions: Vec<(&str, RunUpdate)> =
            vec![("dispatched", <f32 as PoolElem>::update_run)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                versions.push(("avx512", |v, i, c, b, s| unsafe {
                    update_run_avx512(v, i, c, b, s)
                }));
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                versions.push(("avx2", |v, i, c, b, s| unsafe {
                    update_run_avx2(v, i, c, b, s)
                }));
            }
        }
        for (name, update) in versions {
            for n in [0, 1, 7, 8, 9, 15, 16, 17, 40] {
                check_run_update(name, update, n);
            }
        }
    }

    /// One run update against the portable loop on `n` outputs, NaNs and ties included.
    fn check_run_update(name: &str, update: RunUpdate, n: usize) {
        let v0: Vec<f32> = (0..n)
            .map(|j| if j % 7 == 3 { f32::NAN } else { (j % 3) as f32 })
            .collect();
        let c: Vec<f32> = (0..n)
            .map(|j| {
                if j % 5 == 1 {
                    f32::NAN
                } else {
                    ((j * 7) % 4) as f32
                }
            })
            .collect();
        let i0: Vec<u32> = (0..n as u32).map(|j| 1000 + j).collect();
        let (mut va, mut ia) = (v0.clone(), i0.clone());
        let (mut vb, mut ib) = (v0.clone(), i0.clone());
        update_run(&mut va, &mut ia, &c, 7, 2);
        update(&mut vb, &mut ib, &c, 7, 2);
        assert_eq!(ia, ib, "{name}: indices, n = {n}");
        for (a, b) in va.iter().zip(&vb) {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{name}, n = {n}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn row_passes_match_the_window_by_window_arg_max_for_any_window() {
        // Ties (values from a set of 3) and NaNs; windows of ResNet's stem, overlapping,
        // padded wider than the stride, ceil mode (a last window clipped at the bottom/right).
        for (h, w, k, s, p, ceil) in [
            (112, 112, 3, 2, 1, false),
            (9, 11, 3, 2, 1, true),
            (7, 5, 3, 1, 1, false),
            (6, 6, 2, 2, 1, false),
            (10, 13, 5, 3, 2, true),
            (1, 1, 3, 2, 1, false),
            (4, 9, 4, 1, 0, false),
        ] {
            let out = |n: usize| {
                let span = n + 2 * p - k;
                (if ceil { span.div_ceil(s) } else { span / s }) + 1
            };
            let g = Geometry {
                planes: 2,
                h,
                w,
                oh: out(h),
                ow: out(w),
                k,
                s,
                p,
            };
            let x: Vec<f32> = (0..2 * h * w)
                .map(|i| match (i * 7919) % 13 {
                    0 => f32::NAN,
                    r => (r % 3) as f32,
                })
                .collect();
            let (vals, idx) = g.forward(&x);
            let values_only = g.forward_values(&x);
            for (pi, plane) in x.chunks(h * w).enumerate() {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let at = pi * g.oh * g.ow + oy * g.ow + ox;
                        let i = g.argmax(plane, oy, ox);
                        let what = format!("{h}x{w} k{k} s{s} p{p} ({oy}, {ox})");
                        assert_eq!(idx[at] as usize, i, "{what}");
                        for got in [vals[at], values_only[at]] {
                            let want = plane[i];
                            assert!(got == want || (got.is_nan() && want.is_nan()), "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn two_by_two_fast_path_matches_the_general_window() {
        // Many ties (values from a set of 3) and some NaNs, odd and even sizes.
        for (h, w) in [(2, 2), (5, 7), (6, 8), (9, 4)] {
            let x: Vec<f32> = (0..2 * h * w)
                .map(|i| match (i * 7919) % 11 {
                    0 => f32::NAN,
                    r => (r % 3) as f32,
                })
                .collect();
            let g = Geometry {
                planes: 2,
                h,
                w,
                oh: h / 2,
                ow: w / 2,
                k: 2,
                s: 2,
                p: 0,
            };
            let (out, idx) = g.forward(&x);
            for (plane, (o, ix)) in x
                .chunks(h * w)
                .zip(out.chunks(g.oh * g.ow).zip(idx.chunks(g.oh * g.ow)))
            {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let i = g.argmax(plane, oy, ox);
                        assert_eq!(ix[oy * g.ow + ox] as usize, i, "{h}x{w} ({oy}, {ox})");
                        let (got, want) = (o[oy * g.ow + ox], plane[i]);
                        assert!(got == want || (got.is_nan() && want.is_nan()));
                    }
                }
            }
        }
    }
}
