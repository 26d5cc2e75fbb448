//! Which implementation kp's layers take: kp's CPU kernels (custom ops with hand-written
//! backwards) on the CPU, candle's device ops (and [`crate::conv_device`]) on GPUs.
//!
//! [`use_device_ops_on_cpu`] makes the CPU take the GPU's path too, so the code a GPU runs can
//! be tested and compared on a machine without one.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;

static DEVICE_OPS_ON_CPU: AtomicBool = AtomicBool::new(false);

/// Makes every layer on the CPU run the ops it runs on GPUs (`true`), or kp's CPU kernels
/// (`false`, the default). Process-wide; meant for tests and cross-checks.
pub fn use_device_ops_on_cpu(on: bool) {
    DEVICE_OPS_ON_CPU.store(on, Ordering::Relaxed);
}

/// Whether work on `device` goes to kp's CPU kernels.
pub fn uses_cpu_kernels(device: &Device) -> bool {
    device.is_cpu() && !DEVICE_OPS_ON_CPU.load(Ordering::Relaxed)
}
