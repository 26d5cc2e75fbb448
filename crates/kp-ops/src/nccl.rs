//! NCCL collectives on candle tensors (feature `nccl`), for data-parallel training over several
//! GPUs: a sum over the ranks (`all_reduce`) and a broadcast from one rank.
//!
//! The communicator runs on the candle device's own stream, so a collective is ordered after the
//! kernels that wrote its input (the backward pass) and before those that read its output (the
//! optimizer step), with no synchronisation on the host. Each call writes a new buffer, as
//! candle's tensors are immutable; the gradients of one bucket are reduced in one call.
//!
//! The communicator is made from a unique id that one rank draws ([`unique_id`]) and every
//! other rank receives out of band (kp-train hands it over at its TCP rendezvous).

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp1, Device, Error, Layout, Result, Shape, Tensor,
};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Msg(format!("NCCL {what}: {e:?}"))
}

/// A new NCCL unique id: rank 0 draws it and every rank passes it to [`Nccl::new`].
pub fn unique_id() -> Result<[u8; 128]> {
    let id = Id::new().map_err(|e| nccl_err("unique id", e))?;
    Ok(id.internal().map(|c| c as u8))
}

/// One rank's NCCL communicator on a CUDA device.
pub struct Nccl {
    comm: Comm,
}

impl Nccl {
    /// Joins the communicator of `id` as `rank` of `world_size` on `device` (blocks until every
    /// rank has joined, as `ncclCommInitRank` does).
    pub fn new(device: &Device, rank: usize, world_size: usize, id: [u8; 128]) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            bail!("NCCL needs a CUDA device, not {device:?}")
        };
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let comm = Comm::from_rank(dev.cuda_stream(), rank, world_size, id)
            .map_err(|e| nccl_err("init", e))?;
        Ok(Self { comm })
    }

    /// The element-wise sum of the f32 tensor `t` over the ranks.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        t.contiguous()?.apply_op1_no_bwd(&Collective {
            comm: &self.comm,
            root: None,
        })
    }

    /// Rank `root`'s f32 tensor `t` on every rank.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        t.contiguous()?.apply_op1_no_bwd(&Collective {
            comm: &self.comm,
            root: Some(root),
        })
    }
}

/// One collective as a candle op: a sum (`root: None`) or a broadcast from `root`.
struct Collective<'a> {
    comm: &'a Comm,
    root: Option<usize>,
}

impl CustomOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        match self.root {
            None => "nccl-all-reduce",
            Some(_) => "nccl-broadcast",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("{} needs a CUDA tensor", self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let x = crate::cuda_kernels::view(s, l, self.name())?;
        let dev = s.device().clone();
        let n = l.shape().elem_count();
        // SAFETY: NCCL writes all `n` elements.
        let mut y = unsafe { dev.alloc::<f32>(n)? };
        match self.root {
            None => self
                .comm
                .all_reduce(&x, &mut y, &ReduceOp::Sum)
                .map_err(|e| nccl_err("all-reduce", e))?,
            Some(root) => self
                .comm
                .broadcast(Some(&x), &mut y, root as i32)
                .map_err(|e| nccl_err("broadcast", e))?,
        };
        Ok((CudaStorage::wrap_cuda_slice(y, dev), l.shape().clone()))
    }
}
