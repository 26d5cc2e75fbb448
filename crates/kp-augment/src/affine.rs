//! 2x3 affine maps between pixel coordinate frames.
//!
//! Coordinates follow the kp convention: 0-based, pixel centres at integers, so pixel `i`
//! covers `[i - 0.5, i + 0.5]`.

use std::ops::Mul;

use imageproc::geometric_transformations::Projection;
use kp_data::{BBox, Point};
use serde::{Deserialize, Serialize};

/// A 2-D affine map `x' = a·x + b·y + c`, `y' = d·x + e·y + f`, stored in `f64`.
///
/// Maps compose like imageproc's `Projection`: `p * q` applies `q` first, then `p`.
/// [`Affine::then`] reads left to right instead.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// Row 0, x coefficient.
    pub a: f64,
    /// Row 0, y coefficient.
    pub b: f64,
    /// Row 0, offset.
    pub c: f64,
    /// Row 1, x coefficient.
    pub d: f64,
    /// Row 1, y coefficient.
    pub e: f64,
    /// Row 1, offset.
    pub f: f64,
}

impl Default for Affine {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Affine {
    /// The identity map.
    pub const IDENTITY: Affine = Affine::new(1.0, 0.0, 0.0, 0.0, 1.0, 0.0);

    /// Makes a map from its six coefficients (row-major 2x3).
    pub const fn new(a: f64, b: f64, c: f64, d: f64, e: f64, f: f64) -> Self {
        Self { a, b, c, d, e, f }
    }

    /// Translation by `(dx, dy)`.
    pub const fn translate(dx: f64, dy: f64) -> Self {
        Self::new(1.0, 0.0, dx, 0.0, 1.0, dy)
    }

    /// Axis scaling about the origin.
    pub const fn scale(sx: f64, sy: f64) -> Self {
        Self::new(sx, 0.0, 0.0, 0.0, sy, 0.0)
    }

    /// Uniform scaling by `s` about the point `(cx, cy)`.
    pub fn scale_about(s: f64, cx: f64, cy: f64) -> Self {
        Self::new(s, 0.0, cx - s * cx, 0.0, s, cy - s * cy)
    }

    /// Rotation by `degrees` about `(cx, cy)`. Positive angles turn the content
    /// counter-clockwise as displayed (y points down).
    pub fn rotate_about(degrees: f64, cx: f64, cy: f64) -> Self {
        let (s, c) = degrees.to_radians().sin_cos();
        // x' = cx + c·dx + s·dy ; y' = cy − s·dx + c·dy
        Self::new(c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy)
    }

    /// Horizontal mirror of an image `width` pixels wide: `x → (width − 1) − x`.
    pub fn hflip(width: f64) -> Self {
        Self::new(-1.0, 0.0, width - 1.0, 0.0, 1.0, 0.0)
    }

    /// Resize of a `from_w × from_h` canvas to `to_w × to_h` pixels:
    /// `x → (x + 0.5)·to_w/from_w − 0.5` (pixel areas map onto pixel areas).
    pub fn resize(from_w: f64, from_h: f64, to_w: f64, to_h: f64) -> Self {
        let sx = to_w / from_w;
        let sy = to_h / from_h;
        Self::new(sx, 0.0, 0.5 * sx - 0.5, 0.0, sy, 0.5 * sy - 0.5)
    }

    /// Crop of the region whose pixel-area rectangle starts at `(left, top)` (area
    /// coordinates, i.e. pixel-centre coordinates of that edge): `x → x − left − 0.5`.
    pub fn crop(left: f64, top: f64) -> Self {
        Self::translate(-left - 0.5, -top - 0.5)
    }

    /// The map that applies `self` first and then `next`.
    pub fn then(self, next: Affine) -> Affine {
        next * self
    }

    /// Determinant of the linear part.
    pub fn determinant(&self) -> f64 {
        self.a * self.e - self.b * self.d
    }

    /// True when all six coefficients are finite.
    pub fn is_finite(&self) -> bool {
        [self.a, self.b, self.c, self.d, self.e, self.f]
            .iter()
            .all(|v| v.is_finite())
    }

    /// The inverse map, or `None` when the map is singular or not finite.
    pub fn inverse(&self) -> Option<Affine> {
        let det = self.determinant();
        if !det.is_finite() || det.abs() < 1e-12 || !self.is_finite() {
            return None;
        }
        let (a, b, d, e) = (self.e / det, -self.b / det, -self.d / det, self.a / det);
        let c = -(a * self.c + b * self.f);
        let f = -(d * self.c + e * self.f);
        Some(Affine::new(a, b, c, d, e, f))
    }

    /// Maps a point given as `f64` coordinates.
    pub fn apply_xy(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.a * x + self.b * y + self.c,
            self.d * x + self.e * y + self.f,
        )
    }

    /// Maps one point.
    pub fn apply(&self, p: Point) -> Point {
        let (x, y) = self.apply_xy(p.x as f64, p.y as f64);
        Point::new(x as f32, y as f32)
    }

    /// Maps every point, keeping their order.
    pub fn apply_all(&self, points: &[Point]) -> Vec<Point> {
        points.iter().map(|&p| self.apply(p)).collect()
    }

    /// The axis-aligned bounds of a box's four mapped corners (exact for maps without
    /// rotation or shear).
    pub fn apply_bbox(&self, b: BBox) -> BBox {
        let (l, t) = (b.left as f64, b.top as f64);
        let (r, bo) = (l + b.width as f64, t + b.height as f64);
        let corners = [
            self.apply_xy(l, t),
            self.apply_xy(r, t),
            self.apply_xy(l, bo),
            self.apply_xy(r, bo),
        ];
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for (x, y) in corners {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        BBox::new(x0 as f32, y0 as f32, (x1 - x0) as f32, (y1 - y0) as f32)
    }

    /// Length of the mapped unit x and y vectors: the source-pixel footprint of one
    /// destination pixel when `self` maps destination to source.
    pub fn axis_lengths(&self) -> (f64, f64) {
        (self.a.hypot(self.d), self.b.hypot(self.e))
    }

    /// True when every coefficient differs from `other`'s by at most `tol`.
    pub fn approx_eq(&self, other: &Affine, tol: f64) -> bool {
        let x = [self.a, self.b, self.c, self.d, self.e, self.f];
        let y = [other.a, other.b, other.c, other.d, other.e, other.f];
        x.iter().zip(y.iter()).all(|(p, q)| (p - q).abs() <= tol)
    }

    /// The row-major 3x3 homogeneous matrix.
    pub fn to_matrix(&self) -> [f64; 9] {
        [
            self.a, self.b, self.c, self.d, self.e, self.f, 0.0, 0.0, 1.0,
        ]
    }

    /// Converts to an imageproc [`Projection`] (in `f32`), or `None` when singular.
    pub fn to_projection(&self) -> Option<Projection> {
        let m = self.to_matrix().map(|v| v as f32);
        Projection::from_matrix(m)
    }
}

impl Mul for Affine {
    type Output = Affine;

    /// `p * q` applies `q` first, then `p` (matrix product).
    fn mul(self, q: Affine) -> Affine {
        let p = self;
        Affine::new(
            p.a * q.a + p.b * q.d,
            p.a * q.b + p.b * q.e,
            p.a * q.c + p.b * q.f + p.c,
            p.d * q.a + p.e * q.d,
            p.d * q.b + p.e * q.e,
            p.d * q.c + p.e * q.f + p.f,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(p: Point, x: f32, y: f32) -> bool {
        (p.x - x).abs() < 1e-4 && (p.y - y).abs() < 1e-4
    }

    #[test]
    fn translate_moves_points() {
        let t = Affine::translate(3.0, -2.0);
        assert!(close(t.apply(Point::new(1.0, 1.0)), 4.0, -1.0));
    }

    #[test]
    fn rotate_quarter_turn_is_counter_clockwise_on_screen() {
        let r = Affine::rotate_about(90.0, 10.0, 10.0);
        // A point to the right of the centre moves above it (smaller y).
        assert!(close(r.apply(Point::new(12.0, 10.0)), 10.0, 8.0));
        // The centre is fixed.
        assert!(close(r.apply(Point::new(10.0, 10.0)), 10.0, 10.0));
    }

    #[test]
    fn scale_about_fixes_centre() {
        let s = Affine::scale_about(2.0, 5.0, 5.0);
        assert!(close(s.apply(Point::new(5.0, 5.0)), 5.0, 5.0));
        assert!(close(s.apply(Point::new(6.0, 4.0)), 7.0, 3.0));
    }

    #[test]
    fn hflip_mirrors_pixel_centres() {
        let f = Affine::hflip(10.0);
        assert!(close(f.apply(Point::new(0.0, 3.0)), 9.0, 3.0));
        assert!(close(f.apply(Point::new(9.0, 3.0)), 0.0, 3.0));
        assert!(close(f.apply(Point::new(4.5, 3.0)), 4.5, 3.0));
    }

    #[test]
    fn resize_maps_pixel_areas() {
        // 640x480 -> 160x120: factor 1/4. Source pixels 0..3 cover output pixel 0,
        // whose centre (0.0) is the source point 1.5.
        let r = Affine::resize(640.0, 480.0, 160.0, 120.0);
        assert!(close(r.apply(Point::new(1.5, 1.5)), 0.0, 0.0));
        // The outer area edges map onto each other.
        assert!(close(r.apply(Point::new(-0.5, -0.5)), -0.5, -0.5));
        assert!(close(r.apply(Point::new(639.5, 479.5)), 159.5, 119.5));
    }

    #[test]
    fn crop_maps_left_edge_to_minus_half() {
        let c = Affine::crop(10.0, 20.0);
        assert!(close(c.apply(Point::new(10.0, 20.0)), -0.5, -0.5));
        assert!(close(c.apply(Point::new(10.5, 20.5)), 0.0, 0.0));
    }

    #[test]
    fn then_applies_left_to_right() {
        let t = Affine::translate(1.0, 0.0);
        let s = Affine::scale(2.0, 2.0);
        let p = Point::new(1.0, 1.0);
        assert!(close(t.then(s).apply(p), 4.0, 2.0));
        assert!(close(s.then(t).apply(p), 3.0, 2.0));
        assert_eq!(t.then(s), s * t);
    }

    #[test]
    fn singular_has_no_inverse() {
        assert!(Affine::scale(0.0, 1.0).inverse().is_none());
        assert!(Affine::new(f64::NAN, 0.0, 0.0, 0.0, 1.0, 0.0)
            .inverse()
            .is_none());
    }

    #[test]
    fn bbox_of_scaled_box() {
        let b = Affine::scale(2.0, 3.0).apply_bbox(BBox::new(1.0, 1.0, 2.0, 2.0));
        assert_eq!(b, BBox::new(2.0, 3.0, 4.0, 6.0));
    }

    #[test]
    fn projection_agrees_on_points() {
        let m = Affine::rotate_about(20.0, 3.0, 4.0).then(Affine::translate(5.0, -1.0));
        let p = m.to_projection().expect("invertible");
        let (x, y) = p * (7.0f32, 2.0f32);
        let q = m.apply(Point::new(7.0, 2.0));
        assert!((x - q.x).abs() < 1e-3 && (y - q.y).abs() < 1e-3);
    }
}
