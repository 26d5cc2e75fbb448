//! Winograd F(2x2, 3x3) for stride-1 3x3 convolutions with many channels: 16 multiplies per
//! 2x2 outputs instead of 36, so 2.25x fewer multiply-adds than im2col + GEMM.
//!
//! Why: ResNet18's 3x3 layers of 128-512 channels at 28x28 to 7x7 ran at the GEMM's speed
//! (about 90 GFLOP/s a core on a Zen 4) while PyTorch's oneDNN ran them as if at 1.3-1.4x that
//! (`cargo run --release -p kp-ops --example resnet18_convs` beside
//! `xtask/bench/torch_convs.py`: layer 4's forward 19.9 ms against 14.3 ms): fewer
//! multiplies, not a faster GEMM, is what closes that.
//!
//! The output is cut into 2x2 tiles, each read from a 4x4 input patch (`d`). With the
//! transforms `V = Bᵀ d B` (input), `U = G w Gᵀ` (weights, once per call) and `Y = Aᵀ M A`
//! (output), `M[o] = Σ_c U[o, c] ⊙ V[c]` is 16 independent GEMMs, one per position of the 4x4
//! transformed tile: `M_pos (O x tiles) = U_pos (O x C) · V_pos (C x tiles)`. Tiles are cut into
//! chunks of whole tile rows of about [`CHUNK_FLOATS`] transformed values, so a chunk's `V` and
//! `M` stay in cache; chunks are fixed by the shape, not the thread count, and every output is
//! one chunk's sums, so results do not depend on the number of threads.
//!
//! The weight gradient is the same in reverse: the output gradient's tiles transformed by
//! `A dY Aᵀ`, `dU_pos += dM_pos · V_posᵀ` chunk after chunk (a fixed order), and `dW = Gᵀ dU G`.
//! It transforms the input again rather than keep the forward's `V` (16 values per 4 inputs of
//! every layer until the backward pass).
//! The input gradient of a stride-1 convolution is itself a stride-1 convolution
//! (`conv_cpu`'s transposed form), so it takes [`Winograd::forward`] too.
//!
//! The transforms add and subtract more values than a direct sum does, so results differ from
//! the GEMM's in the last bits (tests: within 1e-5 of the largest output against an f64
//! reference; the ready ResNet18's held-out NME 4.30311579% before, 4.30311584% after). Used on CPUs with AVX-512 only, where `conv_cpu` also runs its direct kernel: on
//! the others the committed quick baseline (`xtask/baseline/quick-results-avx2.json`) was made
//! with the GEMM's sums, and they were already at or below PyTorch's time
//! (`docs/benchmarks.md`).

// The transforms index their small matrices by row and column, as the formulas are written.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::outbuf::SyncPtr;

/// Transformed values per chunk (`16 · channels · tiles`): 1 Mi f32, 4 MiB.
pub(crate) const CHUNK_FLOATS: usize = 1 << 20;

/// Fewest input and output channels the Winograd path takes: below, the 16 GEMMs are too thin
/// and the transforms dominate.
pub(crate) const MIN_CHANNELS: usize = 64;

/// Lanes of the transforms' vectors (one AVX-512 register of f32).
const LANES: usize = 16;

/// A stride-1 3x3 convolution's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Winograd {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub pad: usize,
    pub relu: bool,
}

/// Tile rows `(image, tile row)` of one chunk, in order.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// First global tile row (`image · tiles_h + tile row`).
    first: usize,
    /// Tile rows in the chunk.
    rows: usize,
}

thread_local! {
    /// A task's transformed tiles (`V`, then `M` or `dM`), kept between calls: every value a
    /// call reads it has written first, so the buffers are never cleared.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

thread_local! {
    /// A transform's small staging buffer (gathered patches, output tiles), kept likewise.
    static STAGING: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's staging buffer, grown to `len` values (taken out while `f`
/// runs, so a nested call gets a buffer of its own).
fn with_staging<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = STAGING.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    STAGING.with(|s| *s.borrow_mut() = buf);
    r
}

/// Runs `f` with this thread's two scratch buffers, grown to `a` and `b` values.
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    let (mut va, mut vb) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if va.len() < a {
        va.resize(a, 0.0);
    }
    if vb.len() < b {
        vb.resize(b, 0.0);
    }
    let r = f(&mut va[..a], &mut vb[..b]);
    SCRATCH.with(|s| *s.borrow_mut() = (va, vb));
    r
}

impl Winograd {
    /// Whether the shape takes the Winograd path (the caller checks the kernel, stride, dtype
    /// and CPU).
    pub(crate) fn applies(&self) -> bool {
        self.cin >= MIN_CHANNELS
            && self.cout >= MIN_CHANNELS
            && self.pad < 3
            && self.h + 2 * self.pad >= 3
            && self.w + 2 * self.pad >= 3
    }

    fn out_size(&self) -> (usize, usize) {
        (self.h + 2 * self.pad - 2, self.w + 2 * self.pad - 2)
    }

    /// Tiles down and across.
    fn tiles(&self) -> (usize, usize) {
        let (oh, ow) = self.out_size();
        (oh.div_ceil(2), ow.div_ceil(2))
    }

    /// The chunks of `n` images' tile rows, about [`CHUNK_FLOATS`] transformed values each
    /// (for the larger of the two channel counts).
    fn chunks(&self, n: usize) -> Vec<Chunk> {
        let (th, tw) = self.tiles();
        let per_row = 16 * self.cin.max(self.cout) * tw;
        let rows_per_chunk = (CHUNK_FLOATS / per_row.max(1)).max(1);
        let total = n * th;
        (0..total)
            .step_by(rows_per_chunk)
            .map(|first| Chunk {
                first,
                rows: rows_per_chunk.min(total - first),
            })
            .collect()
    }

    /// `U = G w Gᵀ` for weights `(cout, cin, 3, 3)`, laid out `[pos][o][c]`.
    fn transform_weights(&self, wt: &[f32]) -> Vec<f32> {
        let (o, c) = (self.cout, self.cin);
        let mut u = vec![0f32; 16 * o * c];
        for oc in 0..o {
            for ic in 0..c {
                let g = &wt[(oc * c + ic) * 9..][..9];
                // tmp = G g (4x3), then tmp Gᵀ (4x4).
                let mut tmp = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    tmp[0][j] = g0;
                    tmp[1][j] = 0.5 * (g0 + g1 + g2);
                    tmp[2][j] = 0.5 * (g0 - g1 + g2);
                    tmp[3][j] = g2;
                }
                for (i, row) in tmp.iter().enumerate() {
                    let [a0, a1, a2] = *row;
                    let vals = [a0, 0.5 * (a0 + a1 + a2), 0.5 * (a0 - a1 + a2), a2];
                    for (j, v) in vals.into_iter().enumerate() {
                        u[((i * 4 + j) * o + oc) * c + ic] = v;
                    }
                }
            }
        }
        u
    }

    /// `V = Bᵀ d B` of every tile of `chunk` for channel `c` of `x`: writes `v[pos][c][t]`
    /// (row stride `ld`) for the chunk's tiles `t`.
    ///
    /// # Safety
    /// The CPU has AVX-512 (the transforms are compiled for it); `v` holds `16 · cin · ld`
    /// values and `ld` is at least the chunk's tile count rounded up to [`LANES`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input(
        &self,
        x: &[f32],
        chunk: Chunk,
        c: usize,
        v: SyncPtr<f32>,
        ld: usize,
    ) {
        let (th, tw) = self.tiles();
        let (h, p) = (self.h as isize, self.pad);
        let width = 2 * tw + 2;
        let plane = self.h * self.w;
        // The chunk's 4x4 patches, gathered as 16 rows of tiles: d[k · 4 + j][t].
        let tiles = chunk.rows * tw;
        with_staging(16 * ld + width, |staging| {
            let (d, line) = staging.split_at_mut(16 * ld);
            for r in 0..chunk.rows {
                let global = chunk.first + r;
                let (image, ty) = (global / th, global % th);
                let src = &x[(image * self.cin + c) * plane..][..plane];
                for k in 0..4 {
                    let iy = 2 * ty as isize - p as isize + k as isize;
                    line.fill(0.0);
                    if iy >= 0 && iy < h {
                        // line[j] is column j - p; width >= w + p.
                        line[p..p + self.w].copy_from_slice(&src[iy as usize * self.w..][..self.w]);
                    }
                    for j in 0..4 {
                        let dst = &mut d[(k * 4 + j) * ld + r * tw..][..tw];
                        for (tx, out) in dst.iter_mut().enumerate() {
                            *out = line[2 * tx + j];
                        }
                    }
                }
            }
            // Bᵀ d B, LANES tiles at a time.
            for t0 in (0..tiles).step_by(LANES) {
                let mut e = [[[0f32; LANES]; 4]; 4];
                for (k, ek) in e.iter_mut().enumerate() {
                    for (j, ekj) in ek.iter_mut().enumerate() {
                        ekj.copy_from_slice(&d[(k * 4 + j) * ld + t0..][..LANES]);
                    }
                }
                // Rows: t0 = d0 - d2, t1 = d1 + d2, t2 = d2 - d1, t3 = d1 - d3.
                let mut t = [[[0f32; LANES]; 4]; 4];
                for j in 0..4 {
                    for l in 0..LANES {
                        let (d0, d1, d2, d3) = (e[0][j][l], e[1][j][l], e[2][j][l], e[3][j][l]);
                        t[0][j][l] = d0 - d2;
                        t[1][j][l] = d1 + d2;
                        t[2][j][l] = d2 - d1;
                        t[3][j][l] = d1 - d3;
                    }
                }
                for (i, ti) in t.iter().enumerate() {
                    let mut out = [[0f32; LANES]; 4];
                    for l in 0..LANES {
                        out[0][l] = ti[0][l] - ti[2][l];
                        out[1][l] = ti[1][l] + ti[2][l];
                        out[2][l] = ti[2][l] - ti[1][l];
                        out[3][l] = ti[1][l] - ti[3][l];
                    }
                    for (j, o) in out.iter().enumerate() {
                        let at = ((i * 4 + j) * self.cin + c) * ld + t0;
                        // SAFETY: row (pos, c) of v, lanes t0.. within its ld values; each
                        // channel's task writes its own rows.
                        unsafe {
                            std::ptr::copy_nonoverlapping(o.as_ptr(), v.get().add(at), LANES)
                        };
                    }
                }
            }
        });
    }

    /// `V` of the chunk's tiles for every input channel, in parallel: `v[pos][c][t]`, the
    /// forward's and the weight gradient's shared first step.
    fn input_tiles(&self, x: &[f32], chunk: Chunk, v: &mut [f32], ld: usize) {
        assert!(avx512() && v.len() >= 16 * self.cin * ld);
        let vp = SyncPtr(v.as_mut_ptr());
        // SAFETY: AVX-512 (asserted); each channel writes its own rows of v, within its length.
        (0..self.cin)
            .into_par_iter()
            .for_each(|ic| unsafe { self.transform_input(x, chunk, ic, vp, ld) });
    }

    /// `Y = Aᵀ M A` of the chunk's tiles for output channel `oc` (`m[pos][oc][t]`, row stride
    /// `ld`), plus the bias and the ReLU, into `y`.
    ///
    /// # Safety
    /// As [`Self::transform_input`]; `y` is the whole output and this task alone writes output
    /// channel `oc` of the chunk's tile rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(
        &self,
        m: &[f32],
        chunk: Chunk,
        oc: usize,
        bias: f32,
        y: SyncPtr<f32>,
        ld: usize,
    ) {
        let (oh, ow) = self.out_size();
        let (th, tw) = self.tiles();
        let o = self.cout;
        let tiles = chunk.rows * tw;
        // out[i · 2 + j][t], then scattered to the image.
        with_staging(4 * ld, |out| {
            for t0 in (0..tiles).step_by(LANES) {
                let mv = |pos: usize| -> [f32; LANES] {
                    let mut a = [0f32; LANES];
                    a.copy_from_slice(&m[(pos * o + oc) * ld + t0..][..LANES]);
                    a
                };
                // Aᵀ m: r0 = m0 + m1 + m2, r1 = m1 - m2 - m3 (rows), then the same on columns.
                let mut rr = [[[0f32; LANES]; 4]; 2];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (mv(j), mv(4 + j), mv(8 + j), mv(12 + j));
                    for l in 0..LANES {
                        rr[0][j][l] = m0[l] + m1[l] + m2[l];
                        rr[1][j][l] = m1[l] - m2[l] - m3[l];
                    }
                }
                for (i, row) in rr.iter().enumerate() {
                    for l in 0..LANES {
                        let a = row[0][l] + row[1][l] + row[2][l] + bias;
                        let b = row[1][l] - row[2][l] - row[3][l] + bias;
                        let (a, b) = if self.relu {
                            (a.max(0.0), b.max(0.0))
                        } else {
                            (a, b)
                        };
                        out[(i * 2) * ld + t0 + l] = a;
                        out[(i * 2 + 1) * ld + t0 + l] = b;
                    }
                }
            }
            for r in 0..chunk.rows {
                let global = chunk.first + r;
                let (image, ty) = (global / th, global % th);
                let base = (image * o + oc) * oh * ow;
                for i in 0..2 {
                    let yy = 2 * ty + i;
                    if yy >= oh {
                        continue;
                    }
                    let (a, b) = (
                        &out[(i * 2) * ld + r * tw..][..tw],
                        &out[(i * 2 + 1) * ld + r * tw..][..tw],
                    );
                    // SAFETY: row yy of (image, oc): this task's alone.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(y.get().add(base + yy * ow), ow) };
                    for tx in 0..tw {
                        dst[2 * tx] = a[tx];
                        if 2 * tx + 1 < ow {
                            dst[2 * tx + 1] = b[tx];
                        }
                    }
                }
            }
        });
    }

    /// `dM = A dY Aᵀ` of the chunk's tiles for output channel `oc` of the output gradient
    /// `g`: writes `dm[pos][oc][t]` (row stride `ld`).
    ///
    /// # Safety
    /// As [`Self::transform_input`]; this task alone writes rows `(pos, oc)` of `dm`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_grad(
        &self,
        g: &[f32],
        chunk: Chunk,
        oc: usize,
        dm: SyncPtr<f32>,
        ld: usize,
    ) {
        let (oh, ow) = self.out_size();
        let (th, tw) = self.tiles();
        let o = self.cout;
        let tiles = chunk.rows * tw;
        // dy[i · 2 + j][t], zero outside the output.
        with_staging(4 * ld, |dy| {
            for r in 0..chunk.rows {
                let global = chunk.first + r;
                let (image, ty) = (global / th, global % th);
                let base = (image * o + oc) * oh * ow;
                for i in 0..2 {
                    let yy = 2 * ty + i;
                    let (a, b) = dy.split_at_mut((i * 2 + 1) * ld);
                    let a = &mut a[(i * 2) * ld + r * tw..][..tw];
                    let b = &mut b[r * tw..][..tw];
                    if yy >= oh {
                        a.fill(0.0);
                        b.fill(0.0);
                        continue;
                    }
                    let src = &g[base + yy * ow..][..ow];
                    for tx in 0..tw {
                        a[tx] = src[2 * tx];
                        b[tx] = if 2 * tx + 1 < ow {
                            src[2 * tx + 1]
                        } else {
                            0.0
                        };
                    }
                }
            }
            for t0 in (0..tiles).step_by(LANES) {
                let q = |k: usize| -> [f32; LANES] {
                    let mut a = [0f32; LANES];
                    a.copy_from_slice(&dy[k * ld + t0..][..LANES]);
                    a
                };
                let (q00, q01, q10, q11) = (q(0), q(1), q(2), q(3));
                // A dy (4x2): rows [dy0, dy0 + dy1, dy0 - dy1, -dy1], then Aᵀ on the columns.
                for i in 0..4 {
                    let mut out = [[0f32; LANES]; 4];
                    for l in 0..LANES {
                        let (a, b) = match i {
                            0 => (q00[l], q01[l]),
                            1 => (q00[l] + q10[l], q01[l] + q11[l]),
                            2 => (q00[l] - q10[l], q01[l] - q11[l]),
                            _ => (-q10[l], -q11[l]),
                        };
                        out[0][l] = a;
                        out[1][l] = a + b;
                        out[2][l] = a - b;
                        out[3][l] = -b;
                    }
                    for (j, v) in out.iter().enumerate() {
                        let at = ((i * 4 + j) * o + oc) * ld + t0;
                        // SAFETY: row (pos, oc) of dm: this task's alone.
                        unsafe {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), dm.get().add(at), LANES)
                        };
                    }
                }
            }
        });
    }

    /// `relu?(conv(x, w) + b)` for `n` images `x (cin, h, w)` and weights `(cout, cin, 3, 3)`.
    ///
    /// # Panics
    /// Where the operands do not match the sizes, or the CPU lacks AVX-512.
    pub(crate) fn forward(&self, x: &[f32], wt: &[f32], b: Option<&[f32]>, n: usize) -> Vec<f32> {
        let (oh, ow) = self.out_size();
        let tw = self.tiles().1;
        let (c, o) = (self.cin, self.cout);
        assert!(
            self.applies()
                && avx512()
                && x.len() == n * c * self.h * self.w
                && wt.len() == o * c * 9
                && b.is_none_or(|b| b.len() == o),
            "winograd convolution: operands do not match {self:?}"
        );
        let len = n * o * oh * ow;
        if len == 0 {
            return Vec::new();
        }
        let u = self.transform_weights(wt);
        let chunks = self.chunks(n);
        crate::outbuf::filled(len, |y| {
            let yp = SyncPtr(y.as_mut_ptr() as *mut f32);
            chunks.par_iter().for_each(|&chunk| {
                let tc = chunk.rows * tw;
                let ld = tc.next_multiple_of(LANES);
                with_scratch(16 * c * ld, 16 * o * ld, |v, m| {
                    self.input_tiles(x, chunk, v, ld);
                    let mp = SyncPtr(m.as_mut_ptr());
                    (0..16).into_par_iter().for_each(|pos| {
                        // SAFETY: m_pos is o x tc (row stride ld), u_pos is o x c, v_pos is
                        // c x tc (row stride ld); each position writes its own m_pos.
                        unsafe {
                            gemm::gemm(
                                o,
                                tc,
                                c,
                                mp.get().add(pos * o * ld),
                                1,
                                ld as isize,
                                false,
                                u.as_ptr().add(pos * o * c),
                                1,
                                c as isize,
                                v.as_ptr().add(pos * c * ld),
                                1,
                                ld as isize,
                                0f32,
                                1f32,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                    });
                    let m: &[f32] = m;
                    // SAFETY: AVX-512 (asserted); every output value belongs to one tile of
                    // one chunk and one output channel, written once.
                    (0..o).into_par_iter().for_each(|oc| unsafe {
                        self.transform_output(m, chunk, oc, b.map_or(0.0, |b| b[oc]), yp, ld)
                    });
                });
            });
        })
    }

    /// `dW (cout, cin, 3, 3)` for input `x` and output gradient `g (n, cout, oh, ow)`.
    ///
    /// # Panics
    /// Where the operands do not match the sizes, or the CPU lacks AVX-512.
    pub(crate) fn weight_grad(&self, x: &[f32], g: &[f32], n: usize) -> Vec<f32> {
        let (oh, ow) = self.out_size();
        let tw = self.tiles().1;
        let (c, o) = (self.cin, self.cout);
        assert!(
            self.applies()
                && avx512()
                && x.len() == n * c * self.h * self.w
                && g.len() == n * o * oh * ow,
            "winograd weight gradient: operands do not match {self:?}"
        );
        let mut du = vec![0f32; 16 * o * c];
        for (k, chunk) in self.chunks(n).into_iter().enumerate() {
            let tc = chunk.rows * tw;
            let ld = tc.next_multiple_of(LANES);
            with_scratch(16 * c * ld, 16 * o * ld, |v, dm| {
                self.input_tiles(x, chunk, v, ld);
                let dmp = SyncPtr(dm.as_mut_ptr());
                // SAFETY: AVX-512 (asserted); each output channel writes its own rows of dm.
                (0..o)
                    .into_par_iter()
                    .for_each(|oc| unsafe { self.transform_grad(g, chunk, oc, dmp, ld) });
                let dup = SyncPtr(du.as_mut_ptr());
                let (v, dm): (&[f32], &[f32]) = (v, dm);
                (0..16).into_par_iter().for_each(|pos| {
                    // SAFETY: du_pos is o x c, dm_pos is o x tc (row stride ld), v_posᵀ is
                    // tc x c (column stride ld); each position accumulates into its own
                    // du_pos, chunks in order.
                    unsafe {
                        gemm::gemm(
                            o,
                            c,
                            tc,
                            dup.get().add(pos * o * c),
                            1,
                            c as isize,
                            k > 0,
                            dm.as_ptr().add(pos * o * ld),
                            1,
                            ld as isize,
                            v.as_ptr().add(pos * c * ld),
                            ld as isize,
                            1,
                            1f32,
                            1f32,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                });
            });
        }
        // dW = Gᵀ dU G per (o, c).
        let mut dw = vec![0f32; o * c * 9];
        dw.par_chunks_mut(c * 9).enumerate().for_each(|(oc, row)| {
            for ic in 0..c {
                let d = |pos: usize| du[(pos * o + oc) * c + ic];
                // tmp = Gᵀ dU (3x4), then tmp G (3x3).
                let mut t = [[0f32; 4]; 3];
                for j in 0..4 {
                    let (d0, d1, d2, d3) = (d(j), d(4 + j), d(8 + j), d(12 + j));
                    t[0][j] = d0 + 0.5 * (d1 + d2);
                    t[1][j] = 0.5 * (d1 - d2);
                    t[2][j] = 0.5 * (d1 + d2) + d3;
                }
                let out = &mut row[ic * 9..][..9];
                for (i, [a0, a1, a2, a3]) in t.into_iter().enumerate() {
                    out[i * 3] = a0 + 0.5 * (a1 + a2);
                    out[i * 3 + 1] = 0.5 * (a1 - a2);
                    out[i * 3 + 2] = 0.5 * (a1 + a2) + a3;
                }
            }
        });
        dw
    }
}

/// Whether this CPU runs the transforms (compiled for AVX-512).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference: `conv(x, w) + b` (stride 1, 3x3, zero padding `p`).
    fn reference(x: &[f32], w: &[f32], b: &[f32], s: Winograd, n: usize) -> Vec<f64> {
        let (oh, ow) = s.out_size();
        let mut y = vec![0f64; n * s.cout * oh * ow];
        for i in 0..n {
            for o in 0..s.cout {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut sum = b[o] as f64;
                        for c in 0..s.cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (yy + ky) as isize - s.pad as isize;
                                    let ix = (xx + kx) as isize - s.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x
                                        [((i * s.cin + c) * s.h + iy as usize) * s.w + ix as usize]
                                        as f64;
                                    sum += xv * w[((o * s.cin + c) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                        y[((i * s.cout + o) * oh + yy) * ow + xx] = sum;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Largest error relative to the output's largest magnitude.
    fn rel_err(a: &[f32], reference: &[f64]) -> f64 {
        let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
        a.iter()
            .zip(reference)
            .fold(0f64, |m, (&a, &r)| m.max((a as f64 - r).abs()))
            / scale
    }

    #[test]
    fn the_forward_equals_an_f64_convolution_for_paddings_odd_sizes_and_relu() {
        if !avx512() {
            return;
        }
        for (h, w, pad, relu, n) in [
            (7, 7, 1, false, 3),
            (8, 6, 0, true, 2),
            (5, 9, 2, false, 1),
            (14, 14, 1, true, 2),
        ] {
            let s = Winograd {
                cin: 64,
                h,
                w,
                cout: 72,
                pad,
                relu,
            };
            let x = values(n * s.cin * h * w, 1);
            let wt: Vec<f32> = values(s.cout * s.cin * 9, 2)
                .iter()
                .map(|v| v * 0.1)
                .collect();
            let b = values(s.cout, 3);
            let y = s.forward(&x, &wt, Some(&b), n);
            let mut r = reference(&x, &wt, &b, s, n);
            if relu {
                r.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            assert_eq!(y.len(), r.len());
            let err = rel_err(&y, &r);
            assert!(err < 1e-5, "{s:?}: relative error {err}");
        }
    }

    #[test]
    fn the_weight_gradient_equals_an_f64_sum_over_images_and_tiles() {
        if !avx512() {
            return;
        }
        for (h, w, pad, n) in [(7, 7, 1, 3), (6, 9, 0, 2), (5, 5, 2, 2)] {
            let s = Winograd {
                cin: 64,
                h,
                w,
                cout: 64,
                pad,
                relu: false,
            };
            let (oh, ow) = s.out_size();
            let x = values(n * s.cin * h * w, 4);
            let g = values(n * s.cout * oh * ow, 5);
            let dw = s.weight_grad(&x, &g, n);
            // dW[o, c, ky, kx] = Σ g[i, o, y, x] · x[i, c, y + ky - p, x + kx - p].
            let mut r = vec![0f64; s.cout * s.cin * 9];
            for i in 0..n {
                for o in 0..s.cout {
                    for c in 0..s.cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let mut sum = 0f64;
                                for yy in 0..oh {
                                    for xx in 0..ow {
                                        let iy = (yy + ky) as isize - pad as isize;
                                        let ix = (xx + kx) as isize - pad as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        sum += g[((i * s.cout + o) * oh + yy) * ow + xx] as f64
                                            * x[((i * s.cin + c) * h + iy as usize) * w
                                                + ix as usize]
                                                as f64;
                                    }
                                }
                                r[((o * s.cin + c) * 3 + ky) * 3 + kx] += sum;
                            }
                        }
                    }
                }
            }
            let err = rel_err(&dw, &r);
            assert!(err < 1e-5, "{s:?}: relative error {err}");
        }
    }

    #[test]
    fn results_are_the_same_bits_on_one_thread_and_on_three() {
        if !avx512() {
            return;
        }
        // Layer 4 of ResNet18 at a batch that cuts into several chunks.
        let s = Winograd {
            cin: 512,
            h: 7,
            w: 7,
            cout: 512,
            pad: 1,
            relu: true,
        };
        let n = 12;
        assert!(s.chunks(n).len() > 1);
        let x = values(n * s.cin * 49, 6);
        let wt = values(s.cout * s.cin * 9, 7);
        let g = values(n * s.cout * 49, 8);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| (s.forward(&x, &wt, None, n), s.weight_grad(&x, &g, n)))
        };
        let (one, three) = (run(1), run(3));
        assert!(one
            .0
            .iter()
            .zip(&three.0)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .1
            .iter()
            .zip(&three.1)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn chunks_cover_every_tile_row_once_whatever_the_batch() {
        let s = Winograd {
            cin: 512,
            h: 7,
            w: 7,
            cout: 512,
            pad: 1,
            relu: false,
        };
        for n in [1, 3, 16, 40] {
            let chunks = s.chunks(n);
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.first, next);
                assert!(c.rows > 0);
                assert!(16 * 512 * 4 * c.rows <= CHUNK_FLOATS.max(16 * 512 * 4));
                next += c.rows;
            }
            assert_eq!(next, n * 4);
        }
    }
}
