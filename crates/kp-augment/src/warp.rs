//! One-pass bilinear affine warp of a [`GrayF32`] straight into the output size.
//!
//! The cost is proportional to the number of output pixels (times the supersampling factor
//! when the map shrinks the image a lot), and nothing is allocated per pixel.

use kp_data::GrayF32;
use serde::{Deserialize, Serialize};

use crate::{Affine, Error, Result};

/// Largest supersampling factor per axis.
pub const MAX_SUPERSAMPLE: usize = 8;

/// Source pixels per output pixel above which antialiasing adds taps (per axis).
const TAP_SPACING: f64 = 1.5;

/// How [`warp_affine`] samples the source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarpOptions {
    /// Value of output pixels whose pre-image falls outside the source (0.0 = mid gray).
    pub fill: f32,
    /// When the map shrinks the image by more than 1.5x along an axis, average a grid of
    /// bilinear taps over each output pixel's footprint (box filter), so downscaling does
    /// not alias. Costs `kx·ky` taps per pixel, `k = ceil(shrink / 1.5)`.
    pub antialias: bool,
}

impl Default for WarpOptions {
    fn default() -> Self {
        Self {
            fill: 0.0,
            antialias: true,
        }
    }
}

/// The supersampling grid `(kx, ky)` used for a destination → source map.
pub fn supersampling(dst_to_src: &Affine, antialias: bool) -> (usize, usize) {
    if !antialias {
        return (1, 1);
    }
    let (lx, ly) = dst_to_src.axis_lengths();
    let k = |len: f64| -> usize {
        let k = (len / TAP_SPACING - 1e-9).ceil();
        if k.is_finite() {
            (k as usize).clamp(1, MAX_SUPERSAMPLE)
        } else {
            1
        }
    };
    (k(lx), k(ly))
}

/// Warps `src` by `map` (source → output coordinates) into a new `width × height` image.
///
/// Each output pixel centre `(u, v)` samples the source bilinearly at `map⁻¹(u, v)`;
/// taps outside the source read `opts.fill`.
pub fn warp_affine(
    src: &GrayF32,
    map: &Affine,
    width: u32,
    height: u32,
    opts: WarpOptions,
) -> Result<GrayF32> {
    let mut out = GrayF32::new(width, height);
    warp_affine_into(src, map, &mut out, opts)?;
    Ok(out)
}

/// Like [`warp_affine`], writing into `out` (its size is the output size).
pub fn warp_affine_into(
    src: &GrayF32,
    map: &Affine,
    out: &mut GrayF32,
    opts: WarpOptions,
) -> Result<()> {
    let inv = map.inverse().ok_or(Error::Singular)?;
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    if sw == 0 || sh == 0 {
        return Err(Error::EmptyImage);
    }
    let ow = out.width() as usize;
    if ow == 0 || out.height() == 0 {
        return Ok(());
    }
    let s = Sampler {
        src: src.as_raw(),
        w: sw,
        h: sh,
        fill: opts.fill,
    };
    let (kx, ky) = supersampling(&inv, opts.antialias);
    // Source positions step along each output row in 32.32 fixed point: exact integer
    // stepping, a floor that is a shift, and no float → int conversion per pixel.
    let (ax, ay) = (to_fixed(inv.a), to_fixed(inv.d));
    let rows = out.as_mut().chunks_exact_mut(ow);
    if kx == 1 && ky == 1 {
        for (v, row) in rows.enumerate() {
            let (rx, ry) = inv.apply_xy(0.0, v as f64);
            let (x0, y0) = (to_fixed(rx), to_fixed(ry));
            // Pixels [lo, hi) sample strictly inside: no edge checks there.
            let (lo, hi) = s.interior_span(x0, ax, y0, ay, ow);
            let at = |u: usize| {
                let u = u as i64;
                (
                    x0.wrapping_add(ax.wrapping_mul(u)),
                    y0.wrapping_add(ay.wrapping_mul(u)),
                )
            };
            let (head, rest) = row.split_at_mut(lo);
            let (mid, tail) = rest.split_at_mut(hi - lo);
            for (u, o) in head.iter_mut().enumerate() {
                let (x, y) = at(u);
                *o = s.bilinear(x, y);
            }
            let (mut x, mut y) = at(lo);
            for o in mid.iter_mut() {
                let (xi, yi) = ((x >> FRAC_BITS) as usize, (y >> FRAC_BITS) as usize);
                *o = s.interior(xi, yi, frac(x), frac(y));
                x = x.wrapping_add(ax);
                y = y.wrapping_add(ay);
            }
            for (u, o) in tail.iter_mut().enumerate() {
                let (x, y) = at(hi + u);
                *o = s.bilinear(x, y);
            }
        }
    } else {
        // Tap offsets inside the output pixel, mapped to source offsets.
        let mut offs = [(0i64, 0i64); MAX_SUPERSAMPLE * MAX_SUPERSAMPLE];
        let n = kx * ky;
        for j in 0..ky {
            for i in 0..kx {
                let du = (i as f64 + 0.5) / kx as f64 - 0.5;
                let dv = (j as f64 + 0.5) / ky as f64 - 0.5;
                offs[j * kx + i] = (
                    to_fixed(inv.a * du + inv.b * dv),
                    to_fixed(inv.d * du + inv.e * dv),
                );
            }
        }
        let offs = &offs[..n];
        let norm = 1.0 / n as f32;
        for (v, row) in rows.enumerate() {
            let (rx, ry) = inv.apply_xy(0.0, v as f64);
            let (x0, y0) = (to_fixed(rx), to_fixed(ry));
            // Pixels whose taps are all inside: the intersection of each tap's span.
            let (mut lo, mut hi) = (0, ow);
            for &(ox, oy) in offs {
                let (l, h) = s.interior_span(x0.wrapping_add(ox), ax, y0.wrapping_add(oy), ay, ow);
                (lo, hi) = (lo.max(l), hi.min(h));
            }
            if lo >= hi {
                (lo, hi) = (0, 0);
            }
            let (mut x, mut y) = (x0, y0);
            for (u, o) in row.iter_mut().enumerate() {
                let mut acc = 0.0;
                if (lo..hi).contains(&u) {
                    for &(ox, oy) in offs {
                        let (tx, ty) = (x.wrapping_add(ox), y.wrapping_add(oy));
                        let (xi, yi) = ((tx >> FRAC_BITS) as usize, (ty >> FRAC_BITS) as usize);
                        acc += s.interior(xi, yi, frac(tx), frac(ty));
                    }
                } else {
                    for &(ox, oy) in offs {
                        acc += s.bilinear(x.wrapping_add(ox), y.wrapping_add(oy));
                    }
                }
                *o = acc * norm;
                x = x.wrapping_add(ax);
                y = y.wrapping_add(ay);
            }
        }
    }
    Ok(())
}

/// Fractional bits of the fixed-point source coordinates.
const FRAC_BITS: u32 = 32;
/// Coordinates are clamped to ±2^30 px before conversion so fixed-point values stay far
/// from overflow (anything that far out samples the fill anyway).
const COORD_LIMIT: f64 = (1u64 << 30) as f64;

#[inline]
fn to_fixed(v: f64) -> i64 {
    let v = if v.is_nan() { -COORD_LIMIT } else { v };
    (v.clamp(-COORD_LIMIT, COORD_LIMIT) * (1u64 << FRAC_BITS) as f64).round() as i64
}

struct Sampler<'a> {
    src: &'a [f32],
    w: usize,
    h: usize,
    fill: f32,
}

/// The fraction of a fixed-point coordinate: its top 24 fraction bits, exact in `f32`.
#[inline(always)]
fn frac(x: i64) -> f32 {
    const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
    ((x as u32) >> 8) as f32 * SCALE
}

impl Sampler<'_> {
    /// True when the sample at `(x, y)` needs no edge handling.
    #[inline(always)]
    fn inside(&self, x: i64, y: i64) -> bool {
        ((x >> FRAC_BITS) as u64) < (self.w - 1) as u64
            && ((y >> FRAC_BITS) as u64) < (self.h - 1) as u64
    }

    /// The output pixels `[lo, hi)` of a row starting at `(x0, y0)` and stepping by
    /// `(ax, ay)` whose samples are all inside (the inside set of a line is an interval).
    fn interior_span(&self, x0: i64, ax: i64, y0: i64, ay: i64, n: usize) -> (usize, usize) {
        let at = |u: usize| {
            let u = u as i64;
            (
                x0.wrapping_add(ax.wrapping_mul(u)),
                y0.wrapping_add(ay.wrapping_mul(u)),
            )
        };
        let inside = |u: usize| {
            let (x, y) = at(u);
            self.inside(x, y)
        };
        // The inside set is an interval only while `p0 + a·u` cannot wrap around; absurd
        // steps (over 2^28 source px per output px) take the checked path everywhere.
        let small = |a: i64| {
            i64::try_from(n)
                .ok()
                .and_then(|n| a.checked_mul(n))
                .is_some_and(|v| v.unsigned_abs() <= 1 << 60)
        };
        if !small(ax) || !small(ay) {
            return (0, 0);
        }
        // Estimate in f64, then fix the ends exactly.
        let (mut lo, mut hi) = (0.0f64, n as f64);
        for (p0, a, len) in [(x0, ax, self.w), (y0, ay, self.h)] {
            let lim = ((len - 1) as f64) * (1u64 << FRAC_BITS) as f64;
            let p0 = p0 as f64;
            if a == 0 {
                if !(0.0..lim).contains(&p0) {
                    return (0, 0);
                }
                continue;
            }
            let (u1, u2) = ((0.0 - p0) / a as f64, (lim - p0) / a as f64);
            let (l, h) = if a > 0 { (u1, u2) } else { (u2, u1) };
            lo = lo.max(l.ceil());
            hi = hi.min(h.ceil());
        }
        if lo.is_nan() || hi.is_nan() || lo >= hi {
            return (0, 0);
        }
        let (mut lo, mut hi) = (lo as usize, (hi as usize).min(n));
        while lo < hi && !inside(lo) {
            lo += 1;
        }
        while hi > lo && !inside(hi - 1) {
            hi -= 1;
        }
        if lo == hi {
            return (0, 0);
        }
        while lo > 0 && inside(lo - 1) {
            lo -= 1;
        }
        while hi < n && inside(hi) {
            hi += 1;
        }
        (lo, hi)
    }

    /// Bilinear sample at the fixed-point position `(x, y)`.
    #[inline(always)]
    fn bilinear(&self, x: i64, y: i64) -> f32 {
        let (xi, yi) = (x >> FRAC_BITS, y >> FRAC_BITS);
        let (fx, fy) = (frac(x), frac(y));
        if (xi as u64) < (self.w - 1) as u64 && (yi as u64) < (self.h - 1) as u64 {
            self.interior(xi as usize, yi as usize, fx, fy)
        } else {
            self.bilinear_edge(xi, yi, fx, fy)
        }
    }

    /// Bilinear sample when `xi + 1 < w` and `yi + 1 < h`.
    #[inline(always)]
    fn interior(&self, xi: usize, yi: usize, fx: f32, fy: f32) -> f32 {
        let w = self.w;
        let i = yi * w + xi;
        // One bounds check for all four taps.
        let q = &self.src[i..i + w + 2];
        let top = q[0] + fx * (q[1] - q[0]);
        let bot = q[w] + fx * (q[w + 1] - q[w]);
        top + fy * (bot - top)
    }

    #[cold]
    #[inline(never)]
    fn bilinear_edge(&self, xi: i64, yi: i64, fx: f32, fy: f32) -> f32 {
        let tap = |x: i64, y: i64| -> f32 {
            if x >= 0 && y >= 0 && (x as u64) < self.w as u64 && (y as u64) < self.h as u64 {
                self.src[y as usize * self.w + x as usize]
            } else {
                self.fill
            }
        };
        let top = tap(xi, yi) + fx * (tap(xi + 1, yi) - tap(xi, yi));
        let bot = tap(xi, yi + 1) + fx * (tap(xi + 1, yi + 1) - tap(xi, yi + 1));
        top + fy * (bot - top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;
    use imageproc::geometric_transformations::{warp_into, Border, Interpolation};

    fn ramp(w: u32, h: u32) -> GrayF32 {
        GrayF32::from_fn(w, h, |x, y| {
            Luma([((x * 7 + y * 13) % 29) as f32 / 28.0 - 0.5 + 0.01 * (x as f32).sin()])
        })
    }

    #[test]
    fn identity_copies_exactly() {
        let src = ramp(17, 11);
        let out = warp_affine(&src, &Affine::IDENTITY, 17, 11, WarpOptions::default()).unwrap();
        assert_eq!(out.as_raw(), src.as_raw());
    }

    #[test]
    fn integer_translation_shifts_and_fills() {
        let src = ramp(8, 6);
        let opts = WarpOptions {
            fill: 0.25,
            antialias: false,
        };
        let out = warp_affine(&src, &Affine::translate(2.0, 1.0), 8, 6, opts).unwrap();
        assert_eq!(out.get_pixel(2, 1)[0], src.get_pixel(0, 0)[0]);
        assert_eq!(out.get_pixel(7, 5)[0], src.get_pixel(5, 4)[0]);
        assert_eq!(out.get_pixel(1, 3)[0], 0.25);
        assert_eq!(out.get_pixel(4, 0)[0], 0.25);
    }

    #[test]
    fn matches_imageproc_bilinear_without_antialias() {
        let src = ramp(40, 30);
        let maps = [
            Affine::rotate_about(17.0, 20.0, 14.0)
                .then(Affine::scale_about(1.2, 20.0, 15.0))
                .then(Affine::translate(-3.3, 2.7)),
            Affine::IDENTITY,
            Affine::translate(-0.5, 0.25),
            Affine::hflip(40.0).then(Affine::translate(7.3, -11.1)),
            Affine::rotate_about(90.0, 20.0, 15.0),
            Affine::rotate_about(-135.0, 5.0, 3.0).then(Affine::scale(0.7, 1.3)),
            Affine::scale_about(3.0, 39.0, 29.0),
            Affine::translate(100.0, 0.0),
            Affine::new(1.0, 0.4, -5.0, 0.0, 1.0, 2.0),
        ];
        let opts = WarpOptions {
            fill: -0.2,
            antialias: false,
        };
        for (k, map) in maps.iter().enumerate() {
            let ours = warp_affine(&src, map, 37, 33, opts).unwrap();
            let mut theirs = GrayF32::new(37, 33);
            warp_into(
                &src,
                map.to_projection().unwrap(),
                Interpolation::Bilinear,
                Border::Constant(Luma([-0.2])),
                &mut theirs,
            );
            let max_diff = ours
                .as_raw()
                .iter()
                .zip(theirs.as_raw())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(max_diff < 1e-3, "map {k}: max diff {max_diff}");
        }
    }

    #[test]
    fn supersampled_interior_span_matches_checked_taps() {
        // Shrinking with rotation: the span-optimised loop must equal a plain loop that
        // checks every tap, including rows that cross the border.
        let src = ramp(90, 70);
        let map = Affine::rotate_about(23.0, 45.0, 35.0)
            .then(Affine::translate(-12.0, 9.0))
            .then(Affine::resize(90.0, 70.0, 25.0, 21.0));
        let opts = WarpOptions {
            fill: 0.3,
            antialias: true,
        };
        let ours = warp_affine(&src, &map, 25, 21, opts).unwrap();
        let inv = map.inverse().unwrap();
        let (kx, ky) = supersampling(&inv, true);
        assert!(kx > 1 && ky > 1);
        let s = Sampler {
            src: src.as_raw(),
            w: 90,
            h: 70,
            fill: 0.3,
        };
        for v in 0..21 {
            for u in 0..25 {
                let mut acc = 0.0;
                for j in 0..ky {
                    for i in 0..kx {
                        let du = u as f64 + (i as f64 + 0.5) / kx as f64 - 0.5;
                        let dv = v as f64 + (j as f64 + 0.5) / ky as f64 - 0.5;
                        let (x, y) = inv.apply_xy(du, dv);
                        acc += s.bilinear(to_fixed(x), to_fixed(y));
                    }
                }
                let want = acc / (kx * ky) as f32;
                let got = ours.get_pixel(u, v)[0];
                assert!((got - want).abs() < 1e-4, "({u}, {v}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn antialias_approaches_area_average_when_shrinking() {
        // Pseudo-random noise shrunk 4x: the exact area average is the reference.
        let src = GrayF32::from_fn(64, 64, |x, y| {
            let h = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(97);
            Luma([(h % 1000) as f32 / 1000.0 - 0.5])
        });
        let area = GrayF32::from_fn(16, 16, |u, v| {
            let s: f32 = (0..16)
                .map(|k| src.get_pixel(4 * u + k % 4, 4 * v + k / 4)[0])
                .sum();
            Luma([s / 16.0])
        });
        let map = Affine::resize(64.0, 64.0, 16.0, 16.0);
        let rms = |antialias: bool| {
            let opts = WarpOptions {
                fill: 0.0,
                antialias,
            };
            let out = warp_affine(&src, &map, 16, 16, opts).unwrap();
            let se: f32 = out
                .as_raw()
                .iter()
                .zip(area.as_raw())
                .map(|(p, q)| (p - q).powi(2))
                .sum();
            (se / 256.0).sqrt()
        };
        let (aa, naive) = (rms(true), rms(false));
        assert!(aa < 0.5 * naive, "antialiased rms {aa}, naive rms {naive}");
    }

    #[test]
    fn supersampling_grid() {
        assert_eq!(supersampling(&Affine::IDENTITY, true), (1, 1));
        assert_eq!(supersampling(&Affine::scale(4.0, 1.4), true), (3, 1));
        assert_eq!(supersampling(&Affine::scale(4.0, 4.0), false), (1, 1));
        assert_eq!(
            supersampling(&Affine::scale(1e6, 2.0), true),
            (MAX_SUPERSAMPLE, 2)
        );
    }

    #[test]
    fn absurd_maps_do_not_panic() {
        let src = ramp(9, 7);
        for map in [
            Affine::scale(1e-9, 1e9),
            Affine::scale(1e9, 1e-9),
            Affine::scale(1e-5, 1e-5),
            Affine::translate(1e30, -1e30),
            Affine::rotate_about(33.0, 0.0, 0.0).then(Affine::scale(3e-10, 4e9)),
        ] {
            for antialias in [false, true] {
                let opts = WarpOptions {
                    fill: 0.1,
                    antialias,
                };
                let out = warp_affine(&src, &map, 64, 48, opts).unwrap();
                assert!(out.iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn singular_map_is_an_error() {
        let src = ramp(4, 4);
        let r = warp_affine(&src, &Affine::scale(0.0, 0.0), 4, 4, WarpOptions::default());
        assert!(matches!(r, Err(Error::Singular)));
    }

    #[test]
    fn one_pixel_source_uses_edge_path() {
        let src = GrayF32::from_pixel(1, 1, Luma([0.3]));
        let opts = WarpOptions {
            fill: 0.0,
            antialias: false,
        };
        let out = warp_affine(&src, &Affine::IDENTITY, 3, 1, opts).unwrap();
        assert_eq!(out.as_raw(), &vec![0.3, 0.0, 0.0]);
    }
}
