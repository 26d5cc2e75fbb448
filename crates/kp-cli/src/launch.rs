//! `kp train --devices`: starts one `kp train` process per device of this machine with the
//! variables torchrun sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
//! and waits for them. When one fails, the others are stopped, so a job never hangs on a dead
//! rank.

use std::ffi::OsString;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kp_train::config::DeviceKind;
use kp_train::distributed::world::MAX_WORLD_SIZE;

/// What `--devices` names: CUDA ordinals, or a number of CPU processes.
#[derive(Debug, PartialEq, Eq)]
enum Devices {
    Gpus(Vec<usize>),
    Cpus(usize),
}

fn parse(list: &[String], kind: DeviceKind) -> Result<Devices> {
    let list: Vec<&str> = list.iter().map(|d| d.trim()).collect();
    if list.is_empty() || list.iter().any(|d| d.is_empty()) {
        bail!(
            "--devices {:?}: expected GPU ordinals (0,1) or cpu entries (cpu,cpu)",
            list.join(",")
        );
    }
    if list.len() > MAX_WORLD_SIZE {
        bail!(
            "--devices: {} processes, at most {MAX_WORLD_SIZE}",
            list.len()
        );
    }
    let devices = if list.iter().all(|d| *d == "cpu") {
        Devices::Cpus(list.len())
    } else {
        let mut ids = Vec::with_capacity(list.len());
        for d in &list {
            let id: usize = d.parse().map_err(|_| {
                anyhow::anyhow!("--devices: {d:?} is neither a GPU ordinal nor `cpu` (no mixing)")
            })?;
            if ids.contains(&id) {
                bail!("--devices: GPU {id} is named twice");
            }
            ids.push(id);
        }
        Devices::Gpus(ids)
    };
    match (&devices, kind) {
        (Devices::Gpus(_), DeviceKind::Cpu) => {
            bail!("--devices {} names GPUs: add --device cuda", list.join(","))
        }
        (Devices::Cpus(_), DeviceKind::Cuda) => {
            bail!(
                "--devices {} names CPU processes but --device is cuda",
                list.join(",")
            )
        }
        _ => Ok(devices),
    }
}

/// The command line of this process without `--devices` and its value.
fn child_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.to_str() {
            Some("--devices") => skip_value = true,
            Some(s) if s.starts_with("--devices=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// Runs the job: one child per device, rank 0 on the first.
pub fn launch(list: &[String], kind: DeviceKind) -> Result<()> {
    let devices = parse(list, kind)?;
    let n = match &devices {
        Devices::Gpus(ids) => ids.len(),
        Devices::Cpus(n) => *n,
    };
    // A free port for the rendezvous (rank 0 binds it again at once).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the ranks' rendezvous")?
        .port();
    let exe = std::env::current_exe().context("finding the kp executable")?;
    let args = child_args(std::env::args_os().skip(1));
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for rank in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("WORLD_SIZE", n.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        match &devices {
            Devices::Gpus(ids) => {
                let visible: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                cmd.env("CUDA_VISIBLE_DEVICES", visible.join(","));
            }
            Devices::Cpus(_) => {
                // The cores shared out, unless the user chose.
                if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                    cmd.env("RAYON_NUM_THREADS", (cores / n).max(1).to_string());
                }
            }
        }
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                stop(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank} ({})", exe.display()));
            }
        }
    }
    tracing::info!(ranks = n, port, "data-parallel job started");
    let mut done = vec![false; n];
    while done.iter().any(|d| !d) {
        for (rank, child) in children.iter_mut().enumerate() {
            if done[rank] {
                continue;
            }
            if let Some(status) = child.try_wait().context("waiting for a rank")? {
                done[rank] = true;
                if !status.success() {
                    stop(&mut children);
                    bail!("rank {rank} of {n} failed ({status}); the other ranks were stopped");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn devices_are_gpu_ordinals_or_cpu_entries_matching_the_device() {
        assert_eq!(
            parse(&list("0,2"), DeviceKind::Cuda).unwrap(),
            Devices::Gpus(vec![0, 2])
        );
        assert_eq!(
            parse(&list("cpu,cpu,cpu"), DeviceKind::Cpu).unwrap(),
            Devices::Cpus(3)
        );
        for (l, kind, want) in [
            ("0,1", DeviceKind::Cpu, "add --device cuda"),
            ("cpu,cpu", DeviceKind::Cuda, "--device is cuda"),
            ("0,cpu", DeviceKind::Cuda, "no mixing"),
            ("1,1", DeviceKind::Cuda, "named twice"),
            ("0,", DeviceKind::Cuda, "expected GPU ordinals"),
        ] {
            let e = parse(&list(l), kind).unwrap_err().to_string();
            assert!(e.contains(want), "{l}: {e}");
        }
    }

    #[test]
    fn children_get_the_command_line_without_devices() {
        let args = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            child_args(args("train --task nose --devices cpu,cpu --out r")),
            args("train --task nose --out r")
        );
        assert_eq!(
            child_args(args("train --devices=0,1 --out r")),
            args("train --out r")
        );
    }
}
