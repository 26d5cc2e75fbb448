//! Brightness, contrast and gamma jitter on `[-0.5, 0.5]` pixels.
//!
//! These change pixel values only, never geometry. The pipeline applies them to the warped
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
    fn clamp_limits_range() {
        let mut i = GrayF32::from_raw(2, 1, vec![-0.9, 0.7]).unwrap();
        clamp_pixels(&mut i);
        assert_eq!(i.as_raw(), &vec![-0.5, 0.5]);
    }
}
