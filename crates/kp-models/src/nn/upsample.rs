//! Nearest-neighbour upsampling by an integer factor, built from broadcasts.
//!
//! candle's `upsample_nearest2d` backward overwrites (rather than adds to) the input gradient
//! and uses a grouped convolution; a broadcast + reshape has an exact, cheap backward (a sum).

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{py_float, Describe, ModuleNode};

/// `nn.Upsample(scale_factor=s, mode="nearest")` for an integer `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upsample {
    /// Integer scale factor on both axes.
    pub scale: usize,
}

impl Default for Upsample {
    /// Doubling.
    fn default() -> Self {
        Self { scale: 2 }
    }
}

impl Upsample {
    /// Upsamples an NCHW tensor to `(H * s, W * s)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.scale;
        if s == 0 {
            return Err(Error::Config("upsample scale must be positive".into()));
        }
        if s == 1 {
            return Ok(x.clone());
        }
        let (n, c, h, w) = x.dims4()?;
        if predicting_on_cpu(x) {
            // Prediction on the CPU: one pass instead of a strided broadcast copy.
            return Ok(kp_ops::upsample::upsample_nearest(x, s)?);
        }
        Ok(x.reshape((n, c, h, 1, w, 1))?
            .broadcast_as((n, c, h, s, w, s))?
            .reshape((n, c, h * s, w * s))?)
    }
}

/// Whether `x` takes kp-ops' forward-only CPU kernels: an f32 tensor on the CPU that no
/// gradient is tracked through (prediction).
fn predicting_on_cpu(x: &Tensor) -> bool {
    !x.track_op()
        && x.dtype() == candle_core::DType::F32
        && kp_ops::dispatch::uses_cpu_kernels(x.device())
}

impl Upsample {
    /// `addend + self.forward(x)` (a feature pyramid's top-down sum): for prediction on the
    /// CPU one pass ([`kp_ops::upsample::upsample_nearest_add`]) without the upsampled tensor
    /// in between; otherwise the differentiable upsampling and an add.
    pub fn forward_add(&self, x: &Tensor, addend: &Tensor) -> Result<Tensor> {
        if self.scale >= 1 && predicting_on_cpu(x) && predicting_on_cpu(addend) {
            return Ok(kp_ops::upsample::upsample_nearest_add(
                x, self.scale, addend,
            )?);
        }
        Ok((addend + self.forward(x)?)?)
    }
}

impl Upsample {
    /// Writes the layer into an ONNX graph: `Resize` by `(1, 1, s, s)`, nearest, with the
    /// `asymmetric` / `floor` rule that makes output pixel `i` copy input pixel `i / s`, as the
    /// broadcast does.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        if self.scale == 0 {
            return Err(Error::Config("upsample scale must be positive".into()));
        }
        let base = g.next_name("Resize");
        let roi = g.floats(&format!("{base}.roi"), &[0], &[])?;
        let s = self.scale as f32;
        let scales = g.floats(&format!("{base}.scales"), &[4], &[1.0, 1.0, s, s])?;
        Ok(g.node(
            "Resize",
            &[x, &roi, &scales],
            vec![
                Attr::Str("mode", "nearest"),
                Attr::Str("coordinate_transformation_mode", "asymmetric"),
                Attr::Str("nearest_mode", "floor"),
            ],
        ))
    }
}

impl Describe for Upsample {
    fn describe(&self) -> ModuleNode {
        ModuleNode::leaf(
            "Upsample",
            format!(
                "scale_factor={}, mode='nearest'",
                py_float(self.scale as f64)
            ),
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn repeats_pixels_and_sums_gradients() {
        let x = Var::from_tensor(&Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap())
            .unwrap();
        let y = Upsample { scale: 2 }.forward(x.as_tensor()).unwrap();
        assert_eq!(
            y.squeeze(0)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            [
                [1., 1., 2., 2.],
                [1., 1., 2., 2.],
                [3., 3., 4., 4.],
                [3., 3., 4., 4.]
            ]
        );
        let w = Tensor::arange(0f32, 16., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        // Top-left block holds 0, 1, 4, 5.
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [10., 18., 42., 50.]
        );
        assert_eq!(
            Upsample { scale: 2 }.describe().torch_repr(),
            "Upsample(scale_factor=2.0, mode='nearest')"
        );
    }
}
