//! Brightness, contrast and gamma jitter, occlusion and blur on `[-0.5, 0.5]` pixels.
//!
//! These change pixel values only, never geometry (an occluded point keeps its label). The pipeline applies them to the warped
//! output (border fill included) and clamps the result to `[-0.5, 0.5]`.

use kp_data::GrayF32;

/// Adds `delta` to every pixel (no clamping).
pub fn adjust_brightness(img: &mut GrayF32, delta: f32) {
    for v in img.iter_mut() {
        *v += delta;
    }
}

/// Scales every pixel's distance from the image mean by `factor` (no clamping).
pub fn adjust_contrast(img: &mut GrayF32, factor: f32) {
    let n = img.as_raw().len();
    if n == 0 {
        return;
    }
    let mean = (img.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
    for v in img.iter_mut() {
        *v = mean + (*v - mean) * factor;
    }
}

/// Gamma on `[-0.5, 0.5]` pixels: `v → (v + 0.5)^gamma − 0.5` (values below −0.5 are
/// taken as −0.5 first).
pub fn adjust_gamma(img: &mut GrayF32, gamma: f32) {
    for v in img.iter_mut() {
        *v = (*v + 0.5).max(0.0).powf(gamma) - 0.5;
    }
}

/// Sets every pixel of the rectangle `[x, x + w) × [y, y + h)` to `value` (the part inside
/// the image).
pub fn fill_rect(img: &mut GrayF32, (x, y, w, h): (u32, u32, u32, u32), value: f32) {
    let (iw, ih) = img.dimensions();
    let (x1, y1) = (x.saturating_add(w).min(iw), y.saturating_add(h).min(ih));
    if x >= x1 || y >= y1 {
        return;
    }
    let raw: &mut [f32] = img;
    for row in raw
        .chunks_exact_mut(iw as usize)
        .take(y1 as usize)
        .skip(y as usize)
    {
        row[x as usize..x1 as usize].fill(value);
    }
}

/// Blurs with a Gaussian of standard deviation `sigma` pixels, truncated at 3σ and
/// normalised, in two separable passes; the border repeats the edge pixel (a constant image
/// stays constant). `sigma <= 0` or a non-finite one changes nothing.
pub fn gaussian_blur(img: &mut GrayF32, sigma: f32) {
    if !(sigma > 0.0 && sigma.is_finite()) {
        return;
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as usize;
    let taps: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = taps.iter().sum();
    let taps: Vec<f32> = taps.iter().map(|t| t / total).collect();
    // Index `i − radius + k` clamped to `0..n`.
    let at = |i: usize, k: usize, n: usize| (i + k).saturating_sub(radius).min(n - 1);
    let raw: &mut [f32] = img;
    let mut line = vec![0f32; w.max(h)];
    for row in raw.chunks_exact_mut(w) {
        line[..w].copy_from_slice(row);
        for (x, out) in row.iter_mut().enumerate() {
            *out = taps
                .iter()
                .enumerate()
                .map(|(k, t)| t * line[at(x, k, w)])
                .sum();
        }
    }
    for x in 0..w {
        for y in 0..h {
            line[y] = raw[y * w + x];
        }
        for y in 0..h {
            raw[y * w + x] = taps
                .iter()
                .enumerate()
                .map(|(k, t)| t * line[at(y, k, h)])
                .sum();
        }
    }
}

/// Clamps every pixel to `[-0.5, 0.5]`.
pub fn clamp_pixels(img: &mut GrayF32) {
    for v in img.iter_mut() {
        *v = v.clamp(-0.5, 0.5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> GrayF32 {
        GrayF32::from_raw(4, 1, vec![-0.5, -0.1, 0.2, 0.5]).unwrap()
    }

    #[test]
    fn brightness_adds() {
        let mut i = img();
        adjust_brightness(&mut i, 0.1);
        let want = [-0.4, 0.0, 0.3, 0.6];
        for (v, w) in i.as_raw().iter().zip(want) {
            assert!((v - w).abs() < 1e-6);
        }
    }

    #[test]
    fn contrast_keeps_mean_and_scales_spread() {
        let mut i = img();
        adjust_contrast(&mut i, 0.5);
        let mean: f32 = i.as_raw().iter().sum::<f32>() / 4.0;
        assert!((mean - 0.025).abs() < 1e-6);
        assert!((i.as_raw()[3] - i.as_raw()[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn gamma_fixes_black_and_white() {
        let mut i = img();
        adjust_gamma(&mut i, 2.0);
        let r = i.as_raw();
        assert!((r[0] + 0.5).abs() < 1e-6 && (r[3] - 0.5).abs() < 1e-6);
        // 0.4^2 - 0.5 = -0.34
        assert!((r[1] + 0.34).abs() < 1e-6);
    }

    #[test]
    fn fill_rect_covers_exactly_its_rectangle_clipped_to_the_image() {
        let mut i = GrayF32::new(5, 4);
        fill_rect(&mut i, (3, 1, 4, 2), 0.25);
        for y in 0..4 {
            for x in 0..5 {
                let want = if (3..5).contains(&x) && (1..3).contains(&y) {
                    0.25
                } else {
                    0.0
                };
                assert_eq!(i.get_pixel(x, y)[0], want, "({x}, {y})");
            }
        }
        let before = i.clone();
        fill_rect(&mut i, (5, 0, 2, 2), 0.5);
        assert_eq!(i, before);
    }

    #[test]
    fn blur_keeps_a_constant_image_and_spreads_an_impulse_with_unit_sum() {
        let mut flat = GrayF32::from_raw(7, 5, vec![0.3; 35]).unwrap();
        gaussian_blur(&mut flat, 1.5);
        assert!(flat.as_raw().iter().all(|&v| (v - 0.3).abs() < 1e-6));
        let mut dot = GrayF32::new(21, 21);
        dot.put_pixel(10, 10, image::Luma([1.0]));
        gaussian_blur(&mut dot, 1.0);
        let sum: f32 = dot.as_raw().iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        let (c, n, far) = (
            dot.get_pixel(10, 10)[0],
            dot.get_pixel(11, 10)[0],
            dot.get_pixel(10, 14)[0],
        );
        assert!(c > n && n > far && far == 0.0, "{c} {n} {far}");
        // Symmetric: the same at equal distances in x and y.
        assert!((dot.get_pixel(9, 10)[0] - dot.get_pixel(10, 11)[0]).abs() < 1e-7);
    }

    #[test]
    fn clamp_limits_range() {
        let mut i = GrayF32::from_raw(2, 1, vec![-0.9, 0.7]).unwrap();
        clamp_pixels(&mut i);
        assert_eq!(i.as_raw(), &vec![-0.5, 0.5]);
    }
}
