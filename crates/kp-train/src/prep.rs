//! Turning dataset faces into network inputs: a per-run cache of decoded, pre-scaled images,
//! and the augmentation step that maps each face (and its keypoints) to the input size.

use kp_augment::{Affine, Pipeline};
use kp_data::{BBox, Face, GrayF32, Point};
use rayon::prelude::*;

use crate::error::Result;

/// A face decoded once per run, scaled so that it is not much larger than the network input.
#[derive(Debug, Clone)]
pub struct CachedFace {
    /// Grayscale image at the cache scale.
    pub image: GrayF32,
    /// Keypoints (the selected subset) at the cache scale.
    pub keypoints: Vec<Point>,
    /// Face box at the cache scale, when the face has one.
    pub bbox: Option<BBox>,
    /// Map from original image pixels to cache pixels.
    pub to_cache: Affine,
    /// Keypoints (the selected subset) in original image pixels.
    pub original: Vec<Point>,
}

/// One prepared sample at the network's input size.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The input image (width x height of the network).
    pub image: GrayF32,
    /// Keypoints in input pixels.
    pub keypoints: Vec<Point>,
    /// Map from original image pixels to input pixels.
    pub to_input: Affine,
}

/// Selects the keypoint subset (`None` = all).
pub fn select(points: &[Point], subset: Option<&[usize]>) -> Vec<Point> {
    match subset {
        None => points.to_vec(),
        Some(idx) => idx.iter().filter_map(|&i| points.get(i).copied()).collect(),
    }
}

/// Decodes and pre-scales an image for a network of `width`x`height`.
///
/// With a face box, the image is shrunk (never enlarged) so the box side is at most the input
/// side; without one, the whole image is resized to the input size (the seed's IMM recipe).
pub fn cache_image(
    image: &GrayF32,
    bbox: Option<BBox>,
    width: usize,
    height: usize,
) -> (GrayF32, Affine) {
    let (w0, h0) = (image.width() as f64, image.height() as f64);
    let (w1, h1) = match bbox {
        Some(b) => {
            let side = b.width.max(b.height).max(1.0) as f64;
            let s = (width.max(height) as f64 / side).min(1.0);
            (
                ((w0 * s).round() as u32).max(1),
                ((h0 * s).round() as u32).max(1),
            )
        }
        None => (width as u32, height as u32),
    };
    if w1 as f64 == w0 && h1 as f64 == h0 {
        return (image.clone(), Affine::IDENTITY);
    }
    // kp_data's resize keeps the [-0.5, 0.5] range (image's float resize clamps to [0, 1]).
    let resized = kp_data::loading::resize_gray(image, w1, h1);
    (resized, Affine::resize(w0, h0, w1 as f64, h1 as f64))
}

/// Decodes one face into a [`CachedFace`].
pub fn cache_face(
    face: &Face,
    subset: Option<&[usize]>,
    width: usize,
    height: usize,
) -> Result<CachedFace> {
    let full = kp_data::loading::load_gray(&face.image)?;
    Ok(cache_decoded(&full, face, subset, width, height))
}

/// Builds a [`CachedFace`] from an already decoded image of `face`.
pub fn cache_decoded(
    full: &GrayF32,
    face: &Face,
    subset: Option<&[usize]>,
    width: usize,
    height: usize,
) -> CachedFace {
    let (image, to_cache) = cache_image(full, face.bbox, width, height);
    let original = select(&face.keypoints, subset);
    CachedFace {
        keypoints: to_cache.apply_all(&original),
        bbox: face.bbox.map(|b| to_cache.apply_bbox(b)),
        image,
        to_cache,
        original,
    }
}

/// Decodes all faces in parallel; one result per face, in order.
pub fn cache_faces(
    faces: &[Face],
    subset: Option<&[usize]>,
    width: usize,
    height: usize,
) -> Vec<Result<CachedFace>> {
    faces
        .par_iter()
        .map(|f| cache_face(f, subset, width, height))
        .collect()
}

/// Applies `pipeline` to a cached face with a per-sample seed.
pub fn prepare(pipeline: &Pipeline, face: &CachedFace, seed: u64) -> Result<Sample> {
    let out = pipeline.apply(&face.image, &face.keypoints, face.bbox, seed)?;
    Ok(Sample {
        to_input: face.to_cache.then(out.transform),
        image: out.image,
        keypoints: out.keypoints,
    })
}

/// A per-sample seed from the run seed, the epoch and the face index (SplitMix64 mixing).
pub fn sample_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Downscaling keeps pixels darker than mid-grey (a clamping resize would zero them).
    #[test]
    fn cache_image_keeps_the_full_pixel_range() {
        let img = GrayF32::from_fn(64, 48, |x, _| image::Luma([x as f32 / 63.0 - 0.5]));
        let (small, _) = cache_image(&img, None, 16, 12);
        assert_eq!(small.dimensions(), (16, 12));
        let min = small.iter().cloned().fold(f32::INFINITY, f32::min);
        let max = small.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert!(min < -0.4, "darkest pixel {min}");
        assert!(max > 0.4, "brightest pixel {max}");
        let mean = small.iter().sum::<f32>() / small.len() as f32;
        assert!(mean.abs() < 0.02, "mean {mean}");
    }
}
