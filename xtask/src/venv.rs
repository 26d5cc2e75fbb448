//! The Python peers' virtual environments: made on demand under `~/.cache/NAME`, outside the
//! clone, and reused by later runs (PyTorch, OpenCV, onnxruntime).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The venv `~/.cache/NAME` and its Python.
pub fn cached(name: &str) -> Result<(PathBuf, PathBuf)> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache").join(name);
    let python = venv.join("bin/python");
    Ok((venv, python))
}

/// Whether `python` imports every module of `modules`.
pub fn imports(python: &Path, modules: &[&str]) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", &format!("import {}", modules.join(", "))])
            .status()
            .is_ok_and(|s| s.success())
}

/// Creates the venv `venv` with `python3 -m venv`.
pub fn make(venv: &Path) -> Result<()> {
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    Ok(())
}

/// `explicit` when given; else the Python of the venv `~/.cache/NAME` once it imports
/// `modules`, made and filled with `pip install PACKAGES` (from PyPI) when it does not yet.
pub fn python_with(
    explicit: Option<&Path>,
    name: &str,
    modules: &[&str],
    packages: &[&str],
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let (venv, python) = cached(name)?;
    if imports(&python, modules) {
        return Ok(python);
    }
    tracing::info!("installing {} into {}", packages.join(" "), venv.display());
    make(&venv)?;
    let ok = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(packages)
        .status()
        .is_ok_and(|s| s.success());
    if ok && imports(&python, modules) {
        Ok(python)
    } else {
        bail!(
            "could not install {} into {}",
            packages.join(" "),
            venv.display()
        )
    }
}
