//! Fully connected layer (PyTorch `nn.Linear` semantics and default initialisation).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::nn::init::torch_default;
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{py_bool, Describe, ModuleNode};

/// `y = x W^T + b` with weight `(out, in)` and bias `(out)`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Creates (or loads) `weight` and, when `bias`, `bias` under `vb`, initialised like PyTorch.
    pub fn new(
        vb: VarBuilder,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::Config(format!(
                "linear needs positive sizes ({in_features} -> {out_features})"
            )));
        }
        let init = torch_default(in_features);
        let weight = vb.get_with_hints((out_features, in_features), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(out_features, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Applies the layer to a `(batch, in)` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, f) = x.dims2()?;
        if f != self.in_features {
            return Err(Error::Shape(format!(
                "linear expects {} input features, got {f}",
                self.in_features
            )));
        }
        // `(W · xᵀ)ᵀ` rather than `x · Wᵀ`: the weight gradient then comes out of the matrix
        // product contiguous, instead of as a transposed view that candle accumulates with a
        // slow strided add (the largest tensor of the seed networks).
        let y = self.weight.matmul(&x.t()?)?.t()?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }

    /// Writes the layer into an ONNX graph reading the `(batch, in)` value `x`: `Gemm` with
    /// the weight transposed, as PyTorch exports `nn.Linear`.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let base = g.next_name("Gemm");
        let w = g.tensor(&format!("{base}.weight"), &self.weight)?;
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = &self.bias {
            inputs.push(g.tensor(&format!("{base}.bias"), b)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(g.node("Gemm", &refs, vec![Attr::Int("transB", 1)]))
    }

    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }
}

impl Describe for Linear {
    fn describe(&self) -> ModuleNode {
        ModuleNode::leaf(
            "Linear",
            format!(
                "in_features={}, out_features={}, bias={}",
                self.in_features,
                self.out_features,
                py_bool(self.bias.is_some())
            ),
            self.num_params(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn computes_affine_map() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let lin = Linear::new(vb.pp("fc"), 3, 2, true).unwrap();
        vm.data()
            .lock()
            .unwrap()
            .get("fc.weight")
            .unwrap()
            .set(&Tensor::new(&[[1f32, 2., 3.], [0., -1., 0.5]], &Device::Cpu).unwrap())
            .unwrap();
        vm.data()
            .lock()
            .unwrap()
            .get("fc.bias")
            .unwrap()
            .set(&Tensor::new(&[10f32, 20.], &Device::Cpu).unwrap())
            .unwrap();
        let x = Tensor::new(&[[1f32, 1., 2.]], &Device::Cpu).unwrap();
        let y = lin.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, [[19.0, 20.0]]);
        assert_eq!(
            lin.describe().torch_repr(),
            "Linear(in_features=3, out_features=2, bias=True)"
        );
        assert_eq!(lin.num_params(), 8);
        assert!(lin
            .forward(&Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap())
            .is_err());
    }
}
