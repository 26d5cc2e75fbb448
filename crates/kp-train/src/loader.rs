//! Batching: seeded shuffling, parallel sample preparation (rayon) and prefetching on a
//! background thread so the model never waits for data.

use std::sync::mpsc;

use kp_augment::Pipeline;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::Result;
use crate::prep::{prepare, sample_seed, CachedFace, Sample};

/// A batch in host memory: images `(B, 1, H, W)` and targets `(B, 2K)` as flat vectors.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// Dataset indices of the faces in the batch.
    pub indices: Vec<usize>,
    /// Pixels, `B * H * W`.
    pub images: Vec<f32>,
    /// Normalised targets `x / W, y / H` per point, `B * 2K`.
    pub targets: Vec<f32>,
    /// The prepared samples (for metrics that need the input transforms).
    pub samples: Vec<Sample>,
}

impl HostBatch {
    /// Number of faces.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The training order of one epoch: `indices` shuffled with a seed derived from `seed` and `epoch`.
pub fn epoch_order(indices: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = indices.to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(sample_seed(seed, epoch, usize::MAX));
    order.shuffle(&mut rng);
    order
}

/// Normalises input-pixel keypoints to `x / W, y / H`.
pub fn normalise(sample: &Sample, width: usize, height: usize, out: &mut Vec<f32>) {
    for p in &sample.keypoints {
        out.push(p.x / width as f32);
        out.push(p.y / height as f32);
    }
}

/// Builds one batch, preparing its samples in parallel.
pub fn make_batch(
    cache: &[CachedFace],
    pipeline: &Pipeline,
    indices: &[usize],
    seed: u64,
    epoch: usize,
    width: usize,
    height: usize,
) -> Result<HostBatch> {
    let samples: Vec<Sample> = indices
        .par_iter()
        .map(|&i| prepare(pipeline, &cache[i], sample_seed(seed, epoch, i)))
        .collect::<Result<_>>()?;
    let mut images = Vec::with_capacity(indices.len() * width * height);
    let mut targets = Vec::new();
    for s in &samples {
        images.extend_from_slice(s.image.as_raw());
        normalise(s, width, height, &mut targets);
    }
    Ok(HostBatch {
        indices: indices.to_vec(),
        images,
        targets,
        samples,
    })
}

/// Runs `consume` on every batch of `order` (chunks of `batch_size`) while a background thread
/// prepares the next `prefetch` batches.
#[allow(clippy::too_many_arguments)]
pub fn for_each_batch<F>(
    cache: &[CachedFace],
    pipeline: &Pipeline,
    order: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
    dims: (usize, usize),
    prefetch: usize,
    consume: F,
) -> Result<()>
where
    F: FnMut(HostBatch) -> Result<()>,
{
    let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
    for_each_chunk(
        cache, pipeline, &chunks, seed, epoch, dims, prefetch, consume,
    )
}

/// Runs `consume` on the batch of every chunk of face indices, in order (an empty chunk gives an
/// empty batch), while a background thread prepares the next `prefetch` batches.
#[allow(clippy::too_many_arguments)]
pub fn for_each_chunk<F>(
    cache: &[CachedFace],
    pipeline: &Pipeline,
    chunks: &[&[usize]],
    seed: u64,
    epoch: usize,
    (width, height): (usize, usize),
    prefetch: usize,
    mut consume: F,
) -> Result<()>
where
    F: FnMut(HostBatch) -> Result<()>,
{
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<HostBatch>>(prefetch.max(1));
        scope.spawn(move || {
            for chunk in chunks {
                let batch = make_batch(cache, pipeline, chunk, seed, epoch, width, height);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        for batch in rx {
            consume(batch?)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let idx: Vec<usize> = (0..50).collect();
        let a = epoch_order(&idx, 7, 1);
        let b = epoch_order(&idx, 7, 1);
        let c = epoch_order(&idx, 7, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, idx);
    }
}
