//! With the `cuda` feature, compiles `src/cuda_kernels/kernels.cu` to PTX with `nvcc` (the
//! compiler candle-kernels needs for the same feature), for the compute capability in
//! `CUDA_COMPUTE_CAP` (default 80; the driver JIT-compiles PTX for newer GPUs).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/cuda_kernels/kernels.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = out.join("kp_kernels.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string());
    let cap: String = cap.chars().filter(|c| c.is_ascii_digit()).collect();
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3"])
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .arg("src/cuda_kernels/kernels.cu")
        .arg("-o")
        .arg(&ptx)
        .status()
        .unwrap_or_else(|e| panic!("kp-ops: cannot run `{nvcc}` for the cuda feature: {e}"));
    assert!(
        status.success(),
        "kp-ops: `{nvcc}` failed to compile src/cuda_kernels/kernels.cu"
    );
}
