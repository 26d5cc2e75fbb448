//! Reading images: header sizes, grayscale decoding to [`GrayF32`], resizing faces with their
//! keypoints, and a parallel loader.
//!
//! Resizing maps coordinates with the pixel-centre rule `x' = (x + 0.5) * W' / W - 0.5`
//! (same for `y`), which is also the sampling grid `image`'s resize filters use.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::ImageReader;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::face::Face;
use crate::geometry::Point;
use crate::gray::{gray_from_u8, GrayF32};

/// Largest image side kp decodes (a larger header is refused before any pixel is allocated).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Default cap on the pixels (width x height) of an image kp decodes: 64 megapixels, 40 times a
/// typical 1.5 MP photo. A few hundred KB of PNG can claim far more (a decompression bomb); the
/// header is checked before any pixel is allocated, and the images decoded at once on all
/// threads together hold at most this many pixels (the decode budget of [`decode_with`]).
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

static MAX_PIXELS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the pixel cap of [`load_image`] for the whole process (`kp --max-pixels`); at least 1.
pub fn set_max_pixels(pixels: u64) {
    MAX_PIXELS.store(pixels.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// The pixel cap [`load_image`] applies ([`DEFAULT_MAX_PIXELS`] unless set).
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The pixels of all images being decoded at once, process-wide.
///
/// Why: the pixel cap bounds one image, but the loaders decode on every core, so a folder of
/// decompression bombs just under the cap would take cores x cap x bytes per pixel. Every
/// decode in this module first takes its image's pixels from this budget (the cap, so one
/// image of any allowed size always fits) and gives them back once its result is made (the
/// decoded image converted and, for training faces, resized): however many threads decode,
/// the images in flight hold at most [`max_pixels`] pixels together. Ordinary photos (1-2 MP)
/// never wait. The code run while holding pixels (decoders, colour conversion, resize) uses no
/// rayon, so a thread waiting here never holds work another thread needs.
struct DecodeBudget {
    /// Pixels held by decodes in flight, and the most ever held (for tests).
    held: std::sync::Mutex<(u64, u64)>,
    freed: std::sync::Condvar,
}

static DECODE_BUDGET: DecodeBudget = DecodeBudget {
    held: std::sync::Mutex::new((0, 0)),
    freed: std::sync::Condvar::new(),
};

/// Pixels taken from a [`DecodeBudget`], given back when dropped.
struct DecodePermit<'a> {
    budget: &'a DecodeBudget,
    pixels: u64,
}

impl DecodeBudget {
    /// Takes `pixels` (at most `cap`, so any one image may start) once they fit beside those
    /// held, waiting for other decodes to give theirs back.
    fn take(&self, pixels: u64, cap: u64) -> DecodePermit<'_> {
        let want = pixels.clamp(1, cap.max(1));
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.0 > 0 && held.0 + want > cap {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.0 += want;
        held.1 = held.1.max(held.0);
        DecodePermit {
            budget: self,
            pixels: want,
        }
    }
}

impl Drop for DecodePermit<'_> {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= self.pixels;
        self.budget.freed.notify_all();
    }
}

fn open(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    // A regular file only: a FIFO or a device given as a photo would hang or read forever.
    let file = kp_fs::open_regular(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    Ok(reader)
}

/// A JPEG without its end-of-image marker was cut short; `image` would decode it with the
/// missing part filled in, so it is refused here.
fn check_jpeg_complete(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = kp_fs::open_regular(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let tail = len.min(4096);
    f.seek(SeekFrom::Start(len - tail))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    if buf.windows(2).any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(Error::image(
            path,
            image::ImageError::IoError(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated JPEG: no end-of-image marker",
            )),
        ))
    }
}

/// The `(width, height)` of an image, read from its header without decoding the pixels.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    open(path)?
        .into_dimensions()
        .map_err(|e| Error::image(path, e))
}

/// Decodes an image file with kp's checks (side limit, complete JPEG), in its own colour type:
/// [`load_gray`] and [`load_rgb`] convert it; callers needing both decode once with this.
/// The decode counts against the process's decode budget (see [`decode_with`]) until it
/// returns.
pub fn load_image(path: &Path) -> Result<image::DynamicImage> {
    decode_with(path, Ok)
}

/// Decodes `path` as [`load_image`] does and runs `make` on the image while its pixels are
/// held from the process-wide decode budget: whatever the number of threads, the images being
/// decoded and made into `make`'s result hold at most [`max_pixels`] pixels together (one image
/// of any allowed size always may start). `make` must not wait on rayon work (it runs while
/// other decoding threads may wait for its pixels).
pub fn decode_with<T>(
    path: &Path,
    make: impl FnOnce(image::DynamicImage) -> Result<T>,
) -> Result<T> {
    let (w, h) = image_dimensions(path)?;
    let (pixels, cap) = (u64::from(w) * u64::from(h), max_pixels());
    let refuse = |why: String| {
        Err(Error::image(
            path,
            image::ImageError::IoError(std::io::Error::new(std::io::ErrorKind::InvalidData, why)),
        ))
    };
    if pixels > cap {
        return refuse(format!(
            "{w}x{h} is {pixels} pixels, above the cap of {cap} (kp --max-pixels)"
        ));
    }
    // A face cannot be found or trained on in a handful of pixels; such a file is a mistake.
    if w < crate::check::MIN_IMAGE_SIDE || h < crate::check::MIN_IMAGE_SIDE {
        let m = crate::check::MIN_IMAGE_SIDE;
        return refuse(format!("{w}x{h} pixels is smaller than {m}x{m}"));
    }
    let reader = open(path)?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(path)?;
    }
    let _permit = DECODE_BUDGET.take(pixels, cap);
    make(reader.decode().map_err(|e| Error::image(path, e))?)
}

/// Decodes an image file to grayscale [`GrayF32`] (`luma / 255 - 0.5`).
pub fn load_gray(path: &Path) -> Result<GrayF32> {
    decode_with(path, |img| Ok(gray_from_u8(&img.into_luma8())))
}

/// Decodes an image file to 8-bit RGB (grey images get three equal channels), with the same
/// checks as [`load_gray`]: what the face detector takes.
pub fn load_rgb(path: &Path) -> Result<image::RgbImage> {
    decode_with(path, |img| Ok(img.into_rgb8()))
}

/// Maps points from an image of size `from` to the same image resized to `to`
/// (`(width, height)` pairs) with the pixel-centre rule.
pub fn scale_points(points: &[Point], from: (u32, u32), to: (u32, u32)) -> Vec<Point> {
    let sx = to.0 as f32 / from.0 as f32;
    let sy = to.1 as f32 / from.1 as f32;
    points
        .iter()
        .map(|p| Point::new((p.x + 0.5) * sx - 0.5, (p.y + 0.5) * sy - 0.5))
        .collect()
}

/// Resizes a grayscale image to `width` x `height` with a triangle (bilinear, antialiased) filter.
///
/// `image`'s float resize clamps to `[0, 1]`, so pixels are shifted by `+0.5` around it.
pub fn resize_gray(img: &GrayF32, width: u32, height: u32) -> GrayF32 {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let mut shifted = img.clone();
    shifted.iter_mut().for_each(|v| *v += 0.5);
    let mut out = imageops::resize(&shifted, width, height, FilterType::Triangle);
    out.iter_mut().for_each(|v| *v -= 0.5);
    out
}

/// [`resize_gray`] computing only the output pixels of `region` (`[x0, y0, x1, y1]`, the
/// half-open rectangle `x0..x1 × y0..y1` of the `width x height` result, clipped to it); the
/// other pixels are 0. Each pixel it computes is the one `resize_gray` gives, bit for bit: the
/// same triangle filter as `image`'s `resize` (its `vertical_sample` then
/// `horizontal_sample`), the same f32 operations in the same order, on one channel instead of
/// four. Prediction needs only the part of a photo around a face; this is most of the cost of
/// preparing a face saved.
pub fn resize_gray_region(img: &GrayF32, width: u32, height: u32, region: [u32; 4]) -> GrayF32 {
    let mut out = GrayF32::new(width, height);
    let (w0, h0) = img.dimensions();
    let (x0, y0) = (region[0].min(width), region[1].min(height));
    let (x1, y1) = (region[2].min(width), region[3].min(height));
    if w0 == 0 || h0 == 0 || x0 >= x1 || y0 >= y1 {
        return out;
    }
    if (w0, h0) == (width, height) {
        for y in y0..y1 {
            for x in x0..x1 {
                out.put_pixel(x, y, *img.get_pixel(x, y));
            }
        }
        return out;
    }
    let rows: Vec<(u32, Vec<f32>)> = (y0..y1).map(|o| triangle_taps(h0, height, o)).collect();
    let cols: Vec<(u32, Vec<f32>)> = (x0..x1).map(|o| triangle_taps(w0, width, o)).collect();
    // The input columns the horizontal pass reads (taps move right with the output column).
    let c0 = cols[0].0;
    let c1 = cols.last().map_or(c0, |(l, ws)| l + ws.len() as u32);
    let tw = (c1 - c0) as usize;
    // Vertical pass over those columns: `image` samples the (shifted, see `resize_gray`)
    // values into an f32 buffer unclamped.
    let src = img.as_raw();
    let mut tmp = vec![0f32; tw * rows.len()];
    for (r, (top, ws)) in rows.iter().enumerate() {
        let line = &mut tmp[r * tw..(r + 1) * tw];
        for (k, t) in line.iter_mut().enumerate() {
            let x = c0 as usize + k;
            let mut acc = 0.0f32;
            for (i, w) in ws.iter().enumerate() {
                let v = src[(*top as usize + i) * w0 as usize + x] + 0.5;
                acc += v * w;
            }
            *t = acc;
        }
    }
    // Horizontal pass, clamped to [0, 1] as `image` clamps f32 pixels, then shifted back.
    for (c, (left, ws)) in cols.iter().enumerate() {
        let x = x0 + c as u32;
        for r in 0..rows.len() {
            let line = &tmp[r * tw..(r + 1) * tw];
            let mut acc = 0.0f32;
            for (i, w) in ws.iter().enumerate() {
                acc += line[(left - c0) as usize + i] * w;
            }
            // `image` clamps with comparisons; `f32::clamp` gives the same for every value (NaN
            // stays NaN).
            let v = acc.clamp(0.0, 1.0);
            out.put_pixel(x, y0 + r as u32, image::Luma([v - 0.5]));
        }
    }
    out
}

/// `image`'s triangle-filter resize of an 8-bit RGB photo (`imageops::resize` with
/// `FilterType::Triangle`, its `vertical_sample` then `horizontal_sample`), bit for bit: the
/// same taps and weights, the same f32 operations in the same order, the same clamp and
/// rounding. `image` computes each output pixel with per-pixel accessors on four channels,
/// on one thread: a fifth of detecting and landmarking a 640x480 video frame (the photo
/// downscaled to 320 px for YuNet). Here each output row is one task: the vertical pass over
/// whole input rows (a loop the compiler vectorises), then the horizontal taps.
pub fn resize_rgb8(img: &image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    let (w0, h0) = img.dimensions();
    if w0 == 0 || h0 == 0 || width == 0 || height == 0 || (w0, h0) == (width, height) {
        // Nothing to sample: `image`'s own answer (an empty image or a copy).
        return imageops::resize(img, width, height, FilterType::Triangle);
    }
    let rows: Vec<(u32, Vec<f32>)> = (0..height).map(|o| triangle_taps(h0, height, o)).collect();
    let cols: Vec<(u32, Vec<f32>)> = (0..width).map(|o| triangle_taps(w0, width, o)).collect();
    let src = img.as_raw();
    let line = w0 as usize * 3;
    let mut out = vec![0u8; width as usize * height as usize * 3];
    out.par_chunks_mut(width as usize * 3)
        .zip(rows.par_iter())
        .for_each_init(
            || vec![0f32; line],
            |tmp, (o, (top, ws))| {
                // Vertical: this output row's samples of every input column, unclamped.
                tmp.fill(0.0);
                for (i, &w) in ws.iter().enumerate() {
                    let start = (*top as usize + i) * line;
                    for (t, &v) in tmp.iter_mut().zip(&src[start..start + line]) {
                        *t += v as f32 * w;
                    }
                }
                // Horizontal: clamped to [0, 255] and rounded half away from zero, as
                // `image` converts its f32 sums to u8.
                for ((left, ws), px) in cols.iter().zip(o.chunks_exact_mut(3)) {
                    let taps = &tmp[*left as usize * 3..(*left as usize + ws.len()) * 3];
                    let mut acc = [0f32; 3];
                    for (p, &w) in taps.chunks_exact(3).zip(ws) {
                        for ch in 0..3 {
                            acc[ch] += p[ch] * w;
                        }
                    }
                    for (d, a) in px.iter_mut().zip(acc) {
                        *d = round_u8(a.clamp(0.0, 255.0));
                    }
                }
            },
        );
    image::RgbImage::from_raw(width, height, out).expect("width x height x 3 bytes")
}

/// `v.round() as u8` for `v` in `[0, 255]` (half away from zero) without the C library's
/// `roundf` call (baseline x86-64 has no rounding instruction; the call was 4% of a video
/// frame's detection and landmarks): the truncation plus one where the fraction, exact in
/// f32 below 2^23, is at least a half.
fn round_u8(v: f32) -> u8 {
    let t = v as u8;
    t + u8::from(v - t as f32 >= 0.5)
}

/// The first input index and the normalised weights of output index `o` when `image`'s
/// triangle filter resizes `in_len` samples to `out_len` (as its `vertical_sample` and
/// `horizontal_sample` compute them).
fn triangle_taps(in_len: u32, out_len: u32, o: u32) -> (u32, Vec<f32>) {
    let ratio = in_len as f32 / out_len as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let src_support = 1.0 * sratio;
    let input = (o as f32 + 0.5) * ratio;
    let left = ((input - src_support).floor() as i64).clamp(0, in_len as i64 - 1) as u32;
    let right = ((input + src_support).ceil() as i64).clamp(left as i64 + 1, in_len as i64) as u32;
    let input = input - 0.5;
    let mut ws: Vec<f32> = (left..right)
        .map(|i| {
            let x = (i as f32 - input) / sratio;
            if x.abs() < 1.0 {
                1.0 - x.abs()
            } else {
                0.0
            }
        })
        .collect();
    let sum: f32 = ws.iter().fold(0.0, |s, w| s + w);
    for w in ws.iter_mut() {
        *w /= sum;
    }
    (left, ws)
}

/// Loads a face's whole image as grayscale, resized to `width` x `height`, with its keypoints
/// mapped into the resized image.
pub fn load_face_resized(face: &Face, width: u32, height: u32) -> Result<(GrayF32, Vec<Point>)> {
    if width == 0 || height == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot resize {} to {width}x{height}",
            face.image.display()
        )));
    }
    // Decoded, converted and resized while its pixels are held: the full-size image never
    // outlives its share of the decode budget.
    decode_with(&face.image, |img| {
        let img = gray_from_u8(&img.into_luma8());
        let from = img.dimensions();
        if let Some(size) = face.image_size.filter(|&s| s != from) {
            tracing::warn!(
                "{}: annotation says {}x{}, image is {}x{}",
                face.image.display(),
                size.0,
                size.1,
                from.0,
                from.1
            );
        }
        let points = scale_points(&face.keypoints, from, (width, height));
        Ok((resize_gray(&img, width, height), points))
    })
}

/// [`load_face_resized`] for many faces, in parallel (rayon), in the order given.
pub fn load_faces_resized(
    faces: &[Face],
    width: u32,
    height: u32,
) -> Result<Vec<(GrayF32, Vec<Point>)>> {
    faces
        .par_iter()
        .map(|f| load_face_resized(f, width, height))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// A black RGB image with a white 3x3 square centred on `(cx, cy)`.
    fn dot_image(w: u32, h: u32, cx: u32, cy: u32) -> RgbImage {
        let mut img = RgbImage::new(w, h);
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        img
    }

    fn brightest_centroid(img: &GrayF32) -> Point {
        let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
        for (x, y, p) in img.enumerate_pixels() {
            let w = p.0[0] + 0.5;
            sx += w * x as f32;
            sy += w * y as f32;
            sw += w;
        }
        Point::new(sx / sw, sy / sw)
    }

    #[test]
    fn a_region_resize_gives_the_full_resizes_pixels_bit_for_bit() {
        // Uneven values, shrinking and enlarging, odd ratios, one axis unchanged.
        let img = GrayF32::from_fn(97, 61, |x, y| {
            image::Luma([((x * 37 + y * 91) % 101) as f32 / 100.0 - 0.5])
        });
        for (w, h) in [(40, 25), (31, 61), (97, 30), (150, 90), (13, 7), (97, 61)] {
            let full = resize_gray(&img, w, h);
            let region = [w / 4, h / 3, w - w / 5, h - 1];
            let part = resize_gray_region(&img, w, h, region);
            assert_eq!(part.dimensions(), (w, h));
            for (x, y, p) in part.enumerate_pixels() {
                let inside = x >= region[0] && x < region[2] && y >= region[1] && y < region[3];
                if inside {
                    assert_eq!(
                        p[0].to_bits(),
                        full.get_pixel(x, y)[0].to_bits(),
                        "{w}x{h} ({x}, {y})"
                    );
                } else {
                    assert_eq!(p[0], 0.0);
                }
            }
            let all = resize_gray_region(&img, w, h, [0, 0, u32::MAX, u32::MAX]);
            assert_eq!(all.as_raw(), full.as_raw(), "{w}x{h}: the whole region");
        }
        let empty = resize_gray_region(&img, 10, 10, [5, 5, 5, 9]);
        assert!(empty.as_raw().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn rounding_to_u8_rounds_halves_away_from_zero_as_round_does() {
        let mut v = 0f32;
        while v <= 255.0 {
            for x in [v, f32::from_bits(v.to_bits().saturating_sub(1)), v + 0.5] {
                let x = x.clamp(0.0, 255.0);
                assert_eq!(round_u8(x), x.round() as u8, "{x}");
            }
            v += 0.25;
        }
        assert_eq!(round_u8(0.499_999_97), 0);
        assert_eq!(round_u8(254.5), 255);
    }

    #[test]
    fn the_rgb_resize_gives_images_triangle_resize_bit_for_bit() {
        // Uneven values; shrinking by 2 (a video frame for the detector), by odd ratios,
        // enlarging, one axis unchanged, a single row.
        let img = image::RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([
                ((x * 37 + y * 91) % 256) as u8,
                ((x * 11 + y * 7 + 3) % 256) as u8,
                ((x * y + 200) % 256) as u8,
            ])
        });
        for (w, h) in [
            (48, 30),
            (40, 25),
            (31, 61),
            (150, 90),
            (13, 7),
            (97, 61),
            (5, 1),
        ] {
            let want = imageops::resize(&img, w, h, FilterType::Triangle);
            let got = resize_rgb8(&img, w, h);
            assert_eq!(got.dimensions(), (w, h));
            assert!(got.as_raw() == want.as_raw(), "{w}x{h}");
        }
    }

    #[test]
    fn gray_range_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        dot_image(20, 10, 5, 5).save(&p).unwrap();
        assert_eq!(image_dimensions(&p).unwrap(), (20, 10));
        let g = load_gray(&p).unwrap();
        assert_eq!(g.dimensions(), (20, 10));
        assert_eq!(g.get_pixel(0, 0).0[0], -0.5);
        assert_eq!(g.get_pixel(5, 5).0[0], 0.5);
    }

    #[test]
    fn resize_keeps_the_dot_on_its_mapped_keypoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        dot_image(64, 48, 40, 12).save(&p).unwrap();
        let face = Face::new(&p, vec![Point::new(40.0, 12.0)]);
        for (w, h) in [(32, 24), (16, 12), (128, 96), (64, 48)] {
            let (img, pts) = load_face_resized(&face, w, h).unwrap();
            assert_eq!(img.dimensions(), (w, h));
            let c = brightest_centroid(&img);
            assert!(
                c.distance(pts[0]) < 0.15,
                "{w}x{h}: dot {c:?} vs keypoint {:?}",
                pts[0]
            );
        }
    }

    #[test]
    fn scale_points_is_pixel_centre_exact() {
        let p = scale_points(
            &[Point::new(-0.5, -0.5), Point::new(9.5, 4.5)],
            (10, 5),
            (20, 20),
        );
        assert_eq!(p[0], Point::new(-0.5, -0.5));
        assert_eq!(p[1], Point::new(19.5, 19.5));
    }

    #[test]
    fn decodes_in_flight_never_hold_more_pixels_than_the_budget() {
        let budget = DecodeBudget {
            held: std::sync::Mutex::new((0, 0)),
            freed: std::sync::Condvar::new(),
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (budget, done) = (&budget, &done);
                s.spawn(move || {
                    // 300-600 pixels each against a budget of 1,000: at most 3 at once.
                    let _p = budget.take(300 + 50 * i, 1_000);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        let (held, peak) = *budget.held.lock().unwrap();
        assert_eq!(done.into_inner(), 8);
        assert_eq!(held, 0, "every permit gave its pixels back");
        assert!((600..=1_000).contains(&peak), "peak {peak}");
        // An image bigger than the whole budget still decodes, alone.
        drop(budget.take(5_000, 1_000));
        assert_eq!(budget.held.lock().unwrap().1, 1_000);
    }

    #[test]
    fn parallel_loader_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let faces: Vec<Face> = (0..6u8)
            .map(|i| {
                let p = dir.path().join(format!("{i}.png"));
                GrayImage::from_pixel(8, 8, Luma([i * 40]))
                    .save(&p)
                    .unwrap();
                Face::new(p, vec![])
            })
            .collect();
        let out = load_faces_resized(&faces, 2, 2).unwrap();
        for (i, (img, _)) in out.iter().enumerate() {
            let want = (i as f32 * 40.0) / 255.0 - 0.5;
            assert!((img.get_pixel(1, 1).0[0] - want).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_images_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.jpg");
        let e = load_gray(&missing).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("missing.jpg"), "{e}");

        let good = dir.path().join("good.jpg");
        dot_image(64, 48, 10, 10).save(&good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        for (name, cut) in [("header.jpg", 40), ("half.jpg", bytes.len() / 2)] {
            let p = dir.path().join(name);
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = load_gray(&p).unwrap_err();
            assert!(matches!(e, Error::Image { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
        let text = dir.path().join("text.jpg");
        std::fs::write(&text, "not an image").unwrap();
        let e = image_dimensions(&text).unwrap_err();
        assert!(e.to_string().contains("text.jpg"), "{e}");
    }

    #[test]
    fn zero_size_is_rejected() {
        let face = Face::new("x.png", vec![]);
        assert!(matches!(
            load_face_resized(&face, 0, 10),
            Err(Error::InvalidArgument(_))
        ));
    }
}
