//! The NCCL transport (feature `nccl`): the TCP rendezvous hands rank 0's NCCL unique id to
//! every rank, then gradients and broadcasts stay on the GPUs.

use std::time::Duration;

use candle_core::{Device, Tensor};

use super::{Collective, TcpGroup, World};
use crate::error::{Error, Result};

struct NcclGroup {
    world: World,
    comm: kp_ops::nccl::Nccl,
}

impl Collective for NcclGroup {
    fn world(&self) -> &World {
        &self.world
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        Ok(self.comm.all_reduce_sum(t)?)
    }

    fn broadcast(&mut self, t: &Tensor) -> Result<Tensor> {
        Ok(self.comm.broadcast(t, 0)?)
    }
}

/// Joins the job of `world` through NCCL on the CUDA `device`.
pub(super) fn connect(
    world: &World,
    device: &Device,
    fingerprint: u64,
    timeout: Duration,
) -> Result<Box<dyn Collective>> {
    let id = if world.is_main() {
        kp_ops::nccl::unique_id()?.to_vec()
    } else {
        Vec::new()
    };
    let tcp = TcpGroup::connect(world, fingerprint, &id, timeout)?;
    let id: [u8; 128] = tcp.payload().try_into().map_err(|_| {
        Error::Distributed(
            "rank 0 sent no NCCL id: build every rank with the `nccl` feature".into(),
        )
    })?;
    let comm = kp_ops::nccl::Nccl::new(device, world.rank, world.world_size, id)?;
    tracing::info!(
        rank = world.rank,
        world = world.world_size,
        "NCCL communicator ready"
    );
    Ok(Box::new(NcclGroup {
        world: world.clone(),
        comm,
    }))
}
