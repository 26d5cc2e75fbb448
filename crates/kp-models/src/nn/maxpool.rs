//! The 2-D max-pool layer, with a correct backward pass.
//!
//! candle's built-in `max_pool2d` has a wrong gradient (it divides the gradient by the window
//! size and misaligns windows on odd sizes), has no padding and cannot differentiate when the
//! kernel and the stride differ. [`MaxPool2d`] replaces it: on the CPU it runs as kp-ops' custom
//! op ([`kp_ops::maxpool::max_pool2d`]) whose backward routes each output gradient to the arg-max
//! of its window, exactly like PyTorch (first maximum in scan order wins; NaN propagates). On
//! CUDA with the `cudnn` feature it is cuDNN's max-pool (floor mode); on other devices it falls
//! back to [`MaxPool2d::forward_composite`], built from differentiable candle ops.
//!
//! Padding acts as `-inf`; output sizes follow PyTorch's floor (or ceil) mode.

use candle_core::{DType, Tensor};
use kp_ops::maxpool::Geometry;

use crate::error::{Error, Result};
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{Describe, ModuleNode};

/// A 2-D max-pool layer over NCHW tensors (square kernel, stride and padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window size.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit `-inf` border on each side (at most `kernel / 2`, as in PyTorch).
    pub padding: usize,
    /// Round the output size up instead of down (PyTorch's `ceil_mode`).
    pub ceil_mode: bool,
}

impl Default for MaxPool2d {
    /// 2x2 windows with stride 2, as in the seed networks.
    fn default() -> Self {
        Self::new(2, 2, 0)
    }
}

impl MaxPool2d {
    /// A floor-mode max-pool with the given kernel, stride and padding.
    pub const fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            ceil_mode: false,
        }
    }

    /// Checks the parameters (kernel and stride positive, padding at most half the kernel).
    pub fn validate(&self) -> Result<()> {
        if self.kernel == 0 || self.stride == 0 {
            return Err(Error::Config(format!(
                "max-pool kernel and stride must be positive ({self:?})"
            )));
        }
        if self.padding > self.kernel / 2 {
            return Err(Error::Config(format!(
                "max-pool padding must be at most half the kernel size ({self:?})"
            )));
        }
        Ok(())
    }

    /// Output size along one axis of length `len`, as PyTorch computes it.
    pub fn output_len(&self, len: usize) -> Result<usize> {
        self.validate()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if len + 2 * p < k {
            return Err(Error::Shape(format!(
                "max-pool input length {len} (+2x{p} padding) is smaller than the kernel {k}"
            )));
        }
        let span = len + 2 * p - k;
        let mut out = if self.ceil_mode {
            span.div_ceil(s) + 1
        } else {
            span / s + 1
        };
        // PyTorch: the last window must start inside the input or the left padding.
        if self.ceil_mode && (out - 1) * s >= len + p {
            out -= 1;
        }
        Ok(out)
    }

    /// Output `(height, width)` for an input of `(height, width)`.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((self.output_len(h)?, self.output_len(w)?))
    }

    fn geometry(&self, x: &Tensor) -> Result<Geometry> {
        let (n, c, h, w) = x.dims4()?;
        if h == 0 || w == 0 {
            return Err(Error::Shape(format!(
                "max-pool input {:?} is empty",
                x.dims()
            )));
        }
        let (oh, ow) = self.output_size(h, w)?;
        Ok(Geometry {
            planes: n * c,
            h,
            w,
            oh,
            ow,
            k: self.kernel,
            s: self.stride,
            p: self.padding,
        })
    }

    /// Writes the layer into an ONNX graph as `MaxPool` (padding is `-inf` there too).
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        self.validate()?;
        let (k, s, p) = (self.kernel as i64, self.stride as i64, self.padding as i64);
        Ok(g.node(
            "MaxPool",
            &[x],
            vec![
                Attr::Ints("kernel_shape", vec![k, k]),
                Attr::Ints("strides", vec![s, s]),
                Attr::Ints("pads", vec![p, p, p, p]),
                Attr::Int("ceil_mode", i64::from(self.ceil_mode)),
            ],
        ))
    }

    /// Pools an NCHW float tensor: the custom op on the CPU (f32/f64), the composite fallback
    /// elsewhere.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.dtype().is_float() {
            return Err(Error::Config(format!(
                "max-pool needs a float tensor, got {:?}",
                x.dtype()
            )));
        }
        #[cfg(feature = "cudnn")]
        if !self.ceil_mode && kp_ops::cudnn::applies(x) {
            // The same checks of the window and the input as the other paths.
            self.geometry(x)?;
            return Ok(kp_ops::cudnn::pool::max_pool2d(
                x,
                self.kernel,
                self.stride,
                self.padding,
            )?);
        }
        if kp_ops::dispatch::uses_cpu_kernels(x.device())
            && matches!(x.dtype(), DType::F32 | DType::F64)
        {
            self.forward_cpu(x)
        } else {
            self.forward_composite(x)
        }
    }

    /// Pools with the CPU custom op (f32 or f64); its backward routes gradients to the arg-max.
    pub fn forward_cpu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kp_ops::maxpool::max_pool2d(x, self.geometry(x)?)?)
    }

    /// Pools with ordinary candle ops (pad with `-inf`, strided window views, element-wise
    /// maximum), so it runs and differentiates on any device. Ties split the gradient, which
    /// differs from PyTorch only when a window holds several equal maxima.
    pub fn forward_composite(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kp_ops::maxpool::max_pool2d_composite(x, self.geometry(x)?)?)
    }
}

impl Describe for MaxPool2d {
    fn describe(&self) -> ModuleNode {
        let py_bool = if self.ceil_mode { "True" } else { "False" };
        ModuleNode::leaf(
            "MaxPool2d",
            format!(
                "kernel_size={}, stride={}, padding={}, dilation=1, ceil_mode={py_bool}",
                self.kernel, self.stride, self.padding
            ),
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn t(data: &[f32], shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }

    /// Random (hence distinct) values, reproducible.
    fn random_values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::nn::init::SplitMix64::new(seed);
        (0..n).map(|_| rng.next_normal() as f32).collect()
    }

    #[test]
    fn two_by_two_gradient_goes_to_the_max() {
        let x = Var::from_tensor(&t(&[1., 2., 3., 4.], (1, 1, 2, 2))).unwrap();
        let y = MaxPool2d::new(2, 2, 0).forward(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4.0]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap();
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 0., 0., 1.]
        );
    }

    #[test]
    fn odd_sizes_floor_mode() {
        // 5x5 input, 2x2/2: windows start at 0 and 2; row/column 4 is dropped.
        let data: Vec<f32> = (0..25).map(|v| v as f32).collect();
        let x = t(&data, (1, 1, 5, 5));
        let y = MaxPool2d::new(2, 2, 0).forward(&x).unwrap();
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [6., 8., 16., 18.]
        );
        let xv = Var::from_tensor(&x).unwrap();
        let y = MaxPool2d::new(2, 2, 0).forward(xv.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(xv.as_tensor()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = vec![0f32; 25];
        for i in [6, 8, 16, 18] {
            want[i] = 1.0;
        }
        assert_eq!(g, want);
    }

    #[test]
    fn three_by_three_stride_two_pad_one() {
        // 4x4 input 0..16: windows centred on (0,0),(0,2),(2,0),(2,2) with -inf padding.
        let data: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let x = Var::from_tensor(&t(&data, (1, 1, 4, 4))).unwrap();
        let pool = MaxPool2d::new(3, 2, 1);
        let y = pool.forward(x.as_tensor()).unwrap();
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5., 7., 13., 15.]
        );
        // Negative inputs: padding must act as -inf, not 0.
        let neg: Vec<f32> = (0..16).map(|v| -(v as f32) - 1.0).collect();
        let y = pool.forward(&t(&neg, (1, 1, 4, 4))).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [-1., -2., -5., -6.]
        );
        // Gradient of a weighted sum goes to the arg-max with the weight.
        let w = t(&[1., 2., 3., 4.], (1, 1, 2, 2));
        let y = pool.forward(x.as_tensor()).unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = vec![0f32; 16];
        want[5] = 1.;
        want[7] = 2.;
        want[13] = 3.;
        want[15] = 4.;
        assert_eq!(g, want);
    }

    #[test]
    fn overlapping_windows_accumulate() {
        // 3x3 kernel, stride 1 on a 3x4 input whose maximum is shared by both windows.
        let x = Var::from_tensor(&t(
            &[0., 1., 2., 0., 3., 9., 4., 0., 0., 5., 6., 0.],
            (1, 1, 3, 4),
        ))
        .unwrap();
        let y = MaxPool2d::new(3, 1, 0).forward(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [9., 9.]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g[5], 2.0);
        assert_eq!(g.iter().sum::<f32>(), 2.0);
    }

    #[test]
    fn output_sizes_match_pytorch() {
        let p = MaxPool2d::new(2, 2, 0);
        assert_eq!(p.output_size(58, 78).unwrap(), (29, 39));
        assert_eq!(p.output_size(27, 37).unwrap(), (13, 18));
        let p = MaxPool2d::new(3, 2, 1);
        assert_eq!(p.output_size(112, 112).unwrap(), (56, 56));
        assert_eq!(p.output_size(7, 6).unwrap(), (4, 3));
        let mut c = MaxPool2d::new(2, 2, 0);
        c.ceil_mode = true;
        assert_eq!(c.output_len(5).unwrap(), 3);
        let mut c = MaxPool2d::new(3, 2, 1);
        c.ceil_mode = true;
        assert_eq!(c.output_len(6).unwrap(), 4);
        let mut c = MaxPool2d::new(2, 3, 1);
        c.ceil_mode = true;
        // PyTorch: ceil((5+2-2)/3)+1 = 3, but the last window would start in the right
        // padding (at 6 >= 5 + 1), so 2.
        assert_eq!(c.output_len(5).unwrap(), 2);
        assert!(MaxPool2d::new(2, 2, 2).validate().is_err());
        assert!(MaxPool2d::new(3, 1, 0).output_len(2).is_err());
    }

    #[test]
    fn composite_matches_custom_op() {
        for (pool, h, w) in [
            (MaxPool2d::new(2, 2, 0), 7, 9),
            (MaxPool2d::new(3, 2, 1), 9, 8),
            (MaxPool2d::new(3, 1, 1), 5, 6),
            (MaxPool2d::new(2, 1, 0), 4, 5),
            (
                MaxPool2d {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                    ceil_mode: true,
                },
                6,
                7,
            ),
        ] {
            let n = 2 * 3 * h * w;
            let data = random_values(n, (h * w) as u64);
            let x = Var::from_tensor(&t(&data, (2, 3, h, w))).unwrap();
            let weights = Tensor::from_vec(random_values(6, 99), (2, 3), &Device::Cpu).unwrap();
            let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
                let y = f(x.as_tensor()).unwrap();
                let wt = weights
                    .reshape((2, 3, 1, 1))
                    .unwrap()
                    .broadcast_as(y.shape())
                    .unwrap();
                let loss = (y.clone() * wt).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                let g = g.get(x.as_tensor()).unwrap().clone();
                (
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            };
            let (ya, ga) = run(&|x| pool.forward_cpu(x));
            let (yb, gb) = run(&|x| pool.forward_composite(x));
            assert_eq!(ya, yb, "{pool:?} {h}x{w}");
            // Same routing; only the summation order of overlapping windows differs.
            for (a, b) in ga.iter().zip(&gb) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{pool:?} {h}x{w}: {a} vs {b}"
                );
            }
            assert!(ga.iter().filter(|v| **v == 0.0).count() > 0);
        }
    }

    #[test]
    fn nan_propagates() {
        let x = t(&[1., f32::NAN, 3., 4.], (1, 1, 2, 2));
        let y = MaxPool2d::new(2, 2, 0).forward(&x).unwrap();
        assert!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0].is_nan());
    }

    #[test]
    fn other_dtypes() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::U8, &Device::Cpu).unwrap();
        assert!(MaxPool2d::new(2, 2, 0).forward(&x).is_err());
        // Half precision goes through the composite path.
        let x = t(&[1., 5., 3., 4.], (1, 1, 2, 2))
            .to_dtype(DType::F16)
            .unwrap();
        let y = MaxPool2d::new(2, 2, 0).forward(&x).unwrap();
        let y = y.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [5.0]);
    }
}
