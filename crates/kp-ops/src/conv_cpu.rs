//! The CPU convolution: blocked im2col + GEMM with the bias and an optional ReLU fused in, as
//! one candle custom op with a hand-written backward.
//!
//! The output positions of a batch are cut into blocks of about [`BLOCK_ELEMENTS`] column
//! entries but at least [`MIN_BLOCK_COLUMNS`] columns (whole images when they are small, bands
//! of output rows of one image when they are large), so every column matrix stays in cache (or
//! near it) and is never materialised for the whole batch:
//!
//! * forward: per block, `cols = unfold(x)`, `out = W · cols` (the `gemm` crate), then
//!   `y = relu(out + b)` is written in place;
//! * input gradient: per block, `dcols = Wᵀ · g` and `dx += fold(dcols)`, where `g` is the output
//!   gradient (masked by `y > 0` after a ReLU); blocks run in two phases, even then odd, so that
//!   blocks running at the same time never add onto the same input row;
//! * weight gradient: `dW = Σ_blocks g · colsᵀ`, split over (input-channel range, output-channel
//!   range) tasks that each own a disjoint tile of `dW` and add their blocks in a fixed order, so
//!   the result does not depend on scheduling; `db = Σ g`.
//!
//! Blocks run in parallel on rayon's pool; the GEMMs are single-threaded unless there are fewer
//! blocks than threads. Every part is tested against candle's `conv2d` and finite differences.
//!
//! On CPUs with AVX-512, f32 stride-1 3x3 convolutions of at least 64 input and output
//! channels run as Winograd F(2x2, 3x3) ([`crate::winograd`]: forward, weight gradient, and the
//! input gradient as a transposed forward), and other f32 stride-1 forwards with output rows at
//! least [`DIRECT_MIN_WIDTH`] wide (and so the stride-1 input gradients that run as forward
//! convolutions) skip the column matrix: [`crate::direct`] convolves straight from the input.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::im2col::{contiguous, UnfoldGeometry};
use crate::outbuf::SyncPtr;
use crate::reduce::lane_sum;
use crate::relu::ReluGrad;
use candle_core::{Error, Result};

/// Target size (elements) of one block's column matrix: 256 Ki f32 = 1 MiB, about an L2 cache.
pub const BLOCK_ELEMENTS: usize = 256 << 10;

/// Fewest output positions (columns) per block, whatever [`BLOCK_ELEMENTS`] allows. Layers with
/// many input channels (ResNet18's layers 3-4: 2,304-4,608 rows per column) would otherwise get
/// blocks of a few dozen columns, and every block's GEMMs would re-pack the whole weight matrix
/// (up to 9 MiB) and re-read the weight gradient's tile for a few dozen columns of work.
pub const MIN_BLOCK_COLUMNS: usize = 256;

/// Fewest input channels for which a stride-1 input gradient runs as a transposed forward
/// convolution. Its GEMM has one row per input channel; with few rows the GEMM tiles run
/// mostly empty and folding is faster (measured on 2 cores: FaceKeypointNet's 16-channel
/// conv2 7.8 ms folded vs 18 ms transposed, its 32-channel layers 1.8 vs 2.5 ms; ResNet18's
/// 64-256-channel layers about even, its 512-channel layer 4 ~2x faster transposed).
pub const TRANSPOSED_MIN_CHANNELS: usize = 64;

/// Tasks the weight gradient is cut into (input-channel ranges, and groups of blocks when there
/// are fewer channels). A constant, not the thread count, so that the sums, and every number
/// trained from them, are the same whatever the number of threads (on 1 and 2 threads as fast
/// as one task per thread, measured on FaceKeypointNet's and ResNet18's layers).
pub const WEIGHT_GRAD_TASKS: usize = 4;

/// Narrowest output rows the direct convolution ([`crate::direct`]) takes; narrower layers
/// leave most of its 16-pixel vectors empty and stay on the GEMM.
pub const DIRECT_MIN_WIDTH: usize = 32;

/// A convolution's shape: input geometry, output channels and whether a ReLU follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConvShape {
    geometry: UnfoldGeometry,
    out_channels: usize,
    relu: bool,
}

/// Output positions computed together: output rows `rows` of images `images`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    images: Range<usize>,
    rows: Range<usize>,
}

impl Block {
    fn segment(&self, ow: usize) -> usize {
        self.rows.len() * ow
    }

    fn cols(&self, ow: usize) -> usize {
        self.images.len() * self.segment(ow)
    }
}

/// How [`ConvShape::blocks`] groups whole images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// Images spread evenly over the blocks: the forward and input-gradient passes, where a
    /// block is only a unit of work (every output is the same sum whatever its block).
    Even,
    /// Full blocks and a remainder: the weight gradient, which sums block after block, so its
    /// blocks fix the order of the additions and with it every number kp trains (the committed
    /// quick baselines, `xtask/baseline`, were made with these).
    Filled,
}

impl ConvShape {
    fn k_dim(&self) -> usize {
        let g = &self.geometry;
        g.channels * g.kernel * g.kernel
    }

    fn input_plane(&self) -> usize {
        self.geometry.height * self.geometry.width
    }

    /// Cuts `n` images into blocks. Bands of one image have at least `ceil(k / stride)` rows, so
    /// bands two apart never read the same input row (what the two-phase input gradient needs).
    ///
    /// Whole images are grouped by at most `target / per_image`: with [`Grouping::Even`] the
    /// images are spread evenly over as many blocks as that needs (16 images in groups of at
    /// most 5 make blocks of 4, 4, 4 and 4), with [`Grouping::Filled`] every block but the last
    /// is full (5, 5, 5 and 1: on two threads ResNet18's layer 4 then ran 10 images on one
    /// thread and 6 on the other, its forward 17% slower than evenly).
    fn blocks(&self, n: usize, grouping: Grouping) -> Result<Vec<Block>> {
        let (oh, ow) = self.geometry.output_size()?;
        let target = (BLOCK_ELEMENTS / self.k_dim().max(1))
            .max(MIN_BLOCK_COLUMNS)
            .max(ow);
        let per_image = oh * ow;
        let mut blocks = Vec::new();
        if per_image <= target {
            let group = (target / per_image.max(1)).max(1);
            let parts = match grouping {
                Grouping::Even => split(n, n.div_ceil(group)),
                Grouping::Filled => (0..n)
                    .step_by(group)
                    .map(|start| start..(start + group).min(n))
                    .collect(),
            };
            for images in parts {
                blocks.push(Block {
                    images,
                    rows: 0..oh,
                });
            }
        } else {
            let g = &self.geometry;
            let band = (target / ow).max(g.kernel.div_ceil(g.stride)).max(1);
            for image in 0..n {
                for start in (0..oh).step_by(band) {
                    blocks.push(Block {
                        images: image..image + 1,
                        rows: start..(start + band).min(oh),
                    });
                }
            }
        }
        Ok(blocks)
    }

    /// Unfolds input channels `chans` of a block into `buf` (`chans·k·k` rows of `cols`).
    fn unfold_block<T: WithDType>(
        &self,
        x: &[T],
        block: &Block,
        chans: Range<usize>,
        buf: &mut Vec<T>,
    ) {
        let g = &self.geometry;
        let (kk, ow) = (g.kernel * g.kernel, self.output_width());
        let cols = block.cols(ow);
        buf.resize(chans.len() * kk * cols, T::zero());
        let plane = self.input_plane();
        for (j, image) in block.images.clone().enumerate() {
            for (ci, c) in chans.clone().enumerate() {
                let src = &x[(image * g.channels + c) * plane..][..plane];
                let dst = &mut buf[ci * kk * cols..(ci + 1) * kk * cols];
                g.unfold_plane(
                    src,
                    dst,
                    cols,
                    j * block.segment(ow),
                    block.rows.clone(),
                    ow,
                );
            }
        }
    }

    /// The block's part of the output gradient `g` as an `O x cols` matrix: a pointer and its
    /// row stride. A band of one image is read in place (row stride `OH·OW`); a group of whole
    /// images is copied into `buf` first.
    fn grad_matrix<T: WithDType>(
        &self,
        g: &[T],
        block: &Block,
        buf: &mut Vec<T>,
    ) -> (*const T, usize) {
        let ow = self.output_width();
        let (o, plane) = (self.out_channels, self.output_plane());
        if block.images.len() == 1 {
            let at = block.images.start * o * plane + block.rows.start * ow;
            return (g[at..].as_ptr(), plane);
        }
        let (cols, seg) = (block.cols(ow), block.segment(ow));
        buf.resize(o * cols, T::zero());
        for (j, image) in block.images.clone().enumerate() {
            for oc in 0..o {
                let at = (image * o + oc) * plane;
                buf[oc * cols + j * seg..][..seg].copy_from_slice(&g[at..at + seg]);
            }
        }
        (buf.as_ptr(), cols)
    }

    fn output_width(&self) -> usize {
        self.geometry.output_size().map_or(0, |(_, w)| w)
    }

    fn output_plane(&self) -> usize {
        self.geometry.output_size().map_or(0, |(h, w)| h * w)
    }

    /// `y = relu(W · unfold(x) + b)` for `n` images.
    fn forward<T: WithDType>(&self, x: &[T], w: &[T], b: Option<&[T]>, n: usize) -> Result<Vec<T>> {
        let (o, kd, ow, plane) = (
            self.out_channels,
            self.k_dim(),
            self.output_width(),
            self.output_plane(),
        );
        if let Some(y) = self.forward_winograd(x, w, b, n) {
            return Ok(y);
        }
        if let Some(y) = self.forward_direct(x, w, b, n) {
            return Ok(y);
        }
        let blocks = self.blocks(n, Grouping::Even)?;
        // The blocks cover every (image, output row), and each writes all of its values, so
        // the output is not cleared first (a serial memset of the whole output otherwise).
        let y = crate::outbuf::filled(n * o * plane, |y| {
            let yp = SyncPtr(y.as_mut_ptr() as *mut T);
            let par = gemm_parallelism(blocks.len());
            blocks
                .par_iter()
                .for_each_init(Scratch::<T>::take, |scratch, block| {
                    let Scratch(cols_buf, out) = scratch;
                    let cols = block.cols(ow);
                    self.unfold_block(x, block, 0..self.geometry.channels, cols_buf);
                    out.resize(o * cols, T::zero());
                    // SAFETY: out is o x cols (row stride cols), w is o x kd, cols_buf is kd x cols.
                    unsafe {
                        gemm::gemm(
                            o,
                            cols,
                            kd,
                            out.as_mut_ptr(),
                            1,
                            cols as isize,
                            false,
                            w.as_ptr(),
                            1,
                            kd as isize,
                            cols_buf.as_ptr(),
                            1,
                            cols as isize,
                            T::zero(),
                            T::one(),
                            false,
                            false,
                            false,
                            par,
                        );
                    }
                    let seg = block.segment(ow);
                    for (j, image) in block.images.clone().enumerate() {
                        for oc in 0..o {
                            let at = (image * o + oc) * plane + block.rows.start * ow;
                            // SAFETY: blocks cover disjoint (image, row range) parts of y.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    yp.get().add(at) as *mut std::mem::MaybeUninit<T>,
                                    seg,
                                )
                            };
                            let src = &out[oc * cols + j * seg..][..seg];
                            let bias = b.map_or(T::zero(), |b| b[oc]);
                            for (d, &v) in dst.iter_mut().zip(src) {
                                let v = v + bias;
                                d.write(if self.relu && v < T::zero() {
                                    T::zero()
                                } else {
                                    v
                                });
                            }
                        }
                    }
                });
        });
        Ok(y)
    }

    /// The Winograd form of this convolution ([`crate::winograd`]) where it applies: f32, 3x3,
    /// stride 1, at least [`crate::winograd::MIN_CHANNELS`] input and output channels, a CPU
    /// with AVX-512.
    fn winograd<T: WithDType>(&self) -> Option<crate::winograd::Winograd> {
        let g = self.geometry;
        let wino = crate::winograd::Winograd {
            cin: g.channels,
            h: g.height,
            w: g.width,
            cout: self.out_channels,
            pad: g.padding,
            relu: self.relu,
        };
        (TypeId::of::<T>() == TypeId::of::<f32>()
            && g.kernel == 3
            && g.stride == 1
            && !g.ones_row
            && wino.applies()
            && crate::winograd::avx512())
        .then_some(wino)
    }

    /// [`Self::forward`] through [`crate::winograd`] where it applies.
    fn forward_winograd<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        b: Option<&[T]>,
        n: usize,
    ) -> Option<Vec<T>> {
        let wino = self.winograd::<T>()?;
        let y = wino.forward(f32s(x), f32s(w), b.map(f32s), n);
        Some(from_f32s(y))
    }

    /// [`Self::forward`] through [`crate::direct`] where it applies: f32, stride 1, a kernel
    /// of at most 7, output rows at least [`DIRECT_MIN_WIDTH`] wide, a CPU with AVX-512.
    #[allow(unused_variables)]
    fn forward_direct<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        b: Option<&[T]>,
        n: usize,
    ) -> Option<Vec<T>> {
        #[cfg(target_arch = "x86_64")]
        {
            let g = self.geometry;
            if TypeId::of::<T>() != TypeId::of::<f32>()
                || g.stride != 1
                || self.output_width() < DIRECT_MIN_WIDTH
            {
                return None;
            }
            let direct = crate::direct::Direct {
                cin: g.channels,
                h: g.height,
                w: g.width,
                cout: self.out_channels,
                k: g.kernel,
                pad: g.padding,
                relu: self.relu,
            };
            if !direct.applies() {
                return None;
            }
            let y = direct.forward(f32s(x), f32s(w), b.map(f32s), n);
            return Some(from_f32s(y));
        }
        #[allow(unreachable_code)]
        None
    }

    /// The input gradient for the output gradient `g` (already masked after a ReLU): for
    /// stride 1 and at least [`TRANSPOSED_MIN_CHANNELS`] input channels a forward convolution
    /// of `g` (see [`ConvShape::transposed`]), otherwise `fold(Wᵀ · g)`.
    fn input_grad<T: WithDType>(&self, g_out: &[T], w: &[T], n: usize) -> Result<Vec<T>> {
        if self.geometry.channels >= TRANSPOSED_MIN_CHANNELS {
            if let Some(transposed) = self.transposed()? {
                let flipped = self.flip_transpose(w);
                return transposed.forward(g_out, &flipped, None, n);
            }
        }
        self.input_grad_fold(g_out, w, n)
    }

    /// For a stride-1 convolution, the convolution whose forward pass is this one's input
    /// gradient: `dx = conv(g, W')` with `O` input and `C` output channels, the same kernel
    /// and padding `k - 1 - p`, where `W'[c, o, i, j] = W[o, c, k-1-i, k-1-j]`
    /// ([`ConvShape::flip_transpose`]). Its GEMM has a long inner dimension (`O·k·k`) and no
    /// scatter-add but only `C` rows: it beats folding `Wᵀ · g` from
    /// [`TRANSPOSED_MIN_CHANNELS`] input channels.
    fn transposed(&self) -> Result<Option<ConvShape>> {
        let g = self.geometry;
        if g.stride != 1 || g.padding >= g.kernel {
            return Ok(None);
        }
        let (oh, ow) = g.output_size()?;
        Ok(Some(ConvShape {
            geometry: UnfoldGeometry {
                channels: self.out_channels,
                height: oh,
                width: ow,
                kernel: g.kernel,
                stride: 1,
                padding: g.kernel - 1 - g.padding,
                ones_row: false,
            },
            out_channels: g.channels,
            relu: false,
        }))
    }

    /// `W'[c, o, i, j] = W[o, c, k-1-i, k-1-j]` for `W` of shape `(O, C, k, k)`.
    fn flip_transpose<T: WithDType>(&self, w: &[T]) -> Vec<T> {
        let g = &self.geometry;
        let (o, c, k) = (self.out_channels, g.channels, g.kernel);
        let kk = k * k;
        let mut flipped = vec![T::zero(); w.len()];
        for oc in 0..o {
            for ic in 0..c {
                let src = &w[(oc * c + ic) * kk..][..kk];
                let dst = &mut flipped[(ic * o + oc) * kk..][..kk];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
        flipped
    }

    /// `dx = fold(Wᵀ · g)` (any stride).
    fn input_grad_fold<T: WithDType>(&self, g_out: &[T], w: &[T], n: usize) -> Result<Vec<T>> {
        let g = self.geometry;
        let (o, kd, ow) = (self.out_channels, self.k_dim(), self.output_width());
        let (kk, plane) = (g.kernel * g.kernel, self.input_plane());
        let blocks = self.blocks(n, Grouping::Even)?;
        let mut dx = vec![T::zero(); n * g.channels * plane];
        let dxp = SyncPtr(dx.as_mut_ptr());
        for parity in 0..2 {
            let phase: Vec<&Block> = blocks.iter().skip(parity).step_by(2).collect();
            let par = gemm_parallelism(phase.len());
            phase
                .par_iter()
                .for_each_init(Scratch::<T>::take, |scratch, block| {
                    let Scratch(grad, dcols) = scratch;
                    let cols = block.cols(ow);
                    let (grad, grad_ld) = self.grad_matrix(g_out, block, grad);
                    dcols.resize(kd * cols, T::zero());
                    // SAFETY: dcols is kd x cols, wᵀ is kd x o (w is o x kd), grad is o x cols
                    // with row stride grad_ld.
                    unsafe {
                        gemm::gemm(
                            kd,
                            cols,
                            o,
                            dcols.as_mut_ptr(),
                            1,
                            cols as isize,
                            false,
                            w.as_ptr(),
                            kd as isize,
                            1,
                            grad,
                            1,
                            grad_ld as isize,
                            T::zero(),
                            T::one(),
                            false,
                            false,
                            false,
                            par,
                        );
                    }
                    let rows = g.input_rows(&block.rows);
                    for (j, image) in block.images.clone().enumerate() {
                        for c in 0..g.channels {
                            let at = (image * g.channels + c) * plane + rows.start * g.width;
                            // SAFETY: blocks of one phase touch disjoint input rows (see
                            // `blocks`); phases run one after the other.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    dxp.get().add(at),
                                    rows.len() * g.width,
                                )
                            };
                            let src = &dcols[c * kk * cols..(c + 1) * kk * cols];
                            g.fold_plane(
                                src,
                                cols,
                                j * block.segment(ow),
                                block.rows.clone(),
                                ow,
                                dst,
                            );
                        }
                    }
                });
        }
        Ok(dx)
    }

    /// `[dW | db]` as an `(O, C·k·k + 1)` matrix.
    ///
    /// [`WEIGHT_GRAD_TASKS`] tasks own a range of input channels (a tile of columns of `dW`)
    /// and, when there are fewer channels than tasks, a contiguous group of blocks; each task
    /// sums its blocks in order into its own tile and the groups' tiles are added in group
    /// order, so the result depends neither on scheduling nor on the number of threads.
    fn weight_grad<T: WithDType>(&self, x: &[T], g_out: &[T], n: usize) -> Result<Vec<T>> {
        let g = self.geometry;
        let (o, kd, ow) = (self.out_channels, self.k_dim(), self.output_width());
        let kk = g.kernel * g.kernel;
        if let Some(wino) = self.winograd::<T>() {
            let dw = wino.weight_grad(f32s(x), f32s(g_out), n);
            let mut dwb = vec![T::zero(); o * (kd + 1)];
            let dw: Vec<T> = from_f32s(dw);
            for (row, src) in dwb.chunks_mut(kd + 1).zip(dw.chunks(kd)) {
                row[..kd].copy_from_slice(src);
            }
            self.bias_grad(g_out, n, &mut dwb);
            return Ok(dwb);
        }
        let blocks = self.blocks(n, Grouping::Filled)?;
        let chan_parts = split(g.channels, WEIGHT_GRAD_TASKS);
        let groups = if chan_parts.len() >= WEIGHT_GRAD_TASKS {
            1
        } else {
            (2 * WEIGHT_GRAD_TASKS.div_ceil(chan_parts.len())).min(blocks.len())
        };
        let block_groups = split(blocks.len(), groups);
        let tasks: Vec<(usize, Range<usize>)> = (0..block_groups.len())
            .flat_map(|b| chan_parts.iter().map(move |c| (b, c.clone())))
            .collect();
        let ld = kd + 1;
        // One o x ld partial per block group.
        let mut partials = vec![T::zero(); block_groups.len() * o * ld];
        let pp = SyncPtr(partials.as_mut_ptr());
        tasks.par_iter().for_each(|(group, chans)| {
            let mut scratch = Scratch::<T>::take();
            let Scratch(cols_buf, grad) = &mut scratch;
            let tile = group * o * ld + chans.start * kk;
            for (i, block) in blocks[block_groups[*group].clone()].iter().enumerate() {
                let cols = block.cols(ow);
                self.unfold_block(x, block, chans.clone(), cols_buf);
                let (grad, grad_ld) = self.grad_matrix(g_out, block, grad);
                // SAFETY: each task writes its own tile (columns of `chans` in its group's
                // o x ld partial); grad is o x cols (row stride grad_ld), cols_bufᵀ is
                // cols x (chans·k·k).
                unsafe {
                    gemm::gemm(
                        o,
                        chans.len() * kk,
                        cols,
                        pp.get().add(tile),
                        1,
                        ld as isize,
                        i > 0,
                        grad,
                        1,
                        grad_ld as isize,
                        cols_buf.as_ptr(),
                        cols as isize,
                        1,
                        T::one(),
                        T::one(),
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
        });
        let mut dw = vec![T::zero(); o * ld];
        for partial in partials.chunks(o * ld) {
            for (d, &p) in dw.iter_mut().zip(partial) {
                *d += p;
            }
        }
        self.bias_grad(g_out, n, &mut dw);
        Ok(dw)
    }

    /// `db` into the last column of `[dW | db]`: per output channel, the gradient summed in a
    /// fixed order.
    fn bias_grad<T: WithDType>(&self, g_out: &[T], n: usize, dwb: &mut [T]) {
        let (o, kd) = (self.out_channels, self.k_dim());
        let plane = self.output_plane();
        dwb.par_chunks_mut(kd + 1)
            .enumerate()
            .for_each(|(oc, row)| {
                row[kd] = (0..n).fold(T::zero(), |sum, image| {
                    let at = (image * o + oc) * plane;
                    sum + lane_sum(&g_out[at..at + plane], T::zero(), |v| v)
                });
            });
    }
}

/// `s` as f32s; only called where `T` is f32 (checked by the caller's `TypeId` test).
fn f32s<T: WithDType>(s: &[T]) -> &[f32] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<f32>());
    // SAFETY: T is f32 (asserted above).
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) }
}

/// An f32 vector as a `Vec<T>` where `T` is f32.
fn from_f32s<T: WithDType>(v: Vec<f32>) -> Vec<T> {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<f32>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is f32 (asserted above), so the allocation and elements are a Vec<T>'s.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// `0..len` in `parts` nearly equal ranges.
fn split(len: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, len.max(1));
    (0..parts)
        .map(|i| (i * len / parts)..((i + 1) * len / parts))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Two reusable buffers, taken from this thread's pool and given back on drop, so a
/// convolution does not allocate and zero-fill fresh scratch memory on every call. Users resize
/// them without clearing: every element is overwritten (unfold writes padding zeros, gathers
/// and non-accumulating GEMMs write every entry).
struct Scratch<T: 'static>(Vec<T>, Vec<T>);

thread_local! {
    /// Per element type, the buffers of the last [`Scratch`] dropped on this thread.
    static SCRATCH_POOL: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

impl<T: 'static> Scratch<T> {
    fn take() -> Self {
        SCRATCH_POOL
            .with(|p| p.borrow_mut().remove(&TypeId::of::<T>()))
            .and_then(|b| b.downcast::<(Vec<T>, Vec<T>)>().ok())
            .map_or_else(|| Scratch(Vec::new(), Vec::new()), |b| Scratch(b.0, b.1))
    }
}

impl<T: 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        let bufs = (std::mem::take(&mut self.0), std::mem::take(&mut self.1));
        // Keep the larger pair when two scratches end on one thread.
        let _ = SCRATCH_POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            let kept = p
                .get(&TypeId::of::<T>())
                .and_then(|b| b.downcast_ref::<(Vec<T>, Vec<T>)>())
                .map_or(0, |k| k.0.capacity() + k.1.capacity());
            if bufs.0.capacity() + bufs.1.capacity() >= kept {
                p.insert(TypeId::of::<T>(), Box::new(bufs));
            }
        });
    }
}

/// Single-threaded GEMMs when there are enough blocks to keep every thread busy.
fn gemm_parallelism(blocks: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if blocks >= threads || threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// The fused convolution op: `(x, w[, b]) → relu?(conv(x, w) + b)`.
struct ConvOp(ConvShape);

/// The input gradient op: `(g, w) → dx` (`g` the output gradient, masked after a ReLU).
struct InputGradOp(ConvShape);

/// The weight gradient op: `(x, g) → [dW | db]`.
struct WeightGradOp(ConvShape);

fn batch(l: &Layout) -> candle_core::Result<usize> {
    Ok(l.shape().dims().first().copied().unwrap_or(0))
}

impl ConvOp {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = &self.0;
        let n = batch(x.1)?;
        let (oh, ow) = s.geometry.output_size()?;
        let shape = Shape::from((n, s.out_channels, oh, ow));
        macro_rules! go {
            ($variant:ident) => {{
                let (CpuStorage::$variant(xv), CpuStorage::$variant(wv)) = (x.0, w.0) else {
                    candle_core::bail!("conv2d: input and weight dtypes differ");
                };
                let bias = match b {
                    Some((CpuStorage::$variant(bv), bl)) => Some(contiguous(bv, bl, "conv2d")?),
                    Some(_) => candle_core::bail!("conv2d: bias dtype differs"),
                    None => None,
                };
                let xv = contiguous(xv, x.1, "conv2d")?;
                let wv = contiguous(wv, w.1, "conv2d")?;
                CpuStorage::$variant(s.forward(xv, wv, bias, n)?)
            }};
        }
        let out = match x.0 {
            CpuStorage::F32(_) => go!(F32),
            CpuStorage::F64(_) => go!(F64),
            other => candle_core::bail!("conv2d: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }

    /// `(dx, dw, db)` for the op's inputs; no `dx` when `x` needs no gradient (a network's
    /// input image), which saves the first layer's most expensive product.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let s = self.0;
        let g = if s.relu {
            dy.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)?
        } else {
            dy.contiguous()?
        };
        let dx = if x.track_op() {
            Some(g.apply_op2_no_bwd(w, &InputGradOp(s))?)
        } else {
            None
        };
        let dwb = x.apply_op2_no_bwd(&g, &WeightGradOp(s))?;
        let kd = s.k_dim();
        let dw = dwb.narrow(1, 0, kd)?.reshape(w.shape())?;
        let db = dwb.narrow(1, kd, 1)?.flatten_all()?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "kp-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, y, dy)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "kp-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, y, dy)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// Runs `$body` on two contiguous slices of one float dtype.
macro_rules! two_slices {
    ($name:literal, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
        let ((s1, l1), (s2, l2)) = ($a, $b);
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($x, $y) = (contiguous(a, l1, $name)?, contiguous(b, l2, $name)?);
                CpuStorage::F32($body?)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($x, $y) = (contiguous(a, l1, $name)?, contiguous(b, l2, $name)?);
                CpuStorage::F64($body?)
            }
            _ => candle_core::bail!("{}: f32 or f64 inputs of one dtype expected", $name),
        }
    }};
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "kp-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = &self.0;
        let n = batch(l1)?;
        let g = &s.geometry;
        let shape = Shape::from((n, g.channels, g.height, g.width));
        let out = two_slices!("conv2d input grad", (s1, l1), (s2, l2), |gy, w| s
            .input_grad(gy, w, n));
        Ok((out, shape))
    }
}

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "kp-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = &self.0;
        let n = batch(l1)?;
        let shape = Shape::from((s.out_channels, s.k_dim() + 1));
        let out = two_slices!("conv2d weight grad", (s1, l1), (s2, l2), |x, gy| s
            .weight_grad(x, gy, n));
        Ok((out, shape))
    }
}

/// Convolution `(N, C, H, W) ⊛ (O, C, k, k) + bias`, followed by a ReLU when `relu` is set, as
/// one CPU op (see the module doc). Differentiable in `x`, `weight` and `bias`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let (o, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 {
        return Err(Error::Msg(format!(
            "conv2d weight {:?} does not fit input {:?}",
            weight.dims(),
            x.dims()
        )));
    }
    if let Some(b) = bias {
        if b.dims() != [o] {
            return Err(Error::Msg(format!(
                "conv2d bias shape {:?}, expected [{o}]",
                b.dims()
            )));
        }
    }
    let geometry = UnfoldGeometry {
        channels: c,
        height: h,
        width: w,
        kernel: k,
        stride,
        padding,
        ones_row: false,
    };
    geometry.output_size()?;
    let op = ConvOp(ConvShape {
        geometry,
        out_channels: o,
        relu,
    });
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    Ok(match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, op)?,
        None => x.apply_op2(&weight, op)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
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
            .unwrap()
    }

    /// Forward and all gradients equal candle's conv2d (+ bias, + relu) for strides, paddings,
    /// kernels and batch sizes that give single-image bands, whole-image groups and both phases.
    #[test]
    fn matches_candle_conv2d_with_and_without_relu() {
        let dev = Device::Cpu;
        for &(n, c, h, w, o, k, s, p, with_bias, relu) in &[
            (2, 1, 12, 9, 4, 5, 1, 0, true, false),
            // One input channel (a first layer), padded, strided.
            (3, 1, 9, 13, 6, 3, 1, 1, true, true),
            (1, 1, 6, 5, 2, 5, 1, 3, false, false),
            (2, 1, 20, 18, 4, 7, 2, 3, true, true),
            (3, 3, 11, 11, 5, 3, 1, 1, false, true),
            (2, 4, 10, 10, 6, 3, 2, 1, true, true),
            (1, 2, 15, 15, 3, 7, 2, 3, false, false),
            (2, 3, 8, 8, 4, 1, 2, 0, true, true),
            (1, 2, 5, 6, 3, 3, 1, 2, true, false),
            // Large planes: several bands per image (K = 16 * 25 = 400 -> 655 columns).
            (2, 16, 70, 40, 8, 5, 1, 0, true, true),
            (1, 20, 64, 64, 5, 3, 2, 1, false, true),
            (2, 40, 90, 30, 4, 3, 1, 1, true, false),
            // Enough input channels for the transposed input gradient.
            (2, 64, 9, 8, 5, 3, 1, 1, true, true),
        ] {
            let x = Var::randn(0f64, 1.0, (n, c, h, w), &dev).unwrap();
            let wt = Var::randn(0f64, 1.0, (o, c, k, k), &dev).unwrap();
            let b = Var::randn(0f64, 1.0, o, &dev).unwrap();
            let bias = with_bias.then(|| b.as_tensor());
            let ours = conv2d(x.as_tensor(), wt.as_tensor(), bias, s, p, relu).unwrap();
            let mut reference = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
            if with_bias {
                reference = reference
                    .broadcast_add(&b.as_tensor().reshape((1, o, 1, 1)).unwrap())
                    .unwrap();
            }
            if relu {
                reference = reference.relu().unwrap();
            }
            let case = (n, c, h, w, o, k, s, p);
            let d = max_diff(&ours, &reference);
            assert!(d < 1e-10, "{case:?}: forward differs by {d}");
            let r = Tensor::randn(0f64, 1.0, ours.dims(), &dev).unwrap();
            let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&reference * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut vars = vec![("x", x.as_tensor()), ("w", wt.as_tensor())];
            if with_bias {
                vars.push(("b", b.as_tensor()));
            }
            for (name, v) in vars {
                let d = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(d < 1e-9, "{case:?}: d{name} differs by {d}");
            }
        }
    }

    #[test]
    fn f32_matches_f64() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 20, 17), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, 4, &dev).unwrap();
        let y64 = conv2d(&x, &w, Some(&b), 1, 1, true).unwrap();
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let y32 = conv2d(&f(&x), &f(&w), Some(&f(&b)), 1, 1, true).unwrap();
        assert!(max_diff(&f(&y64), &y32) < 1e-4);
    }

    /// Finite differences of `sum(conv(x)^2)` in x, w and b, in f64.
    #[test]
    fn finite_differences() {
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f64, 1.0, (2, 2, 6, 5), &dev).unwrap();
        let w0 = Tensor::randn(0f64, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let b0 = Tensor::randn(0f64, 1.0, 3, &dev).unwrap();
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Tensor {
            conv2d(x, w, Some(b), 2, 1, true)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let (x, w, b) = (
            Var::from_tensor(&x0).unwrap(),
            Var::from_tensor(&w0).unwrap(),
            Var::from_tensor(&b0).unwrap(),
        );
        let grads = loss(x.as_tensor(), w.as_tensor(), b.as_tensor())
            .backward()
            .unwrap();
        let eps = 1e-6;
        for which in 0..3 {
            let t = [&x0, &w0, &b0][which];
            let v = [&x, &w, &b][which];
            let analytic = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..base.len() {
                let at = |delta: f64| {
                    let mut moved = base.clone();
                    moved[i] += delta;
                    let m = Tensor::from_vec(moved, t.dims(), &dev).unwrap();
                    let mut args = [x0.clone(), w0.clone(), b0.clone()];
                    args[which] = m;
                    loss(&args[0], &args[1], &args[2])
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - analytic[i]).abs() < 1e-5 * numeric.abs().max(1.0),
                    "arg {which} [{i}]: numeric {numeric} analytic {}",
                    analytic[i]
                );
            }
        }
    }

    /// For stride 1 the input gradient as a forward convolution equals the folded one.
    #[test]
    fn transposed_input_grad_equals_fold() {
        for (n, c, h, w, o, k, p) in [
            (2, 3, 9, 7, 4, 3, 0),
            (1, 2, 6, 8, 5, 3, 1),
            (2, 4, 5, 5, 3, 3, 2),
            (3, 2, 12, 10, 6, 5, 0),
            (1, 5, 40, 30, 7, 5, 2),
            (2, 3, 7, 7, 2, 1, 0),
        ] {
            let shape = ConvShape {
                geometry: UnfoldGeometry {
                    channels: c,
                    height: h,
                    width: w,
                    kernel: k,
                    stride: 1,
                    padding: p,
                    ones_row: false,
                },
                out_channels: o,
                relu: false,
            };
            let transposed = shape.transposed().unwrap().unwrap();
            let (oh, ow) = shape.geometry.output_size().unwrap();
            let wt: Vec<f64> = (0..o * c * k * k)
                .map(|i| (i as f64 * 0.37).sin())
                .collect();
            let g: Vec<f64> = (0..n * o * oh * ow)
                .map(|i| (i as f64 * 0.11).cos())
                .collect();
            let fast = transposed
                .forward(&g, &shape.flip_transpose(&wt), None, n)
                .unwrap();
            let fold = shape.input_grad_fold(&g, &wt, n).unwrap();
            assert_eq!(fast.len(), n * c * h * w);
            let d = fast
                .iter()
                .zip(&fold)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-10, "{:?}: differs by {d}", (n, c, h, w, o, k, p));
        }
    }

    /// Bands of one image two apart never share an input row, whatever kernel and stride.
    #[test]
    fn same_phase_bands_are_disjoint() {
        for (k, s, p, h) in [
            (5, 1, 0, 200),
            (3, 2, 1, 301),
            (7, 2, 3, 224),
            (3, 1, 1, 97),
        ] {
            let shape = ConvShape {
                geometry: UnfoldGeometry {
                    channels: 64,
                    height: h,
                    width: 150,
                    kernel: k,
                    stride: s,
                    padding: p,
                    ones_row: false,
                },
                out_channels: 8,
                relu: false,
            };
            let blocks = shape.blocks(2, Grouping::Even).unwrap();
            assert!(blocks.len() > 4, "{blocks:?}");
            for pair in blocks.windows(3) {
                if pair[0].images == pair[2].images {
                    let a = shape.geometry.input_rows(&pair[0].rows);
                    let b = shape.geometry.input_rows(&pair[2].rows);
                    assert!(a.end <= b.start, "{a:?} overlaps {b:?}");
                }
            }
        }
    }

    /// Whole-image blocks: both groupings cover every image once, in order; evenly grouped
    /// blocks differ by at most one image and are no more than the filled ones.
    #[test]
    fn image_groups_cover_the_batch_once_and_even_groups_are_balanced() {
        // ResNet18's layer 4 (512 channels of 7x7, groups of at most 5 images) and a
        // small-channel layer whose groups hold many images.
        for (channels, size) in [(512, 7), (8, 12)] {
            let shape = ConvShape {
                geometry: UnfoldGeometry {
                    channels,
                    height: size,
                    width: size,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    ones_row: false,
                },
                out_channels: 16,
                relu: false,
            };
            for n in [0, 1, 5, 16, 17, 31, 64] {
                let even = shape.blocks(n, Grouping::Even).unwrap();
                let filled = shape.blocks(n, Grouping::Filled).unwrap();
                for blocks in [&even, &filled] {
                    let images: Vec<usize> = blocks.iter().flat_map(|b| b.images.clone()).collect();
                    assert_eq!(images, (0..n).collect::<Vec<_>>(), "{blocks:?}");
                    assert!(blocks.iter().all(|b| b.rows == (0..size)));
                }
                assert_eq!(even.len(), filled.len(), "n = {n}");
                let sizes: Vec<usize> = even.iter().map(|b| b.images.len()).collect();
                let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                assert!(hi.zip(lo).is_none_or(|(hi, lo)| hi - lo <= 1), "{sizes:?}");
            }
        }
        let l4 = ConvShape {
            geometry: UnfoldGeometry {
                channels: 512,
                height: 7,
                width: 7,
                kernel: 3,
                stride: 1,
                padding: 1,
                ones_row: false,
            },
            out_channels: 512,
            relu: false,
        };
        let sizes = |g| -> Vec<usize> {
            let blocks = l4.blocks(16, g).unwrap();
            blocks.iter().map(|b| b.images.len()).collect()
        };
        assert_eq!(sizes(Grouping::Even), [4, 4, 4, 4]);
        assert_eq!(sizes(Grouping::Filled), [5, 5, 5, 1]);
    }

    /// An input that is not a variable (nor computed from one) gets no gradient.
    #[test]
    fn constant_inputs_get_no_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 9, 9), &dev).unwrap();
        let w = Var::randn(0f32, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let y = conv2d(&x, w.as_tensor(), None, 1, 0, true).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        assert!(grads.get(w.as_tensor()).is_some());
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let x = Tensor::zeros((1, 2, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d(&x, &w, None, 1, 0, false).is_err());
        let w = Tensor::zeros((3, 2, 9, 9), DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d(&x, &w, None, 1, 0, false).is_err());
        let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d(&x, &w, Some(&b), 1, 0, false).is_err());
    }
}
