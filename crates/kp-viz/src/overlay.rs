//! Keypoint overlays: ground truth (green) and predictions (red) drawn on a face image.
//!
//! Coordinates are in pixels of the *input* image with the pixel-index convention: `(0, 0)`
//! is the centre of the top-left pixel, `(w - 1, h - 1)` the centre of the bottom-right one
//! (IMM's `x_rel * width` and dlib's XML landmarks both use it). When the image is upscaled
//! the points are moved with it, so they stay on the same image content.

use image::imageops::FilterType;
use image::{DynamicImage, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;

use crate::error::{Error, Result};
use crate::style::{BLACK, GT_GREEN, PRED_RED, WHITE};
use crate::text;

/// Largest side an overlay may have, to keep a bad factor from allocating gigabytes.
pub const MAX_SIDE: u32 = 16_384;

/// The iBUG 300-W 68-point face drawn as lines: each range of point indices joined in order,
/// `true` for a closed loop (jaw, eyebrows, nose bridge and base, eyes, outer and inner lips).
pub const IBUG68_CONTOURS: &[(std::ops::Range<usize>, bool)] = &[
    (0..17, false),
    (17..22, false),
    (22..27, false),
    (27..31, false),
    (31..36, false),
    (36..42, true),
    (42..48, true),
    (48..60, true),
    (60..68, true),
];

/// The contours kp draws for faces of `points` points: [`IBUG68_CONTOURS`] for 68, none for
/// other schemes (IMM's 58 points are drawn as dots).
pub fn contours_for(points: usize) -> &'static [(std::ops::Range<usize>, bool)] {
    if points == 68 {
        IBUG68_CONTOURS
    } else {
        &[]
    }
}

/// How (and whether) an image is enlarged before the keypoints are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upscale {
    /// Draw at the image's own size.
    None,
    /// Enlarge by this integer factor (0 is treated as 1).
    Factor(u32),
    /// Enlarge by the smallest integer factor that makes the longer side at least this many
    /// pixels; large images are left as they are (never shrinks).
    MinLongSide(u32),
}

impl Default for Upscale {
    /// `MinLongSide(320)`: an 80x60 face is drawn at 4x (320x240), a 640x480 one at 1x.
    fn default() -> Self {
        Upscale::MinLongSide(320)
    }
}

/// Options for [`overlay_keypoints`].
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayOptions {
    /// Enlargement of small images (default: longer side at least 320 px).
    pub upscale: Upscale,
    /// Resampling filter for the enlargement (default: nearest neighbour, which shows the
    /// resolution the network really sees).
    pub filter: FilterType,
    /// Point radius in output pixels; `None` picks one from the output size
    /// (see [`auto_radius`]).
    pub radius: Option<u32>,
    /// Draw a thin black ring around each point so it stays visible on any background.
    pub outline: bool,
    /// Write the 0-based keypoint index next to each point (ground truth if present,
    /// otherwise the predictions).
    pub labels: bool,
    /// Draw a thin line from each ground-truth point to the prediction with the same index
    /// (only where both lists have that index).
    pub error_lines: bool,
    /// Colour of ground-truth points (default green).
    pub gt_color: Rgb<u8>,
    /// Lines joining the points of each face (e.g. [`IBUG68_CONTOURS`]), drawn under the
    /// dots in each list's colour; they repeat for every block of as many points as the
    /// contours span, so a list holding several faces' points one after the other gets each
    /// face's lines. Empty (default): dots only.
    pub contours: &'static [(std::ops::Range<usize>, bool)],
    /// Colour of predicted points (default red).
    pub pred_color: Rgb<u8>,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            upscale: Upscale::default(),
            filter: FilterType::Nearest,
            radius: None,
            outline: true,
            labels: false,
            error_lines: false,
            gt_color: GT_GREEN,
            contours: &[],
            pred_color: PRED_RED,
        }
    }
}

/// Draws face boxes `[left, top, width, height]` (in the pixels of the image that was
/// enlarged by `factor` into `image`, as [`overlay_keypoints`] does) as 2-pixel outlines in
/// `color`, so detections can be seen beside the keypoints. Boxes that are not finite or have
/// no area are skipped; parts outside the image are clipped.
pub fn draw_boxes(image: &mut RgbImage, boxes: &[[f32; 4]], factor: u32, color: Rgb<u8>) {
    let f = factor.max(1) as f32;
    for b in boxes {
        if !b.iter().all(|v| v.is_finite()) || b[2] <= 0.0 || b[3] <= 0.0 {
            continue;
        }
        let (l, t) = ((b[0] * f).round() as i32, (b[1] * f).round() as i32);
        let (w, h) = (
            (b[2] * f).round().max(1.0) as u32,
            (b[3] * f).round().max(1.0) as u32,
        );
        draw_hollow_rect_mut(image, Rect::at(l, t).of_size(w, h), color);
        if w > 2 && h > 2 {
            draw_hollow_rect_mut(image, Rect::at(l + 1, t + 1).of_size(w - 2, h - 2), color);
        }
    }
}

/// A photo with every face found on it, as `kp predict --out` and the report draw it: the
/// faces' `points` (red dots sized to the smallest box, about 1/60 of its width; each face's
/// `per_face` points joined by [`contours_for`]) over their `boxes` (green outlines); small
/// photos enlarged as [`OverlayOptions::default`] does.
pub fn faces_on_photo(
    photo: RgbImage,
    points: &[(f32, f32)],
    boxes: &[[f32; 4]],
    per_face: usize,
) -> Result<RgbImage> {
    let mut opts = OverlayOptions {
        contours: contours_for(per_face),
        ..Default::default()
    };
    let factor = upscale_factor(photo.width(), photo.height(), opts.upscale);
    if let Some(w) = boxes.iter().map(|b| b[2]).reduce(f32::min) {
        opts.radius = Some(((w * factor as f32 / 60.0).round() as u32).max(1));
    }
    let mut img = overlay_keypoints(&DynamicImage::ImageRgb8(photo), &[], points, &opts)?;
    draw_boxes(&mut img, boxes, factor, GT_GREEN);
    Ok(img)
}

/// The integer enlargement factor `upscale` gives for a `width x height` image (at least 1).
pub fn upscale_factor(width: u32, height: u32, upscale: Upscale) -> u32 {
    match upscale {
        Upscale::None => 1,
        Upscale::Factor(f) => f.max(1),
        Upscale::MinLongSide(target) => {
            let long = width.max(height).max(1);
            target.div_ceil(long).max(1)
        }
    }
}

/// Default point radius for an output image of `width x height`: grows with the square root
/// of the shorter side, so 58 points on a full-size face do not merge (3 px for a 320x240
/// image, 4 px for 640x480, at least 2 px).
pub fn auto_radius(width: u32, height: u32) -> u32 {
    (((width.min(height) as f32).sqrt() / 5.0).round() as u32).max(2)
}

/// Maps a point from input-pixel coordinates to output-pixel coordinates for an integer
/// enlargement `factor` (pixel-index convention, see the module docs).
pub fn scale_point((x, y): (f32, f32), factor: u32) -> (f32, f32) {
    let s = factor as f32;
    ((x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5)
}

/// Draws ground-truth (`gt`) and predicted (`pred`) keypoints on `image` (greyscale or
/// colour) and returns the RGB result, enlarged as `opts.upscale` says.
///
/// Either list may be empty. Non-finite points are skipped; points outside the image are
/// clipped. The output size is the input size times [`upscale_factor`].
pub fn overlay_keypoints(
    image: &DynamicImage,
    gt: &[(f32, f32)],
    pred: &[(f32, f32)],
    opts: &OverlayOptions,
) -> Result<RgbImage> {
    let (w, h) = (image.width(), image.height());
    if w == 0 || h == 0 {
        return Err(Error::invalid(format!("image size {w}x{h}")));
    }
    let factor = upscale_factor(w, h, opts.upscale);
    let (ow, oh) = (w.saturating_mul(factor), h.saturating_mul(factor));
    if ow > MAX_SIDE || oh > MAX_SIDE {
        return Err(Error::invalid(format!(
            "overlay of {ow}x{oh} exceeds {MAX_SIDE} px per side"
        )));
    }
    let rgb = image.to_rgb8();
    let mut out = if factor == 1 {
        rgb
    } else {
        image::imageops::resize(&rgb, ow, oh, opts.filter)
    };

    let r = opts.radius.unwrap_or_else(|| auto_radius(ow, oh)).max(1) as i32;
    let map = |p: (f32, f32)| -> Option<(f32, f32)> {
        (p.0.is_finite() && p.1.is_finite()).then(|| scale_point(p, factor))
    };
    let gt_px: Vec<Option<(f32, f32)>> = gt.iter().map(|&p| map(p)).collect();
    let pred_px: Vec<Option<(f32, f32)>> = pred.iter().map(|&p| map(p)).collect();

    // Points further out than this cannot touch the image; skipping them also keeps the
    // integer conversions below far from overflow.
    let margin = (r + 2) as f32;
    let visible = |&(x, y): &(f32, f32)| {
        x >= -margin && y >= -margin && x <= ow as f32 + margin && y <= oh as f32 + margin
    };

    if opts.error_lines {
        for (g, p) in gt_px.iter().zip(&pred_px) {
            if let (Some(g), Some(p)) = (g, p) {
                let bounds = (ow as f32 - 1.0, oh as f32 - 1.0);
                if let Some((a, b)) = clip_segment(*g, *p, bounds) {
                    draw_line_segment_mut(&mut out, a, b, Rgb([255, 255, 0]));
                }
            }
        }
    }
    let span = opts.contours.iter().map(|(r, _)| r.end).max().unwrap_or(0);
    for (points, color) in [(&gt_px, opts.gt_color), (&pred_px, opts.pred_color)] {
        if span == 0 {
            break;
        }
        let bounds = (ow as f32 - 1.0, oh as f32 - 1.0);
        for face in points.chunks_exact(span) {
            for (range, closed) in opts.contours {
                let ends = range.clone().skip(1).map(|j| (j - 1, j));
                let close = (*closed && range.len() > 2).then(|| (range.end - 1, range.start));
                for (a, b) in ends.chain(close) {
                    if let (Some(a), Some(b)) = (face[a], face[b]) {
                        if let Some((a, b)) = clip_segment(a, b, bounds) {
                            draw_line_segment_mut(&mut out, a, b, color);
                        }
                    }
                }
            }
        }
    }
    for (points, color) in [(&gt_px, opts.gt_color), (&pred_px, opts.pred_color)] {
        for &(x, y) in points.iter().flatten().filter(|p| visible(p)) {
            let c = (x.round() as i32, y.round() as i32);
            if opts.outline {
                draw_filled_circle_mut(&mut out, c, r + 1, BLACK);
            }
            draw_filled_circle_mut(&mut out, c, r, color);
        }
    }
    if opts.labels {
        let font = text::sans()?;
        let size = (ow.min(oh) as f32 / 40.0).clamp(11.0, 16.0);
        let labelled = if gt.is_empty() { &pred_px } else { &gt_px };
        for (i, p) in labelled.iter().enumerate() {
            if let Some((x, y)) = p.filter(|p| visible(p)) {
                let pos = (x.round() as i32 + r + 1, y.round() as i32 - r - size as i32);
                let label = i.to_string();
                text::draw_text(&mut out, &font, size, (pos.0 + 1, pos.1 + 1), BLACK, &label);
                text::draw_text(&mut out, &font, size, pos, WHITE, &label);
            }
        }
    }
    Ok(out)
}

/// Clips the segment `a`-`b` to the rectangle `[0, max.0] x [0, max.1]` (Liang-Barsky).
/// Returns `None` when no part of it is inside.
fn clip_segment(a: (f32, f32), b: (f32, f32), max: (f32, f32)) -> Option<((f32, f32), (f32, f32))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f32, 1.0f32);
    for (p, q) in [(-dx, a.0), (dx, max.0 - a.0), (-dy, a.1), (dy, max.1 - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_drawn_as_outlines_scaled_by_the_overlay_factor_and_bad_ones_skipped() {
        let mut img = RgbImage::new(40, 40);
        let red = Rgb([255, 0, 0]);
        draw_boxes(
            &mut img,
            &[
                [2.0, 3.0, 5.0, 4.0],
                [f32::NAN, 0.0, 1.0, 1.0],
                [0.0, 0.0, 0.0, 3.0],
            ],
            2,
            red,
        );
        // Scaled by 2: left edge at x = 4 from y = 6 to 13, the inside untouched.
        assert_eq!(*img.get_pixel(4, 6), red);
        assert_eq!(*img.get_pixel(4, 13), red);
        assert_eq!(*img.get_pixel(5, 7), red, "second ring");
        assert_eq!(*img.get_pixel(8, 9), Rgb([0, 0, 0]), "inside");
        assert_eq!(
            *img.get_pixel(0, 0),
            Rgb([0, 0, 0]),
            "the empty and the NaN box draw nothing"
        );
    }
    use image::{GrayImage, Luma};

    fn is_green(p: &Rgb<u8>) -> bool {
        p[1] > 150 && p[0] < 100 && p[2] < 100
    }
    fn is_red(p: &Rgb<u8>) -> bool {
        p[0] > 150 && p[1] < 100 && p[2] < 100
    }

    fn gray_face() -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_pixel(80, 60, Luma([128])))
    }

    #[test]
    fn small_face_is_upscaled_4x_with_green_gt_and_red_prediction() {
        let gt = [(20.0, 30.0)];
        let pred = [(60.0, 15.0)];
        let out = overlay_keypoints(&gray_face(), &gt, &pred, &OverlayOptions::default()).unwrap();
        assert_eq!(out.dimensions(), (320, 240));
        let (gx, gy) = scale_point(gt[0], 4);
        let (px, py) = scale_point(pred[0], 4);
        assert!(is_green(
            out.get_pixel(gx.round() as u32, gy.round() as u32)
        ));
        assert!(is_red(out.get_pixel(px.round() as u32, py.round() as u32)));
        // Background away from the points is still the grey input.
        assert_eq!(*out.get_pixel(5, 5), Rgb([128, 128, 128]));
        // Each point covers a disc, not a single pixel.
        let greens = out.pixels().filter(|p| is_green(p)).count();
        assert!(greens >= 9, "{greens} green pixels");
    }

    #[test]
    fn scale_factor_and_radius_rules() {
        assert_eq!(upscale_factor(80, 60, Upscale::default()), 4);
        assert_eq!(upscale_factor(640, 480, Upscale::default()), 1);
        assert_eq!(upscale_factor(100, 10, Upscale::MinLongSide(320)), 4);
        assert_eq!(upscale_factor(80, 60, Upscale::Factor(0)), 1);
        assert_eq!(upscale_factor(80, 60, Upscale::None), 1);
        assert_eq!(auto_radius(320, 240), 3);
        assert_eq!(auto_radius(640, 480), 4);
        assert_eq!(auto_radius(1280, 960), 6);
        assert_eq!(auto_radius(20, 20), 2);
        assert_eq!(scale_point((0.0, 0.0), 4), (1.5, 1.5));
        assert_eq!(scale_point((3.0, 2.0), 1), (3.0, 2.0));
    }

    #[test]
    fn rgb_input_keeps_size_without_upscaling() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(640, 480, Rgb([10, 10, 200])));
        let out =
            overlay_keypoints(&img, &[(100.0, 100.0)], &[], &OverlayOptions::default()).unwrap();
        assert_eq!(out.dimensions(), (640, 480));
        assert!(is_green(out.get_pixel(100, 100)));
        assert!(!out.pixels().any(is_red));
    }

    #[test]
    fn nan_empty_and_out_of_range_points_do_not_panic() {
        let opts = OverlayOptions {
            labels: true,
            error_lines: true,
            ..Default::default()
        };
        let pts = [
            (f32::NAN, 3.0),
            (f32::INFINITY, f32::NEG_INFINITY),
            (-1e9, 1e9),
            (79.0, 59.0),
        ];
        let out = overlay_keypoints(&gray_face(), &pts, &pts, &opts).unwrap();
        assert_eq!(out.dimensions(), (320, 240));
        let out = overlay_keypoints(&gray_face(), &[], &[], &opts).unwrap();
        assert!(out.pixels().all(|p| *p == Rgb([128, 128, 128])));
    }

    #[test]
    fn clip_segment_cases() {
        let m = (10.0, 10.0);
        assert_eq!(
            clip_segment((1.0, 1.0), (2.0, 3.0), m),
            Some(((1.0, 1.0), (2.0, 3.0)))
        );
        assert_eq!(
            clip_segment((-10.0, 5.0), (20.0, 5.0), m),
            Some(((0.0, 5.0), (10.0, 5.0)))
        );
        assert_eq!(clip_segment((-5.0, -5.0), (-1.0, 20.0), m), None);
        assert_eq!(clip_segment((-1e9, -1e9), (-1e9, 1e9), m), None);
    }

    #[test]
    fn contours_join_each_faces_points_in_its_colour() {
        const TRIANGLE: &[(std::ops::Range<usize>, bool)] = &[(0..3, true)];
        let opts = OverlayOptions {
            contours: TRIANGLE,
            upscale: Upscale::None,
            outline: false,
            radius: Some(1),
            ..Default::default()
        };
        // Two faces of three points each; no line between the faces.
        let pred = [
            (5.0, 5.0),
            (25.0, 5.0),
            (5.0, 25.0),
            (45.0, 5.0),
            (65.0, 5.0),
            (45.0, 25.0),
        ];
        let out = overlay_keypoints(&gray_face(), &[], &pred, &opts).unwrap();
        let red = |x: u32, y: u32| *out.get_pixel(x, y) == PRED_RED;
        assert!(red(15, 5) && red(55, 5), "top edges of both faces");
        assert!(red(5, 15) && red(15, 15), "closing and side edges");
        assert!(!red(35, 5), "the faces are not joined to each other");
        let dots_only = overlay_keypoints(
            &gray_face(),
            &[],
            &pred,
            &OverlayOptions {
                contours: &[],
                ..opts
            },
        )
        .unwrap();
        assert!(*dots_only.get_pixel(15, 5) != PRED_RED);
        assert_eq!(
            IBUG68_CONTOURS.iter().map(|(r, _)| r.len()).sum::<usize>(),
            68
        );
    }

    #[test]
    fn faces_on_a_photo_get_their_box_and_dots_sized_to_the_smallest_face() {
        let photo = RgbImage::new(400, 300);
        let boxes = [[100.0, 100.0, 120.0, 120.0], [300.0, 50.0, 60.0, 60.0]];
        // One point per face, far from its box's outline.
        let points = [(160.0, 160.0), (330.0, 80.0)];
        let out = faces_on_photo(photo, &points, &boxes, 1).unwrap();
        assert_eq!(
            out.dimensions(),
            (400, 300),
            "a 400 px photo is drawn at its size"
        );
        assert_eq!(
            *out.get_pixel(100, 150),
            GT_GREEN,
            "left edge of the first box"
        );
        assert_eq!(
            *out.get_pixel(359, 80),
            GT_GREEN,
            "right edge of the second box"
        );
        // Radius 60 / 60 = 1 (the smaller face's): the dot covers its centre's neighbours
        // but not 3 px away.
        let red = |x: u32, y: u32| *out.get_pixel(x, y) == PRED_RED;
        assert!(red(160, 160) && red(161, 160) && red(330, 80));
        assert!(!red(163, 160), "a dot 1/60 of the smallest box wide");
    }

    #[test]
    fn error_lines_join_gt_and_prediction() {
        let opts = OverlayOptions {
            error_lines: true,
            ..Default::default()
        };
        let out = overlay_keypoints(&gray_face(), &[(10.0, 30.0)], &[(70.0, 30.0)], &opts).unwrap();
        // Half-way between the points (x = 40 in input pixels) the line is yellow.
        let (mx, my) = scale_point((40.0, 30.0), 4);
        let column: Vec<_> = (my as u32 - 2..=my as u32 + 2)
            .map(|y| *out.get_pixel(mx as u32, y))
            .collect();
        assert!(column.contains(&Rgb([255, 255, 0])), "{column:?}");
    }

    #[test]
    fn labels_add_white_text() {
        let opts = OverlayOptions {
            labels: true,
            ..Default::default()
        };
        let out = overlay_keypoints(&gray_face(), &[(40.0, 30.0)], &[], &opts).unwrap();
        let bright = out
            .pixels()
            .filter(|p| p[0] > 200 && p[1] > 200 && p[2] > 200);
        assert!(bright.count() > 5);
    }

    #[test]
    fn invalid_sizes_are_errors() {
        let empty = DynamicImage::ImageLuma8(GrayImage::new(0, 0));
        assert!(overlay_keypoints(&empty, &[], &[], &OverlayOptions::default()).is_err());
        let opts = OverlayOptions {
            upscale: Upscale::Factor(1000),
            ..Default::default()
        };
        assert!(overlay_keypoints(&gray_face(), &[], &[], &opts).is_err());
    }
}
