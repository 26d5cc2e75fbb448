//! Which process this is in a data-parallel job, read from the variables `torchrun` (and
//! `kp train --devices`) set: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
//!
//! The same names as PyTorch's so that a cluster's existing launch scripts (torchrun, Slurm
//! wrappers, Kubernetes operators) start kp unchanged.

use std::ops::Range;

use crate::error::{Error, Result};

/// The largest world kp accepts. Rank 0 holds one connection per rank and waits for every one,
/// so an absurd `WORLD_SIZE` (a typo, or hostile input) is refused instead of waited for.
pub const MAX_WORLD_SIZE: usize = 1024;

/// One process's place in a data-parallel job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// This process's rank, `0..world_size`; rank 0 writes the run folder.
    pub rank: usize,
    /// Number of processes (one per GPU).
    pub world_size: usize,
    /// Rank on this machine: the CUDA device ordinal the process trains on.
    pub local_rank: usize,
    /// Where rank 0 listens (`MASTER_ADDR:MASTER_PORT`), for the rendezvous.
    pub master: String,
}

impl World {
    /// A job of one process (no communication at all).
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master: String::new(),
        }
    }

    /// The world the environment describes, or `None` when `WORLD_SIZE` is not set.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`World::from_env`] over any source of variables (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(world_size) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let number = |name: &str, value: &str| -> Result<usize> {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| Error::Config(format!("{name}={value:?}: expected a whole number")))
        };
        let world_size = number("WORLD_SIZE", &world_size)?;
        if world_size == 0 || world_size > MAX_WORLD_SIZE {
            return Err(Error::Config(format!(
                "WORLD_SIZE={world_size}: expected 1 to {MAX_WORLD_SIZE} processes"
            )));
        }
        let rank = match get("RANK") {
            Some(r) => number("RANK", &r)?,
            None if world_size == 1 => 0,
            None => {
                return Err(Error::Config(format!(
                    "WORLD_SIZE={world_size} but RANK is not set"
                )))
            }
        };
        if rank >= world_size {
            return Err(Error::Config(format!(
                "RANK={rank} is not below WORLD_SIZE={world_size}"
            )));
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(r) => number("LOCAL_RANK", &r)?,
            None => rank,
        };
        if local_rank > rank.max(MAX_WORLD_SIZE) {
            return Err(Error::Config(format!("LOCAL_RANK={local_rank}: too large")));
        }
        let master = if world_size == 1 {
            String::new()
        } else {
            let addr = get("MASTER_ADDR").ok_or_else(|| {
                Error::Config(format!(
                    "WORLD_SIZE={world_size} needs MASTER_ADDR (the host rank 0 runs on)"
                ))
            })?;
            let port = get("MASTER_PORT").ok_or_else(|| {
                Error::Config(format!(
                    "WORLD_SIZE={world_size} needs MASTER_PORT (a free TCP port on MASTER_ADDR)"
                ))
            })?;
            let port = match port.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(Error::Config(format!(
                        "MASTER_PORT={port:?}: expected a port number, 1 to 65535"
                    )))
                }
            };
            let addr = addr.trim();
            if addr.is_empty() {
                return Err(Error::Config("MASTER_ADDR is empty".into()));
            }
            if addr.contains(':') && !addr.starts_with('[') {
                // An IPv6 address needs brackets before the port.
                format!("[{addr}]:{port}")
            } else {
                format!("{addr}:{port}")
            }
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master,
        }))
    }

    /// Whether this process writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// This rank's part of a global batch of `n` faces: contiguous, the first `n % world_size`
    /// ranks one face more, so the parts tile `0..n` in rank order (a part may be empty when
    /// `n < world_size`).
    pub fn shard(&self, n: usize) -> Range<usize> {
        shard(n, self.rank, self.world_size)
    }
}

/// Rank `rank`'s part of `0..n` split over `world_size` ranks (see [`World::shard`]).
pub fn shard(n: usize, rank: usize, world_size: usize) -> Range<usize> {
    let world_size = world_size.max(1);
    let (base, extra) = (n / world_size, n % world_size);
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start.min(n)..(start + len).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn world(vars: &[(&str, &str)]) -> Result<Option<World>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        World::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_variables_give_the_rank_and_the_rendezvous() {
        let w = world(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.7"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((w.rank, w.world_size, w.local_rank), (3, 4, 1));
        assert_eq!(w.master, "10.0.0.7:29500");
        assert!(!w.is_main());
        assert_eq!(world(&[]).unwrap(), None);
        let one = world(&[("WORLD_SIZE", "1")]).unwrap().unwrap();
        assert_eq!(one, World::single());
        let v6 = world(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "::1"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(v6.master, "[::1]:1234");
    }

    #[test]
    fn bad_variables_are_refused_naming_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WORLD_SIZE", "two")], "WORLD_SIZE=\"two\""),
            (&[("WORLD_SIZE", "0")], "WORLD_SIZE=0"),
            (&[("WORLD_SIZE", "99999999")], "WORLD_SIZE=99999999"),
            (&[("WORLD_SIZE", "2")], "RANK is not set"),
            (&[("WORLD_SIZE", "2"), ("RANK", "2")], "RANK=2"),
            (&[("WORLD_SIZE", "2"), ("RANK", "-1")], "RANK=\"-1\""),
            (&[("WORLD_SIZE", "2"), ("RANK", "1")], "MASTER_ADDR"),
            (
                &[("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "h")],
                "MASTER_PORT",
            ),
            (
                &[
                    ("WORLD_SIZE", "2"),
                    ("RANK", "1"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT=\"70000\"",
            ),
        ];
        for (vars, want) in cases {
            let e = world(vars).unwrap_err().to_string();
            assert!(e.contains(want), "{vars:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn shards_tile_the_batch_in_rank_order(n in 0usize..300, w in 1usize..20) {
            let mut next = 0;
            for r in 0..w {
                let s = shard(n, r, w);
                prop_assert_eq!(s.start, next);
                prop_assert!(s.len() == n / w || s.len() == n / w + 1);
                next = s.end;
            }
            prop_assert_eq!(next, n);
        }
    }
}
