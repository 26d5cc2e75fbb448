//! Data-parallel training: one process per GPU (or CPU), each training on its part of every
//! batch, gradients summed over the processes before every optimizer step.
//!
//! The semantics are PyTorch's `DistributedDataParallel`, chosen so that a job of `n` processes
//! follows the same trajectory as one process with the same global batch:
//! - every rank builds the same model from the same seed, and rank 0's variables are
//!   broadcast before the first step and after every epoch (so BatchNorm's running statistics,
//!   which each rank measures on its own faces, are rank 0's in every checkpoint);
//! - each global batch (the configured `batch_size`, drawn in the single-process order) is cut
//!   into contiguous parts, one per rank ([`World::shard`]); rank `r`'s loss is its part's mean,
//!   so its gradient is weighted by `part / batch` before the sum: the sum is exactly the
//!   gradient of the global batch's mean loss, also for a short last batch (a rank whose part is
//!   empty contributes zeros);
//! - the sum is taken in buckets of about [`DEFAULT_BUCKET_BYTES`] ([`BucketPlan`]): each
//!   bucket's gradients are flattened into one buffer, reduced in one collective call and cut
//!   back. candle returns every gradient at once at the end of the backward pass, so unlike
//!   PyTorch there is no backward to overlap with; buckets bound the extra memory and keep the
//!   calls few and large, which is what NCCL's bandwidth needs;
//! - every rank runs the same Adam on the same summed gradients, so the weights stay equal;
//!   rank 0 alone evaluates, writes metrics and checkpoints; `--resume` reloads them on
//!   every rank.
//!
//! BatchNorm normalises with each rank's own part of the batch (as PyTorch without
//! `SyncBatchNorm`), so networks with BatchNorm match single-process training only in
//! distribution; networks without it match to float rounding (the tests check both the
//! bucketing and a two-rank run of the trainer against one process).
//!
//! The transport is NCCL on CUDA devices when kp is built with the `nccl` feature
//! (`kp_ops::nccl`; the rendezvous hands out NCCL's unique id), otherwise TCP through rank 0
//! ([`tcp::TcpGroup`]). The job is described by torchrun's variables ([`World::from_env`]).

pub mod tcp;
pub mod world;

#[cfg(feature = "nccl")]
mod nccl;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

pub use tcp::TcpGroup;
pub use world::{shard, World};

use crate::error::{Error, Result};

/// Gradient bytes per collective call (PyTorch DDP's default `bucket_cap_mb` is 25).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Sums and broadcasts of 1-D f32 tensors over the ranks of a job.
pub trait Collective {
    /// This rank's place in the job.
    fn world(&self) -> &World;
    /// The sum of `t` over the ranks (every rank gets the same values).
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor>;
    /// Rank 0's `t` on every rank.
    fn broadcast(&mut self, t: &Tensor) -> Result<Tensor>;
}

impl Collective for TcpGroup {
    fn world(&self) -> &World {
        TcpGroup::world(self)
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        let mut v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        TcpGroup::all_reduce_sum(self, &mut v)?;
        let n = v.len();
        Ok(Tensor::from_vec(v, n, t.device())?)
    }

    fn broadcast(&mut self, t: &Tensor) -> Result<Tensor> {
        let mut v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        TcpGroup::broadcast(self, &mut v)?;
        let n = v.len();
        Ok(Tensor::from_vec(v, n, t.device())?)
    }
}

/// Joins the job of `world` for a model on `device`: NCCL for CUDA devices in builds with the
/// `nccl` feature, TCP through rank 0 otherwise. `fingerprint` identifies the run (see
/// [`fingerprint`]): ranks of another run are refused.
pub fn connect(world: &World, device: &Device, fingerprint: u64) -> Result<Box<dyn Collective>> {
    let timeout = tcp::default_timeout()?;
    #[cfg(feature = "nccl")]
    if device.is_cuda() {
        return nccl::connect(world, device, fingerprint, timeout);
    }
    if device.is_cuda() {
        tracing::warn!(
            "this kp was built without the `nccl` feature: gradients travel through rank 0 over \
             TCP and the host (slow on GPUs)"
        );
    }
    Ok(Box::new(TcpGroup::connect(
        world,
        fingerprint,
        &[],
        timeout,
    )?))
}

/// A stable 64-bit hash (FNV-1a) of `bytes`: ranks compare it to recognise their own run.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Which variables go into which collective call: consecutive variables packed greedily into
/// buckets of at most `cap` elements (a larger variable gets a bucket of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    buckets: Vec<std::ops::Range<usize>>,
}

impl BucketPlan {
    /// Plans buckets for variables of `sizes` elements, in their order.
    pub fn new(sizes: &[usize], cap: usize) -> Self {
        let mut buckets = Vec::new();
        let (mut start, mut filled) = (0, 0);
        for (i, &n) in sizes.iter().enumerate() {
            if i > start && filled + n > cap {
                buckets.push(start..i);
                (start, filled) = (i, 0);
            }
            filled += n;
        }
        if start < sizes.len() {
            buckets.push(start..sizes.len());
        }
        Self { buckets }
    }

    /// The buckets, as ranges of variable indices covering every variable once, in order.
    pub fn buckets(&self) -> &[std::ops::Range<usize>] {
        &self.buckets
    }
}

/// Gradients and scalars summed over the ranks.
pub struct Reduced {
    /// The summed gradient of every variable that had one on some rank.
    pub grads: GradStore,
    /// The summed (weighted) scalars, in the order given.
    pub scalars: Vec<f32>,
}

/// A model's variables kept equal over the ranks of a job.
pub struct DataParallel {
    comm: Box<dyn Collective>,
    vars: Vec<(String, Var)>,
    plan: BucketPlan,
}

impl DataParallel {
    /// Keeps the float variables of `vars` (name, variable; every rank's list in the same order)
    /// in step over `comm`, with buckets of about `bucket_bytes`. Integer variables (BatchNorm's
    /// `num_batches_tracked`, a count of training batches) are left to each rank: rank 0's,
    /// the one checkpoints hold, counts every step, as one process's would.
    pub fn new(
        comm: Box<dyn Collective>,
        mut vars: Vec<(String, Var)>,
        bucket_bytes: usize,
    ) -> Result<Self> {
        vars.retain(|(_, v)| v.dtype().is_float());
        if let Some((name, v)) = vars.iter().find(|(_, v)| v.dtype() != DType::F32) {
            return Err(Error::Config(format!(
                "data-parallel training needs f32 variables; `{name}` is {:?}",
                v.dtype()
            )));
        }
        let sizes: Vec<usize> = vars.iter().map(|(_, v)| v.elem_count()).collect();
        let plan = BucketPlan::new(&sizes, (bucket_bytes / 4).max(1));
        Ok(Self { comm, vars, plan })
    }

    /// This rank's place in the job.
    pub fn world(&self) -> &World {
        self.comm.world()
    }

    /// The bucket plan.
    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    /// Sets every variable to rank 0's value.
    pub fn broadcast_vars(&mut self) -> Result<()> {
        for b in self.plan.buckets.clone() {
            let parts: Vec<Tensor> = self.vars[b.clone()]
                .iter()
                .map(|(_, v)| v.as_tensor().flatten_all())
                .collect::<candle_core::Result<_>>()?;
            let flat = self.comm.broadcast(&Tensor::cat(&parts, 0)?)?;
            for ((_, v), t) in self.vars[b.clone()]
                .iter()
                .zip(unflatten(&flat, &self.vars[b])?)
            {
                v.set(&t)?;
            }
        }
        Ok(())
    }

    /// Sums `weight · gradient` and `weight · scalars` over the ranks. `grads` is this rank's
    /// backward pass (`None` when its part of the batch was empty); `weight` its part's share of
    /// the global batch. A variable gets a summed gradient when some rank had one for it.
    pub fn reduce(
        &mut self,
        grads: Option<&GradStore>,
        weight: f64,
        scalars: &[f32],
    ) -> Result<Reduced> {
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let grad_of = |v: &Var| grads.and_then(|g| g.get(v.as_tensor()));
        // One small call first: the scalars and which variables have a gradient anywhere.
        let mut head: Vec<f32> = scalars.iter().map(|s| s * weight as f32).collect();
        head.extend(
            self.vars
                .iter()
                .map(|(_, v)| if grad_of(v).is_some() { 1.0 } else { 0.0 }),
        );
        let n_head = head.len();
        let head = self
            .comm
            .all_reduce_sum(&Tensor::from_vec(head, n_head, &device)?)?
            .to_vec1::<f32>()?;
        let (scalars, present) = head.split_at(scalars.len());
        let mut out = GradStore::default();
        for b in self.plan.buckets.clone() {
            if !present[b.clone()].iter().any(|&p| p > 0.0) {
                continue;
            }
            let parts: Vec<Tensor> = self.vars[b.clone()]
                .iter()
                .map(|(_, v)| match grad_of(v) {
                    Some(g) => g.flatten_all()?.affine(weight, 0.0),
                    None => Tensor::zeros(v.elem_count(), DType::F32, v.device()),
                })
                .collect::<candle_core::Result<_>>()?;
            let sum = self.comm.all_reduce_sum(&Tensor::cat(&parts, 0)?)?;
            let vars = &self.vars[b.clone()];
            for (i, ((_, v), g)) in vars.iter().zip(unflatten(&sum, vars)?).enumerate() {
                if present[b.start + i] > 0.0 {
                    out.insert(v.as_tensor(), g);
                }
            }
        }
        Ok(Reduced {
            grads: out,
            scalars: scalars.to_vec(),
        })
    }
}

/// A bucket's flat buffer cut back into tensors of its variables' shapes, in order.
fn unflatten(flat: &Tensor, vars: &[(String, Var)]) -> Result<Vec<Tensor>> {
    let mut off = 0;
    vars.iter()
        .map(|(_, v)| {
            let n = v.elem_count();
            off += n;
            Ok(flat.narrow(0, off - n, n)?.reshape(v.shape())?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn buckets_cover_every_variable_once_in_order_and_respect_the_cap(
            sizes in proptest::collection::vec(1usize..100, 0..40),
            cap in 1usize..300,
        ) {
            let plan = BucketPlan::new(&sizes, cap);
            let mut next = 0;
            for b in plan.buckets() {
                prop_assert_eq!(b.start, next);
                prop_assert!(!b.is_empty());
                let total: usize = sizes[b.clone()].iter().sum();
                prop_assert!(total <= cap || b.len() == 1);
                next = b.end;
            }
            prop_assert_eq!(next, sizes.len());
        }
    }

    #[test]
    fn fingerprints_differ_for_different_runs_and_are_stable() {
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fingerprint(b"{\"seed\":1}"), fingerprint(b"{\"seed\":2}"));
    }

    fn var(values: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap()
    }

    /// Runs `f` on two ranks joined over loopback TCP.
    fn two_ranks<T: Send>(f: impl Fn(usize, Box<dyn Collective>) -> T + Sync) -> Vec<T> {
        tcp::tests::run(tcp::tests::worlds(2), vec![9; 2], |g| {
            let g = g.unwrap();
            f(g.world().rank, Box::new(g))
        })
    }

    #[test]
    fn gradients_are_summed_with_each_ranks_share_across_buckets() {
        // Three variables, buckets of 3 elements: [a], [b, c] (b and c have 1 + 2 elements).
        let out = two_ranks(|rank, comm| {
            let r = rank as f32;
            let vars = vec![
                ("a".to_string(), var(&[0.0, 0.0, 0.0])),
                ("b".to_string(), var(&[0.0])),
                ("c".to_string(), var(&[0.0, 0.0])),
            ];
            let mut dp = DataParallel::new(comm, vars.clone(), 12).unwrap();
            assert_eq!(dp.plan().buckets(), &[0..1, 1..3]);
            // A loss whose gradient is known: sum(a·ka) + sum(b·kb); `c` gets no gradient.
            let (a, b) = (vars[0].1.as_tensor(), vars[1].1.as_tensor());
            let ka = Tensor::new(&[1.0 + r, 2.0, 3.0 * (1.0 + r)], &Device::Cpu).unwrap();
            let kb = Tensor::new(&[10.0 * (1.0 + r)], &Device::Cpu).unwrap();
            let loss = ((a * &ka).unwrap().sum_all().unwrap()
                + (b * &kb).unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            // Rank 0 had 3 of 4 faces, rank 1 one.
            let weight = if rank == 0 { 0.75 } else { 0.25 };
            let red = dp.reduce(Some(&grads), weight, &[4.0 * (1.0 + r)]).unwrap();
            let g = |v: &Var| {
                red.grads
                    .get(v.as_tensor())
                    .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            };
            (
                g(&vars[0].1),
                g(&vars[1].1),
                g(&vars[2].1),
                red.scalars.clone(),
            )
        });
        for (a, b, c, s) in out {
            assert_eq!(a.unwrap(), vec![0.75 + 0.5, 2.0, 2.25 + 1.5]);
            assert_eq!(b.unwrap(), vec![7.5 + 5.0]);
            assert_eq!(c, None, "no rank had a gradient for c");
            assert_eq!(s, vec![3.0 + 2.0]);
        }
    }

    #[test]
    fn a_rank_with_no_faces_contributes_zeros_and_broadcast_sets_rank_0s_values() {
        let out = two_ranks(|rank, comm| {
            let v = var(&[rank as f32 + 1.0, 5.0]);
            let mut dp = DataParallel::new(comm, vec![("v".into(), v.clone())], 1 << 20).unwrap();
            let loss = (v.as_tensor() * 2.0).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let red = if rank == 0 {
                dp.reduce(Some(&grads), 1.0, &[1.0]).unwrap()
            } else {
                dp.reduce(None, 0.0, &[0.0]).unwrap()
            };
            let g = red
                .grads
                .get(v.as_tensor())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            dp.broadcast_vars().unwrap();
            (g, v.as_tensor().to_vec1::<f32>().unwrap(), red.scalars)
        });
        for (g, v, s) in out {
            assert_eq!(g, vec![2.0, 2.0]);
            assert_eq!(v, vec![1.0, 5.0]);
            assert_eq!(s, vec![1.0]);
        }
    }
}
