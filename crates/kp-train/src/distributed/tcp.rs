//! The TCP side of a data-parallel job: the rendezvous at rank 0, and (for CPU jobs, or CUDA
//! builds without NCCL) sums and broadcasts of host buffers through rank 0.
//!
//! Rank 0 listens on `MASTER_ADDR:MASTER_PORT`; every other rank connects (retrying until rank 0
//! is up) and introduces itself: a magic number, the protocol version, its rank, the world size
//! and a fingerprint of the run (its configuration and data). Rank 0 refuses a connection whose
//! world size or fingerprint differs from its own, so two jobs started on one port by mistake
//! never train into each other, and hands every accepted rank a payload (the NCCL unique id when
//! NCCL carries the gradients).
//!
//! The collectives are a star: each rank sends its buffer to rank 0, which adds them in rank
//! order (so every run gives the same sums) and sends the total back. That is `2 (n - 1)` buffer
//! transfers through one host per call, fine for a few CPU processes; GPUs use NCCL's rings.
//! Every read checks the message's kind, sequence number and length against the receiver's own
//! (no peer can make another allocate more than its own buffer), and every socket has a timeout,
//! so a rank that dies or hangs ends the others' waits with an error naming it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::world::World;
use crate::error::{Error, Result};

const MAGIC: [u8; 4] = *b"KPDP";
const VERSION: u32 = 1;
/// The longest payload or refusal message rank 0 sends in the handshake.
const MAX_HANDSHAKE_BYTES: usize = 64 << 10;
/// How long rank 0 waits for a connected peer to introduce itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

const OP_ALL_REDUCE: u8 = 1;
const OP_BROADCAST: u8 = 2;

/// The default time a rank waits for the others (rendezvous, or one collective while rank 0
/// evaluates and writes a checkpoint): 15 minutes, or `KP_DIST_TIMEOUT_S` seconds.
pub fn default_timeout() -> Result<Duration> {
    match std::env::var("KP_DIST_TIMEOUT_S") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(Error::Config(format!(
                "KP_DIST_TIMEOUT_S={v:?}: expected a whole number of seconds above 0"
            ))),
        },
        Err(_) => Ok(Duration::from_secs(900)),
    }
}

fn dist_err(msg: impl Into<String>) -> Error {
    Error::Distributed(msg.into())
}

/// The connections of one rank: to every other rank on rank 0, to rank 0 elsewhere.
pub struct TcpGroup {
    world: World,
    /// Rank 0: `peers[r - 1]` is rank `r`. Other ranks: `peers[0]` is rank 0.
    peers: Vec<TcpStream>,
    /// Collectives done so far (both sides count; a mismatch means a rank is out of step).
    seq: u64,
    /// What rank 0 handed out in the handshake.
    payload: Vec<u8>,
}

impl TcpGroup {
    /// Joins the job of `world`: rank 0 accepts the other `world_size - 1` ranks, the others
    /// connect to it; `payload` (rank 0's) is handed to every rank. Fails after `timeout`.
    pub fn connect(
        world: &World,
        fingerprint: u64,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Self> {
        if payload.len() > MAX_HANDSHAKE_BYTES {
            return Err(dist_err("handshake payload too large"));
        }
        let (peers, payload) = if world.world_size == 1 {
            (Vec::new(), payload.to_vec())
        } else if world.is_main() {
            (
                accept_all(world, fingerprint, payload, timeout)?,
                payload.to_vec(),
            )
        } else {
            let (s, p) = join(world, fingerprint, timeout)?;
            (vec![s], p)
        };
        for s in &peers {
            s.set_read_timeout(Some(timeout))
                .and_then(|_| s.set_write_timeout(Some(timeout)))
                .map_err(|e| dist_err(format!("socket timeout: {e}")))?;
        }
        Ok(Self {
            world: world.clone(),
            peers,
            seq: 0,
            payload,
        })
    }

    /// This rank's place in the job.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The payload rank 0 handed out in the handshake.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Replaces `data` on every rank by its sum over the ranks (added in rank order on rank 0,
    /// the same bits everywhere).
    pub fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        self.seq += 1;
        if self.world.world_size == 1 {
            return Ok(());
        }
        let mut buf = Vec::new();
        if self.world.is_main() {
            let mut incoming = vec![0f32; data.len()];
            for (i, peer) in self.peers.iter_mut().enumerate() {
                let rank = i + 1;
                recv(peer, rank, OP_ALL_REDUCE, self.seq, &mut incoming, &mut buf)?;
                for (a, b) in data.iter_mut().zip(&incoming) {
                    *a += b;
                }
            }
            for (i, peer) in self.peers.iter_mut().enumerate() {
                send(peer, i + 1, OP_ALL_REDUCE, self.seq, data, &mut buf)?;
            }
        } else {
            let peer = &mut self.peers[0];
            send(peer, 0, OP_ALL_REDUCE, self.seq, data, &mut buf)?;
            recv(peer, 0, OP_ALL_REDUCE, self.seq, data, &mut buf)?;
        }
        Ok(())
    }

    /// Replaces `data` on every rank by rank 0's.
    pub fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        self.seq += 1;
        let mut buf = Vec::new();
        if self.world.is_main() {
            for (i, peer) in self.peers.iter_mut().enumerate() {
                send(peer, i + 1, OP_BROADCAST, self.seq, data, &mut buf)?;
            }
        } else if let Some(peer) = self.peers.first_mut() {
            recv(peer, 0, OP_BROADCAST, self.seq, data, &mut buf)?;
        }
        Ok(())
    }
}

/// What a rank reports about a failed read or write to `rank`.
fn io_err(rank: usize, what: &str, e: std::io::Error) -> Error {
    let why = match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "the connection closed (that rank probably failed: see its log)".to_string()
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            "timed out (raise KP_DIST_TIMEOUT_S if that rank is only slow)".to_string()
        }
        _ => e.to_string(),
    };
    dist_err(format!("rank {rank}: {what}: {why}"))
}

fn send(
    s: &mut TcpStream,
    rank: usize,
    op: u8,
    seq: u64,
    data: &[f32],
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.clear();
    buf.push(op);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for x in data {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    s.write_all(buf).map_err(|e| io_err(rank, "sending", e))
}

/// Reads one message into `data`, which must match its kind, sequence number and length.
fn recv(
    s: &mut TcpStream,
    rank: usize,
    op: u8,
    seq: u64,
    data: &mut [f32],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let mut head = [0u8; 17];
    s.read_exact(&mut head)
        .map_err(|e| io_err(rank, "waiting for its data", e))?;
    let their_seq = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
    let their_len = u64::from_le_bytes(head[9..17].try_into().expect("8 bytes"));
    if head[0] != op || their_seq != seq || their_len != data.len() as u64 {
        return Err(dist_err(format!(
            "rank {rank} is out of step: it sent operation {} #{their_seq} of {their_len} values, \
             this rank expected operation {op} #{seq} of {} (do all ranks run the same kp and \
             configuration?)",
            head[0],
            data.len()
        )));
    }
    buf.resize(4 * data.len(), 0);
    s.read_exact(buf)
        .map_err(|e| io_err(rank, "receiving its data", e))?;
    for (x, b) in data.iter_mut().zip(buf.chunks_exact(4)) {
        *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
    }
    Ok(())
}

fn hello(world: &World, fingerprint: u64) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&(world.rank as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(world.world_size as u32).to_le_bytes());
    h[16..24].copy_from_slice(&fingerprint.to_le_bytes());
    h
}

/// Rank 0: accepts and checks connections until every rank has joined.
fn accept_all(
    world: &World,
    fingerprint: u64,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<TcpStream>> {
    let listener = TcpListener::bind(&world.master).map_err(|e| {
        dist_err(format!(
            "rank 0 cannot listen on {} (MASTER_ADDR:MASTER_PORT): {e}",
            world.master
        ))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| dist_err(format!("{}: {e}", world.master)))?;
    let deadline = Instant::now() + timeout;
    let mut peers: Vec<Option<TcpStream>> = (1..world.world_size).map(|_| None).collect();
    let mut refused: Vec<String> = Vec::new();
    while peers.iter().any(Option::is_none) {
        let (mut s, from) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = peers
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    let mut msg = format!(
                        "rank 0 waited {} s on {} for ranks {} to join",
                        timeout.as_secs(),
                        world.master,
                        missing.join(", ")
                    );
                    if !refused.is_empty() {
                        msg.push_str(&format!("; refused: {}", refused.join("; ")));
                    }
                    return Err(dist_err(msg));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(dist_err(format!("{}: accept: {e}", world.master))),
        };
        let setup = s
            .set_nonblocking(false)
            .and_then(|_| s.set_nodelay(true))
            .and_then(|_| s.set_read_timeout(Some(HELLO_TIMEOUT)))
            .and_then(|_| s.set_write_timeout(Some(HELLO_TIMEOUT)));
        if setup.is_err() {
            continue;
        }
        let mut h = [0u8; 24];
        if s.read_exact(&mut h).is_err() || h[..4] != MAGIC {
            refused.push(format!("{from}: not a kp rank"));
            continue;
        }
        let field = |r: std::ops::Range<usize>| u32::from_le_bytes(h[r].try_into().expect("4"));
        let (version, rank, size) = (field(4..8), field(8..12) as usize, field(12..16) as usize);
        let their_fp = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        let problem = if version != VERSION {
            Some(format!(
                "protocol version {version}, this kp speaks {VERSION}"
            ))
        } else if size != world.world_size {
            Some(format!(
                "WORLD_SIZE={size}, rank 0 has {}",
                world.world_size
            ))
        } else if their_fp != fingerprint {
            Some("a different run (its configuration or data differ from rank 0's)".to_string())
        } else if rank == 0 || rank >= world.world_size {
            Some(format!("RANK={rank} is not one rank 0 waits for"))
        } else if peers[rank - 1].is_some() {
            Some(format!("RANK={rank} joined twice"))
        } else {
            None
        };
        match problem {
            Some(p) => {
                let msg = format!("rank 0 at {} refused {from}: {p}", world.master);
                tracing::warn!("{msg}");
                let mut reply = vec![1u8];
                reply.extend_from_slice(&(msg.len() as u32).to_le_bytes());
                reply.extend_from_slice(msg.as_bytes());
                let _ = s.write_all(&reply);
                refused.push(format!("{from} ({p})"));
            }
            None => {
                let mut reply = vec![0u8];
                reply.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                reply.extend_from_slice(payload);
                if s.write_all(&reply).is_ok() {
                    tracing::info!(rank, %from, "rank joined");
                    peers[rank - 1] = Some(s);
                }
            }
        }
    }
    Ok(peers.into_iter().map(|p| p.expect("all joined")).collect())
}

/// Other ranks: connects to rank 0 (retrying until it listens) and introduces itself.
fn join(world: &World, fingerprint: u64, timeout: Duration) -> Result<(TcpStream, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::new();
    let mut s = loop {
        let addrs: Vec<_> = match world.master.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last_err = e.to_string();
                Vec::new()
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let connected = addrs.iter().find_map(|a| {
            TcpStream::connect_timeout(a, left.clamp(Duration::from_millis(1), HELLO_TIMEOUT))
                .map_err(|e| last_err = e.to_string())
                .ok()
        });
        if let Some(s) = connected {
            break s;
        }
        if Instant::now() >= deadline {
            return Err(dist_err(format!(
                "rank {} could not reach rank 0 at {} (MASTER_ADDR:MASTER_PORT) in {} s: {last_err}",
                world.rank,
                world.master,
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(HELLO_TIMEOUT);
    s.set_nodelay(true)
        .and_then(|_| s.set_read_timeout(Some(left)))
        .and_then(|_| s.set_write_timeout(Some(left)))
        .map_err(|e| dist_err(format!("{}: {e}", world.master)))?;
    s.write_all(&hello(world, fingerprint))
        .map_err(|e| io_err(0, "introducing this rank", e))?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .map_err(|e| io_err(0, "waiting for the handshake", e))?;
    let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
    if len > MAX_HANDSHAKE_BYTES {
        return Err(dist_err(format!(
            "{} answered with {len} bytes: not a kp rank 0",
            world.master
        )));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .map_err(|e| io_err(0, "reading the handshake", e))?;
    if head[0] != 0 {
        return Err(dist_err(String::from_utf8_lossy(&body).into_owned()));
    }
    Ok((s, body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A free port on the loopback interface.
    pub(crate) fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub(crate) fn worlds(n: usize) -> Vec<World> {
        let master = format!("127.0.0.1:{}", free_port());
        (0..n)
            .map(|rank| World {
                rank,
                world_size: n,
                local_rank: rank,
                master: master.clone(),
            })
            .collect()
    }

    /// Joins the ranks of `worlds` (threads), each with its fingerprint, and runs `f` on each
    /// rank's group.
    pub(crate) fn run<T: Send>(
        worlds: Vec<World>,
        fingerprints: Vec<u64>,
        f: impl Fn(Result<TcpGroup>) -> T + Sync,
    ) -> Vec<T> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = worlds
                .into_iter()
                .zip(fingerprints)
                .map(|(w, fp)| {
                    let f = &f;
                    scope.spawn(move || {
                        f(TcpGroup::connect(
                            &w,
                            fp,
                            b"payload",
                            Duration::from_secs(5),
                        ))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn three_ranks_sum_and_broadcast_and_get_rank_0s_payload() {
        let out = run(worlds(3), vec![7; 3], |g| {
            let mut g = g.unwrap();
            let r = g.world().rank as f32;
            let mut v = vec![r, 10.0 * r, 0.5];
            g.all_reduce_sum(&mut v).unwrap();
            let mut b = vec![r + 1.0; 2];
            g.broadcast(&mut b).unwrap();
            (v, b, g.payload().to_vec())
        });
        for (v, b, p) in out {
            assert_eq!(v, vec![3.0, 30.0, 1.5]);
            assert_eq!(b, vec![1.0, 1.0]);
            assert_eq!(p, b"payload");
        }
    }

    #[test]
    fn a_rank_of_another_run_is_refused_and_rank_0_says_who_is_missing() {
        let out = run(worlds(2), vec![1, 2], |g| g.err().map(|e| e.to_string()));
        let worker = out[1].as_deref().unwrap();
        assert!(worker.contains("a different run"), "{worker}");
        let main = out[0].as_deref().unwrap();
        assert!(
            main.contains("ranks 1 to join") && main.contains("refused"),
            "{main}"
        );
    }

    #[test]
    fn a_rank_that_dies_ends_the_others_wait_with_an_error_naming_it() {
        let out = run(worlds(2), vec![3; 2], |g| {
            let mut g = g.unwrap();
            if g.world().rank == 1 {
                return None; // drops its connection
            }
            let mut v = vec![1.0f32; 4];
            Some(g.all_reduce_sum(&mut v).unwrap_err().to_string())
        });
        let e = out[0].as_deref().unwrap();
        assert!(e.contains("rank 1") && e.contains("closed"), "{e}");
    }

    #[test]
    fn ranks_out_of_step_are_told_so_instead_of_mixing_buffers() {
        let out = run(worlds(2), vec![3; 2], |g| {
            let mut g = g.unwrap();
            let n = 3 + g.world().rank;
            let mut v = vec![1.0f32; n];
            g.all_reduce_sum(&mut v).err().map(|e| e.to_string())
        });
        let e = out[0].as_deref().unwrap();
        assert!(e.contains("out of step"), "{e}");
        assert!(out[1].is_some());
    }

    #[test]
    fn a_rank_without_rank_0_gives_up_after_its_timeout() {
        let w = worlds(2).remove(1);
        let e = TcpGroup::connect(&w, 0, b"", Duration::from_millis(300))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("could not reach rank 0"), "{e}");
    }
}
