//! ReLU with a one-pass backward on the CPU.
//!
//! candle's own `relu` backward builds a zero tensor, a comparison, a dtype conversion and a
//! product (four passes and allocations over the activation); here the gradient is
//! `dy · [y > 0]` in one pass (PyTorch's `threshold_backward` convention). On CUDA (f32, feature
//! `cuda`) the same two ops run as kp's kernels (`kp_ops::cuda_kernels`); other devices use
//! candle's `relu`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::im2col::contiguous;
use candle_core::Result;

/// `max(x, 0)` elementwise (NaN stays NaN), differentiable.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if crate::cuda_kernels::applies(x) {
        return x.contiguous()?.apply_op1(Relu);
    }
    if !crate::dispatch::uses_cpu_kernels(x.device()) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

struct Relu;

/// `(dy, y) → dy · [y > 0]`: the gradient through a ReLU with output `y` (no backward).
pub(crate) struct ReluGrad;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

fn relu_vec<T: WithDType>(x: &[T]) -> Vec<T> {
    // One pass straight into the new buffer (no copy of `x` first).
    x.par_iter()
        .with_min_len(CHUNK)
        .map(|&v| if v < T::zero() { T::zero() } else { v })
        .collect()
}

fn mask_vec<T: WithDType>(dy: &[T], y: &[T]) -> Vec<T> {
    dy.par_iter()
        .zip(y)
        .with_min_len(CHUNK)
        .map(|(&g, &y)| if y > T::zero() { g } else { T::zero() })
        .collect()
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "kp-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(relu_vec(contiguous(v, l, "relu")?)),
            CpuStorage::F64(v) => CpuStorage::F64(relu_vec(contiguous(v, l, "relu")?)),
            other => candle_core::bail!("relu: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda_kernels::relu_fwd(s, l)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)?))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "kp-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => CpuStorage::F32(mask_vec(
                contiguous(g, l1, "relu grad")?,
                contiguous(y, l2, "relu grad")?,
            )),
            (CpuStorage::F64(g), CpuStorage::F64(y)) => CpuStorage::F64(mask_vec(
                contiguous(g, l1, "relu grad")?,
                contiguous(y, l2, "relu grad")?,
            )),
            _ => candle_core::bail!("relu grad: f32 or f64 inputs of one dtype expected"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda_kernels::relu_bwd(s1, l1, s2, l2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradient() {
        let dev = Device::Cpu;
        let x = Var::new(&[-2f64, -0.0, 0.5, 3.0, f64::NAN], &dev).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        let v = y.to_vec1::<f64>().unwrap();
        assert_eq!(&v[..4], &[0.0, 0.0, 0.5, 3.0]);
        assert!(v[4].is_nan());
        let w = Tensor::new(&[1f64, 2.0, 3.0, 4.0, 5.0], &dev).unwrap();
        let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(gx, [0.0, 0.0, 3.0, 4.0, 0.0]);
    }

    #[test]
    fn matches_candle_on_a_large_tensor() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (3, 50_000), &dev).unwrap();
        let ours = relu(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().relu().unwrap();
        let diff = (&ours - &theirs).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let r = Tensor::randn(0f32, 1.0, (3, 50_000), &dev).unwrap();
        let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = (g1.get(x.as_tensor()).unwrap() - g2.get(x.as_tensor()).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        // Random normals are never exactly 0, where the two conventions differ.
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }
}
