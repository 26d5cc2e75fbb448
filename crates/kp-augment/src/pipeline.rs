//! The augmentation pipeline: sample parameters, compose one affine map, warp once.

use kp_data::{BBox, GrayF32, LandmarkScheme, Point};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::{Center, PipelineConfig, Range, ShiftUnit, StepConfig};
use crate::photometric::{
    adjust_brightness, adjust_contrast, adjust_gamma, fill_rect, gaussian_blur,
};

use crate::warp::{warp_affine, WarpOptions};
use crate::{Affine, Error, Result};

/// The landmark scheme called `name` (`ibug68` or `imm58`; see `LandmarkScheme::by_name`).
pub fn scheme_by_name(name: &str) -> Result<&'static LandmarkScheme> {
    LandmarkScheme::by_name(name).ok_or_else(|| Error::UnknownScheme(name.to_string()))
}

/// Checks that `perm` is a permutation of `0..perm.len()`.
pub fn validate_permutation(perm: &[usize]) -> Result<()> {
    let mut seen = vec![false; perm.len()];
    for (i, &j) in perm.iter().enumerate() {
        if j >= perm.len() || std::mem::replace(&mut seen[j], true) {
            return Err(Error::BadPermutation(format!(
                "entry {i} = {j} is out of range or repeated (length {})",
                perm.len()
            )));
        }
    }
    Ok(())
}

/// True when applying `perm` twice gives the identity (`perm[perm[i]] == i`).
pub fn is_involution(perm: &[usize]) -> bool {
    perm.iter()
        .enumerate()
        .all(|(i, &j)| perm.get(j).is_some_and(|&k| k == i))
}

/// Mirrors points horizontally in an image `width` pixels wide (`x → (width − 1) − x`)
/// and reorders them: point `i` becomes point `perm[i]`. Checks the permutation and the
/// point count; the mirror itself is [`kp_data::scheme::mirror_points`].
pub fn hflip_points(points: &[Point], width: u32, perm: &[usize]) -> Result<Vec<Point>> {
    validate_permutation(perm)?;
    if perm.len() != points.len() {
        return Err(Error::PointCountMismatch {
            points: points.len(),
            expected: perm.len(),
        });
    }
    // Output point `perm[i]` is input point `i`: the mirror takes its sources by output index.
    let mut source = vec![0; perm.len()];
    for (i, &j) in perm.iter().enumerate() {
        source[j] = i;
    }
    Ok(kp_data::scheme::mirror_points(
        points,
        width as f32,
        &source,
    ))
}

/// True when `p` lies on the image's pixel area `[-0.5, w − 0.5] × [-0.5, h − 0.5]`.
pub fn in_image(p: Point, width: u32, height: u32) -> bool {
    p.x >= -0.5 && p.y >= -0.5 && p.x <= width as f32 - 0.5 && p.y <= height as f32 - 0.5
}

/// A photometric change with its sampled parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum PhotometricOp {
    /// Add to every pixel.
    Brightness(f32),
    /// Scale deviations from the mean.
    Contrast(f32),
    /// `v → (v + 0.5)^g − 0.5`.
    Gamma(f32),
    /// Fill the rectangle `[x, x + w) × [y, y + h)` of output pixels with `value`.
    Occlude {
        /// Left column.
        x: u32,
        /// Top row.
        y: u32,
        /// Width in pixels.
        w: u32,
        /// Height in pixels.
        h: u32,
        /// The grey value.
        value: f32,
    },
    /// Gaussian blur with this σ in output pixels.
    Blur(f32),
}

impl PhotometricOp {
    /// Applies the change in place (no clamping).
    pub fn apply(&self, img: &mut GrayF32) {
        match *self {
            PhotometricOp::Brightness(d) => adjust_brightness(img, d),
            PhotometricOp::Contrast(c) => adjust_contrast(img, c),
            PhotometricOp::Gamma(g) => adjust_gamma(img, g),
            PhotometricOp::Occlude { x, y, w, h, value } => fill_rect(img, (x, y, w, h), value),
            PhotometricOp::Blur(sigma) => gaussian_blur(img, sigma),
        }
    }
}

/// The parameters one run of a pipeline drew: everything needed to render it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Original image coordinates → output coordinates.
    pub transform: Affine,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// `Some(order)` when flips reordered the points: output point `i` is original point
    /// `order[i]`.
    pub point_order: Option<Vec<usize>>,
    /// Photometric changes, applied in order after the warp.
    pub photometric: Vec<PhotometricOp>,
}

impl Plan {
    /// Maps original keypoints to output keypoints (moved and reordered).
    pub fn map_points(&self, points: &[Point]) -> Result<Vec<Point>> {
        match &self.point_order {
            None => Ok(self.transform.apply_all(points)),
            Some(order) => {
                if order.len() != points.len() {
                    return Err(Error::PointCountMismatch {
                        points: points.len(),
                        expected: order.len(),
                    });
                }
                Ok(order
                    .iter()
                    .map(|&j| self.transform.apply(points[j]))
                    .collect())
            }
        }
    }

    /// Renders the output image: one warp, then the photometric changes (clamped to
    /// `[-0.5, 0.5]` when there are any).
    pub fn render(&self, img: &GrayF32, opts: WarpOptions) -> Result<GrayF32> {
        let mut out = warp_affine(img, &self.transform, self.width, self.height, opts)?;
        apply_photometric(&mut out, &self.photometric);
        Ok(out)
    }
}

/// Applies photometric changes in order, then clamps to `[-0.5, 0.5]` (nothing when `ops`
/// is empty). Same result as [`PhotometricOp::apply`] one by one plus [`clamp_pixels`], but
/// runs of brightness and contrast fuse into one linear map, so it takes at most two passes
/// per gamma plus two (an occlusion or a blur applies the pending map first).
///
/// [`clamp_pixels`]: crate::photometric::clamp_pixels
pub fn apply_photometric(img: &mut GrayF32, ops: &[PhotometricOp]) {
    if ops.is_empty() {
        return;
    }
    // Pending map v → alpha·v + beta, and the mean of the image before it.
    let (mut alpha, mut beta) = (1.0f32, 0.0f32);
    let mut mean: Option<f32> = None;
    for op in ops {
        match *op {
            PhotometricOp::Brightness(d) => beta += d,
            PhotometricOp::Contrast(c) => {
                let m = *mean.get_or_insert_with(|| mean_of(img));
                let cur = alpha * m + beta;
                alpha *= c;
                beta = beta * c + cur * (1.0 - c);
            }
            PhotometricOp::Gamma(g) => {
                for v in img.iter_mut() {
                    *v = (alpha * *v + beta + 0.5).max(0.0).powf(g) - 0.5;
                }
                (alpha, beta, mean) = (1.0, 0.0, None);
            }
            PhotometricOp::Occlude { .. } | PhotometricOp::Blur(_) => {
                if (alpha, beta) != (1.0, 0.0) {
                    for v in img.iter_mut() {
                        *v = alpha * *v + beta;
                    }
                }
                op.apply(img);
                (alpha, beta, mean) = (1.0, 0.0, None);
            }
        }
    }
    for v in img.iter_mut() {
        *v = (alpha * *v + beta).clamp(-0.5, 0.5);
    }
}

fn mean_of(img: &GrayF32) -> f32 {
    let n = img.as_raw().len().max(1);
    (img.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32
}

/// An augmented image with its keypoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Augmented {
    /// The output image.
    pub image: GrayF32,
    /// The keypoints in output pixel coordinates (reordered by any flips), not clamped.
    pub keypoints: Vec<Point>,
    /// Original image coordinates → output coordinates.
    pub transform: Affine,
    /// True when any keypoint lies outside the output image (see [`in_image`]).
    pub out_of_bounds: bool,
    /// `Some(order)` when flips reordered the points: output point `i` is original point
    /// `order[i]`.
    pub point_order: Option<Vec<usize>>,
}

impl Augmented {
    /// Output coordinates → original image coordinates.
    pub fn inverse(&self) -> Result<Affine> {
        self.transform.inverse().ok_or(Error::Singular)
    }

    /// Maps points predicted on the output image back to original image pixels, undoing
    /// any flip reordering (so index `i` is the original scheme's point `i`).
    pub fn to_original(&self, points: &[Point]) -> Result<Vec<Point>> {
        points_to_original(&self.transform, self.point_order.as_deref(), points)
    }

    /// Indices of keypoints outside the output image.
    pub fn outside(&self) -> Vec<usize> {
        let (w, h) = self.image.dimensions();
        (0..self.keypoints.len())
            .filter(|&i| !in_image(self.keypoints[i], w, h))
            .collect()
    }
}

/// Maps output-image points back through `transform` (original → output) and undoes the
/// reordering `order` (output point `i` is original point `order[i]`).
pub fn points_to_original(
    transform: &Affine,
    order: Option<&[usize]>,
    points: &[Point],
) -> Result<Vec<Point>> {
    let inv = transform.inverse().ok_or(Error::Singular)?;
    match order {
        None => Ok(inv.apply_all(points)),
        Some(order) => {
            if order.len() != points.len() {
                return Err(Error::PointCountMismatch {
                    points: points.len(),
                    expected: order.len(),
                });
            }
            let mut out = vec![Point::default(); points.len()];
            for (i, &j) in order.iter().enumerate() {
                out[j] = inv.apply(points[i]);
            }
            Ok(out)
        }
    }
}

/// A validated pipeline, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    config: PipelineConfig,
    /// Resolved flip permutation per step (`None` for other steps and order-keeping flips).
    perms: Vec<Option<Vec<usize>>>,
}

impl Pipeline {
    /// Validates `config` and resolves flip schemes.
    pub fn new(config: PipelineConfig) -> Result<Self> {
        config.validate()?;
        let mut perms = Vec::with_capacity(config.steps.len());
        for step in &config.steps {
            perms.push(match step {
                StepConfig::Hflip(f) => match (&f.scheme, &f.permutation) {
                    (Some(name), _) => Some(scheme_by_name(name)?.flip.to_vec()),
                    (None, Some(p)) => {
                        validate_permutation(p)?;
                        if p.is_empty() {
                            return Err(Error::BadPermutation("empty permutation".into()));
                        }
                        Some(p.clone())
                    }
                    (None, None) => None,
                },
                _ => None,
            });
        }
        Ok(Self { config, perms })
    }

    /// The pipeline of a named preset (see [`PipelineConfig::preset`]).
    pub fn preset(name: &str) -> Result<Self> {
        Self::new(PipelineConfig::preset(name)?)
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Output `(width, height)`.
    pub fn output_size(&self) -> (u32, u32) {
        (self.config.width, self.config.height)
    }

    /// Warp options from the config.
    pub fn warp_options(&self) -> WarpOptions {
        WarpOptions {
            fill: self.config.fill,
            antialias: self.config.antialias,
        }
    }

    /// Applies the pipeline with a random stream seeded by `seed` (same seed, same output).
    ///
    /// `bbox` is the face box for `crop_box`/`box_jitter` steps; without it the keypoints'
    /// tight box is used.
    pub fn apply(
        &self,
        img: &GrayF32,
        kps: &[Point],
        bbox: Option<BBox>,
        seed: u64,
    ) -> Result<Augmented> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        self.apply_with_rng(img, kps, bbox, &mut rng)
    }

    /// Like [`Pipeline::apply`], drawing from `rng`.
    pub fn apply_with_rng<R: Rng + ?Sized>(
        &self,
        img: &GrayF32,
        kps: &[Point],
        bbox: Option<BBox>,
        rng: &mut R,
    ) -> Result<Augmented> {
        let plan = self.plan_with_rng(img.width(), img.height(), kps, bbox, rng)?;
        let image = plan.render(img, self.warp_options())?;
        let keypoints = plan.map_points(kps)?;
        let out_of_bounds = keypoints
            .iter()
            .any(|&p| !in_image(p, plan.width, plan.height));
        Ok(Augmented {
            image,
            keypoints,
            transform: plan.transform,
            out_of_bounds,
            point_order: plan.point_order,
        })
    }

    /// Draws the parameters for an image of `width × height` without rendering it.
    pub fn plan(
        &self,
        width: u32,
        height: u32,
        kps: &[Point],
        bbox: Option<BBox>,
        seed: u64,
    ) -> Result<Plan> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        self.plan_with_rng(width, height, kps, bbox, &mut rng)
    }

    /// Like [`Pipeline::plan`], drawing from `rng`. Every step draws its coin and its
    /// parameters whether it runs or not, so steps do not shift each other's draws.
    pub fn plan_with_rng<R: Rng + ?Sized>(
        &self,
        width: u32,
        height: u32,
        kps: &[Point],
        bbox: Option<BBox>,
        rng: &mut R,
    ) -> Result<Plan> {
        if width == 0 || height == 0 {
            return Err(Error::EmptyImage);
        }
        if let Some(i) = kps.iter().position(|p| !p.is_finite()) {
            return Err(Error::NonFinite(format!("keypoint {i}")));
        }
        if let Some(b) = bbox {
            let ok = b.ltwh().iter().all(|v| v.is_finite()) && b.width >= 0.0 && b.height >= 0.0;
            if !ok {
                return Err(Error::NonFinite(format!("face box {b:?}")));
            }
        }
        let (ow, oh) = (self.config.width as f64, self.config.height as f64);
        let mut st = State {
            m: Affine::IDENTITY,
            cw: width as f64,
            ch: height as f64,
            bbox: bbox.or_else(|| BBox::around(kps)),
            centroid: centroid(kps),
        };
        let mut order: Option<Vec<usize>> = None;
        let mut photometric = Vec::new();
        for (step, perm) in self.config.steps.iter().zip(&self.perms) {
            let fire = rng.random::<f64>() < step.probability() as f64;
            match step {
                StepConfig::Translate(c) => {
                    let (dx, dy) = (draw(rng, c.x), draw(rng, c.y));
                    if fire {
                        let (sx, sy) = match c.unit {
                            ShiftUnit::Output => (st.cw / ow, st.ch / oh),
                            ShiftUnit::Canvas => (1.0, 1.0),
                            ShiftUnit::Fraction => (st.cw, st.ch),
                        };
                        st.push(Affine::translate(dx * sx, dy * sy));
                    }
                }
                StepConfig::Rotate(c) => {
                    let deg = draw(rng, c.degrees);
                    if fire {
                        let (cx, cy) = st.center(c.center);
                        st.push(Affine::rotate_about(deg, cx, cy));
                    }
                }
                StepConfig::Scale(c) => {
                    let s = draw(rng, c.factor);
                    if fire {
                        let (cx, cy) = st.center(c.center);
                        st.push(Affine::scale_about(s, cx, cy));
                    }
                }
                StepConfig::Hflip(_) => {
                    if fire {
                        st.push(Affine::hflip(st.cw));
                        if let Some(perm) = perm {
                            let n = if kps.is_empty() {
                                perm.len()
                            } else {
                                kps.len()
                            };
                            let cur = order.take().unwrap_or_else(|| (0..n).collect());
                            if cur.len() != perm.len() {
                                return Err(Error::PointCountMismatch {
                                    points: cur.len(),
                                    expected: perm.len(),
                                });
                            }
                            let mut next = vec![0; cur.len()];
                            for (i, &j) in perm.iter().enumerate() {
                                next[j] = cur[i];
                            }
                            order = Some(next);
                        }
                    }
                }
                StepConfig::BoxJitter(c) => {
                    let (jx, jy) = (draw(rng, c.shift_x), draw(rng, c.shift_y));
                    let s = draw(rng, c.scale);
                    if fire {
                        let b = st.bbox.ok_or(Error::MissingBox)?;
                        let (w, h) = (b.width as f64 * s, b.height as f64 * s);
                        let cx = b.left as f64 + b.width as f64 * (0.5 + jx);
                        let cy = b.top as f64 + b.height as f64 * (0.5 + jy);
                        st.bbox = Some(BBox::new(
                            (cx - w / 2.0) as f32,
                            (cy - h / 2.0) as f32,
                            w as f32,
                            h as f32,
                        ));
                    }
                }
                StepConfig::CropBox(c) => {
                    let margin = draw(rng, c.margin);
                    if fire {
                        let b = st.bbox.ok_or(Error::MissingBox)?;
                        let (mut w, mut h) = (b.width as f64, b.height as f64);
                        if c.square {
                            w = w.max(h);
                            h = w;
                        }
                        let (w, h) = (w * margin, h * margin);
                        if !(w > 1e-3 && h > 1e-3 && w.is_finite() && h.is_finite()) {
                            return Err(Error::DegenerateBox(b));
                        }
                        let cx = b.left as f64 + b.width as f64 / 2.0;
                        let cy = b.top as f64 + b.height as f64 / 2.0;
                        st.push(Affine::crop(cx - w / 2.0, cy - h / 2.0));
                        st.cw = w;
                        st.ch = h;
                    }
                }
                StepConfig::Brightness(c) => {
                    let v = draw(rng, c.delta);
                    if fire {
                        photometric.push(PhotometricOp::Brightness(v as f32));
                    }
                }
                StepConfig::Contrast(c) => {
                    let v = draw(rng, c.factor);
                    if fire {
                        photometric.push(PhotometricOp::Contrast(v as f32));
                    }
                }
                StepConfig::Gamma(c) => {
                    let v = draw(rng, c.gamma);
                    if fire {
                        photometric.push(PhotometricOp::Gamma(v as f32));
                    }
                }
                StepConfig::Occlude(c) => {
                    let (fw, fh) = (draw(rng, c.size), draw(rng, c.size));
                    let (u, v) = (rng.random::<f64>(), rng.random::<f64>());
                    let value = draw(rng, c.value);
                    if fire {
                        let (w_out, h_out) = (self.config.width, self.config.height);
                        let side = |f: f64, n: u32| ((f * n as f64).round() as u32).clamp(1, n);
                        let (w, h) = (side(fw, w_out), side(fh, h_out));
                        let place = |t: f64, room: u32| ((t * (room + 1) as f64) as u32).min(room);
                        photometric.push(PhotometricOp::Occlude {
                            x: place(u, w_out - w),
                            y: place(v, h_out - h),
                            w,
                            h,
                            value: value as f32,
                        });
                    }
                }
                StepConfig::Blur(c) => {
                    let sigma = draw(rng, c.sigma);
                    if fire {
                        photometric.push(PhotometricOp::Blur(sigma as f32));
                    }
                }
            }
        }
        let transform = st.m.then(Affine::resize(st.cw, st.ch, ow, oh));
        if transform.inverse().is_none() {
            return Err(Error::Singular);
        }
        Ok(Plan {
            transform,
            width: self.config.width,
            height: self.config.height,
            point_order: order,
            photometric,
        })
    }
}

/// Geometric state while composing: the map so far and the current canvas and box.
struct State {
    /// Original → current canvas.
    m: Affine,
    cw: f64,
    ch: f64,
    /// Face box in the current canvas.
    bbox: Option<BBox>,
    /// Keypoint centroid in original coordinates.
    centroid: Option<(f64, f64)>,
}

impl State {
    fn push(&mut self, g: Affine) {
        self.m = self.m.then(g);
        self.bbox = self.bbox.map(|b| g.apply_bbox(b));
    }

    fn center(&self, c: Center) -> (f64, f64) {
        let canvas = ((self.cw - 1.0) / 2.0, (self.ch - 1.0) / 2.0);
        match c {
            Center::Canvas => canvas,
            Center::Keypoints => self
                .centroid
                .map(|(x, y)| self.m.apply_xy(x, y))
                .unwrap_or(canvas),
            Center::Box => self
                .bbox
                .map(|b| {
                    (
                        b.left as f64 + b.width as f64 / 2.0,
                        b.top as f64 + b.height as f64 / 2.0,
                    )
                })
                .unwrap_or(canvas),
        }
    }
}

fn centroid(kps: &[Point]) -> Option<(f64, f64)> {
    if kps.is_empty() {
        return None;
    }
    let n = kps.len() as f64;
    let (sx, sy) = kps
        .iter()
        .fold((0.0, 0.0), |(sx, sy), p| (sx + p.x as f64, sy + p.y as f64));
    Some((sx / n, sy / n))
}

/// One draw from `r` (always consumes one value, even for a fixed range).
fn draw<R: Rng + ?Sized>(rng: &mut R, r: Range) -> f64 {
    r.quantile(rng.random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::photometric::clamp_pixels;
    use image::Luma;

    #[test]
    fn fused_photometric_matches_sequential() {
        let img = GrayF32::from_fn(13, 7, |x, y| {
            Luma([((x * 5 + y * 3) % 11) as f32 / 10.0 - 0.5])
        });
        let ops = [
            PhotometricOp::Brightness(0.1),
            PhotometricOp::Contrast(0.7),
            PhotometricOp::Brightness(-0.05),
            PhotometricOp::Contrast(1.3),
            PhotometricOp::Gamma(1.4),
            PhotometricOp::Contrast(0.9),
            PhotometricOp::Occlude {
                x: 2,
                y: 1,
                w: 4,
                h: 3,
                value: 0.3,
            },
            PhotometricOp::Brightness(0.2),
            PhotometricOp::Contrast(1.2),
            PhotometricOp::Blur(0.8),
            PhotometricOp::Brightness(-0.1),
        ];
        for k in 0..=ops.len() {
            let mut seq = img.clone();
            for op in &ops[..k] {
                op.apply(&mut seq);
            }
            if k > 0 {
                clamp_pixels(&mut seq);
            }
            let mut fused = img.clone();
            apply_photometric(&mut fused, &ops[..k]);
            for (a, b) in seq.iter().zip(fused.iter()) {
                assert!((a - b).abs() < 1e-5, "{k} ops: {a} vs {b}");
            }
        }
    }
}
