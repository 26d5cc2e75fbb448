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
    let (w1, h1, to_cache) = cache_size(image.width(), image.height(), bbox, width, height);
    if to_cache == Affine::IDENTITY {
        return (image.clone(), to_cache);
    }
    // kp_data's resize keeps the [-0.5, 0.5] range (image's float resize clamps to [0, 1]).
    (kp_data::loading::resize_gray(image, w1, h1), to_cache)
}

/// The cache image's size for an image of `w0 x h0` ([`cache_image`]) and the map into it
/// (the identity when the image is kept as it is).
fn cache_size(
    w0: u32,
    h0: u32,
    bbox: Option<BBox>,
    width: usize,
    height: usize,
) -> (u32, u32, Affine) {
    let (fw, fh) = (w0 as f64, h0 as f64);
    let (w1, h1) = match bbox {
        Some(b) => {
            let side = b.width.max(b.height).max(1.0) as f64;
            let s = (width.max(height) as f64 / side).min(1.0);
            (
                ((fw * s).round() as u32).max(1),
                ((fh * s).round() as u32).max(1),
            )
        }
        None => (width as u32, height as u32),
    };
    if (w1, h1) == (w0, h0) {
        (w0, h0, Affine::IDENTITY)
    } else {
        (w1, h1, Affine::resize(fw, fh, w1 as f64, h1 as f64))
    }
}

/// [`cache_decoded`] for a single prediction through `pipeline` with `seed`: the pipeline's
/// plan for the face is drawn first (it depends on the sizes and the box, not on pixels), and
/// only the cache pixels its warp reads are computed ([`kp_data::loading::resize_gray_region`]).
/// [`prepare`] with the same pipeline and seed then gives the sample the whole cache image
/// gives, bit for bit, for a fraction of the work on a photo much larger than its face.
pub fn cache_for_sample(
    full: &GrayF32,
    face: &Face,
    width: usize,
    height: usize,
    pipeline: &Pipeline,
    seed: u64,
) -> Result<CachedFace> {
    let (w1, h1, to_cache) = cache_size(full.width(), full.height(), face.bbox, width, height);
    let keypoints = to_cache.apply_all(&face.keypoints);
    let bbox = face.bbox.map(|b| to_cache.apply_bbox(b));
    let plan = pipeline.plan(w1, h1, &keypoints, bbox, seed)?;
    let region = plan
        .transform
        .inverse()
        .map(|inv| footprint(&inv, plan.width, plan.height))
        .unwrap_or([0, 0, w1, h1]);
    Ok(CachedFace {
        image: kp_data::loading::resize_gray_region(full, w1, h1, region),
        keypoints,
        bbox,
        to_cache,
        original: face.keypoints.clone(),
    })
}

/// The source pixels a warp of `ow x oh` output pixels through `inv` (output → source) can
/// read: each output pixel's supersampling taps lie within half a pixel of its centre, and
/// bilinear sampling reads the pixel after each tap's floor; two pixels more each side cover
/// the warp's fixed-point rounding.
fn footprint(inv: &Affine, ow: u32, oh: u32) -> [u32; 4] {
    let (x1, y1) = (ow as f64 - 0.5, oh as f64 - 0.5);
    let corners = [(-0.5, -0.5), (x1, -0.5), (-0.5, y1), (x1, y1)].map(|(x, y)| inv.apply_xy(x, y));
    let lo = |v: f64| (v.floor() - 2.0).max(0.0) as u32;
    let hi = |v: f64| (v.ceil() + 3.0).clamp(0.0, u32::MAX as f64) as u32;
    let (mut min_x, mut min_y) = (f64::INFINITY, f64::INFINITY);
    let (mut max_x, mut max_y) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for (x, y) in corners {
        (min_x, max_x) = (min_x.min(x), max_x.max(x));
        (min_y, max_y) = (min_y.min(y), max_y.max(y));
    }
    if !(min_x.is_finite() && max_x.is_finite() && min_y.is_finite() && max_y.is_finite()) {
        return [0, 0, u32::MAX, u32::MAX];
    }
    [lo(min_x), lo(min_y), hi(max_x), hi(max_y)]
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

    /// A prediction's cache holds only what the warp reads, and gives the same sample as the
    /// whole cache image: for the 300-W crop, a random rotation and shift, any face size, a
    /// face at the border, with and without a box.
    #[test]
    fn a_sample_from_the_faces_region_equals_the_sample_from_the_whole_cache() {
        use crate::augment::AugmentPreset;
        let photo = GrayF32::from_fn(640, 480, |x, y| {
            image::Luma([((x * 31 + y * 17) % 97) as f32 / 96.0 - 0.5])
        });
        let ibug = AugmentPreset::IbugEval.config().unwrap();
        let mut pipes = vec![Pipeline::new(ibug.clone()).unwrap()];
        let mut small = ibug;
        (small.width, small.height) = (128, 128);
        pipes.push(Pipeline::new(small).unwrap());
        let mut rot = kp_augment::PipelineConfig::preset("shift-rotate").unwrap();
        (rot.width, rot.height) = (160, 120);
        pipes.push(Pipeline::new(rot).unwrap());
        let boxes = [
            Some(BBox::new(200.0, 120.0, 250.0, 260.0)),
            Some(BBox::new(300.0, 200.0, 60.0, 60.0)),
            Some(BBox::new(-40.0, 380.0, 150.0, 140.0)),
            None,
        ];
        for pipe in &pipes {
            let (w, h) = pipe.output_size();
            for b in boxes {
                let mut face = Face::new("", Vec::new());
                face.bbox = b;
                for seed in [1, 7] {
                    let whole = cache_decoded(&photo, &face, None, w as usize, h as usize);
                    let Ok(a) = prepare(pipe, &whole, seed) else {
                        // A crop without a box: refused on both paths.
                        let part =
                            cache_for_sample(&photo, &face, w as usize, h as usize, pipe, seed);
                        if let Ok(part) = part {
                            assert!(prepare(pipe, &part, seed).is_err());
                        }
                        continue;
                    };
                    let part = cache_for_sample(&photo, &face, w as usize, h as usize, pipe, seed)
                        .unwrap();
                    assert_eq!(part.to_cache, whole.to_cache);
                    let b2 = prepare(pipe, &part, seed).unwrap();
                    assert_eq!(a.to_input, b2.to_input);
                    assert!(
                        a.image.as_raw() == b2.image.as_raw(),
                        "{:?} box {b:?} seed {seed}: the samples differ",
                        pipe.output_size()
                    );
                }
            }
        }
    }

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
